"""Launching more jobs into an existing multirun directory (added seeds, a resumed sweep) without losing anything.

Hydra numbers the jobs of every `python train.py -m ...` from 0 and writes `<sweep dir>/multirun.yaml` anew, so a
second launch with `hydra.sweep.dir=<the same dir>` would write its job 0 into the folder `0` of the first launch and
replace the record of the first launch's grid. `ResumableSweepCallback`, a Hydra callback registered in
configs/hydra/default.yaml, runs once per launch before any job starts (`on_multirun_start`) and, when the sweep
directory already exists:

- copies the previous `multirun.yaml` to `multirun.<k>.yaml` (k = 0, 1, ...: the launches in order; `multirun.yaml`
  stays the latest, as Hydra writes it), so that scripts/sweep_stats.py still knows every job each launch meant to
  run, also those that never started;
- when job folders exist (`0`, `1`, ...), numbers this launch's folders after the highest one: it adds
  `hydra.sweep.subdir=${offset_job_num:<highest + 1>}` to the launch's Hydra overrides (the jobs are composed from
  them), so job j goes to `<sweep dir>/<highest + 1 + j>`. The override is recorded in `multirun.yaml` and in each
  job's `.hydra/hydra.yaml`.

A hyperparameter search relaunched into its folder (hparams_search presets, detector/search.py) also needs a new
sampler seed: seeded as the first launch, Optuna's random start-up trials would propose the first launch's points
again. Its presets seed the sampler with `${resume_seed:0,${hydra.sweep.dir}}`: 0 plus the number of job folders
already there.

A fresh sweep directory is left exactly as Hydra lays it out (`0`, `1`, ...), and an explicit
`hydra.sweep.subdir=...` (on the command line or in the config) is respected. Two launches into the same directory
at the same time are not supported (both would number from the same folder).

`expand_grid` lists the jobs of a basic-sweeper grid, for the sweep summary (scripts/sweep_stats.py) and the
progress lines (detector/sweep_progress.py).

This module imports nothing heavy: Hydra instantiates the callback in the launching process, and unpickling it in
a launcher's worker (joblib, submitit) registers the resolvers there too.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from detector.atomic import atomic_write

log = logging.getLogger(__name__)

RESOLVER = "offset_job_num"
SEED_RESOLVER = "resume_seed"
DEFAULT_SUBDIR = "${hydra.job.num}"
_ARCHIVE = re.compile(r"^multirun\.(\d+)\.yaml$")


def expand_grid(arguments: Sequence[str]) -> list[tuple[str, ...]]:
    """The jobs Hydra's basic sweeper launches for these overrides (its `params`, then the command line), in its
    order: each override is parsed with Hydra's public override parser; a sweep (`a=1,2`, `range(0,3)`) gives one
    value per job, a later override of the same key replaces the earlier one in its place, and the jobs are the
    cartesian product. ValueError for what the basic sweeper refuses (interval sweeps) or cannot parse without
    the config (glob sweeps)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise ValueError(f"the basic sweeper does not support {override.input_line}")
    return [tuple(job) for job in itertools.product(*choices.values())]


def offset_job_num(offset: Any, *, _root_: DictConfig) -> str:
    """`${offset_job_num:12}` -> the job's number plus 12, as the name of its folder."""
    return str(int(_root_.hydra.job.num) + int(offset))


def resume_seed(seed: Any, sweep_dir: Any) -> int:
    """`${resume_seed:0,${hydra.sweep.dir}}` -> 0 plus the number of job folders already in the sweep directory."""
    return int(seed) + len(job_numbers(Path(str(sweep_dir))))


def register_resolver() -> None:
    for name, resolver in ((RESOLVER, offset_job_num), (SEED_RESOLVER, resume_seed)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


register_resolver()  # at import: wherever the callback is unpickled (launcher workers), the jobs can resolve it


def job_numbers(sweep_dir: Path) -> list[int]:
    """The numbers of the job folders (`0`, `1`, ...) directly under a sweep directory."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        return []
    return sorted(int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())


def launch_records(sweep_dir: Path) -> list[Path]:
    """The `multirun*.yaml` files of a sweep directory in launch order: the archived ones, then the latest."""
    sweep_dir = Path(sweep_dir)
    archived = sorted((int(m.group(1)), p) for p in sweep_dir.glob("multirun.*.yaml") if (m := _ARCHIVE.match(p.name)))
    latest = sweep_dir / "multirun.yaml"
    return [p for _, p in archived] + ([latest] if latest.is_file() else [])


def archive_multirun_yaml(sweep_dir: Path) -> Path | None:
    """Copy `<sweep_dir>/multirun.yaml` to the next free `multirun.<k>.yaml`; the copy, or None without a file."""
    latest = Path(sweep_dir) / "multirun.yaml"
    if not latest.is_file():
        return None
    k = len(launch_records(sweep_dir)) - 1
    while (target := latest.with_name(f"multirun.{k}.yaml")).exists():
        k += 1
    with atomic_write(target, "wb") as f:
        f.write(latest.read_bytes())
    return target


def _subdir_chosen(config: DictConfig) -> bool:
    """True when the launch sets its own hydra.sweep.subdir (command line or config), not Hydra's job number."""
    if any(str(o).startswith("hydra.sweep.subdir=") for o in config.hydra.overrides.hydra):
        return True
    sweep = OmegaConf.to_container(config.hydra.sweep, resolve=False)
    return str(sweep.get("subdir")) != DEFAULT_SUBDIR


def continue_numbering(config: DictConfig) -> int | None:
    """Prepare a launch into `config.hydra.sweep.dir` (see the module docstring); the first job's folder number
    when it is moved after existing folders, else None."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    if not sweep_dir.is_dir():
        return None
    archived = archive_multirun_yaml(sweep_dir)
    if archived is not None:
        log.info("sweep directory %s already holds a launch: its multirun.yaml is kept as %s", sweep_dir, archived.name)
    numbers = job_numbers(sweep_dir)
    if not numbers or _subdir_chosen(config):
        return None
    offset = numbers[-1] + 1
    override = f"hydra.sweep.subdir=${{{RESOLVER}:{offset}}}"
    with read_write(config), open_dict(config):
        config.hydra.overrides.hydra.append(override)
        config.hydra.sweep.subdir = f"${{{RESOLVER}:{offset}}}"
    log.info("sweep directory %s has job folders up to %d: this launch's jobs go to %d, %d, ...",
             sweep_dir, numbers[-1], offset, offset + 1)
    return offset


try:  # the callback base class (Hydra >= 1.1); the functions above work without it
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object  # type: ignore[assignment,misc]


class ResumableSweepCallback(Callback):
    """Hydra callback: a launch into an existing sweep directory neither overwrites its job folders nor forgets
    the grids of the earlier launches (module docstring)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        register_resolver()
        continue_numbering(config)
