"""NMS options: DIoU-NMS on a hand-worked case and against a plain-Python reference, class-aware vs
class-agnostic on a hand case, and the Postprocessor's `nms` option."""

import pytest
import torch
from torchvision.ops import nms as torchvision_nms

from detector.models.heads.dfl import DFLHeadOutput
from detector.models.priors import Priors
from detector.postprocess.nms import NMS_METHODS, diou_matrix, diou_nms, nms
from detector.postprocess.postprocessors import Postprocessor

A = [0.0, 0.0, 10.0, 10.0]
B = [4.0, 0.0, 14.0, 10.0]   # A shifted 4 px right
C = [0.0, 0.0, 10.0, 9.0]    # A one px shorter
D = [0.5, 0.0, 10.5, 10.0]   # A shifted half a px

# A vs B: intersection 6 x 10 = 60, union 100 + 100 - 60 = 140 -> IoU = 3/7 = 0.428571
#   centres (5, 5) and (9, 5): rho^2 = 16; enclosing box [0, 0, 14, 10]: c^2 = 14^2 + 10^2 = 296
#   DIoU = 3/7 - 16/296 = 0.428571 - 0.054054 = 0.374517
# A vs C: IoU = 90 / 100 = 0.9; centres (5, 5), (5, 4.5): rho^2 = 0.25; c^2 = 10^2 + 10^2 = 200
#   DIoU = 0.9 - 0.00125 = 0.89875
DIOU_AB = 3 / 7 - 16 / 296
DIOU_AC = 0.9 - 0.25 / 200


def test_diou_matrix_hand_values():
    d = diou_matrix(torch.tensor([A]), torch.tensor([B, C, A]))[0]
    torch.testing.assert_close(d, torch.tensor([DIOU_AB, DIOU_AC, 1.0]), atol=1e-6, rtol=0)


def test_diou_nms_keeps_the_offset_box_that_plain_nms_suppresses():
    # scores A 0.9, C 0.85, B 0.8, threshold 0.4:
    #   plain NMS: IoU(A, C) = 0.9 > 0.4 and IoU(A, B) = 0.4286 > 0.4 -> only A survives
    #   DIoU-NMS:  DIoU(A, C) = 0.899 > 0.4 suppresses C; DIoU(A, B) = 0.3745 <= 0.4 keeps B -> A, B
    boxes, scores = torch.tensor([A, B, C]), torch.tensor([0.9, 0.8, 0.85])
    labels = torch.zeros(3, dtype=torch.long)
    assert torchvision_nms(boxes, scores, 0.4).tolist() == [0]
    assert diou_nms(boxes, scores, labels, 0.4).tolist() == [0, 1]
    assert nms(boxes, scores, labels, 0.4, "diou").tolist() == [0, 1]
    # a threshold below DIoU(A, B) suppresses B as well; above DIoU(A, C) nothing is suppressed
    assert diou_nms(boxes, scores, labels, 0.37).tolist() == [0]
    assert diou_nms(boxes, scores, labels, 0.9).tolist() == [0, 2, 1]


def test_class_aware_and_class_agnostic_hand_case():
    # A (class 0, 0.9) and D (class 1, 0.7): IoU = 9.5 * 10 / (200 - 95) = 0.905 > 0.5
    # class-aware: different classes never suppress each other -> both; class-agnostic: D suppressed
    boxes, scores, labels = torch.tensor([A, D]), torch.tensor([0.9, 0.7]), torch.tensor([0, 1])
    assert nms(boxes, scores, labels, 0.5, "class_aware").tolist() == [0, 1]
    assert nms(boxes, scores, labels, 0.5, "class_agnostic").tolist() == [0]
    assert nms(boxes, scores, labels, 0.5, "diou").tolist() == [0, 1]
    assert nms(boxes, scores, labels, 0.5, "diou_agnostic").tolist() == [0]
    # the same pair with one class: every method suppresses D
    same = torch.zeros(2, dtype=torch.long)
    for method in NMS_METHODS:
        assert nms(boxes, scores, same, 0.5, method).tolist() == [0], method


