"""SSD post-processing: softmax or sigmoid scores, per-class top-k and NMS over decoded priors."""

import math

import torch

from detector.models.ssd import SSDHeadOutput
from detector.postprocess.postprocessors import SSDPostprocessor

# five 10 x 10 priors (the tiny case of tests/criteria/test_multibox.py)
PRIORS = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30], [20, 20, 30, 30], [40, 40, 50, 50]])


def test_postprocessor_softmax_scores_topk_and_nms():
    logits = torch.full((1, 5, 3), -10.0)
    logits[0, :, 0] = 0.0
    logits[0, 0, 2] = 3.0  # prior 0: class 1, softmax e^3 / (1 + e^3 + e^-10)
    logits[0, 1, 1] = 1.0  # prior 1: class 0
    deltas = torch.zeros(1, 5, 4)
    post = SSDPostprocessor(conf_threshold=0.3)
    result = post(SSDHeadOutput(deltas, logits, PRIORS))[0]
    assert result["labels"].tolist() == [1, 0]
    torch.testing.assert_close(result["boxes"], PRIORS[:2])
    p0 = math.exp(3) / (1 + math.exp(3) + math.exp(-10))
    p1 = math.e / (1 + math.e + math.exp(-10))
    torch.testing.assert_close(result["scores"], torch.tensor([p0, p1]))
    # a duplicate of prior 0 with a lower score is suppressed (IoU 1), the same box of another class is not
    priors = torch.cat((PRIORS, PRIORS[:1]))
    logits = torch.cat((logits, torch.tensor([[[0.0, 2.0, 2.5]]])), 1)
    result = post(SSDHeadOutput(torch.zeros(1, 6, 4), logits, priors))[0]
    assert sorted(result["labels"].tolist()) == [0, 0, 1]
    # sigmoid activation ("auto" from a non cross-entropy loss) and top_k = 1 per class
    sigmoid = SSDPostprocessor(activation="auto", cls_loss="detector.losses.classification.FocalLoss", top_k=1)
    assert sigmoid.activation == "sigmoid"
    result = sigmoid(SSDHeadOutput(torch.zeros(1, 6, 4), logits, priors))[0]
    assert sorted(result["labels"].tolist()) == [0, 1]
    assert SSDPostprocessor(activation="auto", cls_loss="detector.losses.classification.CrossEntropy").activation == "softmax"
