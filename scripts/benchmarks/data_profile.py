"""data_profile: where the time of one mosaic training sample of `data=coco128` goes, stage by stage, one thread, at
each of --sizes: decoding the 4 images, resizing them for the letterbox, composing the mosaic (and, for reference,
albumentations' A.Mosaic in a Compose, which the dataset used before), each augmentation in a Compose of its own
(HSV jitter, flip, affine, crop, letterbox), albumentations' bbox processing (the augmentations with boxes minus the
same without), the tensor conversion and the collate (per sample of a batch of 16). Each stage runs on the previous
stage's outputs, in a process set up as a DataLoader worker; CPU milliseconds per sample (medians over --repeats)."""

from __future__ import annotations

import argparse
import random
import time

import albumentations as A
import cv2

from .data import as_worker, coco128_train
from .harness import Case, timed

NAME = "data_profile"


def cpu_timed(fn, repeats: int, warmup: int) -> dict:
    """`timed` on this process's CPU time: steadier than wall time on a loaded machine."""
    return timed(fn, repeats, warmup, clock=time.process_time)


def a_mosaic_compose(size: int, min_area: float, min_box_size: float) -> A.Compose:
    """Albumentations' own mosaic in a Compose with bbox processing: the dataset's mosaic before compose_mosaic."""
    from detector.data.transforms import PAD_VALUE, build_pipeline

    mosaic = A.Mosaic(grid_yx=(2, 2), target_size=(size, size), cell_shape=(size, size), center_range=(0.25, 0.75),
                      fit_mode="contain", interpolation=cv2.INTER_LINEAR, fill=PAD_VALUE, p=1.0)
    return build_pipeline(size, [mosaic], 0.1, min_area, min_box_size)


def profile_case(root: str, size: int, images: int, repeats: int, warmup: int) -> dict:
    from detector.data.dataset import collate, read_image, resize_to_letterbox
    from detector.data.mosaic import compose_mosaic
    from detector.data.transforms import PAD_VALUE

    datamodule = coco128_train(root, size, True, "false")
    as_worker(datamodule)
    dataset = datamodule.train_dataset
    rng = random.Random(0)
    groups = [[i % len(dataset), *rng.sample(range(len(dataset)), 3)] for i in range(images)]
    paths = [[dataset.records[j].image_path for j in group] for group in groups]
    stages: dict[str, float] = {}

    def stage(name: str, fn, inputs: list) -> list:
        outputs: list = []
        stages[name] = cpu_timed(lambda: outputs.__setitem__(slice(None), [fn(x) for x in inputs]), repeats, warmup)[
            "median_s"] / len(inputs) * 1e3
        return outputs

    decoded = stage("decode 4 images (cv2.imread + BGR->RGB)", lambda group: [read_image(p) for p in group], paths)
    resized = stage("resize 4 images for the letterbox", lambda group: [resize_to_letterbox(im, size)[0] for im in group],
                    decoded)
    items = [[(im, *dataset._load(j)[1:]) for im, j in zip(ims, group)] for ims, group in zip(resized, groups)]
    mosaics = stage("compose_mosaic", lambda it: compose_mosaic(it, size, (0.25, 0.75), rng, PAD_VALUE, 4.0, 1.0), items)
    reference = a_mosaic_compose(size, 4.0, 1.0)
    meta = [[{"image": im, "bboxes": b, "labels": c} for im, b, c in it[1:]] for it in items]
    stage("(before: A.Mosaic in a Compose, not counted)", lambda k: reference(
        image=items[k][0][0], bboxes=items[k][0][1], labels=items[k][0][2], mosaic_metadata=meta[k]), range(len(items)))
    before = stages.pop("(before: A.Mosaic in a Compose, not counted)")
    augmentations = list(dataset.pipeline.transforms)
    current = [{"image": im, "bboxes": b, "labels": c} for im, b, c in mosaics]
    for transform in augmentations:
        if isinstance(transform, A.PadIfNeeded | A.LongestMaxSize):
            continue
        pipeline = A.Compose([transform], bbox_params=dataset.pipeline.processors["bboxes"].params)
        pipeline.set_random_seed(0)
        current = stage(type(transform).__name__, lambda d, pipeline=pipeline: pipeline(**d), current)
    letterbox = A.Compose(augmentations[-2:], bbox_params=dataset.pipeline.processors["bboxes"].params)
    outs = stage("letterbox (LongestMaxSize + PadIfNeeded)", lambda d: letterbox(**d), current)
    with_boxes = A.Compose(augmentations, bbox_params=dataset.pipeline.processors["bboxes"].params)
    without = A.Compose(augmentations)
    with_boxes.set_random_seed(0)
    without.set_random_seed(0)
    inputs = [{"image": im, "bboxes": b, "labels": c} for im, b, c in mosaics]
    t_with = cpu_timed(lambda: [with_boxes(**d) for d in inputs], repeats, warmup)["median_s"]
    t_without = cpu_timed(lambda: [without(image=d["image"]) for d in inputs], repeats, warmup)["median_s"]
    bbox_ms = (t_with - t_without) / len(inputs) * 1e3
    samples = stage("to tensors (DetectionDataset._output)", lambda d: dataset._output(0, d), outs)
    batch = min(16, len(samples))
    batches = [samples[i:i + batch] for i in range(0, len(samples) - batch + 1, batch)]
    stages["collate (per sample, batches of 16)"] = cpu_timed(lambda: [collate(b) for b in batches], repeats, warmup)[
        "median_s"] / (batch * len(batches)) * 1e3
    total = sum(stages.values())
    note = "; ".join(f"{k} {v:.2f} ms ({v / total:.0%})" for k, v in stages.items())
    note += (f"; of the augmentations, albumentations' bbox processing {bbox_ms:.2f} ms; A.Mosaic in a Compose took "
             f"{before:.2f} ms where compose_mosaic takes {stages['compose_mosaic']:.2f} ms")
    return {"median_s": total / 1e3, "min_s": total / 1e3, "max_s": total / 1e3, "stages_ms": stages,
            "bbox_processing_ms": bbox_ms, "a_mosaic_ms": before, "note": note}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options of its own (--sizes, --data-images, at most 64 samples here)."""


def cases(args: argparse.Namespace) -> list[Case]:
    return [Case(f"@{size}, mosaic sample, no cache", profile_case,
                 dict(root=str(args.coco128), size=size, images=min(args.data_images, 64))) for size in args.sizes]


def skip(case: Case, args: argparse.Namespace) -> str | None:
    if not (args.coco128 / "data.yaml").is_file():
        return f"no COCO128 at {args.coco128} (pass --coco128 or set DETECTOR_SHARED_DATA)"
    return None
