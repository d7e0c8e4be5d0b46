"""YOLO txt reader + data.yaml on small fixtures, including every bad-data case."""

from __future__ import annotations

import numpy as np
import pytest

from detector.data.checks import DatasetError, check_records
from detector.data.formats.yolo import label_path, load_data_yaml, read_data_yaml, read_yolo


@pytest.fixture
def yolo_root(tmp_path, write_image):
    """images/train: 000001.jpg (200x100, 2 boxes), 000002.jpg (64x64, empty label file), 000003.jpg (no label file)."""
    root = tmp_path / "ds"
    write_image(root / "images/train/000001.jpg", 200, 100)
    write_image(root / "images/train/000002.jpg", 64, 64)
    write_image(root / "images/train/000003.jpg", 50, 40)
    write_image(root / "images/val/a.png", 80, 60)
    (root / "labels/train").mkdir(parents=True)
    (root / "labels/val").mkdir(parents=True)
    (root / "labels/train/000001.txt").write_text("0 0.5 0.5 0.2 0.4\n\n2 0.25 0.75 0.1 0.2\n")
    (root / "labels/train/000002.txt").write_text("")
    (root / "labels/val/a.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnc: 3\nnames:\n  0: cat\n  1: dog\n  2: bird\n")
    return root


def test_reads_pixel_boxes_names_ids(yolo_root):
    records, names, category_ids = read_yolo(yolo_root / "data.yaml", "train")
    assert names == ["cat", "dog", "bird"] and category_ids == [1, 2, 3]
    assert [r.image_id for r in records] == [1, 2, 3]  # numeric stems
    first = records[0]
    assert (first.width, first.height) == (200, 100)
    np.testing.assert_allclose(first.boxes, [[80, 30, 120, 70], [40, 65, 60, 85]], atol=1e-4)
    assert first.labels.tolist() == [0, 2]
    assert len(records[1].boxes) == 0 and len(records[2].boxes) == 0  # empty / missing label file = background
    clean, report = check_records(records, names)
    assert len(clean) == 3 and report.background_images == 2 and report.boxes == 2 and report.problems == 0


def test_non_numeric_stems_enumerate_and_names_list(yolo_root):
    (yolo_root / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: [images/val]\nnames: [cat, dog, bird]\ncoco_category_ids: [3, 7, 9]\n")
    records, names, category_ids = read_yolo(yolo_root / "data.yaml", "val")
    assert names == ["cat", "dog", "bird"] and category_ids == [3, 7, 9]
    assert [r.image_id for r in records] == [1]
    np.testing.assert_allclose(records[0].boxes, [[20, 15, 60, 45]], atol=1e-4)


def test_txt_list_split_and_polygon_line(yolo_root):
    (yolo_root / "train.txt").write_text("images/train/000001.jpg\n./images/val/a.png\n")
    (yolo_root / "data.yaml").write_text("train: train.txt\nval: images/val\nnames: [cat, dog, bird]\n")
    (yolo_root / "labels/val/a.txt").write_text("1 0.25 0.5 0.75 0.25 0.5 0.75\n")  # triangle polygon
    records, _, _ = read_yolo(yolo_root / "data.yaml", "train")
    assert [r.image_path.name for r in records] == ["000001.jpg", "a.png"]
    assert [r.image_id for r in records] == [1, 2]  # not all stems numeric -> enumeration
    np.testing.assert_allclose(records[1].boxes, [[20, 15, 60, 45]], atol=1e-4)


def test_sibling_rule():
    assert str(label_path(__import__("pathlib").Path("/d/images/x/images/train/a.jpg"))) == "/d/images/x/labels/train/a.txt"


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.2", r"000001.txt:2: malformed label line"),
    ("0 0.5 0.5 0.2 0.1 0.3", r"000001.txt:2: malformed label line"),
    ("zero 0.5 0.5 0.2 0.1", r"000001.txt:2: malformed label line"),
    ("3 0.5 0.5 0.2 0.1", r"000001.txt:2: class id 3 out of range 0..2"),
    ("-1 0.5 0.5 0.2 0.1", r"000001.txt:2: class id -1 out of range"),
    ("1.5 0.5 0.5 0.2 0.1", r"000001.txt:2: class id 1.5 is not an integer"),
    ("1 nan 0.5 0.2 0.1", r"000001.txt:2: non-finite"),
])
def test_bad_label_lines_name_file_and_line(yolo_root, line, message):
    (yolo_root / "labels/train/000001.txt").write_text(f"0 0.5 0.5 0.2 0.4\n{line}\n")
    with pytest.raises(ValueError, match=message):
        read_yolo(yolo_root / "data.yaml", "train")


