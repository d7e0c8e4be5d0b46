"""Throughput of the two training-augmentation paths on COCO128 train (`data=coco128`: 4-image mosaic, colour jitter,
flip, random scale/translate), in img/s:

- worker path (`data.augment_on=worker`): one DataLoader worker's work per sample, decode + albumentations, on one
  thread, with and without the RAM image cache;
- device path (`data.augment_on=device`): the worker's share (decode + letterbox only, with and without the cache),
  and `BatchAugment` on whole batches in the training process, on --device (cpu: --threads threads; cuda: the GPU).

    python scripts/benchmark_device_augment.py [--sizes 320 640] [--batch 16] [--device cpu|cuda] [--root <coco128>]

Without COCO128 (--root absent) the batch augmentation is timed on synthetic batches of the same shapes (7 boxes per
image) and the worker rows are skipped.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def timed_alternately(cases: dict[str, tuple[Callable[[], object], int]], repeats: int, warmup: int,
                      sync: Callable[[], None] = lambda: None) -> dict[str, tuple[float, float]]:
    """{name: (best, median) img/s} of `cases` {name: (fn, images per call)}, run in turn `repeats` times after
    `warmup` rounds, so that a busy machine slows every case alike."""
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(warmup + repeats):
        for name, (fn, _) in cases.items():
            start = time.perf_counter()
            fn()
            sync()
            if round_ >= warmup:
                seconds[name].append(time.perf_counter() - start)
    return {name: (images / min(seconds[name]), images / statistics.median(seconds[name]))
            for name, (_, images) in cases.items()}


def datamodule(root: Path, size: int, augment_on: str, cache: bool):
    from hydra.utils import instantiate

    from detector.config import compose

    cfg = compose(overrides=["data=coco128", f"data.root={root}", f"data.img_size={size}", f"data.augment_on={augment_on}",
                             f"data.cache_images={str(cache).lower()}"])
    module = instantiate(cfg.data)
    module.setup("fit")
    return module


def worker_samples(dataset, samples: int) -> Callable[[], None]:
    """`samples` calls of `dataset[i]`, the next ones each time (what one DataLoader worker does, on one thread)."""
    start = 0

    def run() -> None:
        nonlocal start
        for i in range(start, start + samples):
            dataset[(i % len(dataset), i // len(dataset))]
        start += samples

    return run


def synthetic(batch: int, size: int, generator: torch.Generator) -> dict:
    """Random letterboxed 640x480 images with 7 random boxes each, as the device path's loader serves them."""
    scale = size / 640
    content = torch.randint(0, 256, (batch, 3, round(480 * scale), size), dtype=torch.uint8, generator=generator)
    images = torch.full((batch, 3, size, size), 114, dtype=torch.uint8)
    images[:, :, : content.shape[2]] = content
    corners = torch.rand(batch, 7, 2, generator=generator) * torch.tensor([size * 0.8, content.shape[2] * 0.8])
    sides = (torch.rand(batch, 7, 2, generator=generator) * 0.15 + 0.05) * size
    return {"images": images, "boxes": torch.cat([corners, corners + sides], -1), "labels": torch.zeros(batch, 7, dtype=torch.long),
            "mask": torch.ones(batch, 7, dtype=torch.bool), "image_ids": list(range(batch)),
            "orig_sizes": [(480, 640)] * batch, "scales": [(scale, scale)] * batch}


def coco128_batch_augment():
    """BatchAugment of configs/data/coco128.yaml, as `data.augment_on=device` builds it."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from detector.data.batch_augment import BatchAugment

    cfg = OmegaConf.load(ROOT / "configs" / "data" / "coco128.yaml")
    return BatchAugment.from_albumentations(instantiate(cfg.train_augmentations), mosaic_prob=cfg.mosaic_prob,
                                            min_visibility=cfg.min_visibility, min_area=cfg.min_area)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path,
                        default=Path(os.environ.get("DETECTOR_SHARED_DATA", ROOT.parent / "shared" / "data")) / "coco128")
    parser.add_argument("--sizes", type=int, nargs="+", default=[640, 320])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--samples", type=int, default=64, help="worker-path samples per timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the batch augmentation on the CPU")
    args = parser.parse_args()

    import cv2

    from detector.data.dataset import collate

    cv2.setNumThreads(1)
    torch.set_num_threads(args.threads)
    logging.disable(logging.INFO)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    have_data = (args.root / "data.yaml").is_file()
    if not have_data:
        print(f"no COCO128 at {args.root}: synthetic batches, worker rows skipped")
    print(f"{time.strftime('%Y-%m-%d')}, torch {torch.__version__}, batch augmentation on {device} "
          f"({args.threads} thread(s) on cpu), batch {args.batch}; best [median] of {args.repeats}, cases in turn; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| size | path | img/s |")
    print("|---|---|---|")
    for size in args.sizes:
        cases = {}
        if have_data:
            for cache in (False, True):
                tag = "RAM cache" if cache else "decoding"
                worker = datamodule(args.root, size, "worker", cache).train_dataset
                cases[f"worker path, one worker ({tag}): mosaic + albumentations"] = (
                    worker_samples(worker, args.samples), args.samples)
                module = datamodule(args.root, size, "device", cache)
                cases[f"device path, one worker's share ({tag}): decode or copy + letterbox"] = (
                    worker_samples(module.train_dataset, args.samples), args.samples)
            dataset = module.train_dataset
            batches = [collate([dataset[(b * args.batch + i) % len(dataset)] for i in range(args.batch)]) for b in range(4)]
        else:
            batches = [synthetic(args.batch, size, torch.Generator().manual_seed(b)) for b in range(4)]
        batches = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()} for batch in batches]
        augment = coco128_batch_augment()
        without_colour = coco128_batch_augment()
        without_colour.colour_p = 0.0
        for name, augmenter in (("mosaic + colour + flip + affine", augment), ("the same without colour", without_colour)):
            epoch = 0

            def augment_batches(augmenter=augmenter, batches=batches) -> None:
                nonlocal epoch
                epoch += 1
                for batch in batches:
                    augmenter(batch, epoch=epoch)

            cases[f"device path, BatchAugment on {device.type}: {name}"] = (augment_batches, len(batches) * args.batch)
        for name, (best, median) in timed_alternately(cases, args.repeats, args.warmup, sync).items():
            print(f"| {size} | {name} | {best:.1f} [{median:.1f}] |")


if __name__ == "__main__":
    main()
