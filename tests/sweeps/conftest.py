"""A fabricated multirun directory with known numbers, laid out as `python train.py -m` writes it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

LOSSES = ("ciou", "giou", "diou", "siou")
SEEDS = (0, 1, 2)
COMMON = ("trainer.max_epochs=3",)
# mAP50-95 per loss and seed; "failed" / "incomplete" / "missing" for the runs that did not finish
MAP = {
    "ciou": (0.40, 0.42, 0.44),
    "giou": (0.41, 0.44, 0.46),
    "diou": (0.30, 0.36, "failed"),
    "siou": (0.50, "incomplete", "missing"),
}
FAILURE = {"type": "NonFiniteLossError", "message": "loss was non-finite for 5 consecutive steps (last: nan)"}


def other_metrics(m: float) -> dict[str, float]:
    """The other COCO stats as fixed offsets of mAP50-95, so their differences are known too."""
    return {"map_50": m + 0.25, "map_75": m - 0.05, "map_small": m / 2, "map_medium": m, "map_large": m + 0.1}


def job_overrides(loss: str, seed: int) -> list[str]:
    return [f"loss={loss}", f"seed={seed}", *COMMON]


def write_job(job_dir: Path, overrides: list[str], seed: int, value, baseline_hint: str | None = None) -> None:
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    config = f"seed: {seed}\n" + (f"ablation:\n  baseline: {baseline_hint}\n" if baseline_hint else "")
    (job_dir / ".hydra" / "config.yaml").write_text(config)
    if value == "incomplete":
        (job_dir / "train.log").write_text("[2025-01-01][detector][INFO] - start\n"
                                           "[2025-01-01][root][ERROR] - CUDA out of memory. Tried to allocate 2.00 GiB\n")
        return
    history = [{"epoch": e, "train_loss": 3.0 - 0.5 * e + 0.01 * seed, "train_steps": 10, "train_nonfinite_steps": 0,
                "val_map": (value if isinstance(value, float) else 0.3) * (e + 1) / 3} for e in range(3)]
    record = {"seed": seed, "overrides": overrides, "history": history, "job_num": int(job_dir.name)}
    if value == "failed":
        history[-1].update(train_loss=None, train_nonfinite_steps=5, val_map=None)
        record.update({"map": None, "status": "failed", "error": {**FAILURE, "traceback": "Traceback ..."}})
    else:
        record.update({"map": value, **other_metrics(value), "status": "ok", "error": None, "images": 250.0, "epoch": 2.0})
    (job_dir / "metrics.json").write_text(json.dumps(record, indent=2))


def fabricate(root: Path, baseline_hint: str | None = None) -> Path:
    """LOSSES x SEEDS as jobs 0..11 (loss-major, Hydra's order for `loss=... seed=...`) with MAP's numbers."""
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper\n"
        "    max_batch_size: null\n    params: null\n  overrides:\n    task:\n"
        f"    - loss={','.join(LOSSES)}\n    - seed={','.join(map(str, SEEDS))}\n"
        + "".join(f"    - {o}\n" for o in COMMON))
    job = 0
    for loss in LOSSES:
        for seed in SEEDS:
            value = MAP[loss][seed]
            if value != "missing":
                write_job(root / str(job), job_overrides(loss, seed), seed, value, baseline_hint)
            job += 1
    return root


@pytest.fixture
def fabricated_sweep(tmp_path) -> Path:
    return fabricate(tmp_path / "multirun")


def write_hydra_app(folder: Path, source: str) -> dict[str, str]:
    """A trivial Hydra app in `folder` (app.py = `source`, conf/app.yaml with the project's hydra/default, an `x`
    option and logs under `folder`); returns the environment that runs it with this checkout's package."""
    root = Path(__file__).resolve().parents[2]
    (folder / "conf").mkdir()
    (folder / "conf" / "app.yaml").write_text(
        f"defaults:\n  - hydra: default\n  - _self_\nhydra:\n  searchpath: ['file://{root / 'configs'}']\n"
        f"task_name: app\npaths:\n  log_dir: {folder / 'logs'}\nx: 0\n")
    (folder / "app.py").write_text(source)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
