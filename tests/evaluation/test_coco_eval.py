"""COCO evaluation: perfect detections, hand-computed AP, agreement with pycocotools run directly."""

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detector.evaluation.coco import STAT_NAMES, COCOEvaluator, to_coco_results

CATEGORY_IDS = [3, 7]  # contiguous label 0 -> COCO id 3, label 1 -> 7


def ground_truth(boxes_per_image):
    images, annotations = [], []
    for image_id, boxes in boxes_per_image.items():
        images.append({"id": image_id, "width": 200, "height": 200})
        for x1, y1, x2, y2, label in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": CATEGORY_IDS[label],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": [{"id": c, "name": str(c)} for c in CATEGORY_IDS]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


GT = {1: [(10, 10, 60, 80, 0), (100, 100, 180, 150, 1)], 2: [(20, 30, 120, 90, 1)]}


def evaluate(detections_per_image, gt=GT):
    evaluator = COCOEvaluator(ground_truth(gt), CATEGORY_IDS)
    for image_id, detections in detections_per_image.items():
        boxes = torch.tensor([d[:4] for d in detections], dtype=torch.float32).reshape(-1, 4)
        scores = torch.tensor([d[4] for d in detections], dtype=torch.float32)
        labels = torch.tensor([d[5] for d in detections], dtype=torch.long)
        evaluator.update(image_id, boxes, scores, labels)
    return evaluator.compute()


def test_ground_truth_as_detections_gives_map_one():
    stats = evaluate({i: [(*b[:4], 0.9, b[4]) for b in boxes] for i, boxes in GT.items()})
    assert stats["map"] == pytest.approx(1.0) and stats["map_50"] == pytest.approx(1.0)
    assert stats["mar_100"] == pytest.approx(1.0) and stats["images"] == 2
    assert set(STAT_NAMES) <= set(stats)


def test_one_false_positive_and_one_miss_hand_computed():
    # one class, two GT; detections: exact hit (0.9), then a false positive (0.8); the second GT is missed.
    # precision 1 up to recall 0.5, then nothing: 101-point AP = 51 / 101 at every IoU threshold
    gt = {1: [(10, 10, 60, 80, 0), (100, 100, 180, 150, 0)]}
    stats = evaluate({1: [(10, 10, 60, 80, 0.9, 0), (0, 150, 40, 190, 0.8, 0)]}, gt)
    assert stats["map"] == pytest.approx(51 / 101, abs=1e-6)
    assert stats["map_50"] == pytest.approx(51 / 101, abs=1e-6)
    assert stats["mar_100"] == pytest.approx(0.5)


def test_shifted_box_counts_only_at_low_iou_thresholds():
    # GT 100x100; detection shifted by 23.5 px in x: IoU = 76.5*100 / (2*10000 - 7650) = 0.6194
    # -> a true positive at thresholds 0.50, 0.55, 0.60 only: mAP = 3/10, AP50 = 1, AP75 = 0
    gt = {1: [(50, 50, 150, 150, 1)]}
    stats = evaluate({1: [(73.5, 50, 173.5, 150, 0.7, 1)]}, gt)
    assert stats["map"] == pytest.approx(0.3, abs=1e-6)
    assert stats["map_50"] == pytest.approx(1.0) and stats["map_75"] == pytest.approx(0.0)


def test_agrees_with_pycocotools_on_random_detections():
    rng = np.random.default_rng(0)
    gt, detections = {}, {}
    for image_id in range(1, 21):
        xy = rng.uniform(0, 150, (5, 2))
        wh = rng.uniform(5, 50, (5, 2))
        gt[image_id] = [(*xy[i], *(xy[i] + wh[i]), int(rng.integers(2))) for i in range(5)]
        noisy = [(b[0] + rng.normal(0, 3), b[1] + rng.normal(0, 3), b[2] + rng.normal(0, 3), b[3] + rng.normal(0, 3),
                  float(rng.uniform()), b[4] if rng.uniform() < 0.8 else 1 - b[4]) for b in gt[image_id]]
        detections[image_id] = noisy[:4]
    ours = evaluate(detections, gt)
    coco_gt = ground_truth(gt)
    results = [{"image_id": i, "category_id": CATEGORY_IDS[d[5]], "bbox": [d[0], d[1], d[2] - d[0], d[3] - d[1]], "score": d[4]}
               for i, dets in detections.items() for d in dets]
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        reference.evaluate(), reference.accumulate(), reference.summarize()
    for name, value in zip(STAT_NAMES, reference.stats):
        assert ours[name] == pytest.approx(max(value, 0.0), abs=1e-4), name
    assert 0.1 < ours["map"] < 0.95  # neither trivial nor perfect


def test_no_detections_gives_zero_not_a_crash():
    stats = evaluate({1: [], 2: []})
    assert stats["map"] == 0.0 and stats["images"] == 2


def test_only_seen_images_are_evaluated():
    # image 2 was never seen (e.g. limit_val_batches): it does not count as missed
    stats = evaluate({1: [(*b[:4], 0.9, b[4]) for b in GT[1]]})
    assert stats["map"] == pytest.approx(1.0) and stats["images"] == 1


def test_coco_results_are_rounded_xywh_with_category_ids():
    detections = {"boxes": torch.tensor([[10.12345, 20.0, 30.5, 60.0004]]), "scores": torch.tensor([0.5]),
                  "labels": torch.tensor([1])}
    [entry] = to_coco_results(np.int64(4), detections, CATEGORY_IDS, file_name="a.jpg")
    assert entry == {"image_id": 4, "category_id": 7, "bbox": pytest.approx([10.123, 20.0, 20.377, 40.0]),
                     "score": 0.5, "file_name": "a.jpg"}
    assert all(round(v, 3) == v for v in entry["bbox"]) and type(entry["image_id"]) is int
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    assert to_coco_results(1, empty, CATEGORY_IDS) == []
    # the training evaluator collects exactly these entries
    evaluator = COCOEvaluator(ground_truth(GT), CATEGORY_IDS)
    evaluator.update(4, detections["boxes"], detections["scores"], detections["labels"])
    assert evaluator._per_image[4] == to_coco_results(4, detections, CATEGORY_IDS)
