"""The sweep summary (scripts/sweep_stats.py, scripts/summarize_sweep.py) on a fabricated multirun directory with
known numbers (tests/sweeps/conftest.py): runs collected, tables against hand computation, baselines, reruns, and
the command line: the files it writes, --baseline, a stored runs.csv summarised again, exit code 2 on bad input."""

from __future__ import annotations

import csv
import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from sweep_stats import Fall, SweepError, collect_runs, lowest_share, read_runs_csv, summarize, to_markdown, write_all

from .conftest import fabricate, job_overrides, write_job

ROOT = Path(__file__).resolve().parents[2]


def by_label(summary):
    return {c.label: c for c in summary.configurations}


def test_collects_ok_failed_incomplete_and_missing_runs(fabricated_sweep):
    runs, superseded = collect_runs([fabricated_sweep])
    assert len(runs) == 12 and superseded == []
    status = {(r.overrides[0], r.seed): r.status for r in runs}
    assert status[("loss=diou", 2)] == "failed" and status[("loss=siou", 1)] == "incomplete"
    assert status[("loss=siou", 2)] == "missing" and sum(s == "ok" for s in status.values()) == 9
    missing = next(r for r in runs if r.status == "missing")
    assert missing.directory is None and missing.overrides == ("loss=siou", "seed=2", "trainer.max_epochs=3")


def test_table_numbers_against_hand_computation(fabricated_sweep):
    runs, _ = collect_runs([fabricated_sweep])
    summary = summarize(runs, sweep_dirs=[fabricated_sweep])
    configs = by_label(summary)
    assert list(configs) == ["loss=ciou", "loss=giou", "loss=diou", "loss=siou"]  # the common override is no label
    assert summary.common_overrides == ("trainer.max_epochs=3",)
    assert summary.baseline is configs["loss=ciou"] and summary.baseline_source == "default"
    ciou, giou, diou, siou = configs.values()
    assert ciou.stats["map"].mean == pytest.approx(0.42) and ciou.stats["map"].sd == pytest.approx(0.02)
    assert ciou.stats["map_50"].mean == pytest.approx(0.67) and ciou.stats["map_small"].mean == pytest.approx(0.21)
    assert ciou.comparisons is None and ciou.is_baseline
    g = giou.comparisons["map"]
    assert (g.n, g.diff, g.t, g.p) == (3, pytest.approx(1 / 60), pytest.approx(5.0), pytest.approx(1 - 5 / math.sqrt(27)))
    assert g.significant() and giou.comparisons["map_50"].p == pytest.approx(g.p)
    # the failed seed 2 is out of the means and of the pairing
    d = diou.comparisons["map"]
    assert diou.stats["map"].n == 2 and diou.stats["map"].mean == pytest.approx(0.33)
    assert (d.n, d.seeds, d.diff) == (2, [0, 1], pytest.approx(-0.08))
    assert d.p == pytest.approx(1 - 2 / math.pi * math.atan(4)) and not d.significant()
    assert siou.stats["map"].n == 1 and siou.comparisons["map"].n == 1 and math.isnan(siou.comparisons["map"].p)
    assert len(siou.runs) == 3 and len(siou.ok_runs) == 1


def test_the_summary_links_each_runs_results_png(fabricated_sweep):
    for job in ("0", "4", "8"):  # ciou seed 0, giou seed 1, diou seed 2 (the failed run)
        (fabricated_sweep / job / "results.png").write_bytes(b"png")
    runs, _ = collect_runs([fabricated_sweep])
    paths = write_all(summarize(runs, sweep_dirs=[fabricated_sweep]), fabricated_sweep / "summary", plots=False)
    section = paths["markdown"].read_text().split("## Training curves of each run")[1]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows == ["| `loss=ciou` | 0 | ok | [../0/results.png](../0/results.png) |",
                    "| `loss=giou` | 1 | ok | [../4/results.png](../4/results.png) |",
                    "| `loss=diou` | 2 | failed | [../8/results.png](../8/results.png) |"]
    assert all((paths["markdown"].parent / line.split("(")[1].split(")")[0]).is_file() for line in rows)
    listed = {line.split(",")[0]: line.rsplit(",", 1)[1] for line in paths["runs"].read_text().splitlines()[1:]}
    assert listed[str(fabricated_sweep / "4")] == str(fabricated_sweep / "4" / "results.png")
    assert listed[str(fabricated_sweep / "1")] == ""
    assert "## Training curves" not in to_markdown(summarize(collect_runs([fabricated_sweep / "1"])[0]))


