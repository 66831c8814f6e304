"""`make demo`'s trainings say how far they are: a line of step, loss, elapsed and time left,
after the first and last step and at least every --progress-every seconds; the lines never
change the trained weights."""

from __future__ import annotations

import re

import pytest
import torch
from click.testing import CliRunner

from extract.cli import main as extract_main
from extract.demo import world
from extract.demo.progress import TrainingProgress, format_seconds
from extract.demo.train_eomt import train_eomt
from extract.demo.train_erfnet import train_erfnet

DURATION = r"(\d+s|\d+m\d\ds|\d+h\d\dm)"
ERFNET_LINE = re.compile(rf"erfnet: step (\d+)/(\d+)  loss \d+\.\d{{4}}  elapsed {DURATION}  left ~{DURATION}")
EOMT_LINE = re.compile(rf"eomt: step (\d+)/(\d+)  loss \d+\.\d{{4}}  \(mask [0-9.]+ dice [0-9.]+ ce [0-9.]+\)  "
                       rf"elapsed {DURATION}  left ~{DURATION}")


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    world.write_world(root, seed=0, n_train=4, n_val=1, n_anomaly=1, size=(64, 128))
    return root


def _erfnet(root, out, **kw):
    return train_erfnet(root / "train", out, steps=4, height=32, batch_size=2, seed=0, threads=1, **kw)


def test_format_seconds():
    assert [format_seconds(s) for s in (0, 4.6, 59.4, 60, 187, 3599, 3600, 3725)] == \
        ["0s", "5s", "59s", "1m00s", "3m07s", "59m59s", "1h00m", "1h02m"]


def test_every_step_with_interval_zero_and_the_weights_do_not_change(tiny_world, tmp_path):
    lines: list[str] = []
    _erfnet(tiny_world, tmp_path / "logged.pth", log=lines.append, log_seconds=0, log_label="erfnet")
    _erfnet(tiny_world, tmp_path / "silent.pth")  # no log at all
    steps = [ERFNET_LINE.fullmatch(line) for line in lines]
    assert all(steps), lines
    assert [(int(m[1]), int(m[2])) for m in steps] == [(i, 4) for i in (1, 2, 3, 4)]
    assert lines[-1].endswith("left ~0s")
    a, b = (torch.load(tmp_path / f"{n}.pth", weights_only=True) for n in ("logged", "silent"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_long_interval_gives_the_first_and_last_step_only(tiny_world, tmp_path):
    lines: list[str] = []
    _erfnet(tiny_world, tmp_path / "e.pth", log=lines.append, log_seconds=1e9)
    assert [line.split("  ")[0] for line in lines] == ["step 1/4", "step 4/4"]


def test_a_line_once_the_interval_has_passed():
    lines: list[str] = []
    progress = TrainingProgress(3, lines.append, every=0.2, label="x")
    progress.step(1, 1.0)
    progress.step(2, 0.5)  # within 0.2 s of the first line: none
    assert len(lines) == 1
    import time

    time.sleep(0.25)
    progress.step(2, 0.5)
    assert len(lines) == 2 and lines[1].startswith("x: step 2/3  loss 0.5000  elapsed ")
    with pytest.raises(ValueError, match="progress interval"):
        TrainingProgress(3, lines.append, every=-1)


def test_train_eomt_cli_prints_progress_lines_with_the_loss_parts(tiny_world, tmp_path):
    res = CliRunner().invoke(extract_main, ["demo", "train-eomt", "--data", str(tiny_world), "--out",
                                            str(tmp_path / "e.ckpt"), "--steps", "3", "--batch-size", "2",
                                            "--threads", "1", "--progress-every", "0"])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stderr.splitlines() if line.startswith("eomt: step")]
    assert [EOMT_LINE.fullmatch(line)[1] for line in lines] == ["1", "2", "3"], lines
    direct = train_eomt(tiny_world / "train", tmp_path / "d.ckpt", steps=3, batch_size=2, seed=0, threads=1)
    cli, api = (torch.load(tmp_path / n, weights_only=True)["state_dict"] for n in ("e.ckpt", "d.ckpt"))
    assert direct["steps"] == 3 and all(torch.equal(cli[k], api[k]) for k in api)


def test_progress_every_must_not_be_negative(tiny_world, tmp_path):
    res = CliRunner().invoke(extract_main, ["demo", "train", "--data", str(tiny_world), "--out",
                                            str(tmp_path / "e.pth"), "--progress-every", "-1"])
    assert res.exit_code == 2 and "--progress-every" in res.output
    assert not (tmp_path / "e.pth").exists()
