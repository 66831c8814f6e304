"""A tiny procedural road world and the two toy models trained on it, for ``make demo``.

Nothing here needs a GPU, a checkpoint or a real dataset:

- :mod:`extract.demo.scene` renders one road scene (Cityscapes trainIds, unseen objects);
- :mod:`extract.demo.world` writes scenes in the *real* dataset layouts and reads them back;
- :mod:`extract.demo.train_erfnet` trains the official ERFNet architecture;
- :mod:`extract.demo.train_eomt` trains a small EoMT (the released architecture at a toy
  size) with the official mask-classification objective (:mod:`extract.demo.matching`).

Both models are saved in their released checkpoint formats, so the rest of the tool
treats them exactly like the real ones. Everything is deterministic for a given seed on
one machine.
"""

from extract.demo.scene import (
    ANOMALY_KINDS,
    BUILDING,
    CAR,
    NUM_CLASSES,
    PERSON,
    POLE,
    ROAD,
    SIDEWALK,
    SKY,
    VEGETATION,
    VOID,
    WORLD_CLASSES,
    render_scene,
)
from extract.demo.train_erfnet import class_weights, load_cityscapes_split, logitnorm_loss, train_erfnet
from extract.demo.world import (
    CITIES,
    DEFAULT_SIZE,
    RA_ANOMALY,
    RA_ID,
    RA_VOID,
    read_cityscapes_split,
    road_anomaly_label,
    write_world,
)

__all__ = [
    "ANOMALY_KINDS", "BUILDING", "CAR", "CITIES", "DEFAULT_SIZE", "NUM_CLASSES", "PERSON", "POLE",
    "RA_ANOMALY", "RA_ID", "RA_VOID", "ROAD", "SIDEWALK", "SKY", "VEGETATION", "VOID", "WORLD_CLASSES",
    "class_weights", "load_cityscapes_split", "logitnorm_loss", "read_cityscapes_split", "render_scene",
    "road_anomaly_label", "train_erfnet", "write_world",
]
