"""YOLO txt reader (ultralytics layout) and the `data.yaml` that describes such a dataset.

    data.yaml:   path: <root>            (optional; relative to the yaml's folder; default: the yaml's folder)
                 train: images/train2017 (a folder of images, a .txt list of image paths, or a list of those)
                 val: images/val2017
                 names: [person, ...]  or  {0: person, 1: bicycle, ...}
                 nc: 80                  (optional, checked against names)
                 coco_category_ids: [1, 2, 3, ...]   (optional: COCO category id of each class; default 1..C)
                 train_json / val_json:  (optional: COCO json of the same images, for `format: coco`)

Labels are found by the ultralytics sibling rule `.../images/<split>/X.jpg -> .../labels/<split>/X.txt`,
one `class cx cy w h` line per box (normalised to [0, 1]; a polygon `class x1 y1 x2 y2 ...` line gives its
bounding box). A missing or empty label file is a background image. Malformed lines and class ids out of
range raise ValueError naming the file and line; boxes outside the image or of zero area are left to the
start-up check (`detector.data.checks`), which clips/drops and counts them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from detector.data.dataset import IMAGE_SUFFIXES, Record, image_ids_from_stems, read_image_size

log = logging.getLogger(__name__)


@dataclass
class DataYaml:
    path: Path  # the yaml file
    root: Path
    names: list[str]
    category_ids: list[int]
    raw: dict

    def split_sources(self, split: str) -> list[Path]:
        if split not in self.raw or self.raw[split] in (None, ""):
            raise ValueError(f"{self.path}: no '{split}' entry (has: {sorted(k for k in self.raw if isinstance(k, str))})")
        value = self.raw[split]
        return [self._resolve(v) for v in (value if isinstance(value, list) else [value])]

    def _resolve(self, value: str) -> Path:
        """An entry relative to the root; Roboflow's exports write `../train/images` for the `train/images` beside
        the yaml: such an entry that does not exist is taken without its leading `../` (as ultralytics does)."""
        path = Path(str(value)).expanduser()
        if path.is_absolute():
            return path
        resolved = self.root / path
        if not resolved.exists() and str(value).startswith("../") and (self.root / str(value)[3:]).exists():
            return self.root / str(value)[3:]
        return resolved


def load_data_yaml(data_yaml: str | Path) -> DataYaml:
    """Parse and validate an ultralytics-style data.yaml (names as list or dict, optional COCO ids)."""
    data_yaml = Path(data_yaml)
    try:
        raw = yaml.safe_load(data_yaml.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{data_yaml}: malformed yaml{where}: {getattr(error, 'problem', error)}") from None
    if not isinstance(raw, dict) or "names" not in raw:
        raise ValueError(f"{data_yaml}: expected a mapping with a 'names' key (class names, list or dict)")
    names_value = raw["names"]
    if isinstance(names_value, dict):
        keys = sorted(int(k) for k in names_value)
        if keys != list(range(len(keys))):
            raise ValueError(f"{data_yaml}: 'names' keys must be the class ids 0..{len(keys) - 1}, got {keys}")
        names = [str(names_value[k] if k in names_value else names_value[str(k)]) for k in keys]
    elif isinstance(names_value, list):
        names = [str(n) for n in names_value]
    else:
        raise ValueError(f"{data_yaml}: 'names' must be a list or a {{id: name}} mapping")
    if "nc" in raw and int(raw["nc"]) != len(names):
        raise ValueError(f"{data_yaml}: nc={raw['nc']} but {len(names)} names")
    category_ids = [int(c) for c in raw.get("coco_category_ids") or range(1, len(names) + 1)]
    if len(category_ids) != len(names) or len(set(category_ids)) != len(category_ids):
        raise ValueError(f"{data_yaml}: coco_category_ids must hold {len(names)} distinct ids, got {len(category_ids)}")
    root = Path(str(raw["path"])).expanduser() if raw.get("path") else data_yaml.parent
    if not root.is_absolute():
        root = data_yaml.parent / root
    return DataYaml(data_yaml, root, names, category_ids, raw)


def list_images(sources: list[Path]) -> list[Path]:
    """Image files of folders (recursively, sorted) and of .txt lists (lines relative to the list's folder)."""
    images: list[Path] = []
    for source in sources:
        if source.is_dir():
            images += sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif source.suffix == ".txt" and source.is_file():
            for line in source.read_text().splitlines():
                line = line.strip()
                if line:
                    path = Path(line).expanduser()
                    images.append(path if path.is_absolute() else (source.parent / path))
        else:
            raise FileNotFoundError(f"image source {source} is neither a folder nor a .txt list of images")
    return images


def label_path(image_path: Path) -> Path:
    """Ultralytics sibling rule: the last `images` folder of the path becomes `labels`, suffix `.txt`."""
    parts = list(image_path.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image_path.with_suffix(".txt")


def parse_label_file(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (cx, cy, w, h) rows (N, 4) float64 and class ids (N,); ValueError naming file:line."""
    rows, classes = [], []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            raise ValueError(f"{path}:{lineno}: malformed label line {line.strip()!r} (expected 'class cx cy w h' numbers)") from None
        if len(values) != 5 and (len(values) < 7 or len(values) % 2 == 0):
            raise ValueError(
                f"{path}:{lineno}: malformed label line {line.strip()!r}: {len(values)} values "
                "(expected 'class cx cy w h' or a polygon 'class x1 y1 x2 y2 x3 y3 ...')"
            )
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{path}:{lineno}: non-finite value in label line {line.strip()!r}")
        cls = values[0]
        if not cls.is_integer():
            raise ValueError(f"{path}:{lineno}: class id {tokens[0]} is not an integer")
        if not 0 <= cls < num_classes:
            raise ValueError(f"{path}:{lineno}: class id {tokens[0]} out of range 0..{num_classes - 1}")
        if len(values) == 5:
            rows.append(values[1:])
        else:  # polygon (segment) label: its bounding box
            xs, ys = values[1::2], values[2::2]
            rows.append([(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)])
        classes.append(int(cls))
    return np.asarray(rows, np.float64).reshape(-1, 4), np.asarray(classes, np.int64)


def read_yolo(data_yaml: str | Path, split: str = "train", num_threads: int = 8) -> tuple[list[Record], list[str], list[int]]:
    """Records of one split (`train`, `val`, `test`, ... key of data.yaml), class names, COCO category ids."""
    spec = load_data_yaml(data_yaml)
    images = list_images(spec.split_sources(split))
    if not images:
        raise ValueError(f"{spec.path}: split '{split}' has no images ({spec.split_sources(split)})")
    records = _records(images, [label_path(p) for p in images], len(spec.names), num_threads, f"{spec.path} split {split}")
    return records, spec.names, spec.category_ids


def read_yolo_folder(
    image_dir: str | Path, label_dir: str | Path, names: Sequence[str] | str | None = None, num_threads: int = 8,
) -> tuple[list[Record], list[str], list[int]]:
    """A YOLO dataset without data.yaml: every image under `image_dir`, its labels at the same relative path under
    `label_dir` (the same folder for labels beside the images). `names`: a list, the path of a names file (one
    name per line: classes.txt, obj.names), or None = the class ids as names ("0", "1", ... up to the largest id
    in the labels, with a warning). Category ids 1..C."""
    image_dir, label_dir = Path(image_dir), Path(label_dir)
    images = list_images([image_dir])
    if not images:
        raise ValueError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    label_files = [label_dir / p.relative_to(image_dir).with_suffix(".txt") for p in images]
    if names is None:
        largest = max((largest_class_id(f) for f in label_files if f.is_file()), default=-1)
        names = [str(i) for i in range(largest + 1)]
        log.warning("%s: no class names (no data.yaml, no classes.txt / obj.names): using the class ids %s as names; "
                    "give them with data.class_names=[...]", label_dir, names)
    elif isinstance(names, (str, Path)):
        names = read_names_file(names)
    names = [str(n) for n in names]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{label_dir}: class names must be distinct and non-empty, got {names}")
    return _records(images, label_files, len(names), num_threads, str(label_dir)), names, list(range(1, len(names) + 1))


def read_names_file(path: str | Path) -> list[str]:
    """Class names, one per line (classes.txt, obj.names); blank lines skipped."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def largest_class_id(path: Path) -> int:
    """The largest class id of a label file (-1 when empty); malformed lines are reported by `parse_label_file`."""
    ids = [int(float(line.split()[0])) for line in path.read_text().splitlines()
           if line.split() and line.split()[0].replace(".", "", 1).isdigit()]
    return max(ids, default=-1)


def _records(images: list[Path], label_files: list[Path], num_classes: int, num_threads: int, where: str) -> list[Record]:
    sizes = _image_sizes(images, num_threads)
    records, missing_labels = [], 0
    for image_path, labels_file, size, image_id in zip(images, label_files, sizes, image_ids_from_stems(images)):
        if labels_file.is_file():
            xywh, classes = parse_label_file(labels_file, num_classes)
        else:
            missing_labels += 1
            xywh, classes = np.zeros((0, 4)), np.zeros(0, np.int64)
        width, height = size or (0, 0)
        if size is None:  # unreadable image: the start-up check counts and skips it
            xywh, classes = np.zeros((0, 4)), np.zeros(0, np.int64)
        cx, cy, w, h = (xywh * [width, height, width, height]).T
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).astype(np.float32).reshape(-1, 4)
        records.append(Record(image_path, image_id, width, height, boxes, classes))
    if missing_labels:
        log.info("%s: %d of %d images have no label file (background images)", where, missing_labels, len(images))
    return records


def read_data_yaml(data_yaml: str | Path, split: str = "train", format: str = "yolo") -> tuple[list[Record], list[str], list[int]]:
    """A dataset described by a data.yaml, with its labels read as `format`: `yolo` (labels/*.txt) or
    `coco` (the json named by the `<split>_json` key; images from the `<split>` folder)."""
    if format == "yolo":
        return read_yolo(data_yaml, split)
    if format != "coco":
        raise ValueError(f"unknown label format {format!r} (expected 'yolo' or 'coco')")
    from detector.data.formats.coco import read_coco

    spec = load_data_yaml(data_yaml)
    if not spec.raw.get(f"{split}_json"):
        raise ValueError(f"{spec.path}: no '{split}_json' entry (the COCO json of split '{split}')")
    sources = spec.split_sources(split)
    if len(sources) != 1 or not sources[0].is_dir():
        raise ValueError(f"{spec.path}: format=coco needs '{split}' to be one image folder, got {sources}")
    records, names, category_ids = read_coco(sources[0], spec._resolve(spec.raw[f"{split}_json"]))
    if names != spec.names:
        log.warning("%s: class names of %s differ from data.yaml names; using the json's", spec.path, spec.raw[f"{split}_json"])
    return records, names, category_ids


def _image_sizes(images: list[Path], num_threads: int) -> list[tuple[int, int] | None]:
    if len(images) < 64:
        return [read_image_size(p) for p in images]
    with ThreadPoolExecutor(num_threads) as pool:
        return list(pool.map(read_image_size, images, chunksize=64))
