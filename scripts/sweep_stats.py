"""Ablation sweeps: collect the runs of Hydra multiruns and compare configurations with statistics.

Every job of `python train.py -m ...` writes `<sweep dir>/<job>/metrics.json` (see `detector.training.runner.train`):
status, Hydra overrides, seed, best-epoch COCO stats, per-epoch history. This module

- reads them back (`collect_runs`), together with the jobs that never wrote one: a job directory without
  metrics.json ("incomplete": killed, out of memory, time limit) and, for Hydra's basic sweeper, a job of the
  sweep's cartesian product without a directory at all ("missing");
- groups runs into configurations (the job's overrides minus `seed`, or the values of `group_by` keys);
- summarises each configuration over seeds (`summarize`): mean, sample sd, 95% confidence interval of the
  mean with the t distribution (n - 1 degrees of freedom);
- compares each configuration with a baseline by a paired t-test on the runs matched by seed (same seed =
  same initial weights and data order, so the seed-to-seed spread common to both largely cancels), with
  Holm-corrected p-values over the comparisons of the table (`holm`), and says what the sweep could detect: the
  minimal detectable effect at 80% power (`minimal_detectable_effect`) and the seeds needed for a target
  difference (`seeds_needed`), both from the noncentral t distribution;
- builds the `python train.py -m ...` commands that add seeds to a sweep (`add_seed_commands`) or relaunch its
  missing and failed jobs (`resume_commands`) into the same directory;
- finds the runs whose validation mAP50 collapsed mid-run (`lowest_share`: the lowest mAP50 after epoch 3 as a share
  of the best before it; below `COLLAPSE_SHARE` is a collapse);
- writes the tables (`to_markdown`, `write_csv`) and plots (`plot_bars`, `plot_curves`).

`scripts/summarize_sweep.py` is the command line (it imports this module from its own folder); docs/ablations.md
explains the statistics. Needs scipy (the t distribution): `pip install -e ".[sweep]"`.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as _stats

from detector.atomic import atomic_write, remove_stale_temporaries, write_text
from detector.sweeps import expand_grid
from detector.training.numerics import describe as describe_numerics

# metrics.json key -> column title; AP over IoU 0.50:0.95 unless named otherwise
METRICS: dict[str, str] = {
    "map": "mAP50-95", "map_50": "mAP50", "map_75": "mAP75",
    "map_small": "APs", "map_medium": "APm", "map_large": "APl",
}
DEFAULT_BASELINE = "ciou"  # any override set to ciou: loss/box=ciou (or the older loss=ciou)
SEED_KEY = "seed"
POWER = 0.8  # the power of the minimal detectable effect and of the seeds needed
MAX_SEEDS = 200  # seeds_needed gives up beyond this many pairs
_STATUS_RANK = {"ok": 3, "failed": 2, "incomplete": 1, "missing": 0}
SETTLE_EPOCHS = 4  # lowest_share looks at epochs 4, 5, ... (the first epochs' mAP is near 0 and noisy)
COLLAPSE_SHARE = 0.5  # a run whose val mAP50 falls below half of its best so far collapsed (issue 24)


class SweepError(ValueError):
    """The runs cannot be summarised as asked (no runs, unknown or ambiguous baseline, clashing runs)."""


# --------------------------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One job of a sweep, whatever became of it."""

    directory: Path | None  # None for a job that never got a directory
    overrides: tuple[str, ...]  # the job's Hydra task overrides (`hydra.overrides.task`)
    status: str  # ok | failed | incomplete (no metrics.json) | missing (no directory)
    reason: str = ""
    seed: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    baseline_hint: str | None = None  # `ablation.baseline` of the run's config (experiment presets set it)
    configuration: str = ""  # set by `summarize`
    sweep_dir: Path | None = None  # the multirun directory it was collected from
    hydra_overrides: tuple[str, ...] = ()  # the launch's Hydra overrides (`hydra.overrides.hydra`: launcher, ...)
    epochs: int | None = None  # a run read from a runs.csv has no history, only its epoch count
    numerics: dict[str, Any] | None = None  # metrics.json's `numerics`: torch, CPU threads, kernel set, environment
    fall: Fall | None = None  # the deepest fall of val mAP50 (`lowest_share`); None without the history for it

    @property
    def name(self) -> str:
        if self.directory is not None:
            return str(self.directory)
        return "(no directory) " + " ".join(self.overrides)


@dataclass(frozen=True)
class Fall:
    """The lowest validation mAP50 of an epoch as a share of the best of the epochs before it."""

    share: float
    epoch: int


def lowest_share(history: Sequence[dict[str, Any]], key: str = "val_map_50", start: int = SETTLE_EPOCHS) -> Fall | None:
    """min over epochs e >= `start` of history[e][key] / max(history[0..e-1][key]): 1.0 for a run that never
    falls, 0.03 for one whose mAP50 drops to 3% of its best so far. Epochs without the value are skipped; None when
    no epoch from `start` on has a positive best before it."""
    best, fall = 0.0, None
    for epoch, row in enumerate(history):
        value = row.get(key)
        if value is None or not math.isfinite(value):
            continue
        if epoch >= start and best > 0 and (fall is None or value / best < fall.share):
            fall = Fall(min(value / best, 1.0), epoch)
        best = max(best, value)
    return fall


def override_key(override: str) -> str:
    """`loss=ciou` -> `loss`; `+trainer.x=1` -> `trainer.x`."""
    return override.split("=", 1)[0].lstrip("+~")


def override_value(override: str) -> str:
    return override.split("=", 1)[1] if "=" in override else ""


def _seed_from(overrides: Iterable[str]) -> int | None:
    for override in overrides:
        if override_key(override) == SEED_KEY:
            try:
                return int(override_value(override))
            except ValueError:
                return None
    return None


def _load_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # noqa: BLE001 - unreadable or half-written file: treat as absent
        return None


def _last_error_line(directory: Path) -> str:
    """The last ERROR/Traceback-ish line of the job's Hydra log (`<job>/<task>.log`), if any."""
    for log_file in sorted(directory.glob("*.log")):
        lines = [line.strip() for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if "ERROR" in line or "Error" in line or "Exception" in line]
        if errors:
            return errors[-1][:300]
    return ""


