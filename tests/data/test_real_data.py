"""The readers on the real shared data (skipped when it is absent): COCO128 as YOLO txt and as COCO json,
fruit_voc against its xml, one training batch through DetectionDataModule, scripts/check_dataset.py."""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from detector.data.checks import check_records
from detector.data.formats.voc import read_voc
from detector.data.formats.yolo import read_data_yaml, read_yolo

REPO = Path(__file__).resolve().parents[2]


def test_coco128_yolo_and_coco_json_give_the_same_boxes(coco128):
    yolo, yolo_names, yolo_ids = read_yolo(coco128 / "data.yaml", "train")
    coco, coco_names, coco_ids = read_data_yaml(coco128 / "data.yaml", "train", format="coco")
    assert len(yolo) == len(coco) == 128 and yolo_names == coco_names and len(yolo_names) == 80
    assert yolo_ids == coco_ids and coco_ids[-1] == 90  # real COCO category ids (coco_category_ids in data.yaml)
    by_id = {r.image_id: r for r in coco}
    total, worst, crowd = 0, 0.0, 0
    for a in yolo:
        b = by_id[a.image_id]  # both: id = integer file stem
        assert a.image_path.name == b.image_path.name and (a.width, a.height) == (b.width, b.height)
        assert len(a.boxes) == len(b.boxes), a.image_path
        if len(a.boxes):
            cost = np.abs(a.boxes[:, None] - b.boxes[None]).max(-1) + 1e6 * (a.labels[:, None] != b.labels[None])
            rows, cols = linear_sum_assignment(cost)
            worst = max(worst, cost[rows, cols].max())
            total += len(rows)
        assert len(a.crowd) == 0
        crowd += len(b.crowd)
    assert total == 929 and worst < 0.01 and crowd == 10  # crowd regions: ignore regions, not training boxes
    _, report = check_records(coco, coco_names)
    assert report.crowd_boxes == 10 and report.boxes == 929 and report.background_images == 2 and report.problems == 0


def test_coco128_val_split(coco128):
    records, names, _ = read_yolo(coco128 / "data.yaml", "val")
    _, report = check_records(records, names)
    assert report.images == 128 and report.boxes == 898 and report.problems == 0


def test_fruit_voc_matches_its_xml(fruit_voc):
    names = (fruit_voc / "labels.txt").read_text().split()
    counts = {}
    for split, n_images, n_objects in (("train", 240, 465), ("val", 60, 117), ("trainval", 300, 582)):
        records, got_names, _ = read_voc(fruit_voc, splits=[split], class_names=names)
        clean, report = check_records(records, got_names)
        assert got_names == ["apple", "banana", "orange"]
        assert len(clean) == n_images and report.boxes == n_objects and report.problems == 0
        counts[split] = report.class_counts
        for record in records:
            root = ET.parse(fruit_voc / "Annotations" / f"{record.image_path.stem}.xml").getroot()
            assert (record.width, record.height) == (int(root.findtext("size/width")), int(root.findtext("size/height")))
            expected = [[float(o.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")] for o in root.iter("object")]
            expected = np.asarray(expected, np.float32) - [1, 1, 0, 0]  # 1-based VOC pixels -> continuous
            np.testing.assert_array_equal(record.boxes, expected)
            assert record.labels.tolist() == [names.index(o.findtext("name")) for o in root.iter("object")]
    assert counts["train"] == [156, 169, 140] and counts["val"] == [35, 40, 42]


def test_datamodule_gives_a_training_batch_on_coco128(coco128):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "configs" / "data" / "coco128.yaml")
    cfg.root, cfg.seed = str(coco128), 0
    cfg.img_size, cfg.batch_size, cfg.num_workers = 320, 4, 0
    datamodule = instantiate(cfg)
    datamodule.setup("fit")
    assert len(datamodule.train_dataset) == 128 and len(datamodule.val_dataset) == 128
    assert datamodule.train_dataset.mosaic_enabled and datamodule.reports["train"].problems == 0
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["images"].shape == (4, 3, 320, 320) and str(batch["images"].dtype) == "torch.uint8"
    assert batch["mask"].any() and (batch["boxes"][batch["mask"]] >= 0).all() and (batch["boxes"][batch["mask"]] <= 320).all()
    assert (batch["labels"][batch["mask"]] < 80).all()
    val = next(iter(datamodule.val_dataloader()))
    assert val["images"].shape == (4, 3, 320, 320) and val["image_ids"] == [r.image_id for r in datamodule.val_dataset.records[:4]]
    gt = datamodule.val_dataset.coco_ground_truth()
    assert len(gt.getImgIds()) == 128 and len(gt.getAnnIds()) == 898


def test_check_dataset_script_on_coco128(coco128, capsys, tmp_path):
    spec = importlib.util.spec_from_file_location("check_dataset", REPO / "scripts" / "check_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["data=coco128", f"data.root={coco128}", "data.format=coco", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[train] 128/128 images usable, 929 boxes (10 crowd/ignore), 71/80 classes present, 2 background images" in out
    assert "[val] 128/128 images usable, 898 boxes" in out and "RESULT: usable" in out
