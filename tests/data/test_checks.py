"""Start-up check, load-time corruption, the DataModule's use of both, check_dataset on readers, and
scripts/check_dataset.py."""

from __future__ import annotations

import importlib.util
import json
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from detector.data.checks import DatasetError, check_dataset, check_records, file_readers
from detector.data.datamodule import DetectionDataModule
from detector.data.dataset import DetectionDataset, Record, collate
from detector.data.formats.coco import read_coco

REPO = Path(__file__).resolve().parents[2]


def record(path, image_id, boxes, labels, width=100, height=80):
    return Record(Path(path), image_id, width, height, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64))


def test_box_problems_are_counted(tmp_path, write_image):
    image = write_image(tmp_path / "a.jpg", 100, 80)
    boxes = [[10, 10, 20, 20], [5, 5, 5, 30], [30, 40, 20, 50], [-20, 10, 30, 90], [200, 10, 220, 20],
             [10, np.nan, 20, 20], [99.8, 79.7, 100.3, 80.2]]
    clean, report = check_records([record(image, 1, boxes, [0] * 7)], ["a"])
    assert (report.boxes_degenerate, report.boxes_clipped, report.boxes_outside, report.boxes_nonfinite) == (2, 1, 1, 1)
    np.testing.assert_allclose(clean[0].boxes, [[10, 10, 20, 20], [0, 10, 30, 80], [99.8, 79.7, 100, 80]], atol=1e-4)
    assert report.boxes == 3 and report.class_counts == [3]
    assert len(report.examples) > 0 and "a.jpg" in report.examples[0]


def test_dataset_level_errors(tmp_path, write_image):
    image = write_image(tmp_path / "a.jpg", 100, 80)
    with pytest.raises(DatasetError, match="out of range 0..1"):
        check_records([record(image, 1, [[1, 1, 5, 5]], [2])], ["a", "b"])
    with pytest.raises(DatasetError, match="duplicate image id 1"):
        check_records([record(image, 1, [], []), record(image, 1, [], [])], ["a"])
    with pytest.raises(DatasetError, match="no images"):
        check_records([], ["a"])
    with pytest.raises(DatasetError, match="1 of 1 images are missing"):
        check_records([record(tmp_path / "nope.jpg", 1, [], [])], ["a"])


def test_corrupt_image_at_load_time_is_substituted(tmp_path, write_image):
    paths = [write_image(tmp_path / f"{i}.png", 40, 30, (10 * i, 0, 0)) for i in range(4)]
    records = [record(p, i + 1, [[1, 1, 20, 20]], [0], 40, 30) for i, p in enumerate(paths)]
    clean, _ = check_records(records, ["a"])
    paths[1].write_bytes(b"corrupted after the start-up check")
    train = DetectionDataset(clean, ["a"], 32)
    with pytest.warns(RuntimeWarning, match=r"1.png .*substituting another sample"):
        sample = train[1]
    assert sample["image"].shape == (3, 32, 32) and sample["image_id"] != 2 and train.load_failures == 1
    loader = torch.utils.data.DataLoader(train, batch_size=4, num_workers=1, collate_fn=collate)
    batch = next(iter(loader))  # inside a worker: no crash, and counted (shared memory)
    assert batch["images"].shape == (4, 3, 32, 32) and train.load_failures == 2
    val = DetectionDataset(clean, ["a"], 32, substitute_bad_images=False)
    with pytest.warns(RuntimeWarning, match="blank image"):
        sample = val[1]
    assert sample["image_id"] == 2 and len(sample["boxes"]) == 0 and int(sample["image"].float().std()) == 0


def coco_reader(tmp_path, write_image, n_images: int, n_missing: int, split: str):
    folder = tmp_path / split
    images, annotations = [], []
    for i in range(n_images):
        if i >= n_missing:
            write_image(folder / f"{i}.jpg", 64, 48, (40 * (i % 6), 90, 160))
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 64, "height": 48})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [4, 4, 30, 20], "iscrowd": 0})
    path = tmp_path / f"{split}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "x"}]}))
    return partial(read_coco, folder, path)


