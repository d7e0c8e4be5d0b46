"""Hyperparameter search with hydra-optuna-sweeper (`python train.py hparams_search=<preset>`, docs/ablations.md).

The sweeper asks Optuna for a batch of trials, runs each as a Hydra job and tells Optuna the float that the job's
task returned. `objective` is that float for a training run: one of the best epoch's COCO stats, named by the
config key `optimized_metric`. `require_sweeper` names the extra to install when the plugin is missing, and
`StudyStorageCallback` creates the folder of the study's SQLite database before the sweeper opens it (SQLite
creates the file, not its folders). Nothing here imports Optuna: the callback is instantiated by Hydra in the
launching process, `objective` runs in every job.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from detector.config import ConfigError

SQLITE = "sqlite:///"
SWEEPER = "hydra_plugins.hydra_optuna_sweeper"


def require_sweeper(argv: list[str]) -> None:
    """Exit with the install command when the command line picks an hparams_search preset and the sweeper plugin is
    not installed (Hydra itself would only say that it cannot find 'hydra/sweeper/optuna')."""
    if any(arg.startswith("hparams_search=") for arg in argv) and importlib.util.find_spec(SWEEPER) is None:
        raise SystemExit("error: hparams_search needs Hydra's Optuna sweeper: pip install -e '.[search]'")


def check_metric(name: str) -> None:
    """Refuse an `optimized_metric` that no run reports, naming the ones it can be (before any training)."""
    from detector.evaluation.coco import STAT_NAMES  # here: `train.py --cfg job` composes without torch

    if name not in STAT_NAMES:
        raise ConfigError(f"optimized_metric={name!r} is not a COCO stat of the best epoch; choose one of "
                          f"{', '.join(STAT_NAMES)}")


def objective(metrics: dict[str, Any], name: str) -> float:
    """The value a run returns to the sweeper: `metrics[name]` of the best epoch (chosen by mAP50-95), NaN when
    the run failed or never validated, which Optuna records as a failed trial."""
    if metrics.get("status") != "ok":
        return math.nan
    value = metrics.get(name)
    return math.nan if value is None else float(value)


def sqlite_path(storage: Any) -> Path | None:
    """The database file of a `sqlite:///<path>` storage URL; None for any other storage (or none)."""
    if not isinstance(storage, str) or not storage.startswith(SQLITE):
        return None
    path = storage[len(SQLITE):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


try:  # the callback base class (Hydra >= 1.1); the functions above work without it
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object  # type: ignore[assignment,misc]


class StudyStorageCallback(Callback):
    """Hydra callback of the hparams_search presets: creates the folder of the sweeper's SQLite storage."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        path = sqlite_path(config.hydra.sweeper.get("storage"))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
