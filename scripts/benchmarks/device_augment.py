"""device_augment: the two training-augmentation paths of `data=coco128` (4-image mosaic, colour jitter, flip, random
scale/translate) at each of --sizes, in img/s:

- worker path (`data.augment_on=worker`): one DataLoader worker's work per sample, decode (or the --cache) +
  mosaic + albumentations, on one thread;
- device path (`data.augment_on=device`): the worker's share (decode or cache + letterbox), compared with the worker
  path of the same cache mode, and `BatchAugment` on batches of --batch in the training process, on --device (cpu:
  BENCH_THREADS threads; cuda: the GPU), with and without its colour jitter.

Without COCO128 the worker rows are skipped and `BatchAugment` runs on synthetic batches of the same shapes (random
letterboxed 640x480 images, 7 boxes each)."""

from __future__ import annotations

import argparse

import torch

from .data import as_worker, coco128_train, time_samples
from .harness import Case, timed

NAME = "device_augment"
BATCHES = 4  # batches per timed call of BatchAugment


def worker_case(root: str, size: int, augment_on: str, cache: str, images: int, repeats: int, warmup: int) -> dict:
    """`images` samples of the training set as one worker serves them under `data.augment_on=augment_on`."""
    datamodule = coco128_train(root, size, True, cache, augment_on)
    as_worker(datamodule)
    return time_samples(datamodule.train_dataset, images, repeats, warmup)


def synthetic(batch: int, size: int, generator: torch.Generator) -> dict:
    """Random letterboxed 640x480 images with 7 random boxes each, as the device path's loader serves them."""
    scale = size / 640
    content = torch.randint(0, 256, (batch, 3, round(480 * scale), size), dtype=torch.uint8, generator=generator)
    images = torch.full((batch, 3, size, size), 114, dtype=torch.uint8)
    images[:, :, : content.shape[2]] = content
    corners = torch.rand(batch, 7, 2, generator=generator) * torch.tensor([size * 0.8, content.shape[2] * 0.8])
    sides = (torch.rand(batch, 7, 2, generator=generator) * 0.15 + 0.05) * size
    return {"images": images, "boxes": torch.cat([corners, corners + sides], -1),
            "labels": torch.zeros(batch, 7, dtype=torch.long), "mask": torch.ones(batch, 7, dtype=torch.bool),
            "image_ids": list(range(batch)), "orig_sizes": [(480, 640)] * batch, "scales": [(scale, scale)] * batch}


def batch_augment_case(root: str, size: int, batch: int, device: str, colour: bool, repeats: int, warmup: int) -> dict:
    """BatchAugment of `data=coco128` (`data.augment_on=device`) on 4 batches per call, a new epoch every call; the
    batches are collated from the device path's loader output (COCO128), else synthetic."""
    from detector.data.dataset import collate

    datamodule = coco128_train(root, size, True, "false", "device") if root else None
    if datamodule is not None:
        dataset = datamodule.train_dataset
        batches = [collate([dataset[(b * batch + i) % len(dataset)] for i in range(batch)]) for b in range(BATCHES)]
        augment = datamodule.batch_augment
    else:
        batches = [synthetic(batch, size, torch.Generator().manual_seed(b)) for b in range(BATCHES)]
        augment = coco128_batch_augment()
    if not colour:
        augment.colour_p = 0.0
    target = torch.device(device)
    batches = [{k: v.to(target) if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]
    epoch = 0

    def augment_batches() -> None:
        nonlocal epoch
        epoch += 1
        for b in batches:
            augment(b, epoch=epoch)
        if target.type == "cuda":
            torch.cuda.synchronize()

    result = timed(augment_batches, repeats, warmup)
    result["images_per_s"] = BATCHES * batch / result["median_s"]
    result["note"] = "COCO128 batches" if datamodule is not None else "synthetic batches (no COCO128)"
    return result


def coco128_batch_augment():
    """BatchAugment of configs/data/coco128.yaml, built by its data module as `data.augment_on=device` does (without
    reading the data)."""
    import hydra

    from .harness import compose

    return hydra.utils.instantiate(compose(["data=coco128", "data.augment_on=device"]).data)._batch_augment()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="device_augment: where BatchAugment runs (default: cuda when a GPU is visible)")


def cases(args: argparse.Namespace) -> list[Case]:
    have_data = (args.coco128 / "data.yaml").is_file()
    cases = []
    for size in args.sizes:
        for cache in args.cache:
            kwargs = dict(root=str(args.coco128), size=size, cache=cache, images=args.data_images)
            worker = f"@{size}, worker path, cache {cache}"
            cases += [Case(worker, worker_case, {**kwargs, "augment_on": "worker"}),
                      Case(f"@{size}, device path: the worker's share, cache {cache}", worker_case,
                           {**kwargs, "augment_on": "device"}, worker)]
        kwargs = dict(root=str(args.coco128) if have_data else "", size=size, batch=args.batch, device=args.device)
        with_colour = f"@{size}, BatchAugment on {args.device}"
        cases += [Case(with_colour, batch_augment_case, {**kwargs, "colour": True}),
                  Case(f"{with_colour}, without colour", batch_augment_case, {**kwargs, "colour": False}, with_colour)]
    return cases


def skip(case: Case, args: argparse.Namespace) -> str | None:
    if case.fn is worker_case and not (args.coco128 / "data.yaml").is_file():
        return f"no COCO128 at {args.coco128} (pass --coco128 or set DETECTOR_SHARED_DATA)"
    if case.fn is batch_augment_case and args.device.startswith("cuda") and not torch.cuda.is_available():
        return "no GPU visible (--device cuda)"
    return None
