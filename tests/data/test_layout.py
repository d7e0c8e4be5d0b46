"""Layout detection (`data=auto`): tiny datasets in each layout that labelling tools export, their boxes and class
names, the split made for a dataset without one, data=auto composed and set up, check_dataset with only a path, and
the errors (empty folder, no annotations, mixed formats, class mismatches, val_fraction on a split dataset)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import hydra
import numpy as np
import pytest

from detector.cli import check_dataset
from detector.data.layout import LayoutError, dataset_num_classes, detect_layout, read_dataset

ROOT = Path(__file__).resolve().parents[2]

# (stem, class name, xyxy pixel box) of the images every layout below holds: 32x24 images
OBJECTS = [("a0", "cat", (2, 3, 12, 13)), ("a1", "dog", (4, 4, 20, 20)), ("a2", "cat", (1, 1, 31, 23)),
           ("a3", "dog", (10, 2, 14, 22)), ("a4", "bird", (0, 0, 8, 8))]
WIDTH, HEIGHT = 32, 24


def voc_xml(name: str, box: tuple[int, ...]) -> str:
    x1, y1, x2, y2 = box
    return (f"<annotation><size><width>{WIDTH}</width><height>{HEIGHT}</height></size><object><name>{name}</name>"
            f"<bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            "</annotation>")


def write_voc(image_dir: Path, xml_dir: Path, write_image, objects=OBJECTS) -> None:
    xml_dir.mkdir(parents=True, exist_ok=True)
    for stem, name, box in objects:
        write_image(image_dir / f"{stem}.jpg", WIDTH, HEIGHT)
        (xml_dir / f"{stem}.xml").write_text(voc_xml(name, box))


def write_coco(image_dir: Path, annotation_file: Path, write_image, objects=OBJECTS, file_prefix: str = "",
               grouping: bool = False) -> None:
    """grouping: a category 0 "pets" that is the supercategory of the others and has no box, as Roboflow writes."""
    names = ["bird", "cat", "dog"]
    images, annotations = [], []
    for k, (stem, name, (x1, y1, x2, y2)) in enumerate(objects):
        write_image(image_dir / f"{stem}.jpg", WIDTH, HEIGHT)
        images.append({"id": k + 1, "file_name": f"{file_prefix}{stem}.jpg", "width": WIDTH, "height": HEIGHT})
        annotations.append({"id": k + 1, "image_id": k + 1, "category_id": names.index(name) + 1,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0})
    annotation_file.parent.mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": n, "supercategory": "pets" if grouping else n} for i, n in enumerate(names)]
    categories = [{"id": 0, "name": "pets", "supercategory": "none"}] * grouping + categories
    annotation_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def write_yolo(image_dir: Path, label_dir: Path, write_image, names=("bird", "cat", "dog"), objects=OBJECTS) -> None:
    label_dir.mkdir(parents=True, exist_ok=True)
    for stem, name, (x1, y1, x2, y2) in objects:
        write_image(image_dir / f"{stem}.jpg", WIDTH, HEIGHT)
        cx, cy, w, h = (x1 + x2) / 2 / WIDTH, (y1 + y2) / 2 / HEIGHT, (x2 - x1) / WIDTH, (y2 - y1) / HEIGHT
        (label_dir / f"{stem}.txt").write_text(f"{names.index(name)} {cx} {cy} {w} {h}\n")


def boxes_by_stem(records) -> dict[str, tuple[list[float], int]]:
    return {r.image_path.stem: (np.round(r.boxes[0], 4).tolist(), int(r.labels[0])) for r in records}


def expected(names: list[str], objects=OBJECTS) -> dict[str, tuple[list[float], int]]:
    return {stem: ([float(v) for v in box], names.index(name)) for stem, name, box in objects}


def read_all(root: Path, class_names=None) -> tuple[list, list[str]]:
    """Every record of the dataset: train + val (the seeded split when it has none)."""
    train, names, _ = read_dataset(root, "train", class_names)
    val, val_names, _ = read_dataset(root, "val", class_names)
    assert names == val_names
    return train + val, names


# ------------------------------------------------------------------------------------------ layouts


VOC_LAYOUTS = {
    "beside": lambda root, w: write_voc(root, root, w),  # LabelImg: xml beside the images
    "images_annotations": lambda root, w: write_voc(root / "images", root / "annotations", w),  # LabelImg, CVAT
    "voc_no_imagesets": lambda root, w: write_voc(root / "JPEGImages", root / "Annotations", w),
}


@pytest.mark.parametrize("layout", sorted(VOC_LAYOUTS))
def test_voc_layouts_without_split(tmp_path, write_image, layout):
    VOC_LAYOUTS[layout](tmp_path, write_image)
    found = detect_layout(tmp_path)
    assert found.format == "voc" and not found.has_split
    records, names = read_all(tmp_path)
    assert names == ["bird", "cat", "dog"]  # sorted names of the xml
    assert boxes_by_stem(records) == expected(names)
    assert dataset_num_classes(str(tmp_path)) == 3


def test_voc_background_image_without_xml(tmp_path, write_image):
    write_voc(tmp_path / "images", tmp_path / "annotations", write_image)
    write_image(tmp_path / "images" / "empty.png", WIDTH, HEIGHT)
    records, _ = read_all(tmp_path)
    assert len(records) == 6 and sum(len(r.boxes) == 0 for r in records) == 1


def test_voc_with_imagesets_and_roboflow_folders(tmp_path, write_image):
    classic = tmp_path / "classic"
    write_voc(classic / "JPEGImages", classic / "Annotations", write_image)
    (classic / "ImageSets" / "Main").mkdir(parents=True)
    (classic / "ImageSets" / "Main" / "train.txt").write_text("a0\na1\na2\n")
    (classic / "ImageSets" / "Main" / "val.txt").write_text("a3\na4\n")
    roboflow = tmp_path / "roboflow"
    write_voc(roboflow / "train", roboflow / "train", write_image, OBJECTS[:3])
    write_voc(roboflow / "valid", roboflow / "valid", write_image, OBJECTS[3:])
    for root in (classic, roboflow):
        assert detect_layout(root).has_split
        train, names, _ = read_dataset(root, "train")
        val, _, _ = read_dataset(root, "val")
        assert [r.image_path.stem for r in train] == ["a0", "a1", "a2"] and [r.image_path.stem for r in val] == ["a3", "a4"]
        assert names == ["bird", "cat", "dog"]  # from every split, so that train and val agree
        assert boxes_by_stem(train + val) == expected(names)


def test_coco_layouts(tmp_path, write_image):
    roboflow = tmp_path / "roboflow"  # train/ valid/ test/, each with _annotations.coco.json beside the images
    for split, objects in (("train", OBJECTS[:3]), ("valid", OBJECTS[3:4]), ("test", OBJECTS[4:])):
        write_coco(roboflow / split, roboflow / split / "_annotations.coco.json", write_image, objects, grouping=True)
    found = detect_layout(roboflow)
    assert found.format == "coco" and list(found.readers) == ["train", "val", "test"]
    assert [r.image_path for r in read_dataset(roboflow, "val")[0]] == [roboflow / "valid" / "a3.jpg"]
    assert read_dataset(roboflow, "train")[2] == [1, 2, 3]  # the grouping category 0 is left out
    custom = tmp_path / "custom"  # the custom_coco layout: annotations/{train,val}.json, images/{train,val}/
    write_coco(custom / "images" / "train", custom / "annotations" / "train.json", write_image, OBJECTS[:3])
    write_coco(custom / "images" / "val", custom / "annotations" / "val.json", write_image, OBJECTS[3:])
    single = tmp_path / "single"  # one json, file names relative to the root
    write_coco(single / "images", single / "labels.json", write_image, file_prefix="images/")
    for root in (roboflow, custom, single):
        records, names = read_all(root)
        if root == roboflow:
            records += read_dataset(root, "test")[0]
        assert names == ["bird", "cat", "dog"] and boxes_by_stem(records) == expected(names)
    assert not detect_layout(single).has_split and detect_layout(custom).has_split


def test_yolo_without_yaml(tmp_path, write_image, caplog):
    folders = tmp_path / "folders"  # images/ + labels/ + classes.txt
    write_yolo(folders / "images", folders / "labels", write_image)
    (folders / "classes.txt").write_text("bird\ncat\ndog\n")
    splits = tmp_path / "splits"  # images/{train,val}/ + labels/{train,val}/ + obj.names
    write_yolo(splits / "images" / "train", splits / "labels" / "train", write_image, objects=OBJECTS[:3])
    write_yolo(splits / "images" / "val", splits / "labels" / "val", write_image, objects=OBJECTS[3:])
    (splits / "obj.names").write_text("bird\ncat\ndog\n")
    beside = tmp_path / "beside"  # LabelImg's YOLO mode: txt beside the images, classes.txt
    write_yolo(beside, beside, write_image)
    (beside / "classes.txt").write_text("bird\ncat\ndog\n")
    for root in (folders, splits, beside):
        records, names = read_all(root)
        assert names == ["bird", "cat", "dog"]
        assert {k: (np.round(b, 3).tolist(), c) for k, (b, c) in boxes_by_stem(records).items()} == expected(names)
    assert detect_layout(splits).has_split and not detect_layout(folders).has_split
    nameless = tmp_path / "nameless"  # no names at all: the class ids are the names, with a warning
    write_yolo(nameless / "images", nameless / "labels", write_image)
    with caplog.at_level(logging.WARNING):
        _, names = read_all(nameless)
    assert names == ["0", "1", "2"] and "class ids" in caplog.text
    _, names = read_all(nameless, ["bird", "cat", "dog"])  # data.class_names names them
    assert names == ["bird", "cat", "dog"]
    with pytest.raises(ValueError, match=r"a[0-9].txt:1: class id 2 out of range 0..1"):  # too few names
        read_all(nameless, ["bird", "cat"])


def test_yolo_data_yaml_without_val_is_split(tmp_path, write_image):
    write_yolo(tmp_path / "images" / "train", tmp_path / "labels" / "train", write_image)
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [bird, cat, dog]\n")
    assert not detect_layout(tmp_path).has_split
    records, names = read_all(tmp_path)
    assert len(records) == 5 and names == ["bird", "cat", "dog"]


def test_class_names_fix_the_order(tmp_path, write_image):
    write_voc(tmp_path / "images", tmp_path / "annotations", write_image)
    records, names = read_all(tmp_path, ["dog", "cat", "bird"])
    assert names == ["dog", "cat", "bird"] and boxes_by_stem(records) == expected(names)
    with pytest.raises(ValueError, match=r"a4.xml: object 0 \('bird'\): unknown class name 'bird'"):
        read_all(tmp_path, ["dog", "cat"])
    coco = tmp_path / "coco"
    write_coco(coco / "images", coco / "annotations.json", write_image, file_prefix="images/")
    records, names = read_all(coco, ["dog", "cat", "bird"])  # COCO: labels renumbered, category ids follow
    assert boxes_by_stem(records) == expected(names)
    assert read_dataset(coco, "train", ["dog", "cat", "bird"])[2] == [3, 2, 1]
    with pytest.raises(ValueError, match=r"are not the classes of .*\['bird', 'cat', 'dog'\]"):
        read_dataset(coco, "train", ["cat", "dog"])


# ------------------------------------------------------------------------------------------ the split


def test_split_reproducible_and_refused_on_split_data(tmp_path, write_image):
    objects = [(f"i{k:02d}", ["cat", "dog", "bird"][k % 3], (1, 1, 9, 9)) for k in range(20)]
    write_voc(tmp_path / "images", tmp_path / "annotations", write_image, objects)
    val = [r.image_path.name for r in read_dataset(tmp_path, "val")[0]]
    train = [r.image_path.name for r in read_dataset(tmp_path, "train")[0]]
    assert len(val) == 4 and len(train) == 16 and not set(val) & set(train)
    assert val == [r.image_path.name for r in read_dataset(tmp_path, "val", split_seed=0)[0]]
    assert val != [r.image_path.name for r in read_dataset(tmp_path, "val", split_seed=1)[0]]
    assert len(read_dataset(tmp_path, "val", val_fraction=0.5)[0]) == 10
    assert sorted(int(r.labels[0]) for r in read_dataset(tmp_path, "val")[0]) == [0, 1, 1, 2]  # stratified (see split)
    split = tmp_path / "split"
    write_voc(split / "train", split / "train", write_image, OBJECTS[:3])
    write_voc(split / "valid", split / "valid", write_image, OBJECTS[3:])
    with pytest.raises(ValueError, match=r"has its own split .*remove data.val_fraction"):
        read_dataset(split, "train", val_fraction=0.2)


# ------------------------------------------------------------------------------------------ errors


def test_errors(tmp_path, write_image):
    with pytest.raises(LayoutError, match="no images and no annotations"):
        detect_layout(tmp_path)
    with pytest.raises(LayoutError, match="is not a folder"):
        detect_layout(tmp_path / "nosuch")
    write_image(tmp_path / "photos" / "x.jpg", WIDTH, HEIGHT)
    with pytest.raises(LayoutError, match="1 images but no annotations"):
        detect_layout(tmp_path / "photos")
    mixed = tmp_path / "mixed"
    write_voc(mixed / "images", mixed / "annotations", write_image)
    write_coco(mixed / "images", mixed / "annotations" / "instances.json", write_image)
    with pytest.raises(LayoutError, match=r"mixes dataset formats: coco: .*; voc: "):
        detect_layout(mixed)
    write_voc(tmp_path / "inner" / "images", tmp_path / "inner" / "annotations", write_image)
    with pytest.raises(LayoutError, match=r"A dataset was found in .*inner: point data.root there"):
        detect_layout(tmp_path)


# ------------------------------------------------------------------------------------------ data=auto and the CLI


def test_data_auto_reads_the_annotations_once_per_folder_and_class_list(compose_config, tmp_path, write_image,
                                                                        monkeypatch):
    """data.num_classes is resolved by every node that refers to it (data, model, assigners): the xml are parsed
    once, not once per resolution and per composition."""
    from omegaconf import OmegaConf

    from detector.data import layout

    write_voc(tmp_path / "images", tmp_path / "annotations", write_image)
    calls, count = [], layout.dataset_num_classes
    monkeypatch.setattr(layout, "dataset_num_classes", lambda *args: calls.append(args) or count(*args))
    overrides = ["data=auto", f"data.root={tmp_path}"]
    for _ in range(2):
        cfg = compose_config(overrides)
        module = OmegaConf.to_container(cfg.module, resolve=True)  # the model, assigners: 4 references
        assert cfg.data.num_classes == module["model"]["config"]["num_classes"] == 3
        assert module["criterion"]["assigner"]["num_classes"] == module["criterion"]["one2one_assigner"]["num_classes"] == 3
    assert len(calls) == 1
    assert compose_config([*overrides, "data.class_names=[cat,dog]"]).model.num_classes == 2 and len(calls) == 2


def test_data_auto(compose_config, tmp_path, write_image):
    objects = [(f"i{k:02d}", ["cat", "dog"][k % 2], (1, 1, 9, 9)) for k in range(10)]
    write_voc(tmp_path / "images", tmp_path / "annotations", write_image, objects)
    overrides = ["data=auto", f"data.root={tmp_path}", "data.img_size=64", "data.num_workers=0"]
    cfg = compose_config(overrides)
    assert cfg.data.num_classes == 2 and cfg.model.num_classes == 2  # resolved from the data
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.trainer = SimpleNamespace(default_root_dir=str(tmp_path / "run"))  # what setup("fit") reads of it
    datamodule.setup("fit")
    assert datamodule.class_names == ["cat", "dog"]
    assert len(datamodule.train_dataset) == 8 and len(datamodule.val_dataset) == 2
    assert (tmp_path / "run" / "class_names.txt").read_text() == "cat\ndog\n"
    val = (tmp_path / "run" / "val_images.txt").read_text().split()
    assert len(val) == 2 and all(line.startswith("images/i") for line in val)
    cfg = compose_config([*overrides, "data.class_names=[dog,cat]"])
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("validate")
    assert cfg.data.num_classes == 2 and datamodule.class_names == ["dog", "cat"]
    cfg = compose_config([*overrides, "data.num_classes=3"])  # a count that the data do not have
    with pytest.raises(ValueError, match=r"data.num_classes=3 but the dataset has 2 classes"):
        hydra.utils.instantiate(cfg.data).setup("fit")


def test_check_dataset_with_only_a_path(tmp_path, write_image, capsys):
    root = tmp_path / "my data"  # a space: quoted in the printed command
    write_voc(root, root, write_image)
    assert check_dataset([str(root), "--out", str(tmp_path / "doctor")]) == 0
    out = capsys.readouterr().out
    assert "voc dataset: Pascal VOC xml, the xml beside the images; no split" in out
    assert "RESULT: usable" in out and "3 classes: bird, cat, dog" in out
    assert f"python train.py data=auto \"data.root='{root}'\"" in out
    assert check_dataset([str(tmp_path / "empty")]) == 1
    assert "LayoutError" in capsys.readouterr().out
