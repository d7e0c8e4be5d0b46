"""Confusion matrix with a background row/column on a hand case; PR-curve data and the PNG plots."""

import cv2
import numpy as np

from detector.evaluation.coco import run_coco_eval
from detector.evaluation.confusion import confusion_matrix
from detector.evaluation.plots import plot_confusion_matrix, plot_pr_curves, pr_curves

from .conftest import CATEGORY_IDS, CLASS_NAMES, make_coco, make_results

GT = {1: [(10, 10, 60, 80, 0), (100, 100, 180, 150, 1)], 2: [(20, 30, 120, 90, 0), (0, 120, 100, 200, 1, 1)]}


def test_confusion_matrix_hand_case():
    detections = make_results({
        1: [(10, 10, 60, 80, 0.9, 0),      # cat on the cat: [cat, cat]
            (102, 100, 182, 150, 0.8, 0),  # cat on the dog (IoU 0.95): [dog, cat]
            (150, 0, 190, 40, 0.7, 1)],    # dog on nothing: [background, dog]
        2: [(20, 30, 120, 90, 0.1, 0),     # below conf 0.25: not counted, so the cat in image 2 is missed: [cat, bg]
            (0, 120, 100, 200, 0.9, 1)],   # dog on the crowd region: ignored
    })
    matrix = confusion_matrix(make_coco(GT), detections, CATEGORY_IDS, conf_threshold=0.25, iou_threshold=0.5)
    #                   predicted: cat dog background
    expected = np.array([[1, 0, 1],      # true cat
                         [1, 0, 0],      # true dog
                         [0, 1, 0]])     # background
    np.testing.assert_array_equal(matrix, expected)
    # every GT box is counted exactly once (matched or missed): row sums are the GT counts
    assert matrix[:2].sum(1).tolist() == [2, 1]
    # a lower confidence threshold matches the image-2 cat
    low = confusion_matrix(make_coco(GT), detections, CATEGORY_IDS, conf_threshold=0.05)
    assert low[0].tolist() == [2, 0, 0]


def test_one_to_one_matching_by_decreasing_iou():
    # two detections on one GT: the better one (IoU 1) matches, the other is a false positive even though its
    # class is right; two GT with one detection between them: the one with the larger IoU is matched
    gt = {1: [(0, 0, 100, 100, 0)], 2: [(0, 0, 100, 100, 0), (10, 0, 110, 100, 1)]}
    detections = make_results({1: [(5, 0, 105, 100, 0.6, 0), (0, 0, 100, 100, 0.5, 1)], 2: [(8, 0, 108, 100, 0.9, 1)]})
    matrix = confusion_matrix(make_coco(gt), detections, CATEGORY_IDS)
    # image 1: [cat, dog] (IoU 1 beats 0.905) and the cat detection is [bg, cat];
    # image 2: the dog detection is closer to the dog GT (IoU 0.96 vs 0.85): [dog, dog]; the cat GT is missed
    np.testing.assert_array_equal(matrix, [[0, 1, 1], [0, 1, 0], [1, 0, 0]])


def test_pr_curves_data_and_png_files(tmp_path):
    coco = make_coco(GT)
    detections = make_results({1: [(10, 10, 60, 80, 0.9, 0), (150, 0, 190, 40, 0.8, 0)], 2: [(20, 30, 120, 90, 0.7, 0)]})
    evaluator = run_coco_eval(coco, detections, list(GT))
    recall, curves = pr_curves(evaluator, CATEGORY_IDS)
    assert recall.shape == (101,) and curves["iou50"].shape == (2, 101)
    # cat: precision 1 up to recall 0.5, then 2/3 (TP, FP, TP); its mean over the 101 points is the AP
    cat = curves["iou50"][0]
    assert np.allclose(cat[:51], 1.0) and np.allclose(cat[51:], 2 / 3)
    # dog: GT but no detections: precision 0 everywhere
    assert np.allclose(curves["iou50"][1], 0.0) and np.allclose(curves["iou50-95"][0], cat)
    paths = plot_pr_curves(evaluator, CLASS_NAMES, CATEGORY_IDS, tmp_path)
    matrix = confusion_matrix(coco, detections, CATEGORY_IDS)
    paths.append(plot_confusion_matrix(matrix, CLASS_NAMES, tmp_path / "confusion_matrix.png"))
    assert [p.name for p in paths] == ["pr_curve_iou50.png", "pr_curve_iou50-95.png", "confusion_matrix.png"]
    for path in paths:
        image = cv2.imread(str(path))
        assert image is not None and min(image.shape[:2]) > 300, path
        assert image.std() > 10  # something is drawn


def test_confusion_plot_scales_with_the_number_of_classes(tmp_path):
    widths = {}
    for classes in (3, 40):
        matrix = np.random.default_rng(0).integers(0, 20, (classes + 1, classes + 1))
        path = plot_confusion_matrix(matrix, [f"class{i}" for i in range(classes)], tmp_path / f"m{classes}.png",
                                     normalize=False)
        image = cv2.imread(str(path))
        assert image is not None and image.std() > 10, path
        widths[classes] = image.shape[1]
    # a side of the figure is max(6, 0.35 x (classes + 1) + 3) inches: 6 for 3 classes, 17.35 for 40
    assert widths[40] > 2 * widths[3], widths
