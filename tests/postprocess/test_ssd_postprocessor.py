"""SSD post-processing: softmax or sigmoid scores, per-class top-k and NMS over decoded priors."""

import math

import pytest
import torch

from detector.models.heads.dfl import DFLHeadOutput
from detector.models.heads.ssd import SSDHeadOutput
from detector.models.priors import Priors, box_centres
from detector.postprocess.postprocessors import Postprocessor, SSDPostprocessor

# five 10 x 10 priors (the tiny case of tests/criteria/test_multibox.py)
PRIORS = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30], [20, 20, 30, 30], [40, 40, 50, 50]])


def priors_of(boxes):
    return Priors(box_centres(boxes), torch.full((len(boxes), 1), 10.0), boxes, (len(boxes),))


def tiny_output():
    """Two images of an SSD head on PRIORS: background logit 0, a few class logits up."""
    logits = torch.zeros(2, 5, 3)
    logits[0, 1, 1], logits[0, 2, 1], logits[0, 3, 2] = 1.0, 2.0, 3.0
    logits[1, :, 1] = 5.0
    return SSDHeadOutput(torch.zeros(2, 5, 4), logits, priors_of(PRIORS))


def test_postprocessor_softmax_scores_topk_and_nms():
    logits = torch.full((1, 5, 3), -10.0)
    logits[0, :, 0] = 0.0
    logits[0, 0, 2] = 3.0  # prior 0: class 1, softmax e^3 / (1 + e^3 + e^-10)
    logits[0, 1, 1] = 1.0  # prior 1: class 0
    deltas = torch.zeros(1, 5, 4)
    post = SSDPostprocessor(conf_threshold=0.3)
    result = post(SSDHeadOutput(deltas, logits, priors_of(PRIORS)))[0]
    assert result["labels"].tolist() == [1, 0]
    torch.testing.assert_close(result["boxes"], PRIORS[:2])
    p0 = math.exp(3) / (1 + math.exp(3) + math.exp(-10))
    p1 = math.e / (1 + math.e + math.exp(-10))
    torch.testing.assert_close(result["scores"], torch.tensor([p0, p1]))
    # a duplicate of prior 0 with a lower score is suppressed (IoU 1), the same box of another class is not
    priors = torch.cat((PRIORS, PRIORS[:1]))
    logits = torch.cat((logits, torch.tensor([[[0.0, 2.0, 2.5]]])), 1)
    result = post(SSDHeadOutput(torch.zeros(1, 6, 4), logits, priors_of(priors)))[0]
    assert sorted(result["labels"].tolist()) == [0, 0, 1]
    # sigmoid activation (a head trained with a sigmoid loss) and top_k = 1 per class
    sigmoid = SSDPostprocessor(activation="sigmoid", top_k=1)
    result = sigmoid(SSDHeadOutput(torch.zeros(1, 6, 4), logits, priors_of(priors)))[0]
    assert sorted(result["labels"].tolist()) == [0, 1]
    torch.testing.assert_close(result["scores"].sort().values, torch.tensor([2.0, 3.0]).sigmoid())


def test_both_postprocessors_take_either_head_and_refuse_an_activation_it_cannot_give():
    yolo_output = DFLHeadOutput(torch.zeros(1, 2, 64), torch.zeros(1, 2, 2),
                                Priors(torch.full((2, 2), 20.0), torch.full((2, 1), 8.0), None, (2,)))
    with pytest.raises(ValueError, match="DFLHeadOutput class logits take sigmoid, not 'softmax'"):
        SSDPostprocessor(activation="softmax")(yolo_output)
    # the DFL head's sigmoid scores (0.5 each) through SSD's selection: one box per class
    assert sorted(SSDPostprocessor(activation="sigmoid", conf_threshold=0.4)(yolo_output)[0]["labels"].tolist()) == [0, 1]
    # an SSD head through the multi-label NMS: prior 0 (softmax) is the best box of class 1, as in SSD's selection
    multi_label = Postprocessor(conf_threshold=0.3, activation="softmax")(tiny_output())[0]
    assert multi_label["boxes"].shape[1] == 4 and 1 in multi_label["labels"].tolist()
