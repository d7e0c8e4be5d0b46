"""Which format and layout a dataset folder has, and a reader for it: `data=auto data.root=<folder>`.

Recognised (the first of a format that matches; more than one format in a folder is refused):
- YOLO: an ultralytics data.yaml (`names:`, `train:`, `val:`) at the root; else `images/` + `labels/` (with or
  without `train/` `val/` subfolders), `train/ valid/ test/` each holding `images/` + `labels/`, or the label
  txt beside the images (LabelImg). Class names: data.yaml, else a names file (classes.txt, obj.names, ...),
  else the class ids.
- COCO json: `train/ valid/ test/` each with its json beside the images (Roboflow `_annotations.coco.json`),
  `annotations/*.json` (split by the file names: train.json, instances_val2017.json, ...), or one json at the root.
  The image folder of a json is found from its first image's file_name; a category without boxes that is the
  supercategory of others (Roboflow's category 0, the dataset's name) is left out.
- Pascal VOC xml: `Annotations/` + `JPEGImages/` (split by `ImageSets/Main/{train,val}.txt` when present),
  `annotations/` + `images/` (LabelImg, CVAT), `train/ valid/ test/` with xml beside the images (Roboflow), or the
  xml beside the images at the root. Class names: the sorted names of every xml.

A dataset without a split is split by `detector.data.split.holdout_split` (`val_fraction`, default 0.2).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import yaml

from detector.data.dataset import IMAGE_SUFFIXES, Record
from detector.data.formats.coco import read_coco
from detector.data.formats.voc import collect_class_names, read_voc
from detector.data.formats.yolo import largest_class_id, load_data_yaml, read_names_file, read_yolo, read_yolo_folder
from detector.data.split import DEFAULT_VAL_FRACTION, holdout_split

SPLIT_FOLDERS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test",)}
NAMES_FILES = ("classes.txt", "obj.names", "names.txt", "classes.names", "labels.txt")
Result = tuple[list[Record], list[str], list[int]]

log = logging.getLogger(__name__)


class LayoutError(ValueError):
    """The folder holds no dataset that the readers recognise, or several formats at once."""


@dataclass
class Layout:
    """A recognised dataset: `readers` maps "train", "val" (and "test") to a reader, or "all" to the reader of the
    whole dataset when it has no split; a reader takes the class names (None: those of the data)."""

    root: Path
    format: str  # yolo | coco | voc
    description: str
    readers: dict[str, Callable[[Sequence[str] | None], Result]]
    data_class_names: Callable[[], list[str]]
    notes: list[str] = field(default_factory=list)

    @property
    def has_split(self) -> bool:
        return "all" not in self.readers

    def class_names(self, class_names: Sequence[str] | None = None) -> list[str]:
        """`class_names` when given, else the class names of the data."""
        return [str(n) for n in class_names] if class_names is not None else self.data_class_names()

    def summary(self) -> str:
        parts = "no split (a seeded train/val split is made)" if not self.has_split else f"splits {', '.join(self.readers)}"
        return "\n".join([f"{self.format} dataset: {self.description}; {parts}", *(f"note: {n}" for n in self.notes)])


def read_dataset(
    root: str | Path, split: str = "train", class_names: Sequence[str] | None = None,
    val_fraction: float | None = None, split_seed: int = 0,
) -> Result:
    """The reader of `data=auto`: records of `split` (train / val / test) of the dataset in `root`, whatever its
    layout. A dataset without a split gets `holdout_split(val_fraction or 0.2, split_seed)`; `val_fraction` given
    for a dataset with its own split is an error."""
    layout = detect_layout(root)
    log.info("[%s] %s", split, layout.summary())
    for note in layout.notes:
        log.warning("%s: %s", layout.root, note)
    if layout.has_split:
        if val_fraction is not None:
            raise ValueError(
                f"data.val_fraction={val_fraction}, but {layout.root} has its own split ({', '.join(layout.readers)}: "
                f"{layout.description}); remove data.val_fraction (it splits datasets that have none)"
            )
        if split not in layout.readers:
            raise ValueError(f"{layout.root} has no '{split}' split (has: {', '.join(layout.readers)})")
        return layout.readers[split](class_names)
    records, names, category_ids = layout.readers["all"](class_names)
    train, val = holdout_split(records, DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction, split_seed)
    parts = {"train": train, "val": val}
    if split not in parts:
        raise ValueError(f"{layout.root} has no split of its own: its parts are train and val, not '{split}'")
    return parts[split], names, category_ids


def dataset_num_classes(root: str, class_names: Sequence[str] | None = None) -> int:
    """`${dataset_num_classes:${.root},${.class_names}}`: the number of classes of the dataset in `root`."""
    return len(detect_layout(root).class_names(class_names))


def detect_layout(root: str | Path) -> Layout:
    """The format and layout of the dataset in `root`; LayoutError saying what was found when none (or several
    formats) is recognised."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LayoutError(f"data.root={root} is not a folder")
    found = _layouts(root)
    if len(found) > 1:
        raise LayoutError(
            f"{root} mixes dataset formats: " + "; ".join(f"{layout.format}: {layout.description}" for layout in found)
            + ". Keep one format per dataset folder (or point data.root at the folder of one)"
        )
    if found:
        return found[0]
    images = sum(1 for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    what = f"{images} images but no annotations" if images else "no images and no annotations"
    inside = [str(d) for d in sorted(root.iterdir()) if d.is_dir() and len(_layouts(d)) == 1]
    raise LayoutError(
        f"{root}: {what} that a reader recognises. Expected one of: YOLO (data.yaml, or images/ + labels/ with "
        "classes.txt), COCO json (annotations/*.json, or train/ valid/ each with _annotations.coco.json), Pascal VOC "
        "xml (Annotations/ + JPEGImages/, annotations/ + images/, or the xml beside the images). See docs/data.md"
        + (f". A dataset was found in {', '.join(inside)}: point data.root there" if inside else "")
    )


def _layouts(root: Path) -> list[Layout]:
    """The layouts found in `root`: an ultralytics data.yaml alone (it describes the dataset), else those of each
    format that matches."""
    data_yaml = next((p for p in sorted([*root.glob("*.yaml"), *root.glob("*.yml")]) if _is_data_yaml(p)), None)
    if data_yaml is not None:
        return [_yolo_yaml(root, data_yaml)]
    return [layout for layout in (_yolo(root), _coco(root), _voc(root)) if layout is not None]


# ---------------------------------------------------------------------------------------------- YOLO


def _is_data_yaml(path: Path) -> bool:
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return False
    return isinstance(raw, dict) and "names" in raw and "train" in raw


def _yolo_yaml(root: Path, data_yaml: Path) -> Layout:
    spec = load_data_yaml(data_yaml)
    splits = [s for s in ("train", "val", "test") if spec.raw.get(s)]
    readers = {s: _ordered(partial(read_yolo, data_yaml, s)) for s in splits}
    if "val" not in readers:
        readers = {"all": readers["train"]}
    return Layout(root, "yolo", f"ultralytics {data_yaml.name}", readers, lambda: list(spec.names))


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def _has_txt_labels(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix == ".txt" and p.name not in NAMES_FILES for p in folder.rglob("*.txt"))


def _split_dirs(base: Path, accept: Callable[[Path], bool]) -> dict[str, Path]:
    """{train / val / test: folder} of the split folders under `base` that `accept` takes."""
    out = {}
    for split, names in SPLIT_FOLDERS.items():
        folder = next((base / n for n in names if accept(base / n)), None)
        if folder is not None:
            out[split] = folder
    return out


def _yolo(root: Path) -> Layout | None:
    names_file = next((d / n for d in (root, root / "labels") for n in NAMES_FILES if (d / n).is_file()), None)
    pairs: dict[str, tuple[Path, Path]] = {}
    if (root / "images").is_dir() and _has_txt_labels(root / "labels"):
        sub = _split_dirs(root / "images", lambda d: d.is_dir())
        if "train" in sub and "val" in sub:
            pairs = {s: (d, root / "labels" / d.name) for s, d in sub.items()}
            description = "images/<split>/ + labels/<split>/"
        else:
            pairs = {"all": (root / "images", root / "labels")}
            description = "images/ + labels/"
    else:
        sub = _split_dirs(root, lambda d: (d / "images").is_dir() and _has_txt_labels(d / "labels"))
        if sub:
            pairs = {s: (d / "images", d / "labels") for s, d in sub.items()}
            description = "<split>/images/ + <split>/labels/"
        elif _has_images(root) and any(p.with_suffix(".txt").is_file() for p in root.iterdir()
                                       if p.suffix.lower() in IMAGE_SUFFIXES):
            pairs = {"all": (root, root)}
            description = "label txt beside the images"
    if not pairs:
        return None
    if "train" in pairs and "val" not in pairs:
        pairs = {"all": pairs["train"]}

    def data_names() -> list[str]:
        if names_file is not None:
            return read_names_file(names_file)
        labels = [f for _, folder in pairs.values() for f in folder.rglob("*.txt") if f.name not in NAMES_FILES]
        return [str(i) for i in range(max((largest_class_id(f) for f in labels), default=-1) + 1)]

    def reader(images: Path, labels: Path, class_names: Sequence[str] | None) -> Result:
        if names_file is None:
            return read_yolo_folder(images, labels, class_names if class_names is not None else data_names())
        return _reorder(read_yolo_folder(images, labels, names_file), class_names, names_file)

    notes = [] if names_file else ["no names file (classes.txt, obj.names): the class ids are the names; "
                                   "give them with data.class_names=[...]"]
    readers = {s: partial(reader, *p) for s, p in pairs.items()}
    description += f", names from {names_file.relative_to(root)}" if names_file else ""
    return Layout(root, "yolo", f"YOLO txt, {description}", readers, data_names, notes)


# ---------------------------------------------------------------------------------------------- COCO


def _coco_json(path: Path) -> bool:
    """A COCO detection json: "images" and "categories" lists (files over 50 MB: "images" among their first 64 kB)."""
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        if path.stat().st_size > 50_000_000:
            with open(path) as f:
                return '"images"' in f.read(65536)
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return False
    return isinstance(data, dict) and isinstance(data.get("images"), list) and isinstance(data.get("categories"), list)


def _json_split(path: Path) -> str | None:
    stem = path.stem.lower()
    for split, names in SPLIT_FOLDERS.items():
        if any(name in stem for name in names):
            return split
    return None


def _image_dir(data: dict, annotation_file: Path, root: Path, split: str | None) -> Path:
    """The folder that holds the images of `annotation_file` (its content: `data`): the first candidate where its
    first image exists."""
    first = next((image.get("file_name") for image in data.get("images", []) if isinstance(image, dict)), None)
    names = SPLIT_FOLDERS.get(split, ()) if split else ()
    candidates = [annotation_file.parent, *(root / "images" / n for n in names), root / "images",
                  *(root / n for n in names), *(root / f"{n}2017" for n in names), root]
    for candidate in candidates:
        if first is not None and (candidate / first).is_file():
            return candidate
    return annotation_file.parent if first is None else next((c for c in candidates if c.is_dir()), root)


def _coco(root: Path) -> Layout | None:
    files: dict[str, Path] = {}
    sub = _split_dirs(root, lambda d: d.is_dir() and any(_coco_json(p) for p in d.glob("*.json")))
    if sub:
        files = {s: next(p for p in sorted(d.glob("*.json")) if _coco_json(p)) for s, d in sub.items()}
        description = "<split>/<json> beside the images (Roboflow)"
    else:
        jsons = [p for p in sorted((root / "annotations").glob("*.json")) if _coco_json(p)] or \
                [p for p in sorted(root.glob("*.json")) if _coco_json(p)]
        if not jsons:
            return None
        # instances_*.json win over other COCO files of the same split (person_keypoints_*: one class)
        by_split = {_json_split(p): p for p in sorted(jsons, key=lambda p: p.name.startswith("instances"))}
        if "train" in by_split and "val" in by_split:
            files = {s: p for s, p in by_split.items() if s is not None}
        elif len(jsons) == 1:
            files = {"all": jsons[0]}
        else:
            files = {"all": by_split.get("train", jsons[0])}
        description = f"{', '.join(str(p.relative_to(root)) for p in files.values())}"
    if "train" in files and "val" not in files:
        files = {"all": files["train"]}
    readers = {s: partial(_read_coco, p, root, None if s == "all" else s) for s, p in files.items()}
    first = files.get("train", files.get("all"))
    return Layout(root, "coco", f"COCO json, {description}", readers, lambda: _read_coco(first, root, None)[1])


def _read_coco(annotation_file: Path, root: Path, split: str | None, class_names: Sequence[str] | None = None) -> Result:
    data = json.loads(annotation_file.read_text())
    result = read_coco(_image_dir(data, annotation_file, root, split), annotation_file)
    return _reorder(_drop_grouping_categories(result, data, annotation_file), class_names, annotation_file)


def _drop_grouping_categories(result: Result, data: dict, annotation_file: Path) -> Result:
    """Without the categories that only group others: no box, and the `supercategory` of another category (Roboflow
    writes the dataset's name as category 0, the supercategory of the real classes)."""
    records, names, category_ids = result
    parents = {c.get("supercategory") for c in data["categories"] if c.get("supercategory") != c.get("name")}
    used = {int(label) for r in records for label in (*r.labels.tolist(), *r.crowd_labels.tolist())}
    keep = [i for i, name in enumerate(names) if i in used or name not in parents]
    if len(keep) == len(names):
        return result
    log.info("%s: categories %s only group the others (no boxes): left out", annotation_file,
             [names[i] for i in range(len(names)) if i not in keep])
    new_label = np.full(len(names), -1, np.int64)
    new_label[keep] = np.arange(len(keep))
    records = [Record(r.image_path, r.image_id, r.width, r.height, r.boxes, new_label[r.labels], r.crowd,
                      new_label[r.crowd_labels]) for r in records]
    return records, [names[i] for i in keep], [category_ids[i] for i in keep]


# ---------------------------------------------------------------------------------------------- VOC


def _has_xml(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*.xml"))


def _voc(root: Path) -> Layout | None:
    main = root / "ImageSets" / "Main"
    if _has_xml(root / "Annotations"):
        pairs = [("train", "val"), ("trainval", "test")]
        split = next(((a, b) for a, b in pairs if (main / f"{a}.txt").is_file() and (main / f"{b}.txt").is_file()), None)
        common = dict(annotations="Annotations", images="JPEGImages")
        if split is not None:
            readers = {"train": [".", split[0]], "val": [".", split[1]]}
            description = f"Annotations/ + JPEGImages/, ImageSets/Main/{split[0]}.txt and {split[1]}.txt"
        else:
            readers, description = {"all": [".", None]}, "Annotations/ + JPEGImages/ (no ImageSets)"
        folders = [root / "Annotations"]
    elif _has_xml(root / "annotations"):
        common = dict(annotations="annotations", images="images")
        readers, description, folders = {"all": [".", None]}, "images/ + annotations/", [root / "annotations"]
    else:
        sub = _split_dirs(root, _has_xml)
        if sub:
            common = dict(annotations=".", images=".")
            readers = {s: [d.name, None] for s, d in sub.items()}
            description, folders = "<split>/ with the xml beside the images", list(sub.values())
            if "val" not in readers:
                readers = {"all": readers["train"]}
        elif _has_xml(root):
            common = dict(annotations=".", images=".")
            readers, description, folders = {"all": [".", None]}, "the xml beside the images", [root]
        else:
            return None

    def collect() -> list[str]:
        return collect_class_names(folders)

    def reader(split: list, class_names: Sequence[str] | None) -> Result:
        return read_voc(root, [split], class_names=list(class_names) if class_names is not None else collect(), **common)

    return Layout(root, "voc", f"Pascal VOC xml, {description}", {s: partial(reader, v) for s, v in readers.items()}, collect)


# ---------------------------------------------------------------------------------------------- class order


def _ordered(read: Callable[[], Result]) -> Callable[[Sequence[str] | None], Result]:
    return lambda class_names: _reorder(read(), class_names, "the data")


def _reorder(result: Result, class_names: Sequence[str] | None, source: object) -> Result:
    """The records with labels renumbered to the order of `class_names` (None: unchanged); the names must be those
    of the data, in any order."""
    records, names, category_ids = result
    if class_names is None or list(class_names) == list(names):
        return result
    wanted = [str(n) for n in class_names]
    if sorted(wanted) != sorted(names) or len(set(wanted)) != len(wanted):
        raise ValueError(
            f"data.class_names={wanted} ({len(wanted)} classes) are not the classes of {source}: {names} "
            f"({len(names)} classes); data.class_names may only reorder them"
        )
    new_label = np.array([wanted.index(n) for n in names], np.int64)
    out = []
    for r in records:
        out.append(Record(r.image_path, r.image_id, r.width, r.height, r.boxes, new_label[r.labels],
                          r.crowd, new_label[r.crowd_labels]))
    new_ids = [category_ids[names.index(n)] for n in wanted]
    return out, wanted, new_ids