def reference_diou_nms(boxes, scores, labels, threshold):
    """Plain-Python greedy DIoU-NMS, one pair at a time."""
    def diou(p, q):
        iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
        ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
        inter = iw * ih
        union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
        rho2 = ((p[0] + p[2]) / 2 - (q[0] + q[2]) / 2) ** 2 + ((p[1] + p[3]) / 2 - (q[1] + q[3]) / 2) ** 2
        c2 = (max(p[2], q[2]) - min(p[0], q[0])) ** 2 + (max(p[3], q[3]) - min(p[1], q[1])) ** 2
        return inter / union - rho2 / c2

    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep, suppressed = [], set()
    for n, i in enumerate(order):
        if i in suppressed:
            continue
        keep.append(i)
        for j in order[n + 1:]:
            if labels[j] == labels[i] and diou(boxes[i], boxes[j]) > threshold:
                suppressed.add(j)
    return keep


def test_diou_nms_equals_the_reference_on_random_boxes():
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        xy = torch.rand(120, 2, generator=generator) * 50
        boxes = torch.cat((xy, xy + 5 + torch.rand(120, 2, generator=generator) * 30), 1).double()
        scores = torch.rand(120, generator=generator).double()
        labels = torch.randint(0, 3, (120,), generator=generator)
        keep = diou_nms(boxes, scores, labels, 0.3)
        expected = reference_diou_nms(boxes.tolist(), scores.tolist(), labels.tolist(), 0.3)
        assert keep.tolist() == expected
        assert 10 < len(expected) < 110  # suppression happened, but not of everything
        assert diou_nms(boxes, scores, labels, 0.3, max_keep=7).tolist() == expected[:7]


def test_empty_input_and_unknown_method():
    empty = torch.zeros((0, 4))
    assert diou_nms(empty, torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).shape == (0,)
    with pytest.raises(ValueError, match="diou"):
        nms(torch.tensor([A]), torch.tensor([1.0]), torch.tensor([0]), 0.5, "soft")
    with pytest.raises(ValueError, match="class_agnostic"):
        Postprocessor(nms="nope")


REG_MAX = 16


def head_output(ltrb, cls_logits, points):
    """Head output that decodes to exact boxes (as tests/test_postprocess.py builds it)."""
    logits = torch.nn.functional.one_hot(torch.tensor(ltrb), REG_MAX).float().mul(50).flatten(-2)
    priors = Priors(torch.tensor(points), torch.ones(len(points), 1), None, (len(points),))
    return DFLHeadOutput(logits.unsqueeze(0), torch.tensor(cls_logits).unsqueeze(0), priors)


def test_postprocessor_nms_option():
    # stride 1, so boxes are points -/+ ltrb: anchor 0 -> [0,0,10,10] = A (class 0), anchor 1 -> [4,0,14,10] = B
    # (class 0), anchor 2 -> [0,0,10,10] for class 1 only
    points = [[5.0, 5.0], [9.0, 5.0], [5.0, 5.0]]
    ltrb = [[5, 5, 5, 5], [5, 5, 5, 5], [5, 5, 5, 5]]
    logits = [[3.0, -9.0], [2.0, -9.0], [-9.0, 1.0]]
    output = head_output(ltrb, logits, points)

    def run(method):
        return Postprocessor(conf_threshold=0.01, iou_threshold=0.4, nms=method)(output)[0]

    aware, agnostic, diou = run("class_aware"), run("class_agnostic"), run("diou")
    # class-aware IoU NMS: B suppressed by A (0.43 > 0.4); the class-1 box stays
    assert aware["labels"].tolist() == [0, 1] and aware["boxes"][0].tolist() == A
    # class-agnostic: the class-1 box at A's place is suppressed too
    assert agnostic["labels"].tolist() == [0]
    # DIoU: B survives (DIoU 0.37 <= 0.4)
    assert diou["labels"].tolist() == [0, 0, 1] and diou["boxes"][1].tolist() == B
    assert Postprocessor(conf_threshold=0.01, iou_threshold=0.4, nms="diou", max_detections=2)(output)[0]["labels"].tolist() == [0, 0]
