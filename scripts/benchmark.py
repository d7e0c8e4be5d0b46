"""Speed and memory benchmarks, each against a reference measured in the same run.

    python scripts/benchmark.py                  # everything, prints a table, writes docs/benchmark.json
    python scripts/benchmark.py --only criterion --repeats 5

Times are medians over `--repeats` runs after `--warmup` runs (min-max in brackets). Peak memory is
the growth of the process's maximum resident set while a case runs, each case in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

from detector.assigners.tal import TaskAlignedAssigner  # noqa: E402
from detector.assigners.tal_dense import DenseTaskAlignedAssigner  # noqa: E402
from detector.criterion import DetectionCriterion  # noqa: E402
from detector.losses.classification import BCEWithLogits  # noqa: E402
from detector.losses.dfl import DFLoss  # noqa: E402
from detector.losses.iou import CIoULoss  # noqa: E402
from detector.models import HeadOutput, YOLODetector  # noqa: E402
from detector.postprocess import Postprocessor  # noqa: E402
from detector.priors import anchor_points  # noqa: E402


def timed(fn, repeats: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_gt(batch: int, num_gt: int, size: int, num_classes: int, generator: torch.Generator):
    xy = torch.rand(batch, num_gt, 2, generator=generator) * size * 0.85
    wh = 8 + torch.rand(batch, num_gt, 2, generator=generator) * size * 0.15
    boxes = torch.cat([xy, (xy + wh).clamp(max=size)], -1)
    labels = torch.randint(0, num_classes, (batch, num_gt), generator=generator)
    return labels, boxes, torch.ones(batch, num_gt, dtype=torch.bool)


def criterion_case(num_gt: int, dense: bool, repeats: int, warmup: int, batch: int = 16, size: int = 640, num_classes: int = 80) -> dict:
    """Forward + backward of the whole YOLOv8 criterion on random head outputs (batch 16 at 640: 8400 points)."""
    g = torch.Generator().manual_seed(0)
    points, strides = anchor_points([(size // s, size // s) for s in (8, 16, 32)], (8, 16, 32))
    box_logits = torch.randn(batch, len(points), 64, generator=g).requires_grad_()
    cls_logits = (torch.randn(batch, len(points), num_classes, generator=g) - 4).requires_grad_()
    output = HeadOutput(box_logits, cls_logits, points, strides)
    gt = random_gt(batch, num_gt, size, num_classes, g)
    assigner = (DenseTaskAlignedAssigner if dense else TaskAlignedAssigner)(num_classes)
    criterion = DetectionCriterion(assigner, BCEWithLogits(), CIoULoss(), DFLoss())
    losses = {}

    def step():
        box_logits.grad = cls_logits.grad = None
        out = criterion(output, *gt)
        out["loss"].backward()
        losses.update({k: float(v.detach()) for k, v in out.items()})

    baseline = max_rss_mib()
    result = timed(step, repeats, warmup)
    result["peak_extra_mib"] = max_rss_mib() - baseline
    result["losses"] = losses
    return result


def assigner_case(num_gt: int, dense: bool, repeats: int, warmup: int, batch: int = 16, size: int = 640, num_classes: int = 80) -> dict:
    g = torch.Generator().manual_seed(0)
    points, strides = anchor_points([(size // s, size // s) for s in (8, 16, 32)], (8, 16, 32))
    points = points * strides
    half = 4 + torch.rand(batch, len(points), 2, generator=g) * 40
    pred = torch.cat([points - half, points + half], -1)
    scores = torch.rand(batch, len(points), num_classes, generator=g)
    gt = random_gt(batch, num_gt, size, num_classes, g)
    assigner = (DenseTaskAlignedAssigner if dense else TaskAlignedAssigner)(num_classes)
    baseline = max_rss_mib()
    result = timed(lambda: assigner(scores, pred, points, *gt), repeats, warmup)
    result["peak_extra_mib"] = max_rss_mib() - baseline
    return result


def train_step_case(size: int, repeats: int, warmup: int, batch: int = 16, num_classes: int = 80) -> dict:
    """Forward + criterion + backward + AdamW step of the n-scale model, 8 GT per image."""
    g = torch.Generator().manual_seed(0)
    model = YOLODetector(num_classes, "n", image_size=size)
    criterion = DetectionCriterion(TaskAlignedAssigner(num_classes), BCEWithLogits(), CIoULoss(), DFLoss())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.rand(batch, 3, size, size, generator=g)
    gt = random_gt(batch, 8, size, num_classes, g)

    def step():
        optimizer.zero_grad(set_to_none=True)
        criterion(model(images), *gt)["loss"].backward()
        optimizer.step()

    result = timed(step, repeats, warmup)
    result["images_per_s"] = batch / result["median_s"]
    return result


def inference_case(size: int, repeats: int, warmup: int, batch: int = 16, num_classes: int = 80) -> dict:
    """Eval-mode forward + decode + NMS (conf 0.001 as in COCO evaluation, so NMS has real work)."""
    model = YOLODetector(num_classes, "n", image_size=size).eval()
    postprocess = Postprocessor()
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))

    def step():
        with torch.inference_mode():
            postprocess(model(images))

    result = timed(step, repeats, warmup)
    result["images_per_s"] = batch / result["median_s"]
    return result


CASES = {
    "train_step": [("n @320, batch 16", train_step_case, dict(size=320)), ("n @640, batch 16", train_step_case, dict(size=640))],
    "criterion": [
        (f"{n} GT/img, {'dense reference' if dense else 'sparse'}", criterion_case, dict(num_gt=n, dense=dense))
        for n in (10, 50, 200, 1000) for dense in (False, True) if not (dense and n > 200)
    ],
    "assigner": [
        (f"{n} GT/img, {'dense reference' if dense else 'sparse'}", assigner_case, dict(num_gt=n, dense=dense))
        for n in (10, 50, 200, 1000) for dense in (False, True) if not (dense and n > 200)
    ],
    "inference": [("n @320, batch 16", inference_case, dict(size=320)), ("n @640, batch 16", inference_case, dict(size=640))],
}


def _run(fn, kwargs, queue):
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    queue.put(fn(**kwargs))


def run_isolated(fn, kwargs: dict) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_run, args=(fn, kwargs, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(CASES), nargs="*", default=sorted(CASES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmark.json")
    args = parser.parse_args()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    print(f"machine: {machine}")
    results = {"machine": machine, "repeats": args.repeats, "warmup": args.warmup}
    for section in args.only:
        print(f"\n## {section}\n| case | median s [min-max] | extra |\n|---|---|---|")
        results[section] = {}
        for name, fn, kwargs in CASES[section]:
            result = run_isolated(fn, {**kwargs, "repeats": args.repeats, "warmup": args.warmup})
            results[section][name] = result
            extra = []
            if "images_per_s" in result:
                extra.append(f"{result['images_per_s']:.1f} img/s")
            if "peak_extra_mib" in result:
                extra.append(f"+{result['peak_extra_mib']:.0f} MiB peak")
            if "losses" in result:
                extra.append("loss " + " ".join(f"{k}={v:.5f}" for k, v in result["losses"].items() if k != "loss"))
            print(f"| {name} | {result['median_s']:.3f} [{result['min_s']:.3f}-{result['max_s']:.3f}] | {', '.join(extra)} |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
