"""Train a detector: `python train.py [group=option ...] [key=value ...]` (see README)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

from detector.config import register_resolvers  # noqa: E402
from detector.training.runner import train  # noqa: E402

register_resolvers()


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float:
    metrics = train(cfg)
    return metrics.get("map", 0.0)  # the value Hydra sweepers optimise


if __name__ == "__main__":
    main()
