"""Pascal VOC reader on small fixtures (two 'years', split files, difficult objects, bad xml)."""

from __future__ import annotations

import numpy as np
import pytest

from detector.data.checks import check_records
from detector.data.dataset import DetectionDataset
from detector.data.formats.voc import VOC_CLASSES, read_voc


def voc_xml(filename: str, width: int, height: int, objects: list[tuple]) -> str:
    """objects: (name, difficult, xmin, ymin, xmax, ymax)."""
    body = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{d}</difficult>"
        f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for n, d, x1, y1, x2, y2 in objects
    )
    return (f"<annotation><folder>VOC</folder><filename>{filename}</filename>"
            f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>{body}</annotation>")


def add_image(year_dir, image_id, width, height, objects, write_image, splits=("trainval",)):
    write_image(year_dir / "JPEGImages" / f"{image_id}.jpg", width, height)
    (year_dir / "Annotations").mkdir(parents=True, exist_ok=True)
    (year_dir / "Annotations" / f"{image_id}.xml").write_text(voc_xml(f"{image_id}.jpg", width, height, objects))
    (year_dir / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for split in splits:
        with open(year_dir / "ImageSets" / "Main" / f"{split}.txt", "a") as f:
            f.write(f"{image_id}\n")


@pytest.fixture
def devkit(tmp_path, write_image):
    root = tmp_path / "VOCdevkit"
    add_image(root / "VOC2007", "000005", 100, 80, [("dog", 0, 11, 21, 50, 60), ("person", 1, 1, 1, 10, 10)], write_image)
    add_image(root / "VOC2007", "000007", 60, 60, [("cat", 0, 5, 5, 30, 40)], write_image, splits=("test",))
    add_image(root / "VOC2012", "2008_000002", 120, 90, [("car", 0, 1, 1, 120, 90)], write_image)
    return root


def test_reads_concatenated_years_with_difficult_as_crowd(devkit):
    records, names, category_ids = read_voc(devkit, splits=[["VOC2007", "trainval"], ["VOC2012", "trainval"]])
    assert names == list(VOC_CLASSES) and category_ids == list(range(1, 21))
    assert [r.image_path.name for r in records] == ["000005.jpg", "2008_000002.jpg"]
    assert [r.image_id for r in records] == [1, 2]  # mixed stems -> enumeration
    dog = VOC_CLASSES.index("dog")
    np.testing.assert_allclose(records[0].boxes, [[10, 20, 50, 60]])  # 1-based -> 0-based continuous
    assert records[0].labels.tolist() == [dog]
    np.testing.assert_allclose(records[0].crowd, [[0, 0, 10, 10]])  # difficult -> ignore region
    assert records[0].crowd_labels.tolist() == [VOC_CLASSES.index("person")]
    np.testing.assert_allclose(records[1].boxes, [[0, 0, 120, 90]])  # whole image
    clean, report = check_records(records, names)
    assert report.problems == 0 and report.crowd_boxes == 1 and report.boxes == 2
    gt = DetectionDataset(clean, names, 64, category_ids=category_ids).coco_ground_truth()
    assert sorted(a["iscrowd"] for a in gt.dataset["annotations"]) == [0, 0, 1]


def test_numeric_ids_difficult_modes_and_offset(devkit):
    records, _, _ = read_voc(devkit, splits=[["VOC2007", "test"]])
    assert [r.image_id for r in records] == [7]  # all-numeric stems -> int(stem)
    train, _, _ = read_voc(devkit, splits=[["VOC2007", "trainval"]], difficult="train", one_based=False)
    np.testing.assert_allclose(train[0].boxes, [[11, 21, 50, 60], [1, 1, 10, 10]])
    assert len(train[0].crowd) == 0
    dropped, _, _ = read_voc(devkit, splits=[["VOC2007", "trainval"]], difficult="drop")
    assert len(dropped[0].boxes) == 1 and len(dropped[0].crowd) == 0
    with pytest.raises(ValueError, match="difficult="):
        read_voc(devkit, difficult="maybe")


def test_custom_class_names(devkit, tmp_path):
    folder = devkit / "VOC2007"
    names_file = tmp_path / "labels.txt"
    names_file.write_text("cat\ndog\nperson\n")
    for class_names in (["cat", "dog", "person"], str(names_file)):
        records, names, category_ids = read_voc(folder, splits=["trainval", "test"], class_names=class_names)
        assert names == ["cat", "dog", "person"] and category_ids == [1, 2, 3]
        assert records[0].labels.tolist() == [1] and records[1].labels.tolist() == [0]
    _, collected, _ = read_voc(folder, splits=[None], class_names="collect")  # split None: every xml
    assert collected == ["cat", "dog", "person"]
    with pytest.raises(ValueError, match=r"000005.xml: object 0 \('dog'\): unknown class name 'dog'"):
        read_voc(folder, splits=["trainval"], class_names=["cat", "person"])


def test_malformed_xml_and_missing_coordinates(devkit):
    xml = devkit / "VOC2007" / "Annotations" / "000005.xml"
    text = xml.read_text()
    xml.write_text(text.replace("</annotation>", "").replace("<size>", "<size>\n<oops>"))
    with pytest.raises(ValueError, match=r"000005.xml: malformed xml at line \d+"):
        read_voc(devkit, splits=[["VOC2007", "trainval"]])
    xml.write_text(text.replace("<ymin>21</ymin>", "<ymin>abc</ymin>"))
    with pytest.raises(ValueError, match=r"000005.xml: object 0 \('dog'\): missing or non-numeric <ymin>"):
        read_voc(devkit, splits=[["VOC2007", "trainval"]])
    xml.write_text(text.replace("<bndbox><xmin>11", "<box><xmin>11").replace("60</ymax></bndbox>", "60</ymax></box>"))
    with pytest.raises(ValueError, match=r"object 0 \('dog'\): no <bndbox>"):
        read_voc(devkit, splits=[["VOC2007", "trainval"]])
    with pytest.raises(FileNotFoundError, match="VOC2007/ImageSets/Main/nosuch.txt"):
        read_voc(devkit, splits=[["VOC2007", "nosuch"]])


def test_missing_xml_is_background_and_missing_image_is_counted(devkit, write_image):
    year = devkit / "VOC2012"
    write_image(year / "JPEGImages" / "2008_000003.jpg", 30, 20)
    with open(year / "ImageSets" / "Main" / "trainval.txt", "a") as f:
        f.write("2008_000003\n2008_000004\n")  # no xml for either; no image for the second
    records, names, _ = read_voc(devkit, splits=[["VOC2012", "trainval"]])
    assert len(records) == 3 and (records[1].width, records[1].height) == (0, 0)
    clean, report = check_records(records, names, max_bad_fraction=0.5)
    assert len(clean) == 2 and (clean[1].width, clean[1].height) == (30, 20)  # size from the file
    assert report.background_images == 1 and len(report.missing_images) == 1


def test_annotated_size_differs_from_image(devkit):
    xml = devkit / "VOC2007" / "Annotations" / "000005.xml"
    xml.write_text(xml.read_text().replace("<width>100</width>", "<width>0</width>"))
    records, names, _ = read_voc(devkit, splits=[["VOC2007", "trainval"]])
    clean, report = check_records(records, names)
    assert (clean[0].width, clean[0].height) == (100, 80) and not report.resized_images  # unknown size: filled in
    xml.write_text(xml.read_text().replace("<width>0</width>", "<width>90</width>"))
    records, names, _ = read_voc(devkit, splits=[["VOC2007", "trainval"]])
    clean, report = check_records(records, names)
    assert (clean[0].width, clean[0].height) == (100, 80) and len(report.resized_images) == 1
