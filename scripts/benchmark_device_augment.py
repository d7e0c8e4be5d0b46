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


def timed(fn: Callable[[], object], repeats: int, warmup: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median seconds of `fn` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def datamodule(root: Path, size: int, augment_on: str, cache: bool):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["data=coco128", f"data.root={root}", f"data.img_size={size}",
                                          f"data.augment_on={augment_on}", f"data.cache_images={str(cache).lower()}"])
    module = instantiate(cfg.data)
    module.setup("fit")
    return module


def worker_rate(dataset, samples: int, repeats: int, warmup: int) -> float:
    """img/s of `dataset[i]` on this process's one thread (what one DataLoader worker does)."""
    start = 0

    def run() -> None:
        nonlocal start
        for i in range(start, start + samples):
            dataset[(i % len(dataset), i // len(dataset))]
        start += samples

    return samples / timed(run, repeats, warmup)


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
          f"({args.threads} thread(s) on cpu), batch {args.batch}; median of {args.repeats}")
    print("| size | path | img/s |")
    print("|---|---|---|")
    for size in args.sizes:
        rows = []
        if have_data:
            for cache in (False, True):
                tag = "RAM cache" if cache else "decoding"
                worker = datamodule(args.root, size, "worker", cache).train_dataset
                rows.append((f"worker path, one worker ({tag}): mosaic + albumentations",
                             worker_rate(worker, args.samples, args.repeats, args.warmup)))
                module = datamodule(args.root, size, "device", cache)
                rows.append((f"device path, one worker's share ({tag}): decode/copy + letterbox",
                             worker_rate(module.train_dataset, args.samples, args.repeats, args.warmup)))
            dataset = module.train_dataset
            batches = [collate([dataset[(b * args.batch + i) % len(dataset)] for i in range(args.batch)]) for b in range(4)]
        else:
            batches = [synthetic(args.batch, size, torch.Generator().manual_seed(b)) for b in range(4)]
        augment = coco128_batch_augment()
        batches = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()} for batch in batches]
        epoch = 0

        def augment_batches(augmenter=augment, batches=batches) -> None:
            nonlocal epoch
            epoch += 1
            for batch in batches:
                augmenter(batch, epoch=epoch)

        seconds = timed(augment_batches, args.repeats, args.warmup, sync)
        rows.append((f"device path, BatchAugment on {device.type} (mosaic + colour + flip + affine)",
                     len(batches) * args.batch / seconds))
        colour_p, augment.colour_p = augment.colour_p, 0.0
        seconds = timed(augment_batches, args.repeats, args.warmup, sync)
        augment.colour_p = colour_p
        rows.append((f"device path, BatchAugment on {device.type} without the colour jitter",
                     len(batches) * args.batch / seconds))
        for name, rate in rows:
            print(f"| {size} | {name} | {rate:.1f} |")


if __name__ == "__main__":
    main()
