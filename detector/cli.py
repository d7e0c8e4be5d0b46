"""The console scripts of pyproject.toml ([project.scripts]), and what train.py and scripts/*.py run:

    detector-train          = python train.py                  (configs/train.yaml)
    detector-evaluate       = python scripts/evaluate.py       (configs/evaluate.yaml)
    detector-predict        = python scripts/predict.py        (configs/predict.yaml)
    detector-export         = python scripts/export.py         (configs/export.yaml)
    detector-check-dataset  = python scripts/check_dataset.py  (configs/train.yaml for its data=... form)
    detector-visualize-assignment = python scripts/visualize_assignment.py (configs/visualize_assignment.yaml)
    detector-convert-ultralytics = python scripts/convert_ultralytics.py  (a YOLOv8 .pt -> a checkpoint of ours)

The same command lines (`detector-train loss=giou`, `detector-evaluate ckpt_path=... --help`), the same output.
A checkpoint file that cannot be read (missing, refused by detector.models.safe_pickle's checks, not convertible)
ends every command with one line, `error: <file>: <reason>` on stderr, and exit status 2 (`_checkpoint_errors`);
`--debug` (detector-convert-ultralytics) or HYDRA_FULL_ERROR=1 (the Hydra commands) shows the traceback instead.
The Hydra apps compose the repository's configs/ folder: $PROJECT_ROOT/configs when PROJECT_ROOT is set (the
scripts set it to their checkout), else the one beside the installed package (`pip install -e <repository>`);
`paths.root_dir` (data/, logs/) is that folder's parent.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from detector.config import config_dir, project_root


def _checkpoint_error(error: BaseException | None) -> BaseException | None:
    """The CheckpointError that `error` is or was raised from (Hydra wraps errors in an InstantiationException)."""
    from detector.models.safe_pickle import CheckpointError

    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, CheckpointError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


@contextmanager
def _checkpoint_errors(debug: bool) -> Iterator[None]:
    """Every command runs in this: a checkpoint file that cannot be read ends it with `error: <file>: <reason>` on
    stderr and exit status 2, without a traceback; with `debug` the error goes on (its traceback shown)."""
    try:
        yield
    except Exception as error:
        cause = _checkpoint_error(error)
        if cause is None or debug:
            raise
        print("error: " + " ".join(str(cause).splitlines()), file=sys.stderr)
        raise SystemExit(2) from None


def _run_hydra_app(task: Callable[[Any], Any], config_name: str) -> None:
    """Run `task` as the Hydra app of configs/<config_name>.yaml on the command line (sys.argv). The job's name
    (hydra.job.name: <run dir>/<name>.log, the --help title) is set by each entry config."""
    import hydra

    try:
        configs = config_dir()
    except FileNotFoundError as error:
        raise SystemExit(f"error: {error}") from None
    os.environ.setdefault("PROJECT_ROOT", str(configs.parent))  # paths.root_dir

    @functools.wraps(task)  # Hydra finds the task's module through __wrapped__
    def run(cfg: Any) -> Any:
        with _checkpoint_errors(debug=os.environ.get("HYDRA_FULL_ERROR") == "1"):
            return task(cfg)

    hydra.main(version_base="1.3", config_path=str(configs), config_name=config_name)(run)()


def _train_task(cfg) -> float:
    """Train; return the value a Hydra sweeper optimises (`optimized_metric` of the best epoch, detector.search)."""
    from detector.search import check_metric, objective
    from detector.training.runner import train

    check_metric(cfg.optimized_metric)
    return objective(train(cfg), cfg.optimized_metric)


def train() -> None:
    """`detector-train [group=option ...] [key=value ...]` (-m for a sweep): train a detector (see README)."""
    from detector.config import register_resolvers
    from detector.search import require_sweeper

    register_resolvers()
    require_sweeper(sys.argv[1:])
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


def visualize_assignment(argv: list[str] | None = None) -> int:
    """`detector-visualize-assignment [assigner=tal,atss] [key=value ...]` (--help): draw assigned anchors."""
    import sys

    from detector.diagnostics.assignment import visualize_command

    return visualize_command(sys.argv[1:] if argv is None else argv, config_dir=project_root() / "configs")


def convert_ultralytics(argv: list[str] | None = None) -> int:
    """`detector-convert-ultralytics yolov8n.pt out.ckpt [--debug]`: an ultralytics YOLOv8 detection checkpoint -> a
    checkpoint of this project (detector.models.yolov8_import); returns 0 once written, and a file that cannot be
    read, converted or written exits with status 2 and `error: <file>: <reason>` on stderr."""
    import argparse

    from detector.models.yolov8_import import convert_checkpoint

    parser = argparse.ArgumentParser(
        prog="detector-convert-ultralytics",
        description="Convert an ultralytics YOLOv8 detection checkpoint (yolov8n.pt ... yolov8x.pt, or one you trained) "
                    "into a checkpoint that model.init_from=, evaluate, predict and export take. The file is read "
                    "without ultralytics and without running code from it. The weights' licence (AGPL-3.0 for "
                    "ultralytics' released checkpoints) is yours to respect.")
    parser.add_argument("source", help="the ultralytics .pt file")
    parser.add_argument("target", help="the checkpoint to write (e.g. yolov8n.ckpt)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a refusal (exit status 2)")
    args = parser.parse_args(argv)
    with _checkpoint_errors(args.debug):
        weights = convert_checkpoint(args.source, args.target)
    names = ", ".join(weights.class_names[:5]) + (", ..." if weights.num_classes > 5 else "")
    print(f"{args.source}: YOLOv8{weights.scale}, {weights.num_classes} classes ({names}), {weights.img_size} px, "
          f"{len(weights.state_dict)} tensors from '{weights.source['entry']}'\nwrote {args.target}\n"
          f"  python scripts/evaluate.py ckpt_path={args.target} data=<a dataset with these classes>\n"
          f"  python scripts/predict.py ckpt_path={args.target} source=<image or folder>\n"
          f"  python train.py model.scale={weights.scale} model.init_from={args.target} data=<your data>")
    return 0
