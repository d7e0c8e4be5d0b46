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

import argparse
import functools
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detector.config import compose, config_dir, project_root

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from detector.data.checks import DatasetCheck


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


CHECK_DATASET_USAGE = """Check a dataset before training: counts of images, boxes and classes, and every problem found
(missing/unreadable images, background images, boxes of zero area or outside the image, sizes that differ
from the annotation). Malformed label files and unknown classes are reported with the file and line/object.

    python scripts/check_dataset.py path/to/data [data.class_names=[...]] [--decode] [--per-class]
    python scripts/check_dataset.py data=coco128 [data.format=coco] [data.root=...] [--decode] [--per-class]
    python scripts/check_dataset.py --format yolo --path /data/mydata/data.yaml [--split train val]
    python scripts/check_dataset.py --format coco --path annotations/train.json --images images/train
    python scripts/check_dataset.py --format voc --path data/VOCdevkit --split VOC2007/trainval VOC2012/trainval
    python scripts/check_dataset.py --format voc --path /data/fruit --split train val --classes labels.txt

The first form detects the format and layout of the folder (detector/data/layout.py: YOLO, COCO json, Pascal VOC
xml as labelling tools export them), checks it as `data=auto data.root=path/to/data` and prints the train.py command
for it. The second composes the training config (any `data=...` option and `data.key=value` override) and
checks its train and val readers exactly as training would. `--decode` decodes every image fully (slower;
finds corrupt files that a header read misses). Exit status: 0 = usable, 1 = not usable (the reason is printed).
"""


