"""Pascal VOC reader: `<root>/<year>/Annotations/<id>.xml` + `JPEGImages/<id>.jpg`, image lists in
`ImageSets/Main/<split>.txt`; several (year, split) lists are concatenated (e.g. VOC2007 trainval +
VOC2012 trainval). The folder names are parameters, for the layouts labelling tools export: `images/` +
`annotations/` (LabelImg, CVAT) or the xml beside the images (`annotations="."`, `images="."`: LabelImg, Roboflow).

VOC coordinates are 1-based inclusive pixel indices; with `one_based=True` (default, as detectron2 and
torchvision's references do) a box (xmin, ymin, xmax, ymax) becomes the continuous xyxy box
(xmin - 1, ymin - 1, xmax, ymax), so a box over the whole image is (0, 0, W, H).

`difficult` objects: "ignore" (default) = not trained on, and marked iscrowd in the evaluation ground
truth so that pycocotools neither rewards nor penalises detections of them (the VOC protocol's
"ignore"); "train" = ordinary boxes; "drop" = removed altogether.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detector.data.dataset import IMAGE_SUFFIXES, Record, image_ids_from_stems

log = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
DIFFICULT_MODES = ("ignore", "train", "drop")

Split = str | Sequence[str | None] | None


def read_voc(
    root: str | Path, splits: Sequence[Split] = (("VOC2007", "trainval"),), class_names: Sequence[str] | str | None = None,
    difficult: str = "ignore", one_based: bool = True, annotations: str = "Annotations", images: str = "JPEGImages",
) -> tuple[list[Record], list[str], list[int]]:
    """Records of the concatenated (year, split) lists, class names, category ids 1..C.

    root: the VOCdevkit folder (holding VOC2007/, VOC2012/), or a single VOC-layout dataset folder.
    splits: [[year_dir, split], ...]; a plain "split" (or [".", split]) means `root` itself holds
        Annotations/ JPEGImages/ ImageSets/; split None means every xml in Annotations/ and every image in
        JPEGImages/ (an image without an xml is a background image).
    class_names: None = the 20 VOC classes; a list; the path of a text file with one name per line;
        or "collect" = the sorted names found in every xml under the listed folders (give them explicitly
        when train and val must agree for sure).
    annotations, images: the xml and image folders inside each year folder ("." = the year folder itself).
    """
    if difficult not in DIFFICULT_MODES:
        raise ValueError(f"difficult={difficult!r}; expected one of {DIFFICULT_MODES}")
    root = Path(root)
    entries = [_normalise_split(s) for s in splits]
    ids = [(root / year, image_id) for year, split in entries
           for image_id in _split_ids(root / year, split, annotations, images)]
    if not ids:
        raise ValueError(f"{root}: the splits {list(splits)} list no images")
    names = _class_names(class_names, sorted({root / year / annotations for year, _ in entries}))
    label_of = {name: i for i, name in enumerate(names)}
    parsed = [_parse_xml(folder / annotations / f"{image_id}.xml", label_of, difficult, one_based) for folder, image_id in ids]
    missing_xml = sum(p is None for p in parsed)
    if missing_xml:
        log.warning("%s: %d of %d listed images have no annotation xml (treated as background images)", root, missing_xml, len(ids))
    paths = [_image_path(folder / images, image_id, (p or {}).get("filename")) for (folder, image_id), p in zip(ids, parsed)]
    records = []
    for path, image_id, p in zip(paths, image_ids_from_stems(paths), parsed):
        p = p or {"width": 0, "height": 0, "boxes": [], "labels": [], "crowd": [], "crowd_labels": []}
        records.append(Record(
            image_path=path, image_id=image_id, width=p["width"], height=p["height"],
            boxes=np.asarray(p["boxes"], np.float32).reshape(-1, 4), labels=np.asarray(p["labels"], np.int64),
            crowd=np.asarray(p["crowd"], np.float32).reshape(-1, 4), crowd_labels=np.asarray(p["crowd_labels"], np.int64),
        ))
    return records, names, list(range(1, len(names) + 1))


def _normalise_split(split: Split) -> tuple[str, str | None]:
    if split is None or isinstance(split, str):
        return ".", split
    split = list(split)
    if len(split) != 2:
        raise ValueError(f"a VOC split is [year_dir, split_name] or 'split_name', got {split}")
    return str(split[0]), None if split[1] is None else str(split[1])


def _split_ids(folder: Path, split: str | None, annotations: str, images: str) -> list[str]:
    if split is None:
        annotation_dir = folder / annotations
        if not annotation_dir.is_dir():
            raise FileNotFoundError(f"{annotation_dir} does not exist")
        xml_ids = {p.stem for p in annotation_dir.glob("*.xml")}
        image_dir = folder / images
        image_ids = {p.stem for p in image_dir.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES} if image_dir.is_dir() else set()
        return sorted(xml_ids | image_ids)
    split_file = folder / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise FileNotFoundError(
            f"VOC split file {split_file} does not exist (a dataset without split files: "
            f"python train.py data=auto data.root={folder} makes a seeded train/val split)"
        )
    return [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]


def _class_names(class_names: Sequence[str] | str | None, folders: list[Path]) -> list[str]:
    if class_names is None:
        return list(VOC_CLASSES)
    if isinstance(class_names, str) and class_names == "collect":
        return collect_class_names(folders)
    if isinstance(class_names, (str, Path)):
        names = [line.strip() for line in Path(class_names).read_text().splitlines() if line.strip()]
    else:
        names = [str(n) for n in class_names]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"class names must be distinct and non-empty, got {names}")
    return names


def collect_class_names(annotation_dirs: Sequence[Path]) -> list[str]:
    """The sorted object names of every xml in the folders."""
    found = set()
    for folder in annotation_dirs:
        for xml in sorted(Path(folder).glob("*.xml")):
            for obj in _xml_root(xml).iter("object"):
                found.add((obj.findtext("name") or "").strip())
    found.discard("")
    if not found:
        raise ValueError(f"no object names found in the xml files of {[str(f) for f in annotation_dirs]}")
    return sorted(found)


def _xml_root(xml: Path) -> ET.Element:
    try:
        return ET.parse(xml).getroot()
    except ET.ParseError as error:
        line, column = error.position
        raise ValueError(f"{xml}: malformed xml at line {line}, column {column}: {error.msg}") from None


def _number(obj: ET.Element, tag: str, xml: Path, what: str) -> float:
    text = obj.findtext(tag)
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{xml}: {what}: missing or non-numeric <{tag}> ({text!r})") from None


def _parse_xml(xml: Path, label_of: dict[str, int], difficult: str, one_based: bool) -> dict | None:
    if not xml.is_file():
        return None
    root = _xml_root(xml)
    size = root.find("size")
    width = int(_number(size, "width", xml, "<size>")) if size is not None and size.findtext("width") else 0
    height = int(_number(size, "height", xml, "<size>")) if size is not None and size.findtext("height") else 0
    out = {"filename": (root.findtext("filename") or "").strip(), "width": width, "height": height,
           "boxes": [], "labels": [], "crowd": [], "crowd_labels": []}
    offset = 1.0 if one_based else 0.0
    for k, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        what = f"object {k} ({name!r})"
        if name not in label_of:
            raise ValueError(f"{xml}: {what}: unknown class name {name!r} (classes: {list(label_of)})")
        box_element = obj.find("bndbox")
        if box_element is None:
            raise ValueError(f"{xml}: {what}: no <bndbox>")
        x1, y1, x2, y2 = (_number(box_element, tag, xml, what) for tag in ("xmin", "ymin", "xmax", "ymax"))
        flag = (obj.findtext("difficult") or "0").strip()
        is_difficult = flag not in ("0", "", "0.0", "false", "False")
        if is_difficult and difficult == "drop":
            continue
        target = "crowd" if is_difficult and difficult == "ignore" else "boxes"
        out[target].append([x1 - offset, y1 - offset, x2, y2])
        out["crowd_labels" if target == "crowd" else "labels"].append(label_of[name])
    return out


def _image_path(images: Path, image_id: str, filename: str | None) -> Path:
    default = images / f"{image_id}.jpg"
    if default.is_file():
        return default
    if filename and (images / filename).is_file():
        return images / filename
    for suffix in (*IMAGE_SUFFIXES, *(s.upper() for s in IMAGE_SUFFIXES)):
        if (images / f"{image_id}{suffix}").is_file():
            return images / f"{image_id}{suffix}"
    return default  # missing: the start-up check counts and skips it
