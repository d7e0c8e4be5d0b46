"""inference: eval-mode forward + decode + NMS, batch --batch at each of --sizes, both models; the end-to-end model
(`model.end2end=true`): its NMS-free one-to-one selection, against its one-to-many branch + NMS."""

from __future__ import annotations

import argparse

import torch

from .harness import Case, timed
from .train_step import INFERENCE_VARIANTS, MODELS, build_network

NAME = "inference"


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



def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options of its own (--batch, --sizes, --compile)."""


def cases(args: argparse.Namespace) -> list[Case]:
    common = {"batch": args.batch, "compile_model": args.compile}
    plain = [Case(f"{model} @{size}, batch {args.batch}", inference_case, dict(model=model, size=size, **common))
             for model in MODELS for size in args.sizes]
    variants = [Case(f"{model} @{size}, batch {args.batch}", inference_case, dict(model=model, size=size, **common),
                     f"{reference} @{size}, batch {args.batch}")
                for model, (_, reference) in INFERENCE_VARIANTS.items() for size in args.sizes]
    return plain + variants
