"""assigner: each assigner alone on random predictions, batch --batch at the largest of --sizes, --num-gt GT per
image: sparse TAL (the reference), the dense TAL (up to 200 GT), TAL with its small-object option, ATSS, SimOTA."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial

import torch

from detector.assigners.atss import ATSSAssigner
from detector.assigners.base import AssignerInput
from detector.assigners.simota import SimOTAAssigner
from detector.assigners.tal import TaskAlignedAssigner
from detector.assigners.tal_dense import DenseTaskAlignedAssigner

from .criterion import DENSE_MAX_GT
from .harness import Case, max_rss_mib, timed
from .inputs import NUM_CLASSES, head_grid, random_gt

NAME = "assigner"
# the assigners timed, by name (the sparse TAL is every case's reference)
ASSIGNERS: dict[str, Callable[[int], torch.nn.Module]] = {
    "tal": TaskAlignedAssigner, "tal dense reference": DenseTaskAlignedAssigner,
    "tal small objects": partial(TaskAlignedAssigner, small_objects=True), "atss": ATSSAssigner, "simota": SimOTAAssigner,
}



def assigner_case(num_gt: int, method: str, batch: int, size: int, repeats: int, warmup: int) -> dict:
    g = torch.Generator().manual_seed(0)
    priors = head_grid(size)
    points = priors.points
    half = 4 + torch.rand(batch, len(points), 2, generator=g) * 40
    pred = torch.cat([points - half, points + half], -1)
    scores = torch.rand(batch, len(points), NUM_CLASSES, generator=g)
    gt = random_gt(batch, num_gt, size, NUM_CLASSES, g)
    assigner = ASSIGNERS[method](NUM_CLASSES)
    baseline = max_rss_mib()
    inputs = AssignerInput(scores, pred, priors, *gt)
    result = timed(lambda: assigner(inputs), repeats, warmup)
    result["peak_extra_mib"] = max_rss_mib() - baseline
    return result



def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options of its own (--batch, --sizes, --num-gt)."""


def cases(args: argparse.Namespace) -> list[Case]:
    return [
        Case(f"{n} GT/img, {method}", assigner_case, dict(num_gt=n, method=method, batch=args.batch, size=max(args.sizes)),
             None if method == "tal" else f"{n} GT/img, tal")
        for n in args.num_gt for method in ASSIGNERS if not (method == "tal dense reference" and n > DENSE_MAX_GT)
    ]