def read_run(directory: Path) -> Run:
    """A job directory -> Run (from its metrics.json, else its .hydra/ files)."""
    directory = Path(directory)
    hydra_overrides = _load_yaml(directory / ".hydra" / "overrides.yaml")
    config = _load_yaml(directory / ".hydra" / "config.yaml")
    hydra_record = _load_yaml(directory / ".hydra" / "hydra.yaml")
    baseline_hint = None
    if isinstance(config, dict) and isinstance(config.get("ablation"), dict):
        baseline_hint = config["ablation"].get("baseline")
    metrics_file = directory / "metrics.json"
    data: dict[str, Any] | None = None
    if metrics_file.exists():
        try:
            data = json.loads(metrics_file.read_text())
        except json.JSONDecodeError as error:
            data = {"status": "failed", "error": {"type": "unreadable metrics.json", "message": str(error)}}
    overrides = tuple((data or {}).get("overrides") or hydra_overrides or ())
    seed = (data or {}).get("seed")
    if seed is None:
        seed = _seed_from(overrides)
    if seed is None and isinstance(config, dict) and isinstance(config.get(SEED_KEY), int):
        seed = config[SEED_KEY]
    run = Run(directory, overrides, "incomplete", seed=seed, baseline_hint=baseline_hint,
              hydra_overrides=_hydra_overrides(hydra_record))
    if data is None:
        last = _last_error_line(directory)
        run.reason = "no metrics.json (killed: time limit, out of memory; still running; or crashed before train())"
        run.reason += f"; log: {last}" if last else ""
        return run
    run.history = list(data.get("history") or [])
    run.fall = lowest_share(run.history)
    run.numerics = data.get("numerics") if isinstance(data.get("numerics"), dict) else None
    status = data.get("status") or ("ok" if data.get("map") is not None else "failed")  # files from before `status`
    if status != "ok":
        error = data.get("error") or {}
        message = " ".join(str(error.get("message", "")).split())
        run.status = "failed"
        run.reason = f"{error.get('type', 'unknown error')}: {message}"[:400]
        return run
    for key in METRICS:
        value = data.get(key)
        # pycocotools reports -1 for an area range without ground truth: not a measurement
        run.metrics[key] = float(value) if value is not None and value >= 0 else math.nan
    if math.isnan(run.metrics["map"]):
        run.reason = "metrics.json has no mAP (no validation epoch ran?)"
        return run
    run.status = "ok"
    return run


def _hydra_overrides(record: Any) -> tuple[str, ...]:
    """`hydra.overrides.hydra` of a multirun.yaml or a job's .hydra/hydra.yaml ({} or None: none)."""
    hydra_cfg = (record or {}).get("hydra") if isinstance(record, dict) else None
    overrides = ((hydra_cfg or {}).get("overrides") or {}).get("hydra") or []
    return tuple(str(o) for o in overrides)


@dataclass
class Launch:
    """One `python train.py -m ...` into a sweep directory, as recorded in its multirun.yaml."""

    record: Path  # multirun.yaml, or multirun.<k>.yaml for an earlier launch (detector/sweeps.py)
    jobs: list[tuple[str, ...]] | None  # the task overrides of every job; None: not a basic-sweeper grid
    hydra_overrides: tuple[str, ...]


def launch_records(sweep_dir: Path) -> list[Path]:
    """The `multirun*.yaml` files of a sweep directory in launch order: `multirun.<k>.yaml` (k = 0, 1, ...: kept by
    detector/sweeps.py when another launch went into the same directory; the same function is there, this module
    does not import the package), then `multirun.yaml`, the latest."""
    sweep_dir = Path(sweep_dir)
    archived = sorted((int(m.group(1)), p) for p in sweep_dir.glob("multirun.*.yaml")
                      if (m := re.match(r"^multirun\.(\d+)\.yaml$", p.name)))
    latest = sweep_dir / "multirun.yaml"
    return [p for _, p in archived] + ([latest] if latest.is_file() else [])


def read_launches(sweep_dir: Path) -> list[Launch]:
    """The launches into a sweep directory, first to last (`launch_records`)."""
    launches = []
    for path in launch_records(Path(sweep_dir)):
        config = _load_yaml(path)
        if not isinstance(config, dict):
            continue
        hydra_cfg = config.get("hydra") or {}
        sweeper = hydra_cfg.get("sweeper") or {}
        jobs = None
        if str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
            params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
            arguments = list((hydra_cfg.get("overrides") or {}).get("task") or [])
            try:
                jobs = expand_grid(params + arguments)
            except Exception:  # noqa: BLE001 - e.g. a glob sweep needing the config loader: no "missing" detection
                jobs = None
        launches.append(Launch(path, jobs, _hydra_overrides(config)))
    return launches


def expected_jobs(sweep_dir: Path) -> list[tuple[str, ...]] | None:
    """The override lists of every job that the basic-sweeper launches into `sweep_dir` meant to run (the
    cartesian product Hydra launched, over all launches, each job once), rebuilt from its multirun*.yaml; None
    when that is not possible (other sweepers, no file)."""
    grids = [launch.jobs for launch in read_launches(sweep_dir) if launch.jobs is not None]
    if not grids:
        return None
    seen: set[frozenset[str]] = set()
    jobs = []
    for job in itertools.chain.from_iterable(grids):
        if frozenset(job) not in seen:
            seen.add(frozenset(job))
            jobs.append(job)
    return jobs


def _run_directories(root: Path) -> list[Path]:
    found = {p.parent for p in root.rglob("metrics.json")}
    found |= {p.parent.parent for p in root.rglob(".hydra/overrides.yaml")}
    if (root / "multirun.yaml").exists():
        found.discard(root)

    def order(path: Path):
        parts = path.relative_to(root).parts
        return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)

    return sorted(found, key=order)


def collect_runs(sweep_dirs: Sequence[Path | str]) -> tuple[list[Run], list[Run]]:
    """Every run of the given multirun directories, plus the runs superseded by a rerun.

    A job is identified by its overrides. When the same job appears more than once (a sweep rerun into a
    second directory), the best status wins (ok > failed > incomplete > missing) and, at equal status,
    the directory given last; the others are returned as superseded."""
    ordered: list[Run] = []
    for sweep_dir in sweep_dirs:
        root = Path(sweep_dir)
        if not root.is_dir():
            raise SweepError(f"not a directory: {root}")
        runs = [read_run(d) for d in _run_directories(root)]
        for run in runs:
            run.sweep_dir = root
        seen = {frozenset(r.overrides) for r in runs}
        for launch in read_launches(root):
            for job in launch.jobs or []:
                if frozenset(job) not in seen:
                    seen.add(frozenset(job))
                    runs.append(Run(None, job, "missing", "no job directory: the job never started "
                                    "(sweep interrupted, or composition failed)", seed=_seed_from(job),
                                    sweep_dir=root, hydra_overrides=launch.hydra_overrides))
        ordered.extend(runs)
    best: dict[Any, Run] = {}
    superseded: list[Run] = []
    for index, run in enumerate(ordered):
        key = frozenset(run.overrides) if run.overrides else ("dir", index)
        previous = best.get(key)
        if previous is None:
            best[key] = run
        elif _STATUS_RANK[run.status] >= _STATUS_RANK[previous.status]:
            superseded.append(previous)
            best[key] = run
        else:
            superseded.append(run)
    kept = set(map(id, best.values()))
    return [r for r in ordered if id(r) in kept], superseded


RUNS_CSV_COLUMNS = ("run", "seed", "status", "reason", *METRICS, "epochs", "overrides")


