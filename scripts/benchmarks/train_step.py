"""train_step: forward + criterion + backward + AdamW step, batch --batch at each of --sizes, 80 classes, 8 GT per
image: the n-scale YOLOv8-style model (`model=yolov8`), the light SSD (`experiment=ssd`) and the end-to-end model."""

from __future__ import annotations

import argparse

import torch

from .harness import Case, compose, timed
from .inputs import NUM_CLASSES, random_gt

NAME = "train_step"
# the model configs timed by train_step and inference: Hydra overrides of configs/train.yaml
MODELS = {"n": [], "ssd_csp_n": ["experiment=ssd"], "n end2end": ["model.end2end=true"]}

# inference only: the end-to-end model detecting with its one-to-many branch + NMS, compared with "n end2end"
INFERENCE_VARIANTS = {"n end2end, one-to-many + NMS": (["model.end2end=true", "postprocess.one2one=false"], "n end2end")}


def build_network(model: str, size: int, compile_model: bool):
    """(network, criterion, post-processor) of a MODELS (or INFERENCE_VARIANTS) entry, as training instantiates
    them, 80 classes."""
    import hydra

    overrides = MODELS[model] if model in MODELS else INFERENCE_VARIANTS[model][0]
    cfg = compose([*overrides, f"data.num_classes={NUM_CLASSES}", f"data.img_size={size}"])
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



def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options of its own (--batch, --sizes, --compile)."""


def cases(args: argparse.Namespace) -> list[Case]:
    return [Case(f"{model} @{size}, batch {args.batch}", train_step_case,
                 dict(model=model, size=size, batch=args.batch, compile_model=args.compile))
            for model in MODELS for size in args.sizes]
