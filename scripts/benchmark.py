"""Speed and memory benchmarks, each case in a fresh process and compared with a reference measured in the same run.

    python scripts/benchmark.py                  # every section, prints the tables, writes docs/benchmark.json
    python scripts/benchmark.py --only criterion assigner --repeats 5
    python scripts/benchmark.py --batch 2 --sizes 64 --num-gt 10 --data-images 4 --repeats 1 --warmup 0 --out /tmp/b.json

Sections (--only):
  train_step  forward + criterion + backward + AdamW step, batch --batch at each of --sizes, 80 classes, 8 GT per
              image: the n-scale YOLOv8-style model (`model=yolov8`) and the light SSD (`experiment=ssd`)
  criterion   YOLOv8 criterion forward + backward on random head outputs, batch --batch at the largest of --sizes,
              80 classes, --num-gt GT per image: sparse TAL, against the dense reference (up to 200 GT).
              --statistics-overhead: also the forward with and without the assignment statistics that the criterion
              records while training (detector/assigners/statistics.py), alternated, and the statistics alone
  assigner    each assigner alone, the same cases: sparse TAL (the reference), the dense TAL (up to 200 GT), TAL with
              its small-object option, ATSS, SimOTA
  data        training samples per second (decode + mosaic + augmentations + letterbox, one process) of COCO128
              train with the `data=coco128` pipeline at each of --sizes: mosaic on, against mosaic off
  eval        COCO evaluation (loadRes + evaluate + accumulate + summarize) of random detections on COCO128 val:
              faster-coco-eval, against pycocotools, with the largest difference of the 12 stats
  inference   eval-mode forward + decode + NMS, batch --batch at each of --sizes, both models; the end-to-end model
              (`model.end2end=true`): its NMS-free one-to-one selection, against its one-to-many branch + NMS
  box_ops     IoULoss, GIoULoss, DIoULoss, CIoULoss forward + backward on --num-boxes random overlapping box pairs,
              against torchvision.ops' generalized/distance/complete_box_iou_loss (reduction="none"), with the
              largest difference of the losses and of the gradients; torchvision has no element-wise IoU loss, and
              pairwise IoU is not timed since detector has none of its own (it calls torchvision.ops.box_iou)
  nms         detector.postprocess.nms.nms, each method, on batch --batch of --candidates candidates per image (random
              sigmoid scores of 80 classes on the anchors at the largest of --sizes, above the post-processing's
              conf threshold, the best by score), with the post-processing's IoU threshold and detection cap:
              class_aware and class_agnostic against torchvision's batched_nms and nms, with whether the kept
              indices are identical; diou and diou_agnostic against the same (another suppression rule: their
              kept boxes may differ, by design)

Times are medians over --repeats runs after --warmup runs (min-max in brackets). Peak memory is the growth of
the process's maximum resident set while a case runs. `data` and `eval` need COCO128 (--coco128, default
../shared/data/coco128 or $DETECTOR_SHARED_DATA/coco128) and are skipped, saying why, without it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import multiprocessing as mp
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torchvision.ops import batched_nms, complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss
from torchvision.ops import nms as torchvision_nms

from detector.assigners.atss import ATSSAssigner
from detector.assigners.base import AssignerInput
from detector.assigners.simota import SimOTAAssigner
from detector.assigners.statistics import assignment_statistics
from detector.assigners.tal import TaskAlignedAssigner
from detector.assigners.tal_dense import DenseTaskAlignedAssigner
from detector.config import compose
from detector.criteria.yolov8 import YOLOv8Criterion
from detector.evaluation.coco import BACKENDS, faster_coco_eval_available, run_coco_eval, stats_dict
from detector.losses.classification import BCEWithLogits
from detector.losses.dfl import DFLoss
from detector.losses.iou import CIoULoss, DIoULoss, GIoULoss, IoULoss
from detector.models.heads.dfl import DFLHeadOutput
from detector.models.priors import Priors, anchor_points
from detector.postprocess.nms import NMS_METHODS, nms
from detector.postprocess.postprocessors import Postprocessor

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

NUM_CLASSES = 80
# the model configs timed by train_step and inference: Hydra overrides of configs/train.yaml
MODELS = {"n": [], "ssd_csp_n": ["experiment=ssd"], "n end2end": ["model.end2end=true"]}
# inference only: the end-to-end model detecting with its one-to-many branch + NMS, compared with "n end2end"
INFERENCE_VARIANTS = {"n end2end, one-to-many + NMS": (["model.end2end=true", "postprocess.one2one=false"], "n end2end")}
# assigner: the assigners timed, by name (the sparse TAL is every case's reference)
ASSIGNERS: dict[str, Callable[[int], torch.nn.Module]] = {
    "tal": TaskAlignedAssigner, "tal dense reference": DenseTaskAlignedAssigner,
    "tal small objects": partial(TaskAlignedAssigner, small_objects=True), "atss": ATSSAssigner, "simota": SimOTAAssigner,
}
DENSE_MAX_GT = 200  # the dense TAL reference is not run beyond this (memory: batch x GT x anchors x 4)
# box_ops: our IoU-family losses and their torchvision.ops counterparts (None: torchvision has none), all unreduced
BOX_LOSSES: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], str | None]] = {
    "IoULoss": (IoULoss(), None),
    "GIoULoss": (GIoULoss(), "torchvision generalized_box_iou_loss"),
    "DIoULoss": (DIoULoss(), "torchvision distance_box_iou_loss"),
    "CIoULoss": (CIoULoss(), "torchvision complete_box_iou_loss"),
}
TORCHVISION_BOX_LOSSES = {
    "torchvision generalized_box_iou_loss": partial(generalized_box_iou_loss, reduction="none"),
    "torchvision distance_box_iou_loss": partial(distance_box_iou_loss, reduction="none"),
    "torchvision complete_box_iou_loss": partial(complete_box_iou_loss, reduction="none"),
}
NO_IOU_REFERENCE = "no reference: torchvision has no element-wise IoU loss (box_iou is pairwise)"
NO_PAIRWISE_IOU = ("not run: detector has no pairwise IoU of its own, it calls torchvision.ops.box_iou (detector.postprocess.nms, "
                   "assigners/ssd_matcher.py, evaluation/confusion.py)")
POSTPROCESS = Postprocessor()  # nms: its default conf and IoU thresholds, candidate and detection caps
# nms: the torchvision reference of each detector.postprocess.nms method (the DIoU ones: the torchvision NMS of the same grouping)
NMS_REFERENCES = {"class_aware": "torchvision batched_nms", "class_agnostic": "torchvision nms",
                  "diou": "torchvision batched_nms", "diou_agnostic": "torchvision nms"}


class Case(NamedTuple):
    name: str
    fn: Callable[..., dict] | None  # None: nothing to run, `skip` says why
    kwargs: dict[str, Any]
    reference: str | None = None  # the case of the same section that this one is compared with (any order)
    skip: str | None = None


def timed(fn: Callable[[], Any], repeats: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def timed_alternately(fns: list[Callable[[], Any]], repeats: int, warmup: int) -> list[dict]:
    """`timed` for several functions, called in turn within each repeat (so that they share the machine's load)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [{"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t)} for t in times]


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def head_grid(size: int) -> Priors:
    """The priors (anchor points in pixels, strides) of the YOLOv8-style head on a `size` x `size` input."""
    strides = (8, 16, 32)
    sizes = [(size // s, size // s) for s in strides]
    points, point_strides = anchor_points(sizes, strides)
    return Priors(points * point_strides, point_strides, None, tuple(h * w for h, w in sizes))


def random_gt(batch: int, num_gt: int, size: int, num_classes: int, generator: torch.Generator):
    xy = torch.rand(batch, num_gt, 2, generator=generator) * size * 0.85
    wh = 8 + torch.rand(batch, num_gt, 2, generator=generator) * size * 0.15
    boxes = torch.cat([xy, (xy + wh).clamp(max=size)], -1)
    labels = torch.randint(0, num_classes, (batch, num_gt), generator=generator)
    return labels, boxes, torch.ones(batch, num_gt, dtype=torch.bool)


def build_network(model: str, size: int, compile_model: bool):
    """(network, criterion, post-processor) of a MODELS (or INFERENCE_VARIANTS) entry, as training instantiates
    them, 80 classes."""
    import hydra

    overrides = MODELS[model] if model in MODELS else INFERENCE_VARIANTS[model][0]
    cfg = compose("train", [*overrides, f"data.num_classes={NUM_CLASSES}", f"data.img_size={size}"], configs=ROOT / "configs")
    network = hydra.utils.instantiate(cfg.module.model)
    if compile_model:
        network.compile()
    return network, hydra.utils.instantiate(cfg.module.criterion), hydra.utils.instantiate(cfg.module.postprocess)


def train_step_case(model: str, size: int, batch: int, compile_model: bool, repeats: int, warmup: int) -> dict:
    """Forward + criterion + backward + AdamW step, 8 GT per image."""
    g = torch.Generator().manual_seed(0)
    network, criterion, _ = build_network(model, size, compile_model)
    network.train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    images = torch.rand(batch, 3, size, size, generator=g)
    gt = random_gt(batch, 8, size, NUM_CLASSES, g)

    def step():
        optimizer.zero_grad(set_to_none=True)
        criterion(network(images), *gt).losses["loss"].backward()
        optimizer.step()

    result = timed(step, repeats, warmup)
    result["images_per_s"] = batch / result["median_s"]
    return result


def inference_case(model: str, size: int, batch: int, compile_model: bool, repeats: int, warmup: int) -> dict:
    """Eval-mode forward + decode + NMS with the model's post-processing config (YOLOv8: conf 0.001 as in COCO
    evaluation, so NMS has real work)."""
    network, _, postprocess = build_network(model, size, compile_model)
    network.eval()
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))

    def step():
        with torch.inference_mode():
            postprocess(network(images))

    result = timed(step, repeats, warmup)
    result["images_per_s"] = batch / result["median_s"]
    return result


def criterion_case(num_gt: int, dense: bool, batch: int, size: int, repeats: int, warmup: int,
                   overhead: bool = False) -> dict:
    """Forward + backward of the whole YOLOv8 criterion on random head outputs (640 px: 8400 points), recording
    its assignment statistics as in training. `overhead`: also the forward alone with and without the statistics,
    alternated call by call (`forward_median_s`, `forward_off_median_s`: the same machine load for both), and
    `assignment_statistics` alone on the call's assignment (`statistics_median_s`)."""
    g = torch.Generator().manual_seed(0)
    priors = head_grid(size)
    box_logits = torch.randn(batch, len(priors.points), 64, generator=g).requires_grad_()
    cls_logits = (torch.randn(batch, len(priors.points), NUM_CLASSES, generator=g) - 4).requires_grad_()
    output = DFLHeadOutput(box_logits, cls_logits, priors)
    gt = random_gt(batch, num_gt, size, NUM_CLASSES, g)
    assigner = (DenseTaskAlignedAssigner if dense else TaskAlignedAssigner)(NUM_CLASSES)
    criterion = YOLOv8Criterion(assigner, BCEWithLogits(), CIoULoss(), DFLoss())
    losses = {}

    def step():
        box_logits.grad = cls_logits.grad = None
        out = criterion(output, *gt).losses
        out["loss"].backward()
        losses.update({k: float(v.detach()) for k, v in out.items()})

    baseline = max_rss_mib()
    result = timed(step, repeats, warmup)
    result["peak_extra_mib"] = max_rss_mib() - baseline
    result["losses"] = losses
    if overhead:
        def forward(statistics: bool) -> None:
            criterion.statistics = statistics
            criterion(output, *gt)

        on, off = timed_alternately([partial(forward, True), partial(forward, False)], repeats, warmup)
        result["forward_median_s"], result["forward_off_median_s"] = on["median_s"], off["median_s"]
        pred = output.decode_boxes().detach()
        assignment = assigner(AssignerInput(output.class_scores("sigmoid").detach(), pred, priors, *gt))
        gt_boxes, gt_mask, fg = gt[1], gt[2], assignment.foreground.nonzero(as_tuple=True)
        result["statistics_median_s"] = timed(  # as the criterion calls it
            lambda: assignment_statistics(assignment, gt_boxes, gt_mask, priors, pred, positives=fg), repeats, warmup
        )["median_s"]
    return result


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


def data_case(root: str, size: int, mosaic: bool, images: int, cache: bool, repeats: int, warmup: int) -> dict:
    """`images` training samples of COCO128 train through the `data=coco128` pipeline, in one process with one
    thread (what a DataLoader worker gets); --cache decodes the images into RAM first (not timed)."""
    import cv2
    import hydra

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    logging.disable(logging.INFO)  # the data checks' summaries would cut the table; their warnings still show
    cfg = compose("train", ["data=coco128", f"data.root={root}", f"data.img_size={size}", f"data.mosaic_prob={float(mosaic)}",
                            f"data.cache_images={str(cache).lower()}"], configs=ROOT / "configs")
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    dataset = datamodule.train_dataset
    start = 0

    def samples():
        nonlocal start
        for i in range(start, start + images):
            dataset[i % len(dataset)]
        start += images

    result = timed(samples, repeats, warmup)
    result["images_per_s"] = images / result["median_s"]
    return result


def random_detections(dataset: dict, per_image: int, seed: int = 0) -> list[dict]:
    """Realistic random detections: per image, three jittered copies of each GT box (20% with a random class),
    then random boxes up to `per_image`, random scores."""
    rng = np.random.default_rng(seed)
    category_ids = [c["id"] for c in dataset["categories"]]
    by_image: dict[int, list] = {image["id"]: [] for image in dataset["images"]}
    for ann in dataset["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    sizes = {image["id"]: (image["width"], image["height"]) for image in dataset["images"]}
    detections = []
    for image_id, anns in by_image.items():
        width, height = sizes.get(image_id, (640, 480))
        boxes, labels = [], []
        for ann in anns:
            x, y, w, h = ann["bbox"]
            for _ in range(3):
                jitter = rng.normal(0, 0.1, 4) * [w, h, w, h]
                boxes.append([x + jitter[0], y + jitter[1], max(w + jitter[2], 1), max(h + jitter[3], 1)])
                labels.append(ann["category_id"] if rng.uniform() < 0.8 else int(rng.choice(category_ids)))
        while len(boxes) < per_image:
            w, h = rng.uniform(4, width / 2), rng.uniform(4, height / 2)
            boxes.append([rng.uniform(0, width - w), rng.uniform(0, height - h), w, h])
            labels.append(int(rng.choice(category_ids)))
        scores = rng.uniform(0.001, 1, len(boxes))
        for box, label, score in list(zip(boxes, labels, scores))[:per_image]:
            detections.append({"image_id": image_id, "category_id": int(label),
                               "bbox": [round(float(v), 2) for v in box], "score": float(score)})
    return detections


def eval_case(root: str, backend: str, per_image: int, repeats: int, warmup: int) -> dict:
    """loadRes + evaluate + accumulate + summarize of `per_image` random detections per COCO128 val image."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(Path(root) / "annotations" / "instances_val2017.json"))
    detections = random_detections(coco_gt.dataset, per_image)
    image_ids = coco_gt.getImgIds()
    evaluated = []
    result = timed(lambda: evaluated.append(run_coco_eval(coco_gt, detections, image_ids, backend)), repeats, warmup)
    result.update(images=len(image_ids), detections=len(detections), stats=stats_dict(evaluated[-1]))
    return result


def random_box_pairs(num_boxes: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, target) xyxy (num_boxes, 4): random GT-like targets and predictions jittered around them (each
    corner moved by N(0, 0.15) of the box's side), mostly overlapping as the positives of a training step."""
    _, target, _ = random_gt(1, num_boxes, size, NUM_CLASSES, generator)
    target = target[0]
    wh = (target[:, 2:] - target[:, :2]).repeat(1, 2)
    pred = target + torch.randn(num_boxes, 4, generator=generator) * 0.15 * wh
    pred = torch.cat([pred[:, :2], torch.maximum(pred[:, 2:], pred[:, :2] + 1)], -1)
    return pred, target


def box_loss_case(loss: str, num_boxes: int, repeats: int, warmup: int) -> dict:
    """Forward + backward (of the sum) of one unreduced box loss of BOX_LOSSES / TORCHVISION_BOX_LOSSES on
    `num_boxes` pairs at 640 px; outputs: the last losses and gradients w.r.t. the predictions."""
    fn = BOX_LOSSES[loss][0] if loss in BOX_LOSSES else TORCHVISION_BOX_LOSSES[loss]
    pred, target = random_box_pairs(num_boxes, 640, torch.Generator().manual_seed(0))
    pred.requires_grad_()
    last = {}

    def step():
        pred.grad = None
        last["losses"] = fn(pred, target)
        last["losses"].sum().backward()

    result = timed(step, repeats, warmup)
    result["outputs"] = {"losses": last["losses"].detach().numpy(), "gradients": pred.grad.numpy()}
    if loss in BOX_LOSSES and BOX_LOSSES[loss][1] is None:
        result["note"] = NO_IOU_REFERENCE
    return result


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


def build_cases(args: argparse.Namespace) -> dict[str, list[Case]]:
    largest = max(args.sizes)
    common = {"batch": args.batch, "compile_model": args.compile}
    per_model = [(f"{model} @{size}, batch {args.batch}", dict(model=model, size=size, **common))
                 for model in MODELS for size in args.sizes]
    overhead = {"overhead": True} if args.statistics_overhead else {}
    tal_cases = [
        (f"{n} GT/img, {'dense reference' if dense else 'sparse'}", dict(num_gt=n, dense=dense, batch=args.batch,
                                                                         size=largest, **overhead),
         None if dense or n > DENSE_MAX_GT else f"{n} GT/img, dense reference")
        for n in args.num_gt for dense in (False, True) if not (dense and n > DENSE_MAX_GT)
    ]
    assigner_cases = [
        (f"{n} GT/img, {method}", dict(num_gt=n, method=method, batch=args.batch, size=largest),
         None if method == "tal" else f"{n} GT/img, tal")
        for n in args.num_gt for method in ASSIGNERS if not (method == "tal dense reference" and n > DENSE_MAX_GT)
    ]
    inference = [*((name, kwargs, None) for name, kwargs in per_model), *(
        (f"{model} @{size}, batch {args.batch}", dict(model=model, size=size, **common), f"{reference} @{size}, batch {args.batch}")
        for model, (_, reference) in INFERENCE_VARIANTS.items() for size in args.sizes)]
    root = str(args.coco128)
    data_common = {"root": root, "images": args.data_images, "cache": args.cache}
    return {
        "train_step": [Case(name, train_step_case, kwargs) for name, kwargs in per_model],
        "criterion": [Case(name, criterion_case, kwargs, ref) for name, kwargs, ref in tal_cases],
        "assigner": [Case(name, assigner_case, kwargs, ref) for name, kwargs, ref in assigner_cases],
        "data": [
            Case(f"@{size}, mosaic {'on' if mosaic else 'off'}", data_case, dict(size=size, mosaic=mosaic, **data_common),
                 f"@{size}, mosaic off" if mosaic else None)
            for size in args.sizes for mosaic in (False, True)
        ],
        "eval": [Case(backend, eval_case, dict(root=root, backend=backend, per_image=args.per_image),
                      None if backend == "pycocotools" else "pycocotools") for backend in BACKENDS],
        "inference": [Case(name, inference_case, kwargs, ref) for name, kwargs, ref in inference],
        "box_ops": [
            *(Case(name, box_loss_case, dict(loss=name, num_boxes=args.num_boxes), reference)
              for name, (_, reference) in BOX_LOSSES.items()),
            *(Case(name, box_loss_case, dict(loss=name, num_boxes=args.num_boxes)) for name in TORCHVISION_BOX_LOSSES),
            Case("pairwise IoU", None, {}, skip=NO_PAIRWISE_IOU),
        ],
        "nms": [Case(name, nms_case, dict(method=name, batch=args.batch, size=largest, candidates=args.candidates),
                     NMS_REFERENCES.get(name)) for name in (*NMS_METHODS, *dict.fromkeys(NMS_REFERENCES.values()))],
    }


def skip_reason(section: str, case: Case, coco128: Path) -> str | None:
    """Why this case is not run (on this machine), or None."""
    if case.skip is not None:
        return case.skip
    if section == "data" and not (coco128 / "data.yaml").is_file():
        return f"no COCO128 at {coco128} (pass --coco128 or set DETECTOR_SHARED_DATA)"
    if section == "eval" and not (coco128 / "annotations" / "instances_val2017.json").is_file():
        return f"no COCO128 val annotations at {coco128}/annotations (pass --coco128 or set DETECTOR_SHARED_DATA)"
    if case.kwargs.get("backend") == "faster_coco_eval" and not faster_coco_eval_available():
        return 'faster-coco-eval is not installed (pip install -e ".[fast]")'
    return None


def compare(result: dict, reference: dict) -> dict:
    """Speed of a case relative to its reference, how far their losses, COCO stats or float outputs are apart,
    and whether their index outputs (lists of arrays) are identical."""
    comparison = {"speedup": reference["median_s"] / result["median_s"]}
    for key in ("losses", "stats"):
        if key in result and key in reference:
            comparison[f"max_{key}_difference"] = max(abs(result[key][k] - reference[key][k]) for k in reference[key])
    for key, value in result.get("outputs", {}).items():
        other = reference["outputs"][key]
        if isinstance(value, list):
            comparison[f"same_{key}"] = len(value) == len(other) and all(map(np.array_equal, value, other))
        else:
            comparison[f"max_{key}_difference"] = float(np.abs(value - other).max())
    return comparison


def describe(result: dict) -> str:
    extra = []
    if "forward_median_s" in result:
        on, off, alone = result["forward_median_s"], result["forward_off_median_s"], result["statistics_median_s"]
        extra.append(f"forward {on:.3g} s, without the assignment statistics {off:.3g} s ({on / off - 1:+.1%}); the "
                     f"statistics alone {alone:.3g} s ({alone / off:.1%} of the forward, {alone / result['median_s']:.1%} "
                     "of forward + backward)")
    if "images_per_s" in result:
        extra.append(f"{result['images_per_s']:.1f} img/s")
    if "peak_extra_mib" in result:
        extra.append(f"+{result['peak_extra_mib']:.0f} MiB peak")
    if "losses" in result:
        extra.append("loss " + " ".join(f"{k}={v:.5f}" for k, v in result["losses"].items() if k != "loss"))
    if "stats" in result:
        extra.append(f"mAP {result['stats']['map']:.4f} ({result['detections']} detections, {result['images']} images)")
    if "candidates_per_image" in result:
        extra.append(f"{result['candidates_per_image']:.0f} candidates/img")
    if "note" in result:
        extra.append(result["note"])
    return ", ".join(extra)


def describe_comparison(name: str, comparison: dict) -> str:
    differences = [f", {k.removeprefix('max_').removesuffix('_difference')} differ by at most {v:.2e}"
                   for k, v in comparison.items() if k.endswith("_difference")]
    same = [f", {k.removeprefix('same_')} {'identical' if v else 'differ'}" for k, v in comparison.items()
            if k.startswith("same_")]
    return f"{name}: {comparison['speedup']:.2f}x the speed of {comparison['reference']}{''.join(differences + same)}"


def _run(fn: Callable[..., dict], kwargs: dict, queue) -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    queue.put(fn(**kwargs))


def run_isolated(fn: Callable[..., dict], kwargs: dict) -> dict:
    """fn(**kwargs) in a fresh process (so that peak memory and caches do not carry over between cases)."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_run, args=(fn, kwargs, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def default_coco128() -> Path:
    return Path(os.environ.get("DETECTOR_SHARED_DATA", ROOT.parent / "shared" / "data")) / "coco128"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sections = ("train_step", "criterion", "assigner", "data", "eval", "inference", "box_ops", "nms")
    parser.add_argument("--only", choices=sections, nargs="+", default=list(sections))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16,
                        help="batch size of train_step, criterion, assigner, inference, nms")
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 640],
                        help="image sizes of train_step, data, inference; criterion, assigner and nms use the largest")
    parser.add_argument("--num-gt", type=int, nargs="+", default=[10, 50, 200, 1000], help="GT per image (criterion, assigner)")
    parser.add_argument("--statistics-overhead", action="store_true",
                        help="criterion: time the assignment statistics (alone, and the forward with them on and off)")
    parser.add_argument("--compile", action="store_true",
                        help="train_step and inference with torch.compile (nn.Module.compile; --warmup >= 2 absorbs the compilation)")
    parser.add_argument("--coco128", type=Path, default=default_coco128(), help="COCO128 root (data, eval)")
    parser.add_argument("--data-images", type=int, default=128, help="samples timed per repeat (data)")
    parser.add_argument("--cache", action="store_true", help="data: decode the images into RAM first (not timed)")
    parser.add_argument("--per-image", type=int, default=300, help="random detections per image (eval)")
    parser.add_argument("--num-boxes", type=int, default=20000,
                        help="box pairs (box_ops; 20000 ~ the positives of a batch-16 criterion call with 125 GT per "
                             "image, TAL's top 10 anchors each)")
    parser.add_argument("--candidates", type=int, default=5000,
                        help="NMS candidates per image (nms; the post-processing's cap, max_candidates, is "
                             f"{POSTPROCESS.max_candidates}: the worst case, minutes per method on 2 CPU cores)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmark.json")
    args = parser.parse_args()
    if args.compile and args.warmup < 2:
        parser.error("--compile needs --warmup >= 2: the first call compiles, the second recompiles once the "
                     "model has cached its priors")

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    print(f"machine: {machine}")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("only", "out")}
    results: dict[str, Any] = {"machine": machine, **settings}
    cases = build_cases(args)
    for section in args.only:
        print(f"\n## {section}\n| case | median s [min-max] | extra |\n|---|---|---|")
        results[section] = {}
        for case in cases[section]:
            reason = skip_reason(section, case, args.coco128)
            if reason is not None:
                results[section][case.name] = {"skipped": reason}
                print(f"| {case.name} | skipped | {reason} |", flush=True)
                continue
            result = run_isolated(case.fn, {**case.kwargs, "repeats": args.repeats, "warmup": args.warmup})
            results[section][case.name] = result
            print(f"| {case.name} | {result['median_s']:.3g} [{result['min_s']:.3g}-{result['max_s']:.3g}] | "
                  f"{describe(result)} |", flush=True)
        for case in cases[section]:
            result, reference = results[section][case.name], results[section].get(case.reference)
            if reference is not None and "skipped" not in result and "skipped" not in reference:
                result["vs_reference"] = {"reference": case.reference, **compare(result, reference)}
                print(describe_comparison(case.name, result["vs_reference"]))
        for result in results[section].values():
            result.pop("outputs", None)  # arrays, compared above
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