def test_datamodule_runs_the_check(tmp_path, write_image):
    dm = DetectionDataModule(
        coco_reader(tmp_path, write_image, 20, 1, "train"), coco_reader(tmp_path, write_image, 4, 0, "val"),
        num_classes=1, img_size=64, batch_size=4, num_workers=0, max_bad_fraction=0.1, mosaic_prob=0.5,
    )
    with pytest.warns(UserWarning, match=r"1 missing images \(skipped\)"):
        dm.setup("fit")
    assert len(dm.train_dataset) == 19 and dm.reports["train"].bad_images == 1 and dm.reports["val"].problems == 0
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (4, 3, 64, 64)
    # a resumed fit: Lightning sets the sampler's epoch only after the workers have drawn their first indices
    dm.trainer = SimpleNamespace(current_epoch=3, world_size=1, global_rank=0)
    assert dm.train_dataloader().sampler.epoch == 3
    strict = DetectionDataModule(
        coco_reader(tmp_path, write_image, 20, 3, "train2"), coco_reader(tmp_path, write_image, 4, 0, "val"),
        num_classes=1, img_size=64, num_workers=0, max_bad_fraction=0.1,
    )
    with pytest.raises(DatasetError, match=r"3 of 20 images are missing or unreadable \(15.0% > max_bad_fraction=10.0%\)"):
        strict.setup("fit")
    with pytest.raises(ValueError, match=r"data.class_names=\['y'\] but the val reader gives \['x'\]"):
        DetectionDataModule(coco_reader(tmp_path, write_image, 4, 0, "val"), coco_reader(tmp_path, write_image, 4, 0, "val"),
                            num_classes=1, class_names=["y"]).setup("fit")


def test_check_dataset_checks_every_split_and_keeps_the_errors(tmp_path, write_image):
    readers = {"train": coco_reader(tmp_path, write_image, 4, 1, "train"), "val": coco_reader(tmp_path, write_image, 2, 0, "val")}
    result = check_dataset(readers, num_classes=1, max_bad_fraction=0.5)
    assert result.usable and result.class_names == ["x"]
    assert [(s.name, len(s.records), s.report.bad_images, s.error) for s in result.splits] == [("train", 3, 1, None), ("val", 2, 0, None)]
    assert "[train] 3/4 images usable, 3 boxes" in result.summary() and "1 classes: x" in result.summary()
    strict = check_dataset(readers, num_classes=1)  # 1 of 4 missing > 5%
    assert not strict.usable and strict.splits[0].records == [] and "max_bad_fraction" in strict.splits[0].error
    assert strict.splits[1].error is None and "[train] ERROR: [train] 1 of 4 images" in strict.summary()
    wrong = check_dataset(readers, num_classes=2, max_bad_fraction=0.5)
    assert not wrong.usable and wrong.splits[1].error == "data.num_classes=2 but the dataset has 1 classes"


def test_file_readers_name_their_splits_and_refuse_what_is_missing(tmp_path, write_image):
    coco_reader(tmp_path, write_image, 2, 0, "val")
    readers = file_readers("coco", tmp_path / "val.json", images=tmp_path / "val")
    assert list(readers) == ["val"] and len(readers["val"]()[0]) == 2
    assert list(file_readers("voc", tmp_path, splits=["VOC2007/trainval", "test"])) == ["VOC2007/trainval", "test"]
    assert list(file_readers("yolo", tmp_path / "data.yaml")) == ["train", "val"]
    with pytest.raises(ValueError, match="the image folder is required"):
        file_readers("coco", tmp_path / "val.json")
    with pytest.raises(ValueError, match="unknown annotation format 'kitti'"):
        file_readers("kitti", tmp_path)


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_dataset_script(tmp_path, write_image, capsys):
    check_dataset = load_script("check_dataset")
    root = tmp_path / "ds"
    write_image(root / "images/train/1.jpg", 100, 50)
    write_image(root / "images/train/2.jpg", 100, 50)
    (root / "images/train/3.jpg").write_bytes(b"not an image")
    (root / "labels/train").mkdir(parents=True)
    (root / "labels/train/1.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0 0.2\n")
    (root / "labels/train/2.txt").write_text("")
    (root / "data.yaml").write_text("train: images/train\nnames: [thing]\n")
    argv = ["--format", "yolo", "--path", str(root / "data.yaml"), "--split", "train", "--out", str(tmp_path / "doctor")]
    assert check_dataset.main(argv + ["--max-bad-fraction", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "[train] 2/3 images usable, 1 boxes" in out and "1 background images" in out
    assert "1 unreadable images (skipped)" in out and "1 boxes with zero or negative area (dropped)" in out
    assert "RESULT: usable" in out
    assert check_dataset.main(argv) == 1  # 1/3 bad > 5%
    assert "max_bad_fraction" in capsys.readouterr().out
    (root / "labels/train/2.txt").write_text("0 0.5 0.5 0.2\n")
    assert check_dataset.main(argv + ["--max-bad-fraction", "0.5"]) == 1
    assert "2.txt:1: malformed label line" in capsys.readouterr().out