def read_runs_csv(path: Path | str) -> list[Run]:
    """The runs of a runs.csv that `write_csv` wrote (a stored or shared summary), to summarise them again without
    their folders: no per-epoch history (no curves), no `ablation.baseline` hint (give --baseline). A run's
    sweep directory is its folder's parent, as the run column names it."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in RUNS_CSV_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise SweepError(f"{path}: not a runs.csv of summarize_sweep.py (no column {', '.join(missing)})")
        rows = list(reader)
    runs = []
    for line, row in enumerate(rows, start=2):
        try:
            seed = int(row["seed"]) if row["seed"] else None
            metrics = {m: float(row[m]) if row[m] else math.nan for m in METRICS}
            epochs = int(row["epochs"]) if row["epochs"] else None
            fall = (Fall(float(row["lowest_share"]), int(row["lowest_share_epoch"]))
                    if row.get("lowest_share") else None)  # (runs.csv files from before the column: none)
        except ValueError as error:
            raise SweepError(f"{path}, line {line}: {error}") from None
        directory = None if row["run"].startswith("(no directory)") else Path(row["run"])
        runs.append(Run(directory, tuple(row["overrides"].split()), row["status"], row["reason"], seed=seed,
                        metrics=metrics, epochs=epochs, sweep_dir=directory.parent if directory else None, fall=fall))
    if not runs:
        raise SweepError(f"{path}: no runs")
    return runs


# --------------------------------------------------------------------------------------- statistics


@dataclass
class Estimate:
    """Mean over seeds with the sample standard deviation and a t confidence interval of the mean."""

    n: int
    mean: float
    sd: float  # ddof = 1; NaN for n < 2
    low: float  # mean -/+ t_{(1+c)/2, n-1} * sd / sqrt(n); NaN for n < 2
    high: float


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Estimate(1, mean, math.nan, math.nan, math.nan)
    sd = float(x.std(ddof=1))
    half = float(_stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return Estimate(n, mean, sd, mean - half, mean + half)


@dataclass
class Comparison:
    """Paired difference (configuration - baseline) over the seeds both ran successfully."""

    n: int  # number of pairs
    seeds: list[int]
    diff: float  # mean of the per-seed differences
    sd: float  # sd of the per-seed differences (ddof = 1)
    low: float  # t confidence interval of the mean difference
    high: float
    t: float
    p: float  # two-sided; NaN for n < 2
    # set by `summarize`: the power analysis of this comparison (NaN / None where n < 2)
    p_holm: float = math.nan  # Holm-corrected over the comparisons of the same metric in the table
    mde: float = math.nan  # minimal detectable effect at POWER (same units as diff)
    target: float = math.nan  # the difference `seeds_needed` is computed for: --target-delta, else |diff|
    target_source: str = ""  # "target" (--target-delta) or "observed" (|diff|)
    seeds_needed: int | None = None  # pairs needed for POWER at `target`; None: not computable or > MAX_SEEDS

    def significant(self, alpha: float = 0.05) -> bool:
        return not math.isnan(self.p) and self.p < alpha

    def significant_holm(self, alpha: float = 0.05) -> bool:
        return not math.isnan(self.p_holm) and self.p_holm < alpha

    def verdict(self, alpha: float = 0.05) -> str:
        """`untested` (n < 2), `significant` (after Holm), `no effect >= target` (not significant, but the
        sweep had 80% power for --target-delta: MDE <= target), else `undecided`."""
        if self.n < 2 or math.isnan(self.p):
            return "untested"
        if self.significant_holm(alpha):
            return "significant"
        if self.target_source == "target" and self.mde <= self.target:
            return "no effect >= target"
        return "undecided"


def paired_test(values: dict[int, float], baseline: dict[int, float], confidence: float = 0.95) -> Comparison:
    """Paired t-test of `values` against `baseline`, both keyed by seed (only common finite seeds count):
    d_i = x_i - b_i, t = mean(d) / (sd(d) / sqrt(n)), p = 2 * P(T_{n-1} > |t|), computed by
    `scipy.stats.ttest_rel` (scipy is required by this module). Zero spread of the differences gives p = 1 when
    they are all 0, else p = 0 (t = +-inf), without calling scipy (which returns NaN, resp. warns)."""
    seeds = sorted(s for s in values if s in baseline and not math.isnan(values[s]) and not math.isnan(baseline[s]))
    x = np.asarray([values[s] for s in seeds], dtype=float)
    b = np.asarray([baseline[s] for s in seeds], dtype=float)
    d = x - b
    n = len(d)
    if n == 0:
        return Comparison(0, [], math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    diff = float(d.mean())
    if n < 2:
        return Comparison(1, seeds, diff, math.nan, math.nan, math.nan, math.nan, math.nan)
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    half = float(_stats.t.ppf((1 + confidence) / 2, n - 1)) * se
    if se == 0:
        t, p = (0.0, 1.0) if diff == 0 else (math.copysign(math.inf, diff), 0.0)
    else:
        result = _stats.ttest_rel(x, b)
        t, p = float(result.statistic), float(result.pvalue)
    return Comparison(n, seeds, diff, sd, diff - half, diff + half, t, p)


# ---------------------------------------------------------------------------------------------- power


def paired_power(delta: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at level alpha with n pairs when the true mean difference is `delta`
    and the differences have standard deviation `sd`: P(|T| > t_{1-alpha/2, n-1}) where T follows the
    noncentral t distribution with n - 1 degrees of freedom and noncentrality delta * sqrt(n) / sd (exact; both
    tails counted). NaN for n < 2."""
    if n < 2 or math.isnan(delta) or math.isnan(sd):
        return math.nan
    if sd == 0:
        return 1.0 if delta != 0 else alpha
    df = n - 1
    crit = float(_stats.t.ppf(1 - alpha / 2, df))
    nc = abs(delta) * math.sqrt(n) / sd
    upper = float(_stats.nct.sf(crit, df, nc))
    lower = float(_stats.nct.cdf(-crit, df, nc))  # the wrong-sign tail: tiny, and NaN in scipy where it underflows
    if math.isnan(upper):
        upper = 1.0 - float(_stats.nct.cdf(crit, df, nc))
    return upper + (0.0 if math.isnan(lower) else lower)


def minimal_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = POWER) -> float:
    """The minimal detectable effect (MDE): the true mean difference that the two-sided paired t-test with n
    pairs detects with probability `power` at level alpha, when the differences have standard deviation sd.

    Exact: the root in delta of `paired_power(delta, sd, n, alpha) = power` (noncentral t, scipy.stats.nct;
    brentq); this is what the summary prints. The usual approximation (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd
    / sqrt(n), which treats the noncentral t as a shifted central t, is within 2% from 4 pairs on and too small
    with fewer: for sd 1 it gives 1.662 against 1.682 exact with n 5, 3.10 against 3.26 with n 3, 9.96 against
    11.55 with n 2. NaN for n < 2 or an unknown sd; 0 for sd 0."""
    if n < 2 or math.isnan(sd):
        return math.nan
    if sd == 0:
        return 0.0
    from scipy.optimize import brentq

    df = n - 1
    high = (float(_stats.t.ppf(1 - alpha / 2, df)) + float(_stats.t.ppf(power, df))) / math.sqrt(n)
    while paired_power(high, 1.0, n, alpha) < power:
        high *= 2
    effect = brentq(lambda e: paired_power(e, 1.0, n, alpha) - power, 0.0, high, xtol=1e-12, rtol=1e-12)
    return float(effect) * sd


