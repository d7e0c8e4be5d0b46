"""VOC AP: 11-point (VOC07) and area interpolation on hand-worked PR curves; matching with duplicates and
difficult/crowd ground truth."""

import math

import numpy as np
import pytest

from detector.evaluation.voc_metric import voc_ap, voc_evaluate

# Hand-worked PR curve: 4 positives; detections in decreasing score are TP, FP, TP, TP, FP:
#   detection   cum TP  cum FP  recall      precision
#   1 TP        1       0       1/4 = 0.25  1/1 = 1
#   2 FP        1       1       0.25        1/2 = 0.5
#   3 TP        2       1       2/4 = 0.5   2/3
#   4 TP        3       1       3/4 = 0.75  3/4 = 0.75
#   5 FP        3       2       0.75        3/5 = 0.6
RECALL = [0.25, 0.25, 0.5, 0.75, 0.75]
PRECISION = [1.0, 0.5, 2 / 3, 0.75, 0.6]
# 11-point: p_interp(t) = max precision at recall >= t
#   t = 0.0, 0.1, 0.2           -> 1     (detection 1 has recall 0.25 >= t)          3 points x 1
#   t = 0.3, 0.4, 0.5, 0.6, 0.7 -> 0.75  (max of 2/3, 0.75, 0.6 at recall 0.5, 0.75)  5 points x 0.75
#   t = 0.8, 0.9, 1.0           -> 0     (recall never reaches 0.8)                   3 points x 0
#   AP = (3 * 1 + 5 * 0.75 + 0) / 11 = 6.75 / 11
AP_07 = 6.75 / 11
# area: precision envelope 1 on recall (0, 0.25], 0.75 on (0.25, 0.5] and (0.5, 0.75], 0 after
#   AP = 0.25 * 1 + 0.25 * 0.75 + 0.25 * 0.75 = 0.625
AP_AREA = 0.625


def test_eleven_point_and_area_ap_of_the_hand_worked_curve():
    assert voc_ap(RECALL, PRECISION, use_07_metric=True) == pytest.approx(AP_07, abs=1e-12)
    assert voc_ap(RECALL, PRECISION, use_07_metric=False) == pytest.approx(AP_AREA, abs=1e-12)


def test_recall_exactly_on_a_recall_point_counts():
    # recall 0.3 exactly (3 of 10): t = 0.3 must see it (np.arange(0, 1.1, 0.1) would give t = 0.30000000000000004)
    # t = 0.0 .. 0.3 -> precision 1 (4 points); AP = 4 / 11
    assert voc_ap([0.1, 0.2, 3 / 10], [1.0, 1.0, 1.0], use_07_metric=True) == pytest.approx(4 / 11)


def test_no_detections_gives_zero():
    assert voc_ap([], [], True) == 0.0 and voc_ap([], [], False) == 0.0


# The same curve from boxes: one image, 4 GT of class 0, plus a crowd ("difficult") region
GT = [(0, 0, 20, 20, 0), (40, 0, 60, 20, 0), (80, 0, 100, 20, 0), (120, 0, 140, 20, 0), (0, 100, 50, 150, 0, 1)]
DETECTIONS = [
    (0, 0, 20, 20, 0.9, 0),        # TP on GT 1
    (0, 0, 50, 50, 0.85, 0),       # best IoU 400 / 2500 = 0.16 (GT 1): FP
    (0, 100, 50, 150, 0.95, 0),    # on the crowd region: ignored (neither TP nor FP)
    (40, 0, 60, 20, 0.7, 0),       # TP on GT 2
    (80, 1, 100, 21, 0.6, 0),      # TP on GT 3 (IoU 19*20 / (2*400 - 380) = 0.905)
    (1, 0, 21, 20, 0.5, 0),        # duplicate of GT 1 (IoU 0.905): FP
]
# in score order: crowd (ignored), TP, FP, TP, TP, FP -> exactly the hand-worked curve above


def test_matching_duplicates_and_crowd_from_boxes(coco_helpers):
    make_coco, make_results = coco_helpers
    result = voc_evaluate(make_coco({1: GT}), make_results({1: DETECTIONS}))
    per_class = result["per_class"][3]
    assert per_class["npos"] == 4
    assert per_class["ap_07"] == pytest.approx(AP_07, abs=1e-9) and per_class["ap_area"] == pytest.approx(AP_AREA, abs=1e-9)
    # class 7 has no ground truth: NaN, left out of the mean
    assert math.isnan(result["per_class"][7]["ap_07"]) and result["map_07"] == pytest.approx(AP_07, abs=1e-9)


def test_without_the_crowd_flag_the_region_is_a_positive(coco_helpers):
    # the same boxes with the crowd region as an ordinary GT: npos 5 and the 0.95 detection becomes a TP,
    # so the AP changes (the crowd handling above is what made it equal the hand-worked value)
    make_coco, make_results = coco_helpers
    gt = [*GT[:4], GT[4][:5]]
    per_class = voc_evaluate(make_coco({1: gt}), make_results({1: DETECTIONS}))["per_class"][3]
    assert per_class["npos"] == 5
    # TP TP FP TP TP FP over 5 positives; 11-point: t <= 0.4 -> 1 (5 points), 0.5..0.8 -> 0.8 (4 points), 0.9, 1 -> 0
    assert per_class["ap_07"] == pytest.approx((5 * 1 + 4 * 0.8) / 11, abs=1e-9)


def test_iou_threshold_is_strict_and_other_images_do_not_match(coco_helpers):
    make_coco, make_results = coco_helpers
    # detection with IoU exactly 0.5 (20x20 GT, detection 20x10 inside it): VOC needs IoU > 0.5 -> FP
    gt = {1: [(0, 0, 20, 20, 0)], 2: [(0, 0, 20, 20, 0)]}
    half = voc_evaluate(make_coco(gt), make_results({1: [(0, 0, 20, 10, 0.9, 0)]}))["per_class"][3]
    assert half["ap_07"] == 0.0
    # a perfect box in image 1 matches image 1's GT only: recall 1/2, precision 1 -> 11-point (6 * 1) / 11
    one = voc_evaluate(make_coco(gt), make_results({1: [(0, 0, 20, 20, 0.9, 0)]}))["per_class"][3]
    assert one["ap_07"] == pytest.approx(6 / 11) and one["ap_area"] == pytest.approx(0.5)
    # restricted to image 1, the same detection is perfect
    assert voc_evaluate(make_coco(gt), make_results({1: [(0, 0, 20, 20, 0.9, 0)]}), image_ids=[1])["map_07"] == pytest.approx(1.0)


def test_random_curve_against_a_direct_formula():
    rng = np.random.default_rng(0)
    tp = rng.uniform(size=50) < 0.6
    recall, precision = np.cumsum(tp) / 40, np.cumsum(tp) / np.arange(1, 51)
    expected = np.mean([precision[recall >= t].max() if (recall >= t).any() else 0 for t in [i / 10 for i in range(11)]])
    assert voc_ap(recall, precision, True) == pytest.approx(expected)
    # the area metric is at least the plain sum of precision at each new TP / npos (the envelope only raises it)
    assert voc_ap(recall, precision, False) >= precision[tp].sum() / 40 - 1e-12
