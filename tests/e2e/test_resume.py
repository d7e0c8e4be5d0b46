"""Determinism and exact resume on CPU: `seed=` + `trainer.deterministic=true` repeat bit for bit, and a
run stopped after epoch 1 and resumed from last.ckpt (that epoch's) ends exactly where the uninterrupted run ends."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


STOP_AFTER = """
import lightning as L


class StopAfter(L.Callback):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True
"""


def train(tmp_path: Path, name: str, *extra: str) -> dict:
    args = [
        f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / name}", "data.prepare.num_train=32",
        "data.prepare.num_val=8", "data.prepare.image_size=64", "data.img_size=64", "data.batch_size=8",
        "data.num_workers=0", "seed=3", "trainer.deterministic=true", "scheduler.min_warmup_steps=2", *extra,
    ]
    (tmp_path / "stop_after.py").write_text(STOP_AFTER)  # a test-only callback, from outside the package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads((tmp_path / name / "metrics.json").read_text())


def without_minutes(history: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "minutes"} for row in history]


@pytest.mark.slow
def test_same_seed_same_losses_and_exact_resume(tmp_path):
    full = train(tmp_path, "full", "trainer.max_epochs=3")
    again = train(tmp_path, "again", "trainer.max_epochs=3")
    # bit-identical per-epoch training losses and validation results (wall-clock minutes aside)
    assert without_minutes(full["history"]) == without_minutes(again["history"]) and full["history"]
    assert full["map"] == again["map"]

    # stopped after epoch 1 of a 3-epoch run (the schedule's length is that of the full run, as when a run is killed)
    train(tmp_path, "first_part", "trainer.max_epochs=3", "+callbacks.stop_after._target_=stop_after.StopAfter",
          "+callbacks.stop_after.epochs=2")
    last = tmp_path / "first_part" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 1  # the last epoch, not the best
    resumed = train(tmp_path, "resumed", "trainer.max_epochs=3", f"ckpt_path={tmp_path / 'first_part' / 'checkpoints' / 'last.ckpt'}")
    # optimizer, schedule, EMA, epoch counter and data order all continue: the last epoch is the same.
    # Tolerance: exact equality is expected on CPU; 1e-6 absolute allows for a different summation order.
    last_full = full["history"][-1]
    last_resumed = resumed["history"][-1]
    assert last_resumed["epoch"] == last_full["epoch"] == 2
    for key, value in last_full.items():
        if isinstance(value, float) and key != "minutes":
            assert last_resumed[key] == pytest.approx(value, abs=1e-6), key