def seeds_needed(delta: float, sd: float, alpha: float = 0.05, power: float = POWER,
                 max_n: int = MAX_SEEDS) -> int | None:
    """The smallest number of pairs n >= 2 with `paired_power(delta, sd, n, alpha) >= power`: the seeds a paired
    comparison needs to detect a true difference `delta` when its differences have standard deviation sd (the
    observed one, itself uncertain with few seeds). None when delta is 0 or NaN, or when more than max_n pairs
    would be needed."""
    if math.isnan(delta) or math.isnan(sd) or delta == 0:
        return None
    for n in range(2, max_n + 1):
        if paired_power(delta, sd, n, alpha) >= power:
            return n
    return None


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values: with the k finite p-values sorted, p_(1) <= ... <= p_(k),
    the i-th adjusted value is max_{j <= i} min(1, (k - j + 1) * p_(j)); rejecting where it is < alpha controls
    the family-wise error rate at alpha. NaN stays NaN and does not count in k."""
    finite = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (len(finite) - rank) * p))
        adjusted[i] = running
    return adjusted


# ---------------------------------------------------------------------------------------- summary


@dataclass
class Configuration:
    label: str
    overrides: tuple[str, ...]  # what defines it (the varying overrides, or the group-by ones)
    runs: list[Run]
    stats: dict[str, Estimate] = field(default_factory=dict)
    comparisons: dict[str, Comparison] | None = None  # None for the baseline / without baseline
    is_baseline: bool = False

    @property
    def ok_runs(self) -> list[Run]:
        return [r for r in self.runs if r.status == "ok"]

    def by_seed(self, metric: str) -> dict[int, float]:
        return {r.seed: r.metrics[metric] for r in self.ok_runs if r.seed is not None}

    @property
    def fallen_runs(self) -> list[Run]:
        """The successful runs with a `lowest_share` (those with a val mAP50 history long enough)."""
        return [r for r in self.ok_runs if r.fall is not None]

    @property
    def deepest_fall(self) -> Run | None:
        """The successful run whose val mAP50 fell furthest below its best so far; None without any history."""
        return min(self.fallen_runs, key=lambda r: r.fall.share, default=None)


@dataclass
class Summary:
    sweep_dirs: list[Path]
    configurations: list[Configuration]
    common_overrides: tuple[str, ...]
    baseline: Configuration | None
    baseline_spec: str | None
    baseline_source: str
    problems: list[Run]  # failed, incomplete and missing runs
    superseded: list[Run]
    warnings: list[str]
    confidence: float
    alpha: float
    target_delta: float | None = None  # a fraction (0.01 = 1 AP point)

    @property
    def runs(self) -> list[Run]:
        return [r for c in self.configurations for r in c.runs]

    @property
    def pair_counts(self) -> list[int]:
        """The numbers of paired seeds of the mAP50-95 comparisons, sorted, without repetition."""
        return sorted({c.comparisons["map"].n for c in self.configurations if c.comparisons})


def _defining_overrides(run: Run) -> tuple[str, ...]:
    return tuple(o for o in run.overrides if override_key(o) != SEED_KEY and not override_key(o).startswith("hydra."))


def group_runs(runs: Sequence[Run], group_by: Sequence[str] | None = None) -> tuple[list[Configuration], tuple[str, ...]]:
    """Runs -> configurations in order of first appearance, and the overrides common to every run
    (left out of the labels). With `group_by`, a configuration is the values of those keys only."""
    defining = [_defining_overrides(r) for r in runs]
    common: tuple[str, ...] = ()
    if defining:
        shared = set(defining[0]).intersection(*map(set, defining[1:]))
        common = tuple(o for o in defining[0] if o in shared)
    # one order of the keys for every run (their first appearance), so that a job launched later with its
    # overrides in another order (a preset's sweeper params come first) joins the same configuration
    rank: dict[str, int] = {}
    for overrides in defining:
        for o in overrides:
            rank.setdefault(override_key(o), len(rank))
    configurations: dict[tuple[str, ...], Configuration] = {}
    for run, overrides in zip(runs, defining):
        if group_by:
            values = {override_key(o): o for o in overrides}
            key = tuple(values.get(k, f"{k}=(default)") for k in group_by)
        else:
            key = tuple(sorted((o for o in overrides if o not in common), key=lambda o: rank[override_key(o)]))
        label = " ".join(key) if key else "(base)"
        run.configuration = label
        configurations.setdefault(key, Configuration(label, key, [])).runs.append(run)
    for configuration in configurations.values():
        seen: dict[int, Run] = {}
        for run in configuration.runs:
            if run.status == "missing" or run.seed is None:
                continue
            if run.seed in seen and set(run.overrides) != set(seen[run.seed].overrides):
                raise SweepError(
                    f"configuration '{configuration.label}' has two different runs for seed {run.seed}:\n"
                    f"  {seen[run.seed].name}\n  {run.name}\ngroup by more keys (--group-by) or summarise the sweeps apart")
            seen[run.seed] = run
    return list(configurations.values()), common


def find_configuration(spec: str, configurations: Sequence[Configuration]) -> Configuration:
    """The one configuration matching `spec`: space-separated `key=value` overrides that it must all have,
    or a bare value (`ciou`) that one of its overrides must have; a full label matches too."""
    def matches(configuration: Configuration) -> bool:
        if spec == configuration.label:
            return True
        for token in spec.split():
            if "=" in token:
                if token not in configuration.overrides:
                    return False
            elif token not in {override_value(o) for o in configuration.overrides}:
                return False
        return True

    found = [c for c in configurations if matches(c)]
    labels = ", ".join(f"'{c.label}'" for c in configurations)
    if not found:
        raise SweepError(f"baseline '{spec}' matches no configuration; configurations: {labels}")
    if len(found) > 1:
        raise SweepError(f"baseline '{spec}' is ambiguous: it matches {', '.join(repr(c.label) for c in found)}")
    return found[0]


def summarize(
    runs: Sequence[Run], baseline: str | None = None, group_by: Sequence[str] | None = None,
    confidence: float = 0.95, alpha: float = 0.05, sweep_dirs: Sequence[Path] = (), superseded: Sequence[Run] = (),
    target_delta: float | None = None,
) -> Summary:
    """Statistics of every configuration and its paired comparison with the baseline.

    Each comparison also gets its Holm-corrected p-value (over the comparisons of the same metric), its minimal
    detectable effect at 80% power and the pairs needed for 80% power at `target_delta` (a fraction, like the
    metrics: 0.01 = 1 AP point), or at the observed |difference| when no target is given.

    baseline: as in `find_configuration`; None = the `ablation.baseline` written in the runs' config by the
    experiment presets if they agree, else the configuration with an override set to `ciou` (`loss/box=ciou`). An explicit baseline that matches nothing is an error;
    an implicit one only a warning (then nothing is compared)."""
    if not runs:
        raise SweepError("no runs found (no metrics.json or .hydra/ under the given directories)")
    configurations, common = group_runs(runs, group_by)
    warnings: list[str] = []
    if baseline is not None:
        spec, source = baseline, "--baseline"
    else:
        hints = {r.baseline_hint for r in runs if r.baseline_hint}
        if len(hints) == 1:
            spec, source = hints.pop(), "ablation.baseline of the experiment preset"
        else:
            spec, source = DEFAULT_BASELINE, "default"
    try:
        reference = find_configuration(spec, configurations)
    except SweepError as error:
        if source == "--baseline":
            raise
        warnings.append(f"{error}: no comparison made (choose one with --baseline)")
        reference = None
    for configuration in configurations:
        configuration.stats = {
            m: mean_ci([r.metrics[m] for r in configuration.ok_runs], confidence) for m in METRICS}
        configuration.is_baseline = configuration is reference
        if reference is not None and configuration is not reference:
            configuration.comparisons = {
                m: paired_test(configuration.by_seed(m), reference.by_seed(m), confidence) for m in METRICS}
    compared = [c for c in configurations if c.comparisons]
    for metric in METRICS:
        tests = [c.comparisons[metric] for c in compared]
        for test, adjusted in zip(tests, holm([k.p for k in tests])):
            test.p_holm = adjusted
            test.mde = minimal_detectable_effect(test.sd, test.n, alpha)
            if target_delta is not None:
                test.target, test.target_source = abs(target_delta), "target"
            else:
                test.target, test.target_source = abs(test.diff), "observed"
            if test.n >= 2:
                test.seeds_needed = seeds_needed(test.target, test.sd, alpha)
    for configuration in configurations:
        if configuration.comparisons and configuration.comparisons["map"].n < configuration.stats["map"].n:
            unpaired = sorted(set(configuration.by_seed("map")) - set(configuration.comparisons["map"].seeds))
            warnings.append(f"'{configuration.label}': seeds {unpaired} have no successful baseline run with the "
                            "same seed and are left out of the paired test")
    warnings += _numerics_warning(runs)
    warnings += _collapse_warnings(configurations)
    problems = [r for r in runs if r.status != "ok"]
    return Summary(list(map(Path, sweep_dirs)), configurations, common, reference, spec if reference else None,
                   source, problems, list(superseded), warnings, confidence, alpha, target_delta)


def _collapse_warnings(configurations: Sequence[Configuration]) -> list[str]:
    """One warning per successful run whose val mAP50 fell below `COLLAPSE_SHARE` of its best so far."""
    return [f"'{c.label}' seed {r.seed}: val mAP50 fell to {r.fall.share:.2f} of its best so far at epoch "
            f"{r.fall.epoch} (a mid-run collapse: docs/ablations.md, \"Why short runs collapsed\")"
            for c in configurations for r in c.fallen_runs if r.fall.share < COLLAPSE_SHARE]


def falls_lines(summary: Summary) -> list[str]:
    """The falls section: per configuration, each seed's `lowest_share` and the lowest of them."""
    lines = [f"- `{_md_escape(c.label)}`: lowest {low.fall.share:.2f} (seed {low.seed}, epoch {low.fall.epoch}); "
             + ", ".join(f"seed {r.seed} {r.fall.share:.2f}" for r in c.fallen_runs)
             for c in summary.configurations if (low := c.deepest_fall) is not None]
    if not lines:
        return []
    return ["## Falls of val mAP50 during training", "",
            f"The lowest validation mAP50 from epoch {SETTLE_EPOCHS} on, as a share of the best of the epochs before "
            f"it (1.00: it never fell; below {COLLAPSE_SHARE:g}: a collapse).", "", *lines, ""]


