"""scripts/evaluate.py and scripts/predict.py end to end on a checkpoint trained for two steps."""

import json
from collections import Counter

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detector.data.dataset import DetectionDataset, Record, read_image
from detector.deploy.predict import find_images, letterbox_image
from detector.evaluation.coco import STAT_NAMES

from ..conftest import TRAINED_NUM_VAL as NUM_VAL

OUTPUT_FILES = ("evaluation.json", "per_class.md", "per_class.csv", "pr_curve_iou50.png", "pr_curve_iou50-95.png",
                "confusion_matrix.png", "detections.json")


def val_ground_truth(trained):
    return json.loads((trained["data"] / "annotations" / "val.json").read_text())


def test_evaluate_writes_metrics_tables_and_plots(trained, evaluated):
    out = evaluated["dir"]
    for name in OUTPUT_FILES:
        assert (out / name).stat().st_size > 0, name
    for name in OUTPUT_FILES[3:6]:
        assert cv2.imread(str(out / name)) is not None, name
    result = json.loads((out / "evaluation.json").read_text())
    assert result["images"] == NUM_VAL and result["split"] == "val" and result["weights"] == "ema"
    assert set(result["coco"]) == set(STAT_NAMES) and result["evaluator"] == "pycocotools"
    assert set(result["voc"]) >= {"map50_voc07_11point", "map50_area"}
    assert result["postprocess"]["conf_threshold"] == 0.001 and result["img_size"] == 64

    # the per-class table and the confusion matrix count exactly the val set's boxes
    gt = val_ground_truth(trained)
    counts = Counter(a["category_id"] for a in gt["annotations"])
    assert [row["gt"] for row in result["per_class"]] == [counts[c] for c in range(1, 6)]
    assert [row["class"] for row in result["per_class"]] == ["circle", "square", "triangle", "star", "cross"]
    matrix = np.array(result["confusion_matrix"]["matrix"])
    assert matrix.shape == (6, 6) and result["confusion_matrix"]["labels"][-1] == "background"
    assert matrix[:5].sum(1).tolist() == [counts[c] for c in range(1, 6)]
    markdown = (out / "per_class.md").read_text()
    assert markdown in evaluated["stdout"] and markdown.count("\n") == 2 + 5 + 1
    assert "VOC AP50: 11-point (VOC07)" in evaluated["stdout"]

    # the stats are pycocotools' on the written detections and the val annotations
    detections = json.loads((out / "detections.json").read_text())
    assert len(detections) == result["detections"] > NUM_VAL
    assert Counter(d["category_id"] for d in detections) == Counter(
        {row["category_id"]: row["detections"] for row in result["per_class"] if row["detections"]})
    coco_gt = COCO()
    coco_gt.dataset = gt
    coco_gt.createIndex()
    evaluator = COCOeval(coco_gt, coco_gt.loadRes(detections), "bbox")
    evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    for name, value in zip(STAT_NAMES, evaluator.stats):
        assert result["coco"][name] == pytest.approx(max(value, 0.0), abs=1e-9), name


def test_predict_draws_boxes_and_writes_coco_results(trained, predicted):
    source = trained["data"] / "images" / "val"
    out = predicted["dir"]
    names = sorted(p.name for p in source.iterdir())
    assert sorted(p.name for p in (out / "images").iterdir()) == names and len(names) == NUM_VAL
    predictions = json.loads((out / "predictions.json").read_text())
    per_image = Counter(p["file_name"] for p in predictions)
    assert set(per_image) == set(names) and max(per_image.values()) <= 300
    for p in predictions:
        x, y, w, h = p["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 64 + 1e-3 and y + h <= 64 + 1e-3 and 1 <= p["category_id"] <= 5
    drawn, original = cv2.imread(str(out / "images" / names[0])), cv2.imread(str(source / names[0]))
    assert drawn.shape == original.shape and np.abs(drawn.astype(int) - original).mean() > 5  # boxes and labels drawn
    assert f"{len(predictions)} detections in {NUM_VAL} images" in predicted["stdout"]


def test_predict_and_evaluate_give_the_same_detections(trained, evaluated, predicted):
    """predict.py letterboxes image files itself; evaluate.py goes through the dataset pipeline: same boxes."""
    file_names = {image["id"]: image["file_name"] for image in val_ground_truth(trained)["images"]}

    def rows(detections, name_of):
        return sorted((name_of(d), d["category_id"], round(d["score"], 5), *np.round(d["bbox"], 2).tolist()) for d in detections)

    evaluated_rows = rows(json.loads((evaluated["dir"] / "detections.json").read_text()), lambda d: file_names[d["image_id"]])
    predicted_rows = rows(json.loads((predicted["dir"] / "predictions.json").read_text()), lambda d: d["file_name"])
    assert len(evaluated_rows) == len(predicted_rows) > NUM_VAL
    for a, b in zip(evaluated_rows, predicted_rows):
        assert a[:2] == b[:2] and np.allclose(a[2:], b[2:], atol=1e-3), (a, b)


def test_letterbox_image_equals_the_validation_pipeline(tmp_path):
    # a non-square image: resized to longest side 64, padded bottom/right, exactly as the dataset serves it
    rng = np.random.default_rng(0)
    path = tmp_path / "000007.png"
    cv2.imwrite(str(path), rng.integers(0, 256, (50, 80, 3), dtype=np.uint8))
    record = Record(path, 7, 80, 50, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    sample = DetectionDataset([record], ["a"], 64)[0]
    tensor, scale = letterbox_image(read_image(path), 64)
    assert torch.equal(tensor, sample["image"]) and scale == pytest.approx(sample["scale"])
    assert find_images(tmp_path) == [path] and find_images(path) == [path]
    with pytest.raises(FileNotFoundError):
        find_images(tmp_path / "nope")


def test_data_keys_without_a_data_option_are_refused_by_name():
    """An `ablation/budget` (or any config in the global package) adds data.* keys to evaluate's empty data; the
    evaluation reads the checkpoint's data config, so it says which keys to leave out instead of a KeyError."""
    from omegaconf import OmegaConf

    from detector.deploy.evaluate import data_config

    cfg = OmegaConf.create({"ckpt_path": "best.ckpt", "data": {"img_size": 128, "num_workers": 0}, "split": "val"})
    meta = {"run_config": {"data": {"_target_": "detector.data.datamodule.DetectionDataModule", "num_classes": 5}},
            "num_classes": 5}
    with pytest.raises(ValueError, match=r"data\.img_size, data\.num_workers given without a data=<option>"):
        data_config(cfg, meta)
