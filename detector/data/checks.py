"""Start-up dataset check: what a reader returned -> the records that are safe to train on, plus a report.

Run by `DetectionDataModule.setup` on every split and by `check_dataset` (the command line of
`scripts/check_dataset.py` / `detector-check-dataset`, at the end of this module). Per image:
- missing or unreadable image file (header read; `decode=True` decodes fully): the image is skipped and
  counted; more than `max_bad_fraction` of such images stops the run with `DatasetError`;
- width/height unknown (0) are filled in from the file; a size that differs from the annotation is
  replaced by the real one (counted, warned: the boxes may not fit that image);
- no boxes: a valid background image (counted);
- per box: non-finite coordinates -> dropped; zero or negative width/height -> dropped; partly outside
  the image -> clipped to it; entirely outside -> dropped (each counted); labels outside 0..C-1 ->
  `DatasetError` naming the image (the readers already name the file and line/object).
Crowd / ignore regions get the same geometric clean-up, silently.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from detector.data.dataset import Record, read_image_size

# boxes sticking out of the image by at most this many pixels are clipped silently (float noise)
CLIP_TOLERANCE = 0.5


class DatasetError(ValueError):
    """The dataset cannot be used as it is (too many bad images, bad labels, duplicate ids, ...)."""


@dataclass
class DatasetReport:
    name: str
    class_names: list[str]
    images: int = 0  # images the reader listed
    missing_images: list[str] = field(default_factory=list)
    unreadable_images: list[str] = field(default_factory=list)
    resized_images: list[str] = field(default_factory=list)  # annotated size != real size
    background_images: int = 0
    boxes: int = 0  # kept training boxes
    crowd_boxes: int = 0
    boxes_nonfinite: int = 0
    boxes_degenerate: int = 0
    boxes_clipped: int = 0
    boxes_outside: int = 0
    class_counts: list[int] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)  # the first problems, one line each

    MAX_EXAMPLES = 20

    @property
    def bad_images(self) -> int:
        return len(self.missing_images) + len(self.unreadable_images)

    @property
    def usable_images(self) -> int:
        return self.images - self.bad_images

    @property
    def problems(self) -> int:
        return (self.bad_images + len(self.resized_images) + self.boxes_nonfinite + self.boxes_degenerate
                + self.boxes_clipped + self.boxes_outside)

    def note(self, message: str) -> None:
        if len(self.examples) < self.MAX_EXAMPLES:
            self.examples.append(message)

    def summary(self, per_class: bool = False) -> str:
        present = sum(c > 0 for c in self.class_counts)
        lines = [(
            f"[{self.name}] {self.usable_images}/{self.images} images usable, {self.boxes} boxes"
            f" ({self.crowd_boxes} crowd/ignore), {present}/{len(self.class_names)} classes present,"
            f" {self.background_images} background images (no boxes)"
        )]
        problems = {
            "missing images (skipped)": len(self.missing_images),
            "unreadable images (skipped)": len(self.unreadable_images),
            "images whose size differs from the annotation (real size used)": len(self.resized_images),
            "boxes with non-finite coordinates (dropped)": self.boxes_nonfinite,
            "boxes with zero or negative area (dropped)": self.boxes_degenerate,
            "boxes partly outside the image (clipped)": self.boxes_clipped,
            "boxes entirely outside the image (dropped)": self.boxes_outside,
        }
        found = {k: v for k, v in problems.items() if v}
        lines.append(f"[{self.name}] problems: " + (", ".join(f"{v} {k}" for k, v in found.items()) if found else "none"))
        lines += [f"[{self.name}]   {example}" for example in self.examples]
        if per_class:
            width = max((len(n) for n in self.class_names), default=4)
            lines += [f"[{self.name}]   {i:3d} {n:<{width}} {c}" for i, (n, c) in enumerate(zip(self.class_names, self.class_counts))]
        return "\n".join(lines)


def check_records(
    records: Sequence[Record], class_names: Sequence[str], name: str = "dataset", max_bad_fraction: float = 0.05,
    verify_images: bool = True, decode: bool = False, num_threads: int = 8,
) -> tuple[list[Record], DatasetReport]:
    """Clean records (bad images skipped, boxes clipped/dropped) and the report; DatasetError when unusable."""
    report = DatasetReport(name, list(class_names), images=len(records), class_counts=[0] * len(class_names))
    if not records:
        raise DatasetError(f"[{name}] the reader found no images")
    ids = [r.image_id for r in records]
    if len(set(ids)) != len(ids):
        seen, duplicate = set(), None
        for record in records:
            if record.image_id in seen:
                duplicate = record
                break
            seen.add(record.image_id)
        raise DatasetError(f"[{name}] duplicate image id {duplicate.image_id} (e.g. {duplicate.image_path})")
    all_labels = np.concatenate([np.concatenate([r.labels.reshape(-1), r.crowd_labels.reshape(-1)]) for r in records])
    if ((all_labels < 0) | (all_labels >= len(class_names))).any():
        for record in records:
            for labels in (record.labels, record.crowd_labels):
                bad = (labels < 0) | (labels >= len(class_names))
                if bad.any():
                    raise DatasetError(f"[{name}] {record.image_path}: class id {int(labels[bad][0])} out of range 0..{len(class_names) - 1}")

    chunks = [records[i:i + 256] for i in range(0, len(records), 256)]  # a task per chunk: thread overhead per image is large
    with ThreadPoolExecutor(num_threads) as pool:
        sizes = [size for chunk in pool.map(lambda rs: [_probe(r, verify_images, decode) for r in rs], chunks) for size in chunk]
    shapes = [size if isinstance(size, tuple) else (r.width, r.height) for r, size in zip(records, sizes)]
    boxes, crowd = _BoxCheck(records, shapes, "boxes", "labels"), _BoxCheck(records, shapes, "crowd", "crowd_labels")
    clean, kept_labels = [], []
    for i, (record, size) in enumerate(zip(records, sizes)):
        if size == "missing":
            report.missing_images.append(str(record.image_path))
            report.note(f"missing image: {record.image_path}")
            continue
        if size is None:
            report.unreadable_images.append(str(record.image_path))
            report.note(f"unreadable image: {record.image_path}")
            continue
        if size != (record.width, record.height):
            if record.width > 0 and record.height > 0:
                report.resized_images.append(str(record.image_path))
                report.note(f"{record.image_path}: annotated size {record.width}x{record.height}, real size {size[0]}x{size[1]}")
        record_boxes, labels = boxes.clean(i, record, size, report)
        record_crowd, crowd_labels = crowd.clean(i, record, size, None)
        record = dataclasses.replace(record, width=size[0], height=size[1], boxes=record_boxes, labels=labels,
                                     crowd=record_crowd, crowd_labels=crowd_labels)
        report.boxes += len(record_boxes)
        report.crowd_boxes += len(record_crowd)
        report.background_images += len(record_boxes) == 0
        kept_labels.append(labels)
        clean.append(record)
    if kept_labels:
        report.class_counts = np.bincount(np.concatenate(kept_labels), minlength=len(class_names)).tolist()

    if report.bad_images > max_bad_fraction * report.images or not clean:
        raise DatasetError(
            f"[{name}] {report.bad_images} of {report.images} images are missing or unreadable "
            f"({report.bad_images / report.images:.1%} > max_bad_fraction={max_bad_fraction:.1%}); first ones: "
            + "; ".join((report.missing_images + report.unreadable_images)[:5])
            + ". Fix the paths/files or raise data.max_bad_fraction."
        )
    return clean, report


def _probe(record: Record, verify_images: bool, decode: bool) -> tuple[int, int] | str | None:
    """(width, height) of the image; "missing"; or None when unreadable. Without `verify_images` only the
    existence is checked (sizes still read when the record does not know them)."""
    path = record.image_path
    if not path.is_file():
        return "missing"
    if decode:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        return None if image is None else (image.shape[1], image.shape[0])
    if verify_images or record.width <= 0 or record.height <= 0:
        return read_image_size(path)
    return record.width, record.height


class _BoxCheck:
    """The geometric clean-up of every record's boxes (`boxes_attr`, `labels_attr`) at once, in whole arrays: boxes
    with non-finite coordinates, zero or negative area, or entirely outside the image are dropped, boxes partly outside
    are clipped; `clean` gives one record's result and counts and notes its problems in the report."""

    def __init__(self, records: Sequence[Record], shapes: Sequence[tuple[int, int]], boxes_attr: str, labels_attr: str) -> None:
        per_record = [getattr(r, boxes_attr).reshape(-1, 4) for r in records]
        counts = np.array([len(b) for b in per_record], np.int64)
        for record, boxes in zip(records, per_record):
            if len(boxes) != getattr(record, labels_attr).size:
                raise DatasetError(f"{record.image_path}: {len(boxes)} {boxes_attr} but {getattr(record, labels_attr).size} labels")
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).tolist()
        self.boxes = np.concatenate(per_record).astype(np.float32) if records else np.zeros((0, 4), np.float32)
        self.labels = np.concatenate([getattr(r, labels_attr).reshape(-1) for r in records]).astype(np.int64)
        sides = np.asarray(shapes, np.float32).reshape(-1, 2)
        limits = np.repeat(np.concatenate([sides, sides], 1), counts, 0)
        boxes = self.boxes
        self.finite = np.isfinite(boxes).all(1)
        self.degenerate = self.finite & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
        self.clipped = np.clip(boxes, 0, limits)
        outside_by = np.maximum(np.maximum(-boxes, 0), np.maximum(boxes - limits, 0)).max(1, initial=0)
        empty_after_clip = (self.clipped[:, 2] <= self.clipped[:, 0]) | (self.clipped[:, 3] <= self.clipped[:, 1])
        self.outside = self.finite & ~self.degenerate & empty_after_clip
        self.was_clipped = self.finite & ~self.degenerate & ~self.outside & (outside_by > CLIP_TOLERANCE)
        self.keep = self.finite & ~self.degenerate & ~self.outside
        self.problem = ~self.keep | self.was_clipped

    def clean(self, index: int, record: Record, size: tuple[int, int], report: DatasetReport | None) -> tuple[np.ndarray, np.ndarray]:
        """Record `index`'s kept boxes and labels; `size` is its image's (width, height) (it must be the one given
        for it to the constructor)."""
        a, b = self.offsets[index], self.offsets[index + 1]
        keep = self.keep[a:b]
        if report is not None and self.problem[a:b].any():
            boxes, finite, degenerate = self.boxes[a:b], ~self.finite[a:b], self.degenerate[a:b]
            outside, was_clipped = self.outside[a:b], self.was_clipped[a:b]
            report.boxes_nonfinite += int(finite.sum())
            report.boxes_degenerate += int(degenerate.sum())
            report.boxes_outside += int(outside.sum())
            report.boxes_clipped += int(was_clipped.sum())
            for mask, what in ((finite, "non-finite"), (degenerate, "zero/negative area"), (outside, "outside the image"),
                               (was_clipped, "clipped to the image")):
                for i in np.flatnonzero(mask)[:2]:
                    report.note(f"{record.image_path}: box {i} {np.round(boxes[i], 2).tolist()} ({size[0]}x{size[1]}) {what}")
        return self.clipped[a:b][keep], self.labels[a:b][keep]