def _numerics_warning(runs: Sequence[Run]) -> list[str]:
    """A warning when the successful runs differ in what decides float rounding (docs/results.md, "Same numbers on
    another machine"): their differences then include the machines', not only the configurations'."""
    settings: dict[str, int] = {}
    for run in runs:
        if run.status == "ok" and run.numerics:
            key = json.dumps(run.numerics, sort_keys=True)
            settings[key] = settings.get(key, 0) + 1
    if len(settings) < 2:
        return []
    described = "; ".join(f"{count} runs with {describe_numerics(json.loads(key))}" for key, count in settings.items())
    return [f"the runs come from {len(settings)} numeric settings ({described}): their differences include float "
            "rounding of the machines, not only the configurations; compare runs of one setting where it matters"]


# ---------------------------------------------------------------------------------------- commands

TRAIN = "python train.py -m"  # run from the repository root
OFFSET_RESOLVER = "offset_job_num"  # detector.sweeps.RESOLVER (not imported: this part needs no detector package)


def _repeated_hydra_overrides(hydra_overrides: Iterable[str]) -> tuple[str, ...]:
    """The Hydra overrides of a launch that a relaunch repeats (the launcher and its settings), without the sweep
    dir (given anew), the mode (`-m` says it), a single run's output dir (a multirun does not use it) and the
    job-folder offset detector.sweeps set for that launch."""
    kept = []
    for o in hydra_overrides:
        key = override_key(o)
        if key in ("hydra.sweep.dir", "hydra.mode", "hydra.run.dir") or (
                key == "hydra.sweep.subdir" and OFFSET_RESOLVER in o):
            continue
        kept.append(o)
    return tuple(kept)


def _merge_along(blocks: list[list[list[str]]], k: int) -> list[list[list[str]]]:
    """Merge the blocks that are equal except at position k (their values at k are joined)."""
    merged: dict[tuple, list[list[str]]] = {}
    for block in blocks:
        key = tuple(tuple(sorted(values)) for i, values in enumerate(block) if i != k)
        if key in merged:
            merged[key][k] += [o for o in block[k] if o not in merged[key][k]]
        else:
            merged[key] = [list(values) for values in block]
    return list(merged.values())


def _blocks(jobs: Sequence[tuple[str, ...]]) -> list[list[list[str]]]:
    """Jobs with the same keys in the same order -> cartesian blocks (per position, a list of `key=value`
    overrides) that cover exactly these jobs, as few as found by merging along the varying positions in every
    order (up to 4 varying positions; one order beyond). At equal count, the seeds of a configuration stay
    together (the orders that merge along the seeds first are tried first)."""
    blocks = [[[o] for o in job] for job in jobs]
    varying = [k for k in range(len(jobs[0])) if len({job[k] for job in jobs}) > 1] if jobs else []
    varying.sort(key=lambda k: override_key(jobs[0][k]) != SEED_KEY)
    orders = itertools.permutations(varying) if len(varying) <= 4 else [tuple(varying)]
    best = blocks
    for order in orders:
        candidate = blocks
        for k in order:
            candidate = _merge_along(candidate, k)
        if len(candidate) < len(best):
            best = candidate
    return best


