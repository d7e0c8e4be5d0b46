"""Summarise an ablation sweep: `python scripts/summarize_sweep.py <multirun dir> [...] [--baseline ciou] [--group-by loss]`.

Reads every job's metrics.json under the multirun directory (or several: a rerun of failed jobs into a second
directory supersedes them), groups the runs into configurations (the overrides minus `seed`, or the values of
the --group-by keys), and writes into <first dir>/summary/ (or --out):

  summary.md   the table (mean ± sd [95% CI] over seeds, paired t-test against the baseline) + missing/failed runs
               + a link to each run's results.png (its training curves)
  summary.csv  the same per configuration, raw numbers (fractions, not x 100), every metric's comparison
  runs.csv     one row per run (status, reason, metrics, results.png)
  bars.png     mean per metric and configuration with 95% CI error bars
  curves.png   training loss and val mAP50-95 per epoch of every configuration, overlaid

The Markdown table is also printed, with a power section: per comparison with the baseline, the minimal
detectable effect at 80% power, the seeds needed for --target-delta (else for the observed difference), Holm's
correction, and the `python train.py -m ...` commands that add the missing seeds to the same sweep directory.

Given the runs.csv of an earlier summary instead (a stored or shared sweep, e.g. docs/ablations/*/runs.csv), it
computes the statistics again, beside that file (or into --out), without curves.

--resume-command prints only the commands that relaunch the sweep's missing and failed jobs (their original
overrides, the same sweep directory, new job folders) and writes nothing: review them, or pipe them to `sh`.
See docs/ablations.md for the statistics.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

try:  # the statistics (scripts/sweep_stats.py, beside this file) need scipy, an optional extra
    from sweep_stats import SweepError, collect_runs, read_runs_csv, resume_commands, summarize, to_markdown, write_all
except ModuleNotFoundError as error:
    if error.name != "scipy":
        raise
    sys.exit('summarize_sweep.py needs scipy (confidence intervals, paired t-test): pip install -e ".[sweep]"')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dirs", nargs="+", type=Path,
                        help="Hydra multirun directories (logs/<task>/multiruns/<date>), or the runs.csv of an earlier "
                             "summary (statistics again, without the run folders: no curves)")
    parser.add_argument("--baseline", default=None,
                        help="configuration to compare against: `key=value` overrides (space-separated) or a bare value "
                             "such as `ciou`; default: the experiment preset's ablation.baseline, else loss=ciou")
    parser.add_argument("--group-by", default=None,
                        help="comma-separated override keys that define a configuration (e.g. `loss` or `loss,assigner`); "
                             "default: every override that varies across the runs, except seed")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <first sweep dir>/summary)")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level of the paired test (default 0.05)")
    parser.add_argument("--target-delta", type=float, default=None, metavar="D",
                        help="the smallest difference that matters, in the table's units (AP x 100, e.g. 1 = one "
                             "mAP point): the seeds needed to detect it with 80%% power, and whether a comparison "
                             "that is not significant had the power to see it (default: the observed difference)")
    parser.add_argument("--resume-command", action="store_true",
                        help="print only the commands that relaunch the missing and failed jobs into their sweep "
                             "directory (one per line; `| sh` runs them) and write nothing")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("detector").setLevel(logging.INFO)  # the removal of an interrupted write's temporary files
    if args.target_delta is not None and not args.target_delta > 0:
        parser.error("--target-delta must be positive")

    try:
        stored = [p for p in args.sweep_dirs if p.suffix == ".csv"]
        if stored and len(stored) < len(args.sweep_dirs):
            raise SweepError("give either multirun directories or runs.csv files, not both")
        if stored:
            runs, superseded = [run for path in stored for run in read_runs_csv(path)], []
            args.sweep_dirs = list(dict.fromkeys(r.sweep_dir for r in runs if r.sweep_dir is not None)) or stored
            args.no_plots = True  # no per-epoch history to draw
        else:
            runs, superseded = collect_runs(args.sweep_dirs)
        if args.resume_command:
            return print_resume_commands(runs)
        group_by = [k.strip() for k in args.group_by.split(",") if k.strip()] if args.group_by else None
        target = None if args.target_delta is None else args.target_delta / 100  # AP points -> fractions
        summary = summarize(runs, baseline=args.baseline, group_by=group_by, confidence=args.confidence,
                            alpha=args.alpha, sweep_dirs=args.sweep_dirs, superseded=superseded, target_delta=target)
    except SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    default_out = stored[0].parent if stored else args.sweep_dirs[0] / "summary"
    paths = write_all(summary, args.out or default_out, plots=not args.no_plots)
    print(to_markdown(summary))
    print("Written: " + ", ".join(str(p) for p in paths.values()))
    return 0


def print_resume_commands(runs) -> int:
    """The relaunch commands on stdout after a `#` line that counts the jobs; what cannot be relaunched on stderr."""
    if not runs:
        print("error: no runs found (no metrics.json, .hydra/ or multirun.yaml under the given directories)",
              file=sys.stderr)
        return 2
    commands, skipped = resume_commands(runs)
    todo = [r for r in runs if r.status != "ok"]
    done = len(runs) - len(todo)
    if not todo:
        print(f"# nothing to resume: all {len(runs)} jobs are done")
        return 0
    counts = ", ".join(f"{sum(r.status == s for r in todo)} {s}" for s in ("failed", "incomplete", "missing")
                       if any(r.status == s for r in todo))
    print(f"# {done} of {len(runs)} jobs done; relaunching {len(todo) - len(skipped)} ({counts}); "
          "run from the repository root, after the sweep has stopped")
    for command in commands:
        print(command)
    for run in skipped:
        print(f"cannot relaunch {run.name}: no overrides recorded (.hydra/overrides.yaml)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
