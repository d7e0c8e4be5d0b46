"""The console scripts of pyproject.toml ([project.scripts]), and what train.py and scripts/*.py run:

    detector-train          = python train.py                  (configs/train.yaml)
    detector-evaluate       = python scripts/evaluate.py       (configs/evaluate.yaml)
    detector-predict        = python scripts/predict.py        (configs/predict.yaml)
    detector-export         = python scripts/export.py         (configs/export.yaml)
    detector-check-dataset  = python scripts/check_dataset.py  (configs/train.yaml for its data=... form)

The same command lines (`detector-train loss=giou`, `detector-evaluate ckpt_path=... --help`), the same output.
The Hydra apps compose the repository's configs/ folder: $PROJECT_ROOT/configs when PROJECT_ROOT is set (the
scripts set it to their checkout), else the one beside the installed package (`pip install -e <repository>`);
`paths.root_dir` (data/, logs/) is that folder's parent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from detector.config import config_dir, project_root


def _run_hydra_app(task: Callable[[Any], Any], config_name: str) -> None:
    """Run `task` as the Hydra app of configs/<config_name>.yaml on the command line (sys.argv). The job's name
    (hydra.job.name: <run dir>/<name>.log, the --help title) is set by each entry config."""
    import hydra

    try:
        configs = config_dir()
    except FileNotFoundError as error:
        raise SystemExit(f"error: {error}") from None
    os.environ.setdefault("PROJECT_ROOT", str(configs.parent))  # paths.root_dir
    hydra.main(version_base="1.3", config_path=str(configs), config_name=config_name)(task)()


def _train_task(cfg) -> float:
    from detector.training.runner import train

    metrics = train(cfg)
    return metrics.get("map", 0.0)  # the value Hydra sweepers optimise


def train() -> None:
    """`detector-train [group=option ...] [key=value ...]` (-m for a sweep): train a detector (see README)."""
    from detector.config import register_resolvers

    register_resolvers()
    _run_hydra_app(_train_task, "train")


def evaluate() -> None:
    """`detector-evaluate ckpt_path=... [data=...] [key=value ...]`: evaluate a checkpoint."""
    from detector.config import register_resolvers
    from detector.deploy.evaluate import evaluate_checkpoint

    register_resolvers()
    _run_hydra_app(evaluate_checkpoint, "evaluate")


def predict() -> None:
    """`detector-predict ckpt_path=... source=<image|folder> [key=value ...]`: detect and draw."""
    from detector.deploy.predict import predict_images

    _run_hydra_app(predict_images, "predict")


def export() -> None:
    """`detector-export ckpt_path=... format=onnx [key=value ...]`: export the inference model."""
    from detector.deploy.export import export_checkpoint

    _run_hydra_app(export_checkpoint, "export")


def check_dataset(argv: list[str] | None = None) -> int:
    """`detector-check-dataset path/to/data | data=... | --format yolo|coco|voc --path ...` (--help): check a dataset
    (a path alone: its layout detected, and the train.py command printed); returns the exit status (0 usable, 1 not)."""
    from detector.data.checks import check_dataset as run

    return run(argv, config_dir=project_root() / "configs")