def _seed_list(seeds: Sequence[int]) -> str:
    """[3, 4, 5, 6] -> `range(3,7)` (Hydra's sweep syntax) for 4 or more consecutive seeds, else `3,4`."""
    seeds = sorted(seeds)
    if len(seeds) >= 4 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"range({seeds[0]},{seeds[-1] + 1})"
    return ",".join(map(str, seeds))


def _sweep_override(position: list[str]) -> str:
    """[`seed=3`, `seed=4`] -> `seed=3,4` (seeds sorted by number; 4 or more consecutive ones as `range(a,b)`)."""
    key = position[0].split("=", 1)[0]
    values = [override_value(o) for o in position]
    if override_key(position[0]) == SEED_KEY and all(v.lstrip("-").isdigit() for v in values):
        return f"{key}={_seed_list([int(v) for v in values])}"
    return f"{key}={','.join(values)}"


def launch_commands(jobs: Sequence[tuple[Path, tuple[str, ...], tuple[str, ...]]]) -> list[str]:
    """(sweep dir, Hydra overrides, task overrides) of each job -> the fewest `python train.py -m ...` commands
    (Hydra's basic sweeper launches cartesian products) that launch exactly these jobs into their sweep dir.
    detector.sweeps numbers the new job folders after the existing ones."""
    groups: dict[tuple, list[tuple[str, ...]]] = {}
    for sweep_dir, hydra_overrides, overrides in jobs:
        key = (Path(sweep_dir).resolve(), _repeated_hydra_overrides(hydra_overrides),
               tuple(o.split("=", 1)[0] for o in overrides))
        if overrides not in groups.setdefault(key, []):
            groups[key].append(tuple(overrides))
    commands = []
    for (sweep_dir, hydra_overrides, _keys), group in groups.items():
        for block in _blocks(group):
            arguments = [_sweep_override(position) for position in block]
            arguments += [*hydra_overrides, f"hydra.sweep.dir={sweep_dir}"]
            commands.append(f"{TRAIN} " + " ".join(shlex.quote(a) for a in arguments))
    return commands


def resume_commands(runs: Sequence[Run]) -> tuple[list[str], list[Run]]:
    """The commands that relaunch every run that is not `ok` (failed, incomplete, missing; runs superseded by a
    successful rerun are not in `runs`) with its original overrides into its own sweep directory, and the runs
    that cannot be relaunched (no overrides recorded)."""
    todo = [r for r in runs if r.status != "ok"]
    ready = [r for r in todo if r.overrides and r.sweep_dir is not None]
    commands = launch_commands([(r.sweep_dir, r.hydra_overrides, r.overrides) for r in ready])
    return commands, [r for r in todo if r not in ready]


def _with_seed(overrides: Sequence[str], seed: int) -> tuple[str, ...]:
    if any(override_key(o) == SEED_KEY for o in overrides):
        return tuple(f"{o.split('=', 1)[0]}={seed}" if override_key(o) == SEED_KEY else o for o in overrides)
    return (*overrides, f"{SEED_KEY}={seed}")


@dataclass
class SeedPlan:
    """New seeds for the configurations of undecided comparisons (and the baseline, to pair them with)."""

    seeds: dict[str, list[int]]  # configuration label -> its new seeds
    commands: list[str]


def add_seed_commands(summary: Summary, metric: str = "map") -> SeedPlan:
    """For each undecided comparison on `metric` whose needed pairs are known, the seeds it lacks, numbered after
    the largest seed of the sweep, for the configuration and for the baseline (which gets the most any comparison
    needs); and the commands that launch them into the first sweep directory (or the runs' own), with each
    configuration's original overrides."""
    undecided = [c for c in summary.configurations
                 if c.comparisons and c.comparisons[metric].verdict(summary.alpha) == "undecided"
                 and c.comparisons[metric].seeds_needed is not None
                 and c.comparisons[metric].seeds_needed > c.comparisons[metric].n]
    if not undecided or summary.baseline is None:
        return SeedPlan({}, [])
    seeds = [r.seed for r in summary.runs + summary.superseded if r.seed is not None]
    first = max(seeds) + 1 if seeds else 0
    extra = {c.label: c.comparisons[metric].seeds_needed - c.comparisons[metric].n for c in undecided}
    extra[summary.baseline.label] = max(extra.values())
    plan, jobs = {}, []
    for configuration in [summary.baseline, *undecided]:
        template = next((r for r in configuration.ok_runs + configuration.runs if r.overrides), None)
        if template is None:
            continue
        sweep_dir = summary.sweep_dirs[0] if summary.sweep_dirs else template.sweep_dir
        if sweep_dir is None:
            continue
        new = list(range(first, first + extra[configuration.label]))
        plan[configuration.label] = new
        jobs += [(sweep_dir, template.hydra_overrides, _with_seed(template.overrides, s)) for s in new]
    return SeedPlan(plan, launch_commands(jobs))


# ------------------------------------------------------------------------------------------ output


def _pct(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.{digits}f}"


def _cell(estimate: Estimate) -> str:
    if estimate.n == 0:
        return "n/a"
    if estimate.n == 1:
        return f"{_pct(estimate.mean)} (n=1)"
    return f"{_pct(estimate.mean)} ± {_pct(estimate.sd)} [{_pct(estimate.low)}, {_pct(estimate.high)}]"


def _p(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def _diff_cells(configuration: Configuration, metric: str, alpha: float) -> tuple[str, str]:
    if configuration.is_baseline:
        return "baseline", ""
    if configuration.comparisons is None:
        return "", ""
    c = configuration.comparisons[metric]
    if c.n == 0:
        return "n/a (no paired seeds)", ""
    sign = "+" if c.diff >= 0 else ""
    if c.n == 1:
        return f"{sign}{_pct(c.diff)} (1 pair)", "n/a (n=1)"
    mark = "*" if c.significant(alpha) else "n.s."
    return f"{sign}{_pct(c.diff)} [{_pct(c.low)}, {_pct(c.high)}]", f"{_p(c.p)} {mark} (n={c.n})"


def _holm_cell(configuration: Configuration, metric: str, alpha: float) -> str:
    if configuration.comparisons is None or configuration.comparisons[metric].n == 0:
        return ""
    c = configuration.comparisons[metric]
    if math.isnan(c.p_holm):
        return "n/a"
    return f"{_p(c.p_holm)} {'*' if c.significant_holm(alpha) else 'n.s.'}"


def _seed_span(seeds: Sequence[int]) -> str:
    """[3, 4, 5] -> `3-5`; [3] -> `3`."""
    return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "") + _pct(value)


