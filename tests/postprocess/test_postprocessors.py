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
