"""nms: detector.postprocess.nms.nms, each method, on batch --batch of --candidates candidates per image (random
sigmoid scores of 80 classes on the anchors at the largest of --sizes, above the post-processing's conf threshold,
the best by score), with the post-processing's IoU threshold and detection cap: class_aware and class_agnostic
against torchvision's batched_nms and nms, with whether the kept indices are identical; diou and diou_agnostic
against the same (another suppression rule: their kept boxes may differ, by design)."""

from __future__ import annotations

import argparse
import statistics

import torch
from torchvision.ops import batched_nms
from torchvision.ops import nms as torchvision_nms

from detector.postprocess.nms import NMS_METHODS, nms
from detector.postprocess.postprocessors import Postprocessor

from .harness import Case, timed
from .inputs import NUM_CLASSES, head_grid

NAME = "nms"
POSTPROCESS = Postprocessor()  # its default conf and IoU thresholds, candidate and detection caps
# the torchvision reference of each detector.postprocess.nms method (the DIoU ones: the torchvision NMS of the same grouping)
NMS_REFERENCES = {"class_aware": "torchvision batched_nms", "class_agnostic": "torchvision nms",
                  "diou": "torchvision batched_nms", "diou_agnostic": "torchvision nms"}



def nms_inputs(batch: int, size: int, candidates: int, generator: torch.Generator) -> list[tuple[torch.Tensor, ...]]:
    """Per image (boxes (K, 4), scores (K,), labels (K,)) as Postprocessor hands them to NMS: boxes around the
    anchor points (1-4 strides from the centre to each side), sigmoid(N(-4, 1)) scores of 80 classes, the pairs
    above the conf threshold, the best `candidates` of them by score."""
    priors = head_grid(size)
    points, strides = priors.points, priors.strides
    inputs = []
    for _ in range(batch):
        half = strides * (1 + 3 * torch.rand(len(points), 2, generator=generator))
        boxes = torch.cat([points - half, points + half], -1)
        scores = (torch.randn(len(points), NUM_CLASSES, generator=generator) - 4).sigmoid()
        anchor, label = (scores > POSTPROCESS.conf_threshold).nonzero(as_tuple=True)
        top = scores[anchor, label].topk(min(candidates, len(anchor))).indices
        anchor, label = anchor[top], label[top]
        inputs.append((boxes[anchor], scores[anchor, label], label))
    return inputs


def nms_case(method: str, batch: int, size: int, candidates: int, repeats: int, warmup: int) -> dict:
    """NMS of every image of the batch with Postprocessor's IoU threshold and detection cap: `method` of
    detector.postprocess.nms.nms, or "torchvision batched_nms" / "torchvision nms" (kept indices cut at the same cap).
    outputs: the kept indices of each image."""
    iou_threshold, max_keep = POSTPROCESS.iou_threshold, POSTPROCESS.max_detections
    inputs = nms_inputs(batch, size, candidates, torch.Generator().manual_seed(0))

    def run(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if method == "torchvision batched_nms":
            return batched_nms(boxes, scores, labels, iou_threshold)[:max_keep]
        if method == "torchvision nms":
            return torchvision_nms(boxes, scores, iou_threshold)[:max_keep]
        return nms(boxes, scores, labels, iou_threshold, method, max_keep)

    last = {}

    def step():
        last["kept"] = [run(*image) for image in inputs]

    result = timed(step, repeats, warmup)
    result["outputs"] = {"kept": [keep.numpy() for keep in last["kept"]]}
    result["candidates_per_image"] = statistics.mean(len(scores) for _, scores, _ in inputs)
    if method.startswith("diou"):
        result["note"] = "DIoU-NMS: another suppression rule than torchvision's NMS, its kept boxes may differ"
    return result



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--candidates", type=int, default=5000,
                        help="NMS candidates per image (nms; the post-processing's cap, max_candidates, is "
                             f"{POSTPROCESS.max_candidates}: the worst case, minutes per method on 2 CPU cores)")


def cases(args: argparse.Namespace) -> list[Case]:
    return [Case(name, nms_case, dict(method=name, batch=args.batch, size=max(args.sizes), candidates=args.candidates),
                 NMS_REFERENCES.get(name)) for name in (*NMS_METHODS, *dict.fromkeys(NMS_REFERENCES.values()))]
