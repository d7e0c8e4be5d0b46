"""Per-class AP from COCOeval's precision array on hand-built detections where the AP is known, the tables,
crowd handling, and the full report."""

import csv
import json
import math

import numpy as np
import pytest

from detector.evaluation.coco import run_coco_eval, stats_dict
from detector.evaluation.per_class import per_class_ap, to_markdown, write_csv
from detector.evaluation.report import evaluate_report

from .conftest import CATEGORY_IDS, CLASS_NAMES, make_coco, make_results

# two images; class 0 ("cat", id 3) has two GT, class 1 ("dog", id 7) one GT and a crowd region in image 2
GT = {1: [(10, 10, 60, 80, 0), (100, 100, 180, 150, 1)], 2: [(20, 30, 120, 90, 0), (0, 120, 100, 200, 1, 1)]}
CAT_1, DOG_1, CAT_2, CROWD = (10, 10, 60, 80), (100, 100, 180, 150), (20, 30, 120, 90), (0, 120, 100, 200)
FAR_AWAY = (150, 0, 190, 40)


def per_class(detections, gt=GT):
    coco = make_coco(gt)
    results = make_results(detections)
    evaluator = run_coco_eval(coco, results, list(gt))
    return {row["class"]: row for row in per_class_ap(evaluator, CLASS_NAMES, CATEGORY_IDS, results)}, stats_dict(evaluator)


def test_perfect_detections():
    rows, stats = per_class({1: [(*CAT_1, 0.9, 0), (*DOG_1, 0.8, 1)], 2: [(*CAT_2, 0.7, 0)]})
    for row in rows.values():
        assert row["ap"] == pytest.approx(1.0) and row["ap50"] == pytest.approx(1.0) and row["ap75"] == pytest.approx(1.0)
    assert (rows["cat"]["gt"], rows["dog"]["gt"]) == (2, 1)  # the crowd region is not a GT box
    assert (rows["cat"]["detections"], rows["dog"]["detections"]) == (2, 1)
    assert stats["map"] == pytest.approx(1.0)


def test_one_false_positive_ranked_between_the_hits():
    # cat: TP (0.9), FP (0.8), TP (0.7): precision 1 up to recall 0.5, then 2/3 up to recall 1.
    # COCO's 101 recall points: 51 points (0, 0.01, ..., 0.5) at precision 1, 50 points (0.51 .. 1) at 2/3
    #   AP = (51 * 1 + 50 * 2/3) / 101 = 84.333 / 101 = 0.83498 at every IoU threshold (exact boxes)
    rows, stats = per_class({1: [(*CAT_1, 0.9, 0), (*FAR_AWAY, 0.8, 0), (*DOG_1, 0.8, 1)], 2: [(*CAT_2, 0.7, 0)]})
    expected = (51 + 50 * 2 / 3) / 101
    assert rows["cat"]["ap"] == pytest.approx(expected, abs=1e-9) and rows["cat"]["ap50"] == pytest.approx(expected, abs=1e-9)
    assert rows["dog"]["ap"] == pytest.approx(1.0)
    # the overall mAP is the mean of the per-class APs
    assert stats["map"] == pytest.approx((expected + 1) / 2, abs=1e-9)


def test_one_missed_ground_truth():
    # cat: only the first of two GT found: precision 1 up to recall 0.5 -> AP = 51 / 101
    rows, _ = per_class({1: [(*CAT_1, 0.9, 0), (*DOG_1, 0.8, 1)]})
    assert rows["cat"]["ap"] == pytest.approx(51 / 101, abs=1e-9) and rows["dog"]["ap"] == pytest.approx(1.0)


def test_shifted_box_counts_at_low_iou_thresholds_only():
    # dog detection shifted 23.5 px right on an 80x50 box: IoU = 56.5*50 / (2*4000 - 56.5*50) = 0.5460
    # -> TP at thresholds 0.50 only (0.55 > 0.546): AP50 = 1, AP75 = 0, AP50-95 = 1/10
    rows, _ = per_class({1: [(*CAT_1, 0.9, 0), (123.5, 100, 203.5, 150, 0.8, 1)], 2: [(*CAT_2, 0.7, 0)]})
    assert rows["dog"]["ap50"] == pytest.approx(1.0) and rows["dog"]["ap75"] == 0.0
    assert rows["dog"]["ap"] == pytest.approx(0.1, abs=1e-9)