def _check_dataset_parser() -> argparse.ArgumentParser:
    description, epilog = CHECK_DATASET_USAGE.split("\n\n", 1)
    parser = argparse.ArgumentParser(description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", choices=("yolo", "coco", "voc"), help="check files directly instead of a data config")
    parser.add_argument("--path", help="yolo: data.yaml; coco: the json; voc: VOCdevkit or dataset folder")
    parser.add_argument("--images", help="coco: the image folder")
    parser.add_argument("--split", nargs="+", help="yolo: data.yaml keys (default train val); voc: [YEAR/]SPLIT ...")
    parser.add_argument("--classes", nargs="+", help="voc: class names, a names file, or 'collect' (default: the 20 VOC classes)")
    parser.add_argument("--decode", action="store_true", help="decode every image fully (slower)")
    parser.add_argument("--per-class", action="store_true", help="print the box count of every class")
    parser.add_argument("--max-bad-fraction", type=float, default=None, help="default: the config's, else 0.05")
    parser.add_argument("--no-doctor", action="store_true", help="skip the doctor (box sizes against the model, ...)")
    parser.add_argument("--out", help="folder of the doctor's box-size histogram (default: logs/check_dataset/<name>)")
    return parser


def check_dataset(argv: list[str] | None = None) -> int:
    """`detector-check-dataset path/to/data | data=... | --format yolo|coco|voc --path ...` (--help): check a dataset
    (a path alone: its layout detected, and the train.py command printed); returns the exit status (0 usable, 1 not)."""
    import hydra

    from detector.data.checks import check_dataset as check
    from detector.data.checks import file_readers
    from detector.data.layout import detect_layout

    parser = _check_dataset_parser()
    args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.format and not args.path:
        parser.error("--path is required with --format")
    path = next((o for o in overrides if "=" not in o), None)
    cfg = None
    try:
        if path is not None:  # only a path: detect the layout, check it as data=auto
            print(detect_layout(path).summary())
            overrides = [*path_overrides(path), *(o for o in overrides if o != path)]
        if args.format:
            classes = args.classes[0] if args.classes and len(args.classes) == 1 and (
                args.classes[0] == "collect" or Path(args.classes[0]).is_file()) else args.classes
            readers = file_readers(args.format, args.path, args.images, args.split, classes)
            name, root, data_format, num_classes, max_bad = f"{args.format} files", args.path, args.format, None, 0.05
        else:
            cfg = compose("train", overrides)
            if cfg.data.get("prepare") is not None:
                hydra.utils.instantiate(cfg.data.prepare)()
            readers = {split: hydra.utils.instantiate(cfg.data[f"{split}_reader"]) for split in ("train", "val")}
            name = next((o.split("=", 1)[1] for o in overrides if o.startswith("data=")), "(train.yaml default)")
            root, data_format, num_classes = cfg.data.get("root"), cfg.data.get("format"), cfg.data.get("num_classes")
            max_bad = cfg.data.get("max_bad_fraction", 0.05)
    except Exception as error:  # a folder that is not recognised, a config that does not compose / instantiate
        print(f"ERROR: {type(error).__name__}: {error}")
        return 1
    max_bad = args.max_bad_fraction if args.max_bad_fraction is not None else max_bad
    print(f"dataset: {name}  root: {os.path.normpath(str(root)) if root else None}  format: {data_format}  "
          f"max_bad_fraction: {max_bad}")
    result = check(readers, num_classes, max_bad, args.decode)
    print(result.summary(per_class=args.per_class))
    if result.usable and not args.no_doctor:
        try:  # --format: the model of train.yaml at the img_size of configs/data/custom_<format>
            cfg = cfg or compose("train", [f"data=custom_{args.format}", *overrides])
        except FileNotFoundError as error:
            print(f"doctor skipped: {error}")
        else:
            _run_doctor(result, cfg, name, Path(str(root)) if root else None, Path(args.out) if args.out else None)
    print("RESULT: " + ("usable" if result.usable else "NOT usable"))
    if result.usable and not args.format:  # the path and data=... forms: the training config's overrides
        print("train on it with:\n  python train.py " + " ".join(map(_shell_word, overrides)))
    return 0 if result.usable else 1


def _run_doctor(result: DatasetCheck, cfg: DictConfig, name: str, root: Path | None, out: Path | None) -> None:
    """Print the doctor's report (detector.data.doctor) on the first split of `result` for the model of `cfg` at its
    data.img_size, and write its box-size histogram and label statistics (a training run's labels.png) into `out`
    (default: logs/check_dataset/<the dataset folder's name>)."""
    from omegaconf import OmegaConf

    from detector.assigners.tal import widen_small_boxes
    from detector.data.doctor import diagnose, plot_labels, plot_sizes, report_lines
    from detector.models.build import model_priors

    names = result.class_names
    OmegaConf.update(cfg, "data.num_classes", len(names), force_add=True)
    img_size = int(cfg.data.img_size)
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    priors = model_priors(model_config, img_size)
    threshold = float(cfg.assigner.get("iou_threshold", 0.5) or 0.5)
    split = result.splits[0]
    diagnosis = diagnose(split.records, len(names), img_size, priors, threshold,
                         widen=functools.partial(widen_small_boxes, priors=priors))
    print(f"\ndoctor: [{split.name}] {len(diagnosis.sizes)} boxes, for {model_config['_target_'].rsplit('.', 1)[-1]} "
          f"at data.img_size={img_size}")
    print("\n".join(report_lines(diagnosis, names)))
    folder = name if root is None else (root if root.is_dir() else root.parent).resolve().name  # a folder or a file in it
    out = out or project_root() / "logs" / "check_dataset" / folder
    title, stem = f"{name} [{split.name}] at img_size {img_size}", split.name.replace("/", "_")
    print(f"box-size histogram: {plot_sizes(diagnosis, out / f'box_sizes_{stem}.png', title=title)}")
    path = plot_labels(diagnosis, names, out / f"labels_{stem}.png", title=title)
    print(f"label statistics (a training run's labels.png): {path}")


def _shell_word(word: str) -> str:
    """`word` quoted for a POSIX shell: in double quotes when that suffices (readable: "data.root='a b'")."""
    if shlex.quote(word) == word or set('"$`\\!') & set(word):
        return shlex.quote(word)
    return f'"{word}"'


def path_overrides(path: str | Path) -> list[str]:
    """The overrides that train on the dataset folder `path` (`data=auto`, its absolute path as data.root, quoted for
    Hydra when it holds characters that its override grammar reserves)."""
    root = os.path.abspath(os.path.expanduser(str(path)))
    if not re.fullmatch(r"[\w./\-~+@%]+", root):
        root = "'" + root.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return ["data=auto", f"data.root={root}"]


VISUALIZE_USAGE = """Draw what assigners do on a few images of a dataset: per GT box its positive anchors, one panel per level.

    python scripts/visualize_assignment.py [assigner=tal,atss,simota] [data=...] [model=...] [key=value ...]
    python scripts/visualize_assignment.py data=shapes_tiny assigner=tal,tal_small num_images=4
    python scripts/visualize_assignment.py model=ssd_csp_n data.img_size=320 split=train
    python scripts/visualize_assignment.py ckpt_path=logs/train/runs/<run>/checkpoints/best.ckpt assigner=tal,atss

Any override of train.py composes the same config (configs/visualize_assignment.yaml adds ckpt_path, split,
first_image, num_images, device, output_dir); a sweep (`assigner=tal,atss`, `assigner.topk=10,13`) gives one row of
the same figure per value, with the model and images of the first. Writes <output_dir>/<image>.png and
<output_dir>/summary.txt (a line per GT: positives per level, best IoU).
"""


def sweep_labels(rows: Sequence[Sequence[str]], configs: Path) -> list[str]:
    """A label per job of a sweep (`expand_grid`): the overrides that differ between the jobs, a config group's as
    its option (`atss`, the group being a folder of `configs`), any other as key=value; "" for a single job."""
    def word(override: str) -> str:
        key, value = override.split("=", 1)
        return value if (configs / key).is_dir() else override

    swept = [j for j in range(len(rows[0])) if len({row[j] for row in rows}) > 1] if rows else []
    return [" ".join(word(row[j]) for j in swept) for row in rows]


def visualize_assignment(argv: list[str] | None = None) -> int:
    """`detector-visualize-assignment [assigner=tal,atss] [key=value ...]` (--help): draw assigned anchors."""
    from detector.diagnostics.assignment import visualize_assignments
    from detector.sweeps import expand_grid

    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(VISUALIZE_USAGE)
        return 0
    rows = expand_grid(argv)
    configs = {}
    for row, label in zip(rows, sweep_labels(rows, config_dir())):
        cfg = compose("visualize_assignment", row, return_hydra_config=True)
        configs[label or cfg.hydra.runtime.choices.assigner] = cfg
    try:
        lines = visualize_assignments(configs)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    first = next(iter(configs.values()))
    print("\n".join(lines))
    print(f"wrote {sum(not line.startswith(' ') for line in lines)} figures and summary.txt to {first.output_dir}")
    return 0


def convert_ultralytics(argv: list[str] | None = None) -> int:
    """`detector-convert-ultralytics yolov8n.pt out.ckpt [--debug]`: an ultralytics YOLOv8 detection checkpoint -> a
    checkpoint of this project (detector.training.yolov8_import); returns 0 once written, and a file that cannot be
    read, converted or written exits with status 2 and `error: <file>: <reason>` on stderr."""
    from detector.training.yolov8_import import convert_checkpoint

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
