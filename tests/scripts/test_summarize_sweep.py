"""scripts/summarize_sweep.py on a fabricated multirun directory with known numbers (tests/sweeps/conftest.py): the
tables and plots it writes, --baseline, and the exit code 2 of a baseline that matches nothing."""

from __future__ import annotations

import csv
import math
import subprocess
import sys

import pytest

from ..conftest import ROOT
from ..sweeps.conftest import fabricate


@pytest.fixture
def fabricated_sweep(tmp_path):
    return fabricate(tmp_path / "multirun")


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
