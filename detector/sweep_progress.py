"""How far a multirun is: after each job, one line `sweep <dir>: 5 of 24 runs done, 1 failed, 18 left`.

`SweepProgress` is a Hydra callback (configs/hydra/default.yaml). The size of a launch is known before its first
job (`on_multirun_start`): the cartesian product of the basic sweeper's grid (`hydra.sweeper.params`, then the
command line), or a sweeper's `n_trials` (Optuna). The counts are read from the job folders of this launch
(`<sweep dir>/<k>`, numbered from the launch's first folder, after those of earlier launches: detector/sweeps.py):
a folder whose metrics.json says "ok" is done, "failed" (or a job that raised before writing it) failed; the
rest are left, also those running in parallel workers (hydra/launcher=joblib), which report from their own
process. A launch with its own `hydra.sweep.subdir` is not counted. Imports nothing heavy (as detector/sweeps.py)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from detector.sweeps import DEFAULT_SUBDIR, RESOLVER, expand_grid

log = logging.getLogger(__name__)


def launch_size(config: DictConfig) -> int | None:
    """The number of jobs the launch of `config` (a multirun's config, with its hydra node) runs; None when unknown
    (another sweeper without `n_trials`, a sweep the override parser cannot expand without the config)."""
    sweeper = config.hydra.sweeper
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        trials = sweeper.get("n_trials")
        return int(trials) if isinstance(trials, int) else None
    arguments = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    try:
        return len(expand_grid([*arguments, *config.hydra.overrides.task]))
    except Exception:  # noqa: BLE001 - e.g. a glob sweep, which needs the config loader: size unknown
        return None


def first_folder(config: DictConfig) -> int | None:
    """The number of the launch's first job folder: 0, or k of `${offset_job_num:k}` (detector/sweeps.py); None for
    a subdir of the user's own."""
    subdir = str(OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir"))
    if subdir == DEFAULT_SUBDIR:
        return 0
    match = re.fullmatch(rf"\$\{{{RESOLVER}:(\d+)\}}", subdir)
    return int(match.group(1)) if match else None


def job_status(folder: Path) -> str | None:
    """"ok" or "failed" from a job folder's metrics.json; None without one (not run yet, or running)."""
    try:
        return json.loads((folder / "metrics.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


try:  # the callback base class (Hydra >= 1.1)
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object  # type: ignore[assignment,misc]


class SweepProgress(Callback):
    """Hydra callback: after each job of a multirun, how many of the launch's runs are done, failed and left
    (module docstring); a last line when the launch ends."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None
        self.total: int | None = None
        self.first: int | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.total, self.first = launch_size(config), first_folder(config)
        if self.total is not None:
            log.info("sweep %s: %d runs to do", self.sweep_dir, self.total)

    def counts(self, failed_now: int | None = None) -> tuple[int, int, int] | None:
        """(done, failed, left) of the launch; `failed_now`: the folder number of a job that raised."""
        if self.sweep_dir is None or self.total is None or self.first is None:
            return None
        statuses = [job_status(self.sweep_dir / str(self.first + j)) for j in range(self.total)]
        if failed_now is not None and 0 <= failed_now - self.first < self.total:
            statuses[failed_now - self.first] = statuses[failed_now - self.first] or "failed"
        done, failed = statuses.count("ok"), statuses.count("failed")
        return done, failed, self.total - done - failed

    def line(self, counts: tuple[int, int, int]) -> str:
        done, failed, left = counts
        return f"sweep {self.sweep_dir}: {done} of {self.total} runs done, {failed} failed, {left} left"

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        folder = Path(str(config.hydra.runtime.output_dir)).name
        raised = getattr(job_return, "status", None) == JobStatus.FAILED and folder.isdigit()
        counts = self.counts(int(folder) if raised else None)
        if counts is not None:
            log.info(self.line(counts))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        counts = self.counts()
        if counts is not None:
            log.info(self.line(counts).replace(": ", " finished: ", 1))
