"""Shared fixtures: random-weight checkpoints in the official formats, tiny datasets."""

from __future__ import annotations

import os

import pytest
import torch

# Results must not depend on how many threads the machine has.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """Random-weight ERFNet and small EoMT (ViT-S-shaped, 64 px crops) in the released formats."""
    from extract.models import save_official_checkpoint
    from extract.models.eomt import EoMTConfig, build_eomt
    from extract.models.erfnet import ERFNet

    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    erf = ERFNet(20).eval()
    cfg = EoMTConfig(embed_dim=384, depth=4, num_heads=6, num_register_tokens=4, patch_size=16, img_size=64,
                     num_q=10, num_classes=19, num_blocks=2)
    eomt = build_eomt(cfg).eval()
    return {
        "erfnet": save_official_checkpoint(erf, d / "erfnet_pretrained.pth", "erfnet"),
        "eomt": save_official_checkpoint(eomt, d / "eomt_small_64.bin", "eomt"),
    }


@pytest.fixture
def anomaly_data(tmp_path):
    """A 5-frame RoadAnomaly-layout dataset (jpg images, raw labels 0/2/255), 48x96."""
    from extract.datasets.synth import write_synth_dataset
    from schemas.manifest import get_dataset_spec

    root = tmp_path / "data"
    write_synth_dataset(get_dataset_spec("road_anomaly"), root, 5, (48, 96), seed=0)
    return root