def power_lines(summary: Summary, metric: str = "map") -> list[str]:
    """The power section: per comparison its MDE, the pairs it needs and its verdict; the add-seeds commands."""
    compared = [c for c in summary.configurations if c.comparisons and c.comparisons[metric].n > 0]
    if summary.baseline is None or not compared:
        return []
    name = METRICS[metric]
    if summary.target_delta is not None:
        target = f"the target difference {_pct(abs(summary.target_delta))} (`--target-delta`)"
    else:
        target = ("the observed |Δ| (no `--target-delta`: a noisy guide; give the smallest difference that matters, "
                  "in AP points, with `--target-delta`)")
    lines = [f"## Power ({name})", "",
             f"Two-sided paired t-test at α = {summary.alpha:g} and {POWER:.0%} power (exact noncentral t), from the "
             "observed sd of the paired differences sd(d): **MDE** is the smallest true difference these pairs "
             f"detect with {POWER:.0%} probability; **pairs needed**: the seeds that detect {target}. Verdicts "
             "use the Holm-corrected p.", ""]
    for c in compared:
        k = c.comparisons[metric]
        if k.n < 2:
            lines.append(f"- `{_md_escape(c.label)}`: 1 pair: no test, no power estimate (relaunch its missing and "
                         "failed seeds first: `--resume-command`)")
            continue
        verdict = k.verdict(summary.alpha)
        text = (f"- `{_md_escape(c.label)}`: Δ {_signed(k.diff)}, sd(d) {_pct(k.sd)}, {k.n} pairs; p {_p(k.p)}, "
                f"Holm {_p(k.p_holm)} → ")
        if verdict == "significant":
            text += "**significant**"
        elif verdict == "no effect >= target":
            text += f"**no difference ≥ {_pct(k.target)}** (MDE ≤ target)"
        else:
            text += "**undecided**"
        text += f"; MDE {_pct(k.mde)}"
        if verdict == "undecided":
            what = _pct(k.target) if k.target_source == "target" else f"the observed |Δ| {_pct(k.target)}"
            if k.seeds_needed is None:
                text += f"; {what} would need more than {MAX_SEEDS} pairs"
            elif k.seeds_needed > k.n:
                more = k.seeds_needed - k.n
                text += f"; {what} needs {k.seeds_needed} pairs ({more} more seed{'s' if more > 1 else ''})"
            else:
                text += (f"; {what} needs {k.seeds_needed} pairs, which it has: not significant only after Holm's "
                         "correction")
        lines.append(text)
    lines.append("")
    plan = add_seed_commands(summary, metric)
    if plan.commands:
        added = "; ".join(f"`{_md_escape(label)}` {_seed_span(seeds)}" for label, seeds in plan.seeds.items())
        lines += [f"Seeds to add ({added}), into the same sweep directory (the new jobs are numbered after its last "
                  "job folder, and this summary then includes them):", "", "```bash", *plan.commands, "```", ""]
    elif not any(c.comparisons[metric].verdict(summary.alpha) == "undecided" for c in compared):
        lines += ["No undecided comparison.", ""]
    return lines


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def results_picture(run: Run) -> Path | None:
    """The run's results.png (its per-epoch curves, drawn by the training's RunPlots callback), None without one."""
    path = run.directory / "results.png" if run.directory is not None else None
    return path if path is not None and path.is_file() else None


def to_markdown(summary: Summary, compared: Sequence[str] = ("map", "map_50"), out_dir: Path | None = None) -> str:
    """The summary table (AP x 100), the notes on the statistics, the list of runs that did not succeed, and a link
    to each run's results.png (relative to `out_dir`, where summary.md is written; else the path as found)."""
    conf = round(100 * summary.confidence)
    lines = ["# Sweep summary", ""]
    if summary.sweep_dirs:
        lines.append("- Sweep: " + ", ".join(f"`{d}`" for d in summary.sweep_dirs))
    counts = {s: sum(r.status == s for r in summary.runs) for s in _STATUS_RANK}
    lines.append(f"- Runs: {len(summary.runs)} ({counts['ok']} ok, {counts['failed']} failed, "
                 f"{counts['incomplete']} incomplete, {counts['missing']} missing)")
    if summary.common_overrides:
        lines.append("- Common to every run: " + " ".join(f"`{o}`" for o in summary.common_overrides))
    if summary.baseline is not None:
        lines.append(f"- Baseline: `{summary.baseline.label}` ({summary.baseline_source})")
    legend = (f"COCO AP x 100: mean ± sd over seeds [{conf}% CI of the mean, t distribution]. "
              f"Δ: mean paired difference to the baseline over the seeds both ran [{conf}% CI]; "
              f"p: two-sided paired t-test; `*` p < {summary.alpha:g}, `n.s.` not significant (p ≥ {summary.alpha:g}); "
              "Holm: p corrected for the comparisons of the column (Holm–Bonferroni).")
    lines += ["", legend, ""]
    header = ["configuration", "ok / runs", *METRICS.values()]
    for metric in compared:
        header += [f"Δ {METRICS[metric]}", f"p ({METRICS[metric]})", f"Holm ({METRICS[metric]})"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in summary.configurations:
        row = [f"`{_md_escape(c.label)}`", f"{len(c.ok_runs)} / {len(c.runs)}"]
        row += [_cell(c.stats[m]) for m in METRICS]
        for metric in compared:
            row += [*_diff_cells(c, metric, summary.alpha), _holm_cell(c, metric, summary.alpha)]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    tested = [n for n in summary.pair_counts if n >= 2]
    if summary.baseline is not None and tested:
        lines.append("Paired test: runs matched by seed (same initial weights and data order); n = pairs. "
                     "Holm: step-down correction over the comparisons of the column (family-wise error ≤ α); "
                     "`*` in p alone is not corrected for multiple comparisons.")
        few = [n for n in tested if n <= 3]
        if few:
            crit = ", ".join(f"{_stats.t.ppf(1 - summary.alpha / 2, n - 1):.2f} for n = {n}" for n in few)
            lines.append(f"**Low power**: comparisons on {' or '.join(map(str, few))} paired seeds (a difference must "
                         f"exceed t_crit x its standard error, t_crit = {crit}); `n.s.` means the sweep cannot tell, "
                         "not that the configurations are equal.")
        lines.append("")
    lines += power_lines(summary, compared[0]) if compared else []
    lines += falls_lines(summary)
    for warning in summary.warnings:
        lines.append(f"Warning: {warning}")
    if summary.warnings:
        lines.append("")
    lines += [f"## Missing or failed runs ({len(summary.problems)})", ""]
    if summary.problems:
        lines += ["| run | configuration | seed | status | reason |", "|---|---|---|---|---|"]
        for r in summary.problems:
            lines.append(f"| `{_md_escape(r.name)}` | `{_md_escape(r.configuration)}` | {r.seed} | {r.status} | "
                         f"{_md_escape(r.reason)} |")
        lines += ["", "`python scripts/summarize_sweep.py <sweep dirs> --resume-command` prints the commands that "
                  "relaunch them into their sweep directory."]
    else:
        lines.append("None.")
    if summary.superseded:
        lines += ["", f"Superseded by a rerun ({len(summary.superseded)}): "
                  + ", ".join(f"`{r.name}` ({r.status})" for r in summary.superseded)]
    pictures = [(r, path) for r in summary.runs if (path := results_picture(r)) is not None]
    if pictures:
        lines += ["", "## Training curves of each run", "", "| configuration | seed | status | results.png |",
                  "|---|---|---|---|"]
        for r, path in pictures:
            link = Path(os.path.relpath(path, out_dir)) if out_dir is not None else path
            lines.append(f"| `{_md_escape(r.configuration)}` | {r.seed} | {r.status} | [{_md_escape(str(link))}]"
                         f"({link.as_posix()}) |")
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))


