"""data: training samples per second of COCO128 train, one process with one thread (what a DataLoader worker gets),
at each of --sizes, mosaic on and off, for each --cache mode: the `data=coco128` pipeline (decode, 4-image mosaic,
HSV, flip, affine, crop, letterbox), against ultralytics' `YOLODataset` with its default training augmentations
(mosaic, random perspective, HSV, flip, and its albumentations blurs at p=0.01) in the same run. The ultralytics
reference is skipped, saying why, when it is not importable (it is optional: `pip install ultralytics`; the
package never imports it). Besides wall time, each case reports its CPU time per sample, and the comparison its
ratio: on a loaded machine the wall times of two cases run one after the other see different loads."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml

from .harness import Case, compose, timed

NAME = "data"
ULTRALYTICS = "ultralytics"


def one_thread() -> None:
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def as_worker(datamodule) -> None:
    """This process set up as a worker of the datamodule's training DataLoader: one thread, its `worker_init_fn`."""
    one_thread()
    init = datamodule.train_dataloader().worker_init_fn
    if init is not None:
        init(0)


def time_samples(dataset, images: int, repeats: int, warmup: int) -> dict:
    """`images` consecutive samples per call, a new run of indices in every call; also the process's CPU time per
    sample over the timed calls (`cpu_per_image_s`: steadier than wall time on a loaded machine)."""
    start = 0

    def samples():
        nonlocal start
        for i in range(start, start + images):
            dataset[i % len(dataset)]
        start += images

    for _ in range(warmup):
        samples()
    cpu = time.process_time()
    result = timed(samples, repeats, 0)
    result["cpu_per_image_s"] = (time.process_time() - cpu) / (images * repeats)
    result["images_per_s"] = images / result["median_s"]
    return result


def coco128_train(root: str, size: int, mosaic: bool, cache: str, augment_on: str = "worker"):
    """The data module of `data=coco128`, set up for fit."""
    import hydra

    logging.disable(logging.INFO)  # the data checks' summaries would cut the table; their warnings still show
    cfg = compose(["data=coco128", f"data.root={root}", f"data.img_size={size}", f"data.mosaic_prob={float(mosaic)}",
                   f"data.cache_images={cache}", f"data.augment_on={augment_on}"])
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    return datamodule


def data_case(root: str, size: int, mosaic: bool, images: int, cache: str, repeats: int, warmup: int) -> dict:
    """`images` training samples through the `data=coco128` pipeline, as one DataLoader worker serves them; the
    cache is filled first (not timed)."""
    datamodule = coco128_train(root, size, mosaic, cache)
    as_worker(datamodule)
    return time_samples(datamodule.train_dataset, images, repeats, warmup)


def ultralytics_case(root: str, size: int, mosaic: bool, images: int, cache: str, repeats: int, warmup: int) -> dict:
    """The same with ultralytics' YOLODataset (augment=True, its default hyperparameters, `mosaic` 1 or 0). It reads
    COCO128 through links in a temporary folder, where it writes its label cache."""
    one_thread()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(YOLO_CONFIG_DIR=tmp, YOLO_OFFLINE="1", YOLO_VERBOSE="False")
        from ultralytics.cfg import get_cfg
        from ultralytics.data.dataset import YOLODataset
        from ultralytics.utils import LOGGER

        LOGGER.setLevel(logging.WARNING)
        for kind in ("images", "labels"):
            (Path(tmp) / kind).mkdir()
            (Path(tmp) / kind / "train2017").symlink_to(Path(root) / kind / "train2017")
        names = yaml.safe_load((Path(root) / "data.yaml").read_text())["names"]
        names = dict(enumerate(names)) if isinstance(names, list) else names
        dataset = YOLODataset(
            img_path=str(Path(tmp) / "images" / "train2017"), imgsz=size, cache="ram" if cache == "ram" else False,
            augment=True, hyp=get_cfg(overrides={"mosaic": float(mosaic), "imgsz": size}), batch_size=16, stride=32,
            pad=0.0, data={"names": names, "nc": len(names), "channels": 3}, task="detect",
        )
        return time_samples(dataset, images, repeats, warmup)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-images", type=int, default=128, help="samples timed per repeat (data)")
    parser.add_argument("--cache", nargs="+", choices=["false", "ram", "disk"], default=["false", "ram"],
                        help="data: the image cache modes timed (filled before timing)")


def cases(args: argparse.Namespace) -> list[Case]:
    cases = []
    for size in args.sizes:
        for mosaic in (False, True):
            for cache in args.cache:
                name = f"@{size}, mosaic {'on' if mosaic else 'off'}, cache {cache}"
                kwargs = dict(root=str(args.coco128), size=size, mosaic=mosaic, images=args.data_images, cache=cache)
                cases += [Case(name, data_case, kwargs, f"{name}, {ULTRALYTICS}"),
                          Case(f"{name}, {ULTRALYTICS}", ultralytics_case, kwargs)]
    return cases


def skip(case: Case, args: argparse.Namespace) -> str | None:
    if not (args.coco128 / "data.yaml").is_file():
        return f"no COCO128 at {args.coco128} (pass --coco128 or set DETECTOR_SHARED_DATA)"
    if case.fn is ultralytics_case:
        if importlib.util.find_spec("ultralytics") is None:
            return "ultralytics is not installed (an optional reference: pip install ultralytics)"
        if case.kwargs["cache"] == "disk":
            return "not run: ultralytics' disk cache writes .npy files beside the images"
    return None
