"""Training settings of the two demo models (``make demo``, the CLI and the trainers' defaults).

Chosen by mean IoU on a held-out in-distribution split (a world rendered with another
seed), never on the anomaly set; README "make demo" lists what was compared. Kept free of
heavy imports so the CLI starts fast.
"""

ERFNET = {"steps": 400, "height": 64, "batch_size": 8, "lr": 3e-3}
EOMT = {"steps": 300, "batch_size": 8, "lr": 1e-3, "num_q": 16}