def test_bad_boxes_are_clipped_or_dropped_and_counted(yolo_root):
    (yolo_root / "labels/train/000001.txt").write_text(
        "0 0.5 0.5 0.2 0.4\n"      # fine
        "1 0.5 0.5 0 0.4\n"        # zero width -> dropped
        "1 0.5 0.5 -0.1 0.4\n"     # negative width -> dropped
        "2 0.95 0.5 0.2 0.2\n"     # right part outside -> clipped to x2 = 200
        "2 1.5 1.5 0.2 0.2\n"      # entirely outside -> dropped
    )
    records, names, _ = read_yolo(yolo_root / "data.yaml", "train")
    clean, report = check_records(records, names)
    assert report.boxes_degenerate == 2 and report.boxes_clipped == 1 and report.boxes_outside == 1
    np.testing.assert_allclose(clean[0].boxes, [[80, 30, 120, 70], [170, 40, 200, 60]], atol=1e-4)
    assert clean[0].labels.tolist() == [0, 2]
    assert "clipped" in report.summary() and "zero or negative area" in report.summary()


def test_unreadable_and_missing_images_are_skipped_and_counted(yolo_root, write_image):
    (yolo_root / "images/train/000003.jpg").write_bytes(b"this is not an image")
    (yolo_root / "train.txt").write_text("images/train/000001.jpg\nimages/train/000002.jpg\nimages/train/000003.jpg\nimages/train/gone.jpg\n")
    (yolo_root / "data.yaml").write_text("train: train.txt\nval: images/val\nnames: [cat, dog, bird]\n")
    records, names, _ = read_yolo(yolo_root / "data.yaml", "train")
    assert len(records) == 4
    clean, report = check_records(records, names, max_bad_fraction=0.5)
    assert [r.image_path.name for r in clean] == ["000001.jpg", "000002.jpg"]
    assert len(report.unreadable_images) == 1 and len(report.missing_images) == 1
    with pytest.raises(DatasetError, match=r"2 of 4 images are missing or unreadable .*max_bad_fraction"):
        check_records(records, names, max_bad_fraction=0.25)


def test_data_yaml_errors(tmp_path, yolo_root):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: images/train\nnames: [a, b\n")
    with pytest.raises(ValueError, match=r"bad.yaml: malformed yaml at line"):
        load_data_yaml(bad)
    bad.write_text("train: images/train\nnames: {0: a, 2: b}\n")
    with pytest.raises(ValueError, match=r"'names' keys must be the class ids 0..1"):
        load_data_yaml(bad)
    bad.write_text("train: images/train\nnc: 3\nnames: [a, b]\n")
    with pytest.raises(ValueError, match=r"nc=3 but 2 names"):
        load_data_yaml(bad)
    with pytest.raises(ValueError, match=r"no 'test' entry"):
        read_yolo(yolo_root / "data.yaml", "test")


def test_read_data_yaml_coco_format_matches_yolo(yolo_root):
    import json

    (yolo_root / "val.json").write_text(json.dumps({
        "images": [{"id": 5, "file_name": "a.png", "width": 80, "height": 60}],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 2, "bbox": [20, 15, 40, 30], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}],
    }))
    (yolo_root / "data.yaml").write_text("train: images/train\nval: images/val\nval_json: val.json\nnames: [cat, dog, bird]\n")
    from_yolo, _, _ = read_data_yaml(yolo_root / "data.yaml", "val", format="yolo")
    from_coco, names, _ = read_data_yaml(yolo_root / "data.yaml", "val", format="coco")
    assert names == ["cat", "dog", "bird"]
    np.testing.assert_allclose(from_coco[0].boxes, from_yolo[0].boxes, atol=1e-4)
    assert from_coco[0].labels.tolist() == from_yolo[0].labels.tolist() == [1]
    with pytest.raises(ValueError, match="unknown label format"):
        read_data_yaml(yolo_root / "data.yaml", "val", format="voc")


def test_roboflow_yaml_paths_one_level_up_are_found_beside_the_yaml(tmp_path, write_image):
    # Roboflow's YOLO export: data.yaml beside train/ valid/, its entries written as ../train/images
    for split in ("train", "valid"):
        write_image(tmp_path / split / "images" / "a.jpg", 40, 20)
        (tmp_path / split / "labels").mkdir(parents=True)
        (tmp_path / split / "labels" / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    (tmp_path / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 2\nnames: [a, b]\n")
    records, names, _ = read_yolo(tmp_path / "data.yaml", "val")
    assert names == ["a", "b"] and records[0].image_path == tmp_path / "valid" / "images" / "a.jpg"
    np.testing.assert_allclose(records[0].boxes, [[10, 5, 30, 15]])
    (tmp_path / "data.yaml").write_text("train: ../elsewhere/images\nnames: [a, b]\n")
    with pytest.raises(FileNotFoundError, match="elsewhere/images is neither a folder"):
        read_yolo(tmp_path / "data.yaml", "train")
