"""The harness every benchmark section runs on: a section module declares its command-line options and its cases;
the harness runs each case in a fresh process, times it, compares it with its reference case of the same run and
prints and writes the tables.

A section module has `NAME`, `add_arguments(parser)` (its own options; `--batch`, `--sizes`, `--num-gt`,
`--compile` and `--coco128` are shared and added here), `cases(args) -> list[Case]` and optionally
`skip(case, args) -> str | None` (why a case cannot run on this machine).

Timing is a median over `--repeats` calls after `--warmup` calls, kept here rather than in torch.utils.benchmark's
`Timer`: several cases need state between calls (the data cases serve fresh samples in every call, the statistics
overhead alternates two functions call by call), and a case's peak memory needs a process of its own.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import queue as queue_module
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))


class Case(NamedTuple):
    name: str
    fn: Callable[..., dict] | None  # None: nothing to run, `skip` says why
    kwargs: dict[str, Any]
    reference: str | None = None  # the case of the same section that this one is compared with (any order)
    skip: str | None = None


def timed(fn: Callable[[], Any], repeats: int, warmup: int, clock: Callable[[], float] = time.perf_counter) -> dict:
    return timed_alternately([fn], repeats, warmup, clock)[0]


def timed_alternately(fns: Sequence[Callable[[], Any]], repeats: int, warmup: int,
                      clock: Callable[[], float] = time.perf_counter) -> list[dict]:
    """Median, min and max seconds of each function, called in turn within each repeat (so that they share the
    machine's load), by `clock` (wall time; `time.process_time`: this process's CPU time)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = clock()
            fn()
            spent.append(clock() - start)
    return [{"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t)} for t in times]


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compose(overrides: list[str]):
    """configs/train.yaml of this checkout composed with these overrides, as `python train.py` would see it."""
    from detector.config import compose as compose_config

    return compose_config("train", overrides, configs=ROOT / "configs")


def default_coco128() -> Path:
    return Path(os.environ.get("DETECTOR_SHARED_DATA", ROOT.parent / "shared" / "data")) / "coco128"


def compare(result: dict, reference: dict) -> dict:
    """Speed of a case relative to its reference, how far their losses, COCO stats or float outputs are apart,
    and whether their index outputs (lists of arrays) are identical."""
    comparison = {"speedup": reference["median_s"] / result["median_s"]}
    if "cpu_per_image_s" in result and "cpu_per_image_s" in reference:
        comparison["cpu_speedup"] = reference["cpu_per_image_s"] / result["cpu_per_image_s"]
    for key in ("losses", "stats"):
        if key in result and key in reference:
            comparison[f"max_{key}_difference"] = max(abs(result[key][k] - reference[key][k]) for k in reference[key])
    for key, value in result.get("outputs", {}).items():
        other = reference["outputs"][key]
        if isinstance(value, list):
            comparison[f"same_{key}"] = len(value) == len(other) and all(map(np.array_equal, value, other))
        else:
            comparison[f"max_{key}_difference"] = float(np.abs(value - other).max())
    return comparison


def describe(result: dict) -> str:
    extra = []
    if "forward_median_s" in result:
        on, off, alone = result["forward_median_s"], result["forward_off_median_s"], result["statistics_median_s"]
        extra.append(f"forward {on:.3g} s, without the assignment statistics {off:.3g} s ({on / off - 1:+.1%}); the "
                     f"statistics alone {alone:.3g} s ({alone / off:.1%} of the forward, {alone / result['median_s']:.1%} "
                     "of forward + backward)")
    if "images_per_s" in result:
        extra.append(f"{result['images_per_s']:.1f} img/s")
    if "cpu_per_image_s" in result:
        extra.append(f"{result['cpu_per_image_s'] * 1e3:.2f} CPU ms/img")
    if "peak_extra_mib" in result:
        extra.append(f"+{result['peak_extra_mib']:.0f} MiB peak")
    if "losses" in result:
        extra.append("loss " + " ".join(f"{k}={v:.5f}" for k, v in result["losses"].items() if k != "loss"))
    if "stats" in result:
        extra.append(f"mAP {result['stats']['map']:.4f} ({result['detections']} detections, {result['images']} images)")
    if "candidates_per_image" in result:
        extra.append(f"{result['candidates_per_image']:.0f} candidates/img")
    if "note" in result:
        extra.append(result["note"])
    return ", ".join(extra)


def describe_comparison(name: str, comparison: dict) -> str:
    differences = [f", {k.removeprefix('max_').removesuffix('_difference')} differ by at most {v:.2e}"
                   for k, v in comparison.items() if k.endswith("_difference")]
    same = [f", {k.removeprefix('same_')} {'identical' if v else 'differ'}" for k, v in comparison.items()
            if k.startswith("same_")]
    cpu = f" ({comparison['cpu_speedup']:.2f}x per CPU second)" if "cpu_speedup" in comparison else ""
    return f"{name}: {comparison['speedup']:.2f}x the speed of {comparison['reference']}{cpu}{''.join(differences + same)}"


def _run(fn: Callable[..., dict], kwargs: dict, queue) -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    queue.put(fn(**kwargs))


def run_isolated(fn: Callable[..., dict], kwargs: dict) -> dict:
    """fn(**kwargs) in a fresh process (so that peak memory and caches do not carry over between cases); a case whose
    process dies (its traceback is above) gives {"failed": ...} and the run goes on."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_run, args=(fn, kwargs, queue))
    process.start()
    while True:
        try:
            result = queue.get(timeout=1)
            break
        except queue_module.Empty:
            if not process.is_alive():
                return {"failed": f"the case's process exited with code {process.exitcode} (traceback above)"}
    process.join()
    return result


def run_section(section: ModuleType, args: argparse.Namespace) -> dict:
    """Run, print and compare the cases of one section; returns its results by case name."""
    print(f"\n## {section.NAME}\n| case | median s [min-max] | extra |\n|---|---|---|")
    results: dict[str, dict] = {}
    cases = section.cases(args)
    for case in cases:
        reason = case.skip or (section.skip(case, args) if hasattr(section, "skip") else None)
        if reason is not None:
            results[case.name] = {"skipped": reason}
            print(f"| {case.name} | skipped | {reason} |", flush=True)
            continue
        result = run_isolated(case.fn, {**case.kwargs, "repeats": args.repeats, "warmup": args.warmup})
        results[case.name] = result
        if "failed" in result:
            print(f"| {case.name} | failed | {result['failed']} |", flush=True)
            continue
        print(f"| {case.name} | {result['median_s']:.3g} [{result['min_s']:.3g}-{result['max_s']:.3g}] | "
              f"{describe(result)} |", flush=True)
    for case in cases:
        result, reference = results[case.name], results.get(case.reference)
        if reference is not None and "median_s" in result and "median_s" in reference:
            result["vs_reference"] = {"reference": case.reference, **compare(result, reference)}
            print(describe_comparison(case.name, result["vs_reference"]))
    for result in results.values():
        result.pop("outputs", None)  # arrays, compared above
    return results


def main(sections: Sequence[ModuleType], description: str) -> None:
    names = [section.NAME for section in sections]
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=names, nargs="+", default=names)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16,
                        help="batch size of train_step, criterion, assigner, inference, nms, loader")
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 640],
                        help="image sizes of train_step, data, loader, inference; criterion, assigner and nms use the largest")
    parser.add_argument("--num-gt", type=int, nargs="+", default=[10, 50, 200, 1000], help="GT per image (criterion, assigner)")
    parser.add_argument("--compile", action="store_true",
                        help="train_step and inference with torch.compile (nn.Module.compile; --warmup >= 2 absorbs the compilation)")
    parser.add_argument("--coco128", type=Path, default=default_coco128(), help="COCO128 root (data, loader, eval)")
    for section in sections:
        section.add_arguments(parser)
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "benchmark" / "benchmark.json",
                        help="JSON file of the results (default: logs/benchmark/benchmark.json)")
    args = parser.parse_args()
    if args.compile and args.warmup < 2:
        parser.error("--compile needs --warmup >= 2: the first call compiles, the second recompiles once the "
                     "model has cached its priors")

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    print(f"machine: {machine}, load average {os.getloadavg()[0]:.1f}")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("only", "out")}
    results: dict[str, Any] = {"machine": machine, "load_average": os.getloadavg()[0], **settings}
    for section in sections:
        if section.NAME in args.only:
            results[section.NAME] = run_section(section, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")