# ---------------------------------------------------------------------------------------------- command line

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


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=CHECK_DATASET_USAGE.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=CHECK_DATASET_USAGE.split("\n\n", 1)[1])
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
    return parser.parse_known_args(argv)


def readers_from_config(overrides: list[str], config_dir: Path) -> tuple[dict, dict]:
    """{split: reader} from the training config (train.yaml in `config_dir`) composed with `overrides`, and info
    about it (name, root, format, classes, ...)."""
    import hydra

    if not Path(config_dir).is_dir():
        raise FileNotFoundError(f"no configs folder at {config_dir}: the data=... form composes the repository's "
                                "configs (set PROJECT_ROOT=<repository>), or check files directly with --format")
    cfg = compose_train_config(overrides, config_dir)
    data = cfg.data
    if data.get("prepare") is not None:
        hydra.utils.instantiate(data.prepare)()
    readers = {split: hydra.utils.instantiate(data[f"{split}_reader"]) for split in ("train", "val")}
    info = {
        "cfg": cfg,
        "data": next((o.split("=", 1)[1] for o in overrides if o.startswith("data=")), "(train.yaml default)"),
        "root": data.get("root"), "format": data.get("format"), "num_classes": data.get("num_classes"),
        "max_bad_fraction": data.get("max_bad_fraction", 0.05),
    }
    return readers, info


