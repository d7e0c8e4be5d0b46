"""COCO json reader on small fixtures, including malformed files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detector.data.checks import check_records
from detector.data.formats.coco import read_coco

CATEGORIES = [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}]


@pytest.fixture
def coco_files(tmp_path, write_image):
    write_image(tmp_path / "images" / "10.jpg", 100, 50)
    write_image(tmp_path / "images" / "11.jpg", 40, 40)
    data = {
        "images": [{"id": 10, "file_name": "10.jpg", "width": 100, "height": 50}, {"id": 11, "file_name": "11.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 1, "bbox": [10, 5, 20, 30], "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [50, 0, 50, 50], "iscrowd": 1},
            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [0, 0, 40, 40]},
        ],
        "categories": CATEGORIES,
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data, indent=1))
    return tmp_path / "images", path, data


def test_reads_boxes_crowd_and_category_order(coco_files):
    image_dir, path, _ = coco_files
    records, names, category_ids = read_coco(image_dir, path)
    assert names == ["person", "car"] and category_ids == [1, 3]  # labels follow the category id order
    np.testing.assert_allclose(records[0].boxes, [[10, 5, 30, 35]])
    assert records[0].labels.tolist() == [0]
    np.testing.assert_allclose(records[0].crowd, [[50, 0, 100, 50]])
    assert records[0].crowd_labels.tolist() == [1]
    assert (records[1].width, records[1].height) == (0, 0)  # not in the json
    clean, report = check_records(records, names)
    assert (clean[1].width, clean[1].height) == (40, 40) and report.problems == 0


def test_malformed_json_names_file_and_line(coco_files):
    image_dir, path, _ = coco_files
    lines = path.read_text().splitlines()
    lines[5] = lines[5] + " oops"
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"train.json: malformed json at line 6"):
        read_coco(image_dir, path)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["annotations"][0].update(category_id=2), r"annotation 1 \(image 10\) has unknown category_id 2"),
    (lambda d: d["annotations"][1].update(bbox=[1, 2, 3]), r"annotation 2 \(image 10\): bbox must be \[x, y, w, h\]"),
    (lambda d: d["annotations"][2].update(bbox=[0, "a", 1, 1]), r"annotation 3 \(image 11\): non-numeric bbox"),
    (lambda d: d["images"].append({"id": 10, "file_name": "x.jpg"}), r"images\[2\]: duplicate image id 10"),
    (lambda d: d.pop("categories"), r"not a COCO detection file"),
])
def test_bad_annotations_raise_clear_errors(coco_files, change, message):
    image_dir, path, data = coco_files
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        read_coco(image_dir, path)


def test_the_fast_reader_gives_the_records_of_the_checked_one(tmp_path):
    """read_coco builds the records with whole-array operations; the annotation-by-annotation reader (used when
    something is malformed, to name it) gives the same records on a file with crowd boxes, orphans and empty images."""
    from detector.data.formats.coco import _records_checked

    rng = np.random.default_rng(0)
    images = [{"id": 3 * i + 7, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in range(60)]
    images += [{"id": 1000 + i, "file_name": f"empty{i}.jpg", "width": 64, "height": 48} for i in range(3)]
    annotations = [
        {"id": k, "image_id": 3 * int(rng.integers(0, 64)) + 7, "category_id": int(rng.choice([1, 3])),
         "bbox": rng.uniform(0, 300, 4).round(3).tolist(), "iscrowd": int(rng.random() < 0.1)}
        for k in range(400)
    ]
    data = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    fast, _, category_ids = read_coco(tmp_path, path)
    checked = _records_checked(data, tmp_path, {3: 1, 1: 0}, {im["id"] for im in images}, category_ids, path)
    assert len(fast) == len(checked) == 63 and 0 < sum(len(r.crowd) for r in fast) < sum(len(r.boxes) for r in fast)
    assert any(len(r.boxes) == 0 for r in fast)
    for a, b in zip(fast, checked):
        assert (a.image_path, a.image_id, a.width, a.height) == (b.image_path, b.image_id, b.width, b.height)
        for name in ("boxes", "labels", "crowd", "crowd_labels"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name
