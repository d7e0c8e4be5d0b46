"""Run a training from a composed Hydra config: instantiate, fit, report the best COCO metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf


def auto_precision() -> str:
    """Lightning precision for the visible hardware: bf16-mixed or 16-mixed on GPU, 32-true on CPU."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("auto_precision"):
        OmegaConf.register_new_resolver("auto_precision", auto_precision)


def instantiate_all(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    datamodule = hydra.utils.instantiate(cfg.data)
    module = hydra.utils.instantiate(cfg.module)
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, module, trainer


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the model; return (and write to <output_dir>/metrics.json) the metrics of the best epoch."""
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    datamodule, module, trainer = instantiate_all(cfg)
    save_config(cfg, output_dir)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = dict(module.best_metrics)
    metrics["train_minutes"] = (time.perf_counter() - start) / 60
    metrics["parameters"] = sum(p.numel() for p in module.model.parameters())
    report(metrics, trainer, output_dir)
    return metrics


@rank_zero_only
def save_config(cfg: DictConfig, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config_resolved.yaml", resolve=True)


@rank_zero_only
def report(metrics: dict[str, float], trainer: L.Trainer, output_dir: Path) -> None:
    checkpoint = getattr(trainer.checkpoint_callback, "best_model_path", "") or "(no checkpoint saved)"
    metrics = {**metrics, "best_checkpoint": checkpoint}
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if "map" in metrics:
        print(
            f"\nBest epoch {int(metrics['epoch'])}: mAP50-95 {metrics['map']:.4f}  mAP50 {metrics['map_50']:.4f}"
            f"  ({int(metrics['images'])} val images, {metrics['train_minutes']:.1f} min)"
        )
    print(f"Best checkpoint: {checkpoint}\nRun directory:   {output_dir}")
