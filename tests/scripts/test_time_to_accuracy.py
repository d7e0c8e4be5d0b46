"""scripts/time_to_accuracy.py: the first validation reaching the threshold, on a fabricated history and on a
real run's metrics.json."""

from __future__ import annotations

import importlib.util
import json

from ..conftest import ROOT, run_script

spec = importlib.util.spec_from_file_location("time_to_accuracy", ROOT / "scripts" / "time_to_accuracy.py")
time_to_accuracy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(time_to_accuracy)

HISTORY = [
    {"epoch": 0, "train_loss": 9.0},                                   # no validation this epoch
    {"epoch": 1, "val_map_50": 0.10, "minutes": 1.0},
    {"epoch": 2, "val_map_50": 0.30, "minutes": 2.5},                  # first >= 0.3 (equality counts)
    {"epoch": 3, "val_map_50": 0.20, "minutes": 3.0},
    {"epoch": 4, "val_map_50": 0.45, "minutes": 4.0},
]


def test_first_crossing_and_summary_on_a_known_history():
    result = time_to_accuracy.summarize({"history": HISTORY, "map": 0.2, "train_minutes": 4.2}, 0.3)
    assert result["reached"] and result["minutes_to_threshold"] == 2.5 and result["epoch_reached"] == 3
    assert result["best_map50"] == 0.45 and result["best_map50_95"] == 0.2
    assert [row["epoch"] for row in result["curve"]] == [2, 3, 4, 5]
    never = time_to_accuracy.summarize({"history": HISTORY}, 0.5)
    assert not never["reached"] and never["minutes_to_threshold"] is None and never["best_map50"] == 0.45


def test_reads_a_real_run_directory(trained, tmp_path):
    out = tmp_path / "tta.json"
    stdout = run_script("scripts/time_to_accuracy.py", ["--run-dir", trained["run"], "--threshold", "0", "--out", out]).stdout
    result = json.loads(out.read_text())
    assert result["reached"] and result["epoch_reached"] == 1 and result["minutes_to_threshold"] > 0
    assert "mAP50 >= 0.0 after" in stdout