def test_detection_on_a_crowd_region_is_ignored():
    # the 0.95 dog detection on the crowd region would be a false positive ranked first; as crowd it is ignored
    detections = {1: [(*CAT_1, 0.9, 0), (*DOG_1, 0.8, 1)], 2: [(*CAT_2, 0.7, 0), (*CROWD, 0.95, 1)]}
    rows, _ = per_class(detections)
    assert rows["dog"]["ap"] == pytest.approx(1.0)
    # the same region as an ordinary GT box: the detection is a true positive and the dog count is 2
    not_crowd = {1: GT[1], 2: [GT[2][0], (*CROWD, 1)]}
    rows_plain, _ = per_class(detections, not_crowd)
    assert rows_plain["dog"]["gt"] == 2 and rows_plain["dog"]["ap"] == pytest.approx(1.0)
    # as an ordinary GT but without that detection: recall 1/2 -> 51/101
    rows_missed, _ = per_class({1: detections[1], 2: detections[2][:1]}, not_crowd)
    assert rows_missed["dog"]["ap"] == pytest.approx(51 / 101, abs=1e-9)


def test_class_without_ground_truth_is_nan_and_left_out_of_the_mean():
    gt = {1: [(10, 10, 60, 80, 0)]}
    rows, stats = per_class({1: [(*CAT_1, 0.9, 0), (*DOG_1, 0.8, 1)]}, gt)
    assert rows["cat"]["ap"] == pytest.approx(1.0) and math.isnan(rows["dog"]["ap"]) and rows["dog"]["gt"] == 0
    assert stats["map"] == pytest.approx(1.0)
    markdown = to_markdown(list(rows.values()))
    assert "| dog | 7 | 0 | 1 | - |" in markdown and "| all |  | 1 | 2 | 1.0000 |" in markdown


def test_tables_markdown_and_csv(tmp_path):
    rows, _ = per_class({1: [(*CAT_1, 0.9, 0), (*DOG_1, 0.8, 1)]})
    markdown = to_markdown(list(rows.values()))
    lines = markdown.strip().splitlines()
    assert lines[0].startswith("| class | id | GT | dets | AP50-95 | AP50 | AP75")
    assert len(lines) == 2 + 2 + 1  # header, rule, 2 classes, all
    assert lines[2].startswith(f"| cat | 3 | 2 | 1 | {51 / 101:.4f} |")
    write_csv(list(rows.values()), tmp_path / "t.csv")
    with open(tmp_path / "t.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["class"] for r in table] == ["cat", "dog", "all"]
    assert float(table[0]["ap"]) == pytest.approx(51 / 101) and float(table[2]["ap"]) == pytest.approx((51 / 101 + 1) / 2)


def test_mean_of_per_class_ap_equals_map_on_random_detections():
    rng = np.random.default_rng(1)
    gt, detections = {}, {}
    for image_id in range(1, 16):
        xy, wh = rng.uniform(0, 150, (4, 2)), rng.uniform(5, 50, (4, 2))
        gt[image_id] = [(*xy[i], *(xy[i] + wh[i]), int(rng.integers(2))) for i in range(4)]
        detections[image_id] = [(*(np.array(b[:4]) + rng.normal(0, 2, 4)), float(rng.uniform()), b[4] if rng.uniform() < 0.8 else 1 - b[4])
                                for b in gt[image_id]]
    rows, stats = per_class(detections, gt)
    assert 0.1 < stats["map"] < 0.9
    assert np.mean([r["ap"] for r in rows.values()]) == pytest.approx(stats["map"], abs=1e-12)
    assert np.mean([r["ap50"] for r in rows.values()]) == pytest.approx(stats["map_50"], abs=1e-12)


def test_full_report_writes_every_file(tmp_path):
    coco = make_coco(GT)
    results = make_results({1: [(*CAT_1, 0.9, 0), (*FAR_AWAY, 0.8, 0), (*DOG_1, 0.8, 1)], 2: [(*CAT_2, 0.7, 0)]})
    report = evaluate_report(coco, results, list(GT), CLASS_NAMES, CATEGORY_IDS, tmp_path)
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["coco"]["map"] == pytest.approx(((51 + 50 * 2 / 3) / 101 + 1) / 2)
    # VOC07 11-point for cat: (r 0.5, p 1), (0.5, 0.5), (1, 2/3): t = 0..0.5 -> 1 (6 points), 0.6..1 -> 2/3 (5 points)
    assert saved["per_class"][0]["voc07_ap50"] == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert saved["voc"]["map50_voc07_11point"] == pytest.approx(((6 + 5 * 2 / 3) / 11 + 1) / 2)
    for name in ("per_class.md", "per_class.csv", "pr_curve_iou50.png", "pr_curve_iou50-95.png", "confusion_matrix.png"):
        assert (tmp_path / name).stat().st_size > 100, name
        assert name in saved["files"]
    assert report["per_class_markdown"] == (tmp_path / "per_class.md").read_text()