def readers_from_args(args: argparse.Namespace) -> tuple[dict, dict]:
    from functools import partial

    if not args.path:
        raise SystemExit("--path is required with --format")
    if args.format == "yolo":
        from detector.data.formats.yolo import read_yolo

        readers = {split: partial(read_yolo, args.path, split) for split in args.split or ["train", "val"]}
    elif args.format == "coco":
        from detector.data.formats.coco import read_coco

        if not args.images:
            raise SystemExit("--images (the image folder) is required with --format coco")
        readers = {Path(args.path).stem: partial(read_coco, args.images, args.path)}
    else:
        from detector.data.formats.voc import read_voc

        classes = args.classes[0] if args.classes and len(args.classes) == 1 and (
            args.classes[0] == "collect" or Path(args.classes[0]).is_file()) else args.classes
        readers = {}
        for split in args.split or ["train", "val"]:
            year, _, name = split.rpartition("/")
            readers[split] = partial(read_voc, args.path, [[year or ".", name]], class_names=classes)
    return readers, {"data": f"{args.format} files", "root": args.path, "format": args.format, "num_classes": None,
                     "max_bad_fraction": 0.05}


def check_dataset(argv: list[str] | None, config_dir: Path) -> int:
    """The command line (`argv`, None: sys.argv[1:]; see CHECK_DATASET_USAGE): prints the report of every split
    and returns the exit status, 0 = usable, 1 = not usable. `config_dir`: the configs/ folder of the data=... form."""
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    path = next((o for o in overrides if "=" not in o), None)
    try:
        if path is not None:  # only a path: detect the layout, check it as data=auto
            from detector.data.layout import detect_layout

            print(detect_layout(path).summary())
            overrides = [*path_overrides(path), *(o for o in overrides if o != path)]
        readers, info = readers_from_args(args) if args.format else readers_from_config(overrides, config_dir)
    except Exception as error:  # a folder that is not recognised, a config that does not compose / instantiate
        print(f"ERROR: {type(error).__name__}: {error}")
        return 1
    max_bad = args.max_bad_fraction if args.max_bad_fraction is not None else info["max_bad_fraction"]
    root = os.path.normpath(str(info["root"])) if info["root"] else None
    print(f"dataset: {info['data']}  root: {root}  format: {info['format']}  max_bad_fraction: {max_bad}")
    usable, names_seen, checked = True, {}, {}
    for split, reader in readers.items():
        start = time.perf_counter()
        try:
            records, names, _ = reader()
            if info["num_classes"] is not None and len(names) != info["num_classes"]:
                raise ValueError(f"data.num_classes={info['num_classes']} but the dataset has {len(names)} classes")
            checked[split], report = check_records(records, names, name=split, max_bad_fraction=max_bad, decode=args.decode)
        except (ValueError, OSError) as error:
            print(f"[{split}] ERROR: {error}")
            usable = False
            continue
        names_seen[split] = names
        print(report.summary(per_class=args.per_class) + f"\n[{split}] checked in {time.perf_counter() - start:.1f} s")
    if len({tuple(n) for n in names_seen.values()}) > 1:
        print(f"ERROR: the splits have different class names: {names_seen}")
        usable = False
    if names_seen:
        names = next(iter(names_seen.values()))
        print(f"{len(names)} classes: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
    if usable and not args.no_doctor and checked:
        run_doctor(checked, names, info, args, overrides, config_dir)
    print("RESULT: " + ("usable" if usable else "NOT usable"))
    if usable and info.get("cfg") is not None:  # the path and data=... forms: the training config's overrides
        print("train on it with:\n  python train.py " + " ".join(map(_shell_word, overrides)))
    return 0 if usable else 1


def run_doctor(checked: dict[str, list[Record]], names: list[str], info: dict, args: argparse.Namespace,
               overrides: list[str], config_dir: Path) -> None:
    """Print the doctor's report (detector.data.doctor) on the first split, for the model of the training config
    (the data=... form's, else train.yaml's with the overrides and the img_size of configs/data/custom_<format>),
    and write its box-size histogram and label statistics (the figure of a training run's labels.png)."""
    from omegaconf import OmegaConf

    from detector.data.doctor import diagnose, model_priors, plot_labels, plot_sizes, report_lines

    cfg = info.get("cfg")
    if cfg is None:
        cfg = compose_train_config([f"data=custom_{args.format}", *overrides], config_dir)
    OmegaConf.update(cfg, "data.num_classes", len(names), force_add=True)
    img_size = int(cfg.data.img_size)
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    priors = model_priors(model_config, img_size)
    threshold = float(cfg.assigner.get("iou_threshold", 0.5) or 0.5)
    split, records = next(iter(checked.items()))
    diagnosis = diagnose(records, len(names), img_size, priors, threshold)
    model_name = model_config["_target_"].rsplit(".", 1)[-1]
    print(f"\ndoctor: [{split}] {len(diagnosis.sizes)} boxes, for {model_name} at data.img_size={img_size}")
    print("\n".join(report_lines(diagnosis, names)))
    root = Path(str(info["root"])) if info.get("root") else None  # a dataset folder, or a file in it (--format)
    name = info["data"] if root is None else (root if root.is_dir() else root.parent).resolve().name
    out = Path(args.out) if args.out else config_dir.parent / "logs" / "check_dataset" / name
    title = f"{info['data']} [{split}] at img_size {img_size}"
    path = plot_sizes(diagnosis, out / f"box_sizes_{split.replace('/', '_')}.png", title=title)
    print(f"box-size histogram: {path}")
    path = plot_labels(diagnosis, names, out / f"labels_{split.replace('/', '_')}.png", title=title)
    print(f"label statistics (a training run's labels.png): {path}")


def compose_train_config(overrides: list[str], config_dir: Path):
    """The training config (train.yaml in `config_dir`) composed with `overrides`."""
    from hydra import compose, initialize_config_dir

    from detector.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


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
