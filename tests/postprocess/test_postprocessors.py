import torch

from detector.models.heads.dfl import DFLHeadOutput
from detector.models.priors import Priors
from detector.postprocess.postprocessors import Postprocessor

REG_MAX = 16


def output_with(boxes_ltrb, cls_logits, points):
    logits = torch.nn.functional.one_hot(torch.tensor(boxes_ltrb), REG_MAX).float().mul(50).flatten(-2)
    strides = torch.full((len(points), 1), 8.0)
    priors = Priors(torch.tensor(points) * strides, strides, None, (len(points),))
    return DFLHeadOutput(logits.unsqueeze(0), torch.tensor(cls_logits).unsqueeze(0), priors)


def test_decode_threshold_nms_and_pixels():
    # anchors 0 and 1 predict nearly the same box (class 0); anchor 2 the same box for class 1
    points = [[5.5, 5.5], [5.5, 6.5], [5.5, 5.5], [10.5, 10.5]]
    ltrb = [[2, 2, 2, 2], [2, 3, 2, 1], [2, 2, 2, 2], [1, 1, 1, 1]]
    logits = [[4.0, -9.0], [2.0, -9.0], [-9.0, 3.0], [-9.0, -9.0]]  # anchor 3 is below any threshold
    detections = Postprocessor(conf_threshold=0.01, iou_threshold=0.5)(output_with(ltrb, logits, points))[0]
    # class-aware NMS: the class-0 duplicate is suppressed, the class-1 box at the same place is kept
    assert detections["labels"].tolist() == [0, 1]
    torch.testing.assert_close(detections["boxes"], torch.tensor([[28.0, 28, 60, 60], [28, 28, 60, 60]]))
    torch.testing.assert_close(detections["scores"], torch.sigmoid(torch.tensor([4.0, 3.0])))


def test_max_detections_and_empty_images():
    points = [[float(i) + 0.5, 0.5] for i in range(10)]
    ltrb = [[0, 0, 1, 1]] * 10  # disjoint boxes
    logits = [[float(i), -9.0] for i in range(10)]
    detections = Postprocessor(conf_threshold=0.01, max_detections=3)(output_with(ltrb, logits, points))[0]
    assert len(detections["scores"]) == 3 and detections["scores"].tolist() == sorted(detections["scores"].tolist(), reverse=True)
    none = Postprocessor(conf_threshold=0.9999)(output_with(ltrb, [[-9.0, -9.0]] * 10, points))[0]
    assert none["boxes"].shape == (0, 4) and none["labels"].shape == (0,)


# ---- end-to-end heads: the one-to-one branch without NMS ----

def test_top_detections_by_anchor_then_by_pair():
    from detector.postprocess.postprocessors import top_detections

    boxes = torch.arange(16.0).view(1, 4, 4)
    scores = torch.tensor([[[0.9, 0.8], [0.1, 0.2], [0.3, 0.85], [0.05, 0.0]]])
    top_boxes, top_scores, labels = top_detections(boxes, scores, k=3)
    # the 3 anchors with the best class score are 0 (0.9), 2 (0.85), 1 (0.2); their best 3 pairs:
    # (0, c0) 0.9, (2, c1) 0.85, (0, c1) 0.8 -- an anchor may give several classes, as YOLOv10
    torch.testing.assert_close(top_scores, torch.tensor([[0.9, 0.85, 0.8]]))
    assert labels.tolist() == [[0, 1, 1]]
    assert torch.equal(top_boxes[0], boxes[0, [0, 2, 0]])
    assert top_detections(boxes, scores, k=10)[1].shape == (1, 4)  # k capped at the anchors


def test_one_to_one_branch_keeps_duplicates_that_nms_would_remove():
    points = [[5.5, 5.5], [5.5, 6.5], [5.5, 5.5], [10.5, 10.5]]
    ltrb = [[2, 2, 2, 2], [2, 3, 2, 1], [2, 2, 2, 2], [1, 1, 1, 1]]
    logits = [[4.0, -9.0], [2.0, -9.0], [-9.0, 3.0], [-9.0, -9.0]]
    many = output_with(ltrb, [[-9.0, -9.0]] * 4, points)  # the one-to-many branch scores nothing
    output = many._replace(one2one=output_with(ltrb, logits, points))
    detections = Postprocessor(conf_threshold=0.01, iou_threshold=0.5)(output)[0]
    # no NMS: the class-0 near-duplicate (anchor 1) stays; anchor 3 is below the threshold
    torch.testing.assert_close(detections["scores"], torch.sigmoid(torch.tensor([4.0, 3.0, 2.0])))
    assert detections["labels"].tolist() == [0, 1, 0]
    # one2one=false: the one-to-many branch with NMS (here: nothing above the threshold)
    assert len(Postprocessor(conf_threshold=0.01, one2one=False)(output)[0]["scores"]) == 0


def test_one_to_one_requested_on_a_head_without_that_branch():
    import pytest

    output = output_with([[1, 1, 1, 1]], [[1.0, 1.0]], [[2.5, 2.5]])
    with pytest.raises(ValueError, match="no one-to-one branch"):
        Postprocessor(one2one=True)(output)