def test_markdown_marks_significance_low_power_and_lists_every_problem(fabricated_sweep):
    runs, _ = collect_runs([fabricated_sweep])
    text = to_markdown(summarize(runs, sweep_dirs=[fabricated_sweep]))
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines() if line.startswith("| `loss=")}
    assert "| 3 / 3 | 42.00 ± 2.00 [37.03, 46.97] |" in rows["loss=ciou"] and "baseline" in rows["loss=ciou"]
    assert "+1.67 [" in rows["loss=giou"] and "0.038 * (n=3)" in rows["loss=giou"]
    assert "-8.00 [" in rows["loss=diou"] and "0.156 n.s. (n=2)" in rows["loss=diou"] and "| 2 / 3 |" in rows["loss=diou"]
    assert "50.00 (n=1)" in rows["loss=siou"] and "n/a (n=1)" in rows["loss=siou"]
    assert "Low power" in text and "- Runs: 12 (9 ok, 1 failed, 1 incomplete, 1 missing)" in text
    problems = text.split("## Missing or failed runs (3)")[1]
    assert "NonFiniteLossError: loss was non-finite for 5 consecutive steps" in problems
    assert "incomplete" in problems and "CUDA out of memory" in problems
    assert "missing" in problems and "no job directory" in problems and "loss=siou seed=2" in problems


def test_baseline_from_the_experiment_preset_and_unmatched_default(tmp_path):
    sweep = fabricate(tmp_path / "preset", baseline_hint="loss=diou")
    summary = summarize(collect_runs([sweep])[0])
    assert summary.baseline.label == "loss=diou" and summary.baseline_source.startswith("ablation.baseline")
    # a sweep without the default baseline: a warning, no comparison, still a table
    runs = [r for r in collect_runs([sweep])[0] if "loss=ciou" not in r.overrides]
    for r in runs:
        r.baseline_hint = None
    summary = summarize(runs)
    assert summary.baseline is None and "matches no configuration" in summary.warnings[0]
    assert all(c.comparisons is None for c in summary.configurations)
    assert "Warning: baseline 'ciou' matches no configuration" in to_markdown(summary)


def test_a_rerun_supersedes_the_failed_run(fabricated_sweep, tmp_path):
    rerun = tmp_path / "rerun"
    rerun.mkdir()
    write_job(rerun / "0", job_overrides("diou", 2), 2, 0.33)
    runs, superseded = collect_runs([fabricated_sweep, rerun])
    summary = summarize(runs, superseded=superseded)
    diou = by_label(summary)["loss=diou"]
    assert diou.stats["map"].n == 3 and diou.stats["map"].mean == pytest.approx(0.33)
    assert [r.status for r in superseded] == ["failed"] and "Superseded by a rerun (1)" in to_markdown(summary)
    assert all(r.status != "failed" for r in summary.problems)


def test_multi_key_baseline_ambiguity_and_a_grouping_that_merges_runs_of_one_seed(tmp_path):
    root = tmp_path / "two_keys"
    for job, (loss, lr) in enumerate([("ciou", "0.001"), ("ciou", "0.002"), ("giou", "0.001"), ("giou", "0.002")]):
        write_job(root / str(job), [f"loss={loss}", f"optimizer.lr={lr}", "seed=0"], 0, 0.4 + job / 100)
    runs, _ = collect_runs([root])
    summary = summarize(runs, baseline="loss=giou optimizer.lr=0.001")
    assert len(summary.configurations) == 4 and summary.baseline.label == "loss=giou optimizer.lr=0.001"
    with pytest.raises(SweepError, match="ambiguous"):
        summarize(runs, baseline="ciou")
    with pytest.raises(SweepError, match="two different runs for seed 0"):
        summarize(runs, group_by=["loss"])


def test_metrics_file_without_status_counts_as_ok_and_nonsense_is_failed(tmp_path):
    root = tmp_path / "legacy"
    (root / "0").mkdir(parents=True)
    (root / "0" / "metrics.json").write_text(json.dumps({"map": 0.5, "map_50": 0.7, "seed": 3}))
    (root / "1").mkdir()
    (root / "1" / "metrics.json").write_text("{not json")
    runs, _ = collect_runs([root])
    assert [r.status for r in runs] == ["ok", "failed"] and runs[0].seed == 3
    assert "unreadable metrics.json" in runs[1].reason


