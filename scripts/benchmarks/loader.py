"""loader: images per second of the training DataLoader of `data=coco128` (mosaic on, batch --batch, its collate,
persistent workers), at each of --sizes, for each of --workers and each --cache mode of `data`: the first epoch
(which starts the workers) and the second, timed separately, over one pass of COCO128 train each (128 images).
The steady rate per worker gives the per-sample cost; docs/benchmark.md turns it into a cost model for more cores."""

from __future__ import annotations

import argparse
import time

from .data import coco128_train, one_thread
from .harness import Case

NAME = "loader"


def loader_case(root: str, size: int, workers: int, batch: int, cache: str, repeats: int, warmup: int) -> dict:
    """`repeats` epochs after `warmup` epochs; median_s is the median epoch after the first (min-max over those)."""
    one_thread()
    datamodule = coco128_train(root, size, True, cache)
    datamodule.num_workers, datamodule.batch_size = workers, batch
    datamodule.pin_memory = False  # no GPU here; pinning is a copy per batch in the main process
    loader = datamodule.train_dataloader()
    epochs = []
    for epoch in range(max(2, warmup + repeats)):
        loader.sampler.set_epoch(epoch)
        start = time.perf_counter()
        images = sum(len(batch["images"]) for batch in loader)
        epochs.append(time.perf_counter() - start)
    steady = sorted(epochs[1:])
    median = steady[len(steady) // 2]
    return {"median_s": median, "min_s": steady[0], "max_s": steady[-1], "first_epoch_s": epochs[0],
            "images_per_epoch": images, "images_per_s": images / median,
            "note": f"first epoch (starts the workers) {epochs[0]:.2f} s, {images} images per epoch"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="loader: DataLoader num_workers")


def cases(args: argparse.Namespace) -> list[Case]:
    return [Case(f"@{size}, cache {cache}, {workers} workers", loader_case,
                 dict(root=str(args.coco128), size=size, workers=workers, batch=args.batch, cache=cache))
            for size in args.sizes for cache in args.cache for workers in args.workers]


def skip(case: Case, args: argparse.Namespace) -> str | None:
    if not (args.coco128 / "data.yaml").is_file():
        return f"no COCO128 at {args.coco128} (pass --coco128 or set DETECTOR_SHARED_DATA)"
    return None
