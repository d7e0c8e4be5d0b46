"""Run a training from a composed Hydra config: instantiate, fit, report the best COCO metrics."""

from __future__ import annotations

import gc
import json
import logging
import math
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from detector.atomic import remove_stale_temporaries, write_text
from detector.config import check_combination, register_resolvers, renamed_choices
from detector.jsonsafe import json_safe
from detector.models.build import WEIGHT_OPTIONS, split_model_config
from detector.training.callbacks import MetricsHistory
from detector.training.finetune import prepare_model
from detector.training.numerics import describe, numerics, set_cpu_threads

log = logging.getLogger(__name__)

# the parts of the config that make a loss combination (recorded resolved in metrics.json)
COMBINATION_KEYS = ("loss.cls", "loss.box", "loss.dfl", "assigner", "loss.weights")


def instantiate_all(
    cfg: DictConfig, extra_callbacks: tuple[L.Callback, ...] = ()
) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    datamodule = hydra.utils.instantiate(cfg.data)
    module = hydra.utils.instantiate(cfg.module)
    callbacks = instantiate_callbacks(cfg) + list(extra_callbacks)
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, module, trainer


def prepare_run_model(module: L.LightningModule, cfg: DictConfig) -> None:
    """Load the starting weights of the module's freshly built model and freeze what the model config's run options
    say (`model.init_from`, `model.freeze`, `model.pretrained_backbone`, `model.backbone_weights`)."""
    _, options = split_model_config(OmegaConf.to_container(cfg.model, resolve=True))
    prepare_model(module.model, **{key: options[key] for key in WEIGHT_OPTIONS if key in options})


def instantiate_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The callbacks of `cfg.callbacks`. An entry set to false or null (`callbacks.plots=false`) is off, as one
    removed (`~callbacks.plots`); the progress bar is left out under `trainer.enable_progress_bar=false` (Lightning
    refuses a progress bar callback then)."""
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if cfg.trainer.get("enable_progress_bar") is False:
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return callbacks


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the model; return (and write to <output_dir>/metrics.json) the metrics of the best epoch, with
    the run's status ("ok"/"failed"), seed, Hydra overrides, resolved loss combination and per-epoch history.

    A run that raises is recorded as status "failed" with the reason (its best metrics so far go under
    "partial_best"; "map" is NaN, null in the file). In a Hydra multirun the exception is then swallowed so
    that the sweep goes on (the objective is NaN); in a single run it is re-raised."""
    register_resolvers()  # joblib/submitit workers import this module without running train.py's top level
    check_combination(cfg)  # before any data is read: a combination that cannot train is refused here
    for message in renamed_choices(config_choices(cfg)):
        warnings.warn(message, FutureWarning, stacklevel=2)
    set_cpu_threads(cfg.get("cpu_threads"))
    log.info("numerics: %s", describe(numerics()))
    output_dir = Path(cfg.paths.output_dir)
    remove_stale_temporaries(run_folders(cfg))
    history, module, trainer = MetricsHistory(), None, None
    start = time.perf_counter()
    try:
        L.seed_everything(cfg.seed, workers=True)
        datamodule, module, trainer = instantiate_all(cfg, extra_callbacks=(history,))
        prepare_run_model(module, cfg)
        module.run_config = OmegaConf.to_container(cfg, resolve=True)  # into the checkpoints (detector.deploy.load)
        save_config(cfg, output_dir)
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except Exception as error:
        best = dict(getattr(module, "best_metrics", None) or {})
        metrics = {"map": math.nan, "status": "failed", "error": {
            "type": type(error).__name__, "message": str(error), "traceback": traceback.format_exc()}}
        if best:
            metrics["partial_best"] = best
        metrics.update(_run_record(cfg, history, module, start))
        report(metrics, trainer, output_dir)
        if not is_multirun():
            raise
        log.exception("run failed; recorded in %s, the sweep goes on", output_dir / "metrics.json")
        del module, trainer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return metrics
    metrics = {**module.best_metrics, "status": "ok", "error": None, **_run_record(cfg, history, module, start)}
    report(metrics, trainer, output_dir)
    return metrics


def run_folders(cfg: DictConfig) -> list[Path]:
    """The folders a run writes into or resumes from: the run directory, its checkpoint folder, and the folder of
    `ckpt_path` with its run directory (where an interrupted run left its files)."""
    output_dir = Path(cfg.paths.output_dir)
    folders = [output_dir, output_dir / "checkpoints"]
    dirpath = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None, throw_on_resolution_failure=False)
    if dirpath:
        folders.append(Path(dirpath))
    if cfg.get("ckpt_path"):
        checkpoint_folder = Path(cfg.ckpt_path).parent
        folders += [checkpoint_folder, checkpoint_folder.parent] if checkpoint_folder.name == "checkpoints" else [checkpoint_folder]
    return folders


def is_multirun() -> bool:
    """True inside a Hydra multirun job (`python train.py -m ...`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def config_choices(cfg: DictConfig) -> dict[str, Any]:
    """The config-group choices of the run (Hydra's `runtime.choices`, without hydra/ groups): from the running
    Hydra app, else from a config composed with its hydra node; {} when there are none."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else OmegaConf.select(
        cfg, "hydra.runtime.choices", default=None)
    if choices is None:
        return {}
    return {k: v for k, v in OmegaConf.to_container(choices).items() if not k.startswith("hydra/")}


def _run_record(cfg: DictConfig, history: MetricsHistory, module: L.LightningModule | None, start: float) -> dict[str, Any]:
    """What identifies and describes a run in metrics.json besides its COCO stats."""
    from hydra.core.hydra_config import HydraConfig

    record: dict[str, Any] = {"train_minutes": (time.perf_counter() - start) / 60}
    if module is not None:
        record["parameters"] = sum(p.numel() for p in module.model.parameters())
    record["seed"] = cfg.get("seed")
    record["numerics"] = numerics()
    record["overrides"], record["choices"], record["job_num"] = [], {}, None
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        record["overrides"] = list(hydra_cfg.overrides.task)
        record["choices"] = config_choices(cfg)
        record["job_num"] = OmegaConf.select(hydra_cfg, "job.num", default=None)
    record["combination"] = {key: _resolved(cfg, key) for key in COMBINATION_KEYS}
    record["history"] = history.history()
    return record


def _resolved(cfg: DictConfig, key: str) -> Any:
    node = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    if not isinstance(node, DictConfig):
        return node
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception:  # noqa: BLE001 - an interpolation that cannot resolve here: keep it as written
        return OmegaConf.to_container(node, resolve=False)


@rank_zero_only
def save_config(cfg: DictConfig, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text(output_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))


@rank_zero_only
def report(metrics: dict[str, Any], trainer: L.Trainer | None, output_dir: Path) -> None:
    checkpoint = getattr(getattr(trainer, "checkpoint_callback", None), "best_model_path", "") or "(no checkpoint saved)"
    metrics = {**metrics, "best_checkpoint": checkpoint}
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text(output_dir / "metrics.json", json.dumps(json_safe(metrics), indent=2, allow_nan=False))
    if metrics.get("status") == "failed":
        print(f"\nRun FAILED: {metrics['error']['type']}: {metrics['error']['message']}")
    elif "map" in metrics:
        print(
            f"\nBest epoch {int(metrics['epoch']) + 1}: mAP50-95 {metrics['map']:.4f}  mAP50 {metrics['map_50']:.4f}"
            f"  ({int(metrics['images'])} val images, {metrics['train_minutes']:.1f} min)"
        )
    print(f"Best checkpoint: {checkpoint}\nRun directory:   {output_dir}")