def test_the_format_example_in_the_docs_is_this_code_on_the_fabricated_data(fabricated_sweep):
    example = (ROOT / "docs" / "ablations.md").read_text()  # its format example: every table row of this output
    runs, _ = collect_runs([fabricated_sweep])
    text = to_markdown(summarize(runs))
    table = [line for line in text.splitlines() if line.startswith("| ") and "loss=siou seed=2" not in line
             and "/multirun/" not in line]  # rows with the (temporary) run paths differ
    assert len(table) == 6 and all(line in example for line in table), [line for line in table if line not in example]
    assert "Low power" in example and "NonFiniteLossError" in example


def test_summarize_sweep_says_how_to_install_scipy(monkeypatch):
    for name in ("summarize_sweep", "sweep_stats"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "scipy", None)  # as if scipy were not installed
    with pytest.raises(SystemExit, match=r'pip install -e "\.\[sweep\]"'):
        importlib.import_module("summarize_sweep")


# --- the command line, scripts/summarize_sweep.py, as a subprocess ---------------------------------------------------


def test_cli_writes_tables_and_plots_and_takes_a_baseline(fabricated_sweep, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "summarize_sweep.py"), str(fabricated_sweep),
                             "--baseline", "giou", "--group-by", "loss", "--out", str(out)],
                            check=False, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "- Baseline: `loss=giou` (--baseline)" in result.stdout
    for name in ("summary.md", "summary.csv", "runs.csv", "bars.png", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "bars.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "summary.csv") as f:
        rows = {r["configuration"]: r for r in csv.DictReader(f)}
    assert rows["loss=giou"]["is_baseline"] == "True" and rows["loss=ciou"]["map_diff"] != ""
    assert float(rows["loss=ciou"]["map_diff"]) == pytest.approx(-1 / 60)
    assert float(rows["loss=ciou"]["map_p"]) == pytest.approx(1 - 5 / math.sqrt(27))
    assert float(rows["loss=ciou"]["map_ci_low"]) == pytest.approx(0.42 - 4.302653 * 0.02 / math.sqrt(3), abs=1e-6)
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 12 and sorted(r["status"] for r in runs).count("ok") == 9
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "summarize_sweep.py"), str(fabricated_sweep),
                          "--baseline", "nope", "--out", str(out)], check=False, capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "matches no configuration" in bad.stderr and "loss=ciou" in bad.stderr


