"""Training settings of the two demo models (``make demo``, the CLI and the trainers' defaults).

Chosen by mean IoU on a held-out in-distribution split (a world rendered with another
seed), never on the anomaly set; docs/demo.md lists what was compared. One thread
each: ``make demo`` trains both models at once on two cores, and a single-threaded run's
numbers do not depend on the machine's core count. Kept free of heavy imports so the CLI
starts fast.
"""

ERFNET = {"steps": 600, "height": 64, "batch_size": 8, "lr": 3e-3, "threads": 1}
EOMT = {"steps": 1200, "batch_size": 8, "lr": 3e-3, "num_q": 16, "threads": 1}
