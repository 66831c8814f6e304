"""A tiny procedural road world and the two toy models trained on it, for ``make demo``.

Nothing here needs a GPU, a checkpoint or a real dataset:

- :mod:`extract.demo.scene` renders one road scene (Cityscapes trainIds, unseen objects),
  layer by layer: its ground (:mod:`~extract.demo.ground`), the things standing on it
  (:mod:`~extract.demo.objects`), with the primitives of :mod:`~extract.demo.paint` and the
  classes of :mod:`~extract.demo.classes`;
- :mod:`extract.demo.world` writes scenes in the *real* dataset layouts and reads them back;
- :mod:`extract.demo.train_erfnet` trains the official ERFNet architecture;
- :mod:`extract.demo.train_eomt` trains a small EoMT (the released architecture at a toy
  size) with the official mask-classification objective (:mod:`extract.demo.matching`).

- :mod:`extract.demo.settings` holds the training settings ``make demo`` uses;
- :mod:`extract.demo.summary` prints the chance level and each model's best AuPRC.

Both models are saved in their released checkpoint formats, so the rest of the tool
treats them exactly like the real ones. Everything is deterministic for a given seed on
one machine.
"""