def write_csv(summary: Summary, summary_csv: Path, runs_csv: Path) -> None:
    """summary.csv: one row per configuration, raw fractions (not x 100); runs.csv: one row per run."""
    columns = ["configuration", "overrides", "is_baseline", "n_ok", "n_runs", "seeds", "lowest_share",
               "lowest_share_seed"]
    for m in METRICS:
        columns += [f"{m}_mean", f"{m}_sd", f"{m}_ci_low", f"{m}_ci_high"]
    for m in METRICS:
        columns += [f"{m}_diff", f"{m}_diff_ci_low", f"{m}_diff_ci_high", f"{m}_t", f"{m}_p", f"{m}_pairs",
                    f"{m}_significant", f"{m}_p_holm", f"{m}_significant_holm", f"{m}_diff_sd", f"{m}_mde",
                    f"{m}_target", f"{m}_pairs_needed", f"{m}_verdict"]
    with atomic_write(summary_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for c in summary.configurations:
            row: list[Any] = [c.label, " ".join(c.overrides), c.is_baseline, len(c.ok_runs), len(c.runs),
                              " ".join(str(r.seed) for r in c.ok_runs)]
            low = c.deepest_fall
            row += [_num(low.fall.share), low.seed] if low else ["", ""]
            for m in METRICS:
                e = c.stats[m]
                row += [_num(e.mean), _num(e.sd), _num(e.low), _num(e.high)]
            for m in METRICS:
                k = c.comparisons[m] if c.comparisons else None
                row += ([_num(k.diff), _num(k.low), _num(k.high), _num(k.t), _num(k.p), k.n, k.significant(summary.alpha),
                         _num(k.p_holm), k.significant_holm(summary.alpha), _num(k.sd), _num(k.mde), _num(k.target),
                         "" if k.seeds_needed is None else k.seeds_needed, k.verdict(summary.alpha)]
                        if k else [""] * 14)
            writer.writerow(row)
    with atomic_write(runs_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "configuration", "seed", "status", "reason", *METRICS, "epochs", "lowest_share",
                         "lowest_share_epoch", "overrides", "results_png"])
        for r in summary.runs:
            writer.writerow([r.name, r.configuration, "" if r.seed is None else r.seed, r.status, r.reason,
                             *[_num(r.metrics.get(m)) for m in METRICS], len(r.history) if r.epochs is None else r.epochs,
                             *([_num(r.fall.share), r.fall.epoch] if r.fall else ["", ""]),
                             " ".join(r.overrides), results_picture(r) or ""])


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_bars(summary: Summary, path: Path) -> None:
    """Grouped bars: one group per metric, one bar per configuration (mean), error bars = the CI."""
    from matplotlib.figure import Figure

    configurations = summary.configurations
    k = max(len(configurations), 1)
    width = 0.8 / k
    fig = Figure(figsize=(max(8.0, 1.2 * len(METRICS) * (0.5 + 0.25 * k)), 4.8), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(METRICS))
    for i, (c, color) in enumerate(zip(configurations, _colors(k))):
        means = np.array([c.stats[m].mean for m in METRICS]) * 100
        half = np.array([(c.stats[m].high - c.stats[m].mean) if c.stats[m].n > 1 else 0.0 for m in METRICS]) * 100
        ax.bar(x - 0.4 + (i + 0.5) * width, np.nan_to_num(means), width, yerr=np.nan_to_num(half), capsize=2,
               color=color, hatch="//" if c.is_baseline else None, edgecolor="black" if c.is_baseline else None,
               label=c.label + (" (baseline)" if c.is_baseline else "") + f" n={len(c.ok_runs)}")
    ax.set_xticks(x, list(METRICS.values()))
    ax.set_ylabel("COCO AP x 100")
    ax.set_title(f"mean over seeds, error bars: {round(100 * summary.confidence)}% CI (t)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", ncols=2 if k > 6 else 1)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)


def plot_curves(summary: Summary, path: Path) -> None:
    """Training loss and val mAP50-95 per epoch: the mean over the successful seeds of each configuration
    (band: min-max over seeds); runs that failed drawn dotted, alone."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = (("train_loss", "training loss (epoch mean)", 1.0), ("val_map", "val mAP50-95 x 100", 100.0))
    for c, color in zip(summary.configurations, _colors(len(summary.configurations))):
        for ax, (key, _title, scale) in zip(axes, panels):
            curves = [{h["epoch"]: h.get(key) for h in r.history if h.get(key) is not None} for r in c.ok_runs]
            epochs = sorted({e for curve in curves for e in curve})
            if epochs:
                values = np.array([[curve.get(e, np.nan) for e in epochs] for curve in curves], dtype=float) * scale
                label = c.label + (" (baseline)" if c.is_baseline else "")
                ax.plot(epochs, np.nanmean(values, axis=0), color=color, label=label, marker="o", markersize=3)
                if len(curves) > 1:
                    ax.fill_between(epochs, np.nanmin(values, axis=0), np.nanmax(values, axis=0), color=color, alpha=0.15)
            for r in c.runs:
                if r.status == "failed" and r.history:
                    points = [(h["epoch"], h[key] * scale) for h in r.history if h.get(key) is not None]
                    if points:
                        ax.plot(*zip(*points), color=color, linestyle=":", marker="x", label=f"{c.label} seed {r.seed} (failed)")
    from matplotlib.ticker import MaxNLocator

    for ax, (_key, title, _scale) in zip(axes, panels):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    if _spans_decades(axes[0]):
        axes[0].set_yscale("log")
    axes[1].legend(fontsize="small")
    fig.suptitle("mean over seeds (band: min-max over seeds)")
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)


def _spans_decades(ax) -> bool:
    """Log scale for the loss panel when its curves are positive and span more than 20x."""
    data = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]
    values = np.concatenate(data) if data else np.array([])
    values = values[np.isfinite(values)]
    return values.size > 0 and bool((values > 0).all()) and values.max() > 20 * values.min()


def write_all(summary: Summary, out_dir: Path, plots: bool = True) -> dict[str, Path]:
    """summary.md, summary.csv, runs.csv and (plots) bars.png, curves.png under out_dir, each written atomically
    (an interrupted earlier write's temporary files removed first)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries([out_dir])
    paths = {"markdown": out_dir / "summary.md", "csv": out_dir / "summary.csv", "runs": out_dir / "runs.csv"}
    write_text(paths["markdown"], to_markdown(summary, out_dir=out_dir))
    write_csv(summary, paths["csv"], paths["runs"])
    if plots:
        paths["bars"], paths["curves"] = out_dir / "bars.png", out_dir / "curves.png"
        plot_bars(summary, paths["bars"])
        plot_curves(summary, paths["curves"])
    return paths