def test_a_stored_runs_csv_is_summarised_again_to_the_same_statistics(fabricated_sweep, tmp_path):
    script = [sys.executable, str(ROOT / "scripts" / "summarize_sweep.py")]
    first = tmp_path / "first"
    common = ["--baseline", "giou", "--group-by", "loss", "--no-plots", "--target-delta", "2"]
    run = subprocess.run([*script, str(fabricated_sweep), *common, "--out", str(first)],
                         check=False, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    stored = tmp_path / "stored" / "runs.csv"
    stored.parent.mkdir()
    stored.write_bytes((first / "runs.csv").read_bytes())
    rerun = subprocess.run([*script, str(stored), *common], check=False, capture_output=True, text=True, cwd=ROOT,
                           timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    again = stored.parent  # written beside the runs.csv by default
    with open(first / "summary.csv") as f, open(again / "summary.csv") as g:
        assert list(csv.DictReader(f)) == list(csv.DictReader(g))
    assert (again / "runs.csv").read_text() == (first / "runs.csv").read_text()
    assert not (again / "curves.png").exists()  # no history in a runs.csv
    assert f"- Sweep: `{fabricated_sweep}`" in rerun.stdout  # the runs' own sweep directory, for the seed commands
    broken = tmp_path / "broken.csv"
    broken.write_text("run,seed\nx,1\n")
    bad = subprocess.run([*script, str(broken)], check=False, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "not a runs.csv" in bad.stderr and "broken.csv" in bad.stderr


def test_runs_from_different_numeric_settings_are_flagged(fabricated_sweep):
    def set_numerics(threads_of_job):
        for job, threads in threads_of_job.items():
            path = fabricated_sweep / str(job) / "metrics.json"
            record = json.loads(path.read_text())
            record["numerics"] = {"torch": "2.14.1", "cpu_threads": threads, "cpu_capability": "AVX512",
                                  "environment": {"MKL_CBWR": "AVX2"} if threads == 16 else {}}
            path.write_text(json.dumps(record))

    set_numerics({0: 2, 1: 2, 3: 2})  # one setting (runs without the record, from older code, do not count)
    assert not any("numeric settings" in w for w in summarize(collect_runs([fabricated_sweep])[0]).warnings)
    set_numerics({4: 16})
    summary = summarize(collect_runs([fabricated_sweep])[0])
    (warning,) = [w for w in summary.warnings if "numeric settings" in w]
    assert warning.startswith("the runs come from 2 numeric settings (3 runs with torch 2.14.1, 2 CPU threads, "
                              "AVX512 kernels; 1 runs with torch 2.14.1, 16 CPU threads, AVX512 kernels (MKL_CBWR=AVX2))")
    assert "Warning: the runs come from 2 numeric settings" in to_markdown(summary)


def test_lowest_share_against_hand_computation():
    def history(*map50):
        return [{"val_map_50": v} for v in map50]

    # epoch 4: 0.1 / best 0.4 = 0.25; epoch 5 rises (share 1, capped); epoch 6: 0.45 / 0.5 = 0.9
    assert lowest_share(history(0.1, 0.2, 0.3, 0.4, 0.1, 0.5, 0.45)) == Fall(0.25, 4)
    assert lowest_share(history(0.1, 0.2, 0.3, 0.4, 0.5, 0.6)) == Fall(1.0, 4)  # never falls
    # the first epochs do not count: the 0.0 of epoch 1 is before `start`
    assert lowest_share(history(0.3, 0.0, 0.1, 0.2, 0.3, 0.27)) == Fall(pytest.approx(0.9), 5)
    assert lowest_share(history(0.3, 0.0, 0.1), start=1) == Fall(0.0, 1)
    # epochs without the value (a failed validation, NaN) are skipped, not read as a fall
    assert lowest_share(history(0.2, 0.4, 0.4, 0.4, None, math.nan, 0.3)) == Fall(pytest.approx(0.75), 6)
    assert lowest_share(history(0.0, 0.0, 0.0, 0.0, 0.0)) is None  # no best to fall from
    assert lowest_share(history(0.1, 0.2, 0.3)) is None and lowest_share([]) is None  # too short
    assert lowest_share([{"val_map": 0.5}] * 6) is None


def test_runs_that_collapse_mid_run_are_flagged_and_kept_in_runs_csv(fabricated_sweep, tmp_path):
    def set_map50(job, *map50):
        path = fabricated_sweep / str(job) / "metrics.json"
        record = json.loads(path.read_text())
        record["history"] = [{"epoch": e, "val_map": v / 2, "val_map_50": v} for e, v in enumerate(map50)]
        path.write_text(json.dumps(record))

    set_map50(3, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)  # giou seed 0: never falls
    set_map50(4, 0.1, 0.2, 0.3, 0.4, 0.38, 0.012, 0.5)  # giou seed 1: 0.012 / 0.4 at epoch 5
    set_map50(5, 0.1, 0.2, 0.3, 0.4, 0.3, 0.5)  # giou seed 2: 0.75 at epoch 4
    summary = summarize(collect_runs([fabricated_sweep])[0])
    (warning,) = [w for w in summary.warnings if "collapse" in w]
    assert warning == ("'loss=giou' seed 1: val mAP50 fell to 0.03 of its best so far at epoch 5 (a mid-run collapse: "
                       'docs/ablations.md, "Why short runs collapsed")')
    text = to_markdown(summary)
    assert "- `loss=giou`: lowest 0.03 (seed 1, epoch 5); seed 0 1.00, seed 1 0.03, seed 2 0.75" in text
    assert "`loss=ciou`: lowest" not in text  # its history has no mAP50
    paths = write_all(summary, tmp_path / "out", plots=False)
    with open(paths["csv"]) as f:
        rows = {r["configuration"]: r for r in csv.DictReader(f)}
    assert (float(rows["loss=giou"]["lowest_share"]), rows["loss=giou"]["lowest_share_seed"]) == (pytest.approx(0.03), "1")
    assert rows["loss=ciou"]["lowest_share"] == ""
    again = {(r.overrides[0], r.seed): r.fall for r in read_runs_csv(paths["runs"])}
    assert again[("loss=giou", 1)] == Fall(pytest.approx(0.03), 5) and again[("loss=ciou", 0)] is None
