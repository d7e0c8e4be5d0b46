"""End to end: a real Hydra multirun of a few steps per job, then summarize_sweep on its output; the joblib
launcher with a job that fails (the sweep must go on and list it)."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tiny(tmp_path: Path) -> list[str]:
    """A few steps on a freshly generated tiny shapes set; every output under tmp_path; no checkpoints."""
    return [
        f"paths.data_dir={tmp_path / 'data'}", f"hydra.sweep.dir={tmp_path / 'multirun'}",
        "data.prepare.num_train=16", "data.prepare.num_val=8", "data.prepare.image_size=64", "data.img_size=64",
        "data.num_workers=0", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "callbacks=none",
        "trainer.enable_checkpointing=false", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    ]


def run(args: list[str], timeout: int = 400) -> subprocess.CompletedProcess:
    # one intra-op thread: on a busy 2-core machine, 2 spinning threads make the few steps about 10x slower
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *args], check=False, capture_output=True, text=True,
                            timeout=timeout, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.mark.slow
def test_two_losses_two_seeds_multirun_then_summary(tmp_path):
    run(["train.py", "-m", "loss/box=ciou,giou", "seed=0,1", *tiny(tmp_path), "data.batch_size=4"])
    sweep = tmp_path / "multirun"
    records = [json.loads((sweep / str(job) / "metrics.json").read_text()) for job in range(4)]
    assert [(r["overrides"][0], r["seed"]) for r in records] == [
        ("loss/box=ciou", 0), ("loss/box=ciou", 1), ("loss/box=giou", 0), ("loss/box=giou", 1)]
    for record in records:
        assert record["status"] == "ok" and record["images"] == 8 and 0 <= record["map"] <= 1
        assert record["combination"]["loss.box"]["_target_"].endswith(("CIoULoss", "GIoULoss"))
        assert record["combination"]["assigner"]["_target_"].endswith("TaskAlignedAssigner")
        [epoch] = record["history"]
        assert epoch["train_steps"] == 2 and epoch["train_loss"] > 0 and "val_map" in epoch
    assert records[0]["combination"]["loss.box"] != records[2]["combination"]["loss.box"]

    out = run(["scripts/summarize_sweep.py", str(sweep), "--group-by", "loss/box"], timeout=120).stdout
    assert "Baseline: `loss/box=ciou`" in out and "## Missing or failed runs (0)" in out
    rows = [line for line in out.splitlines() if line.startswith("| `loss/box=")]
    assert [row.split("`")[1] for row in rows] == ["loss/box=ciou", "loss/box=giou"]
    assert all("| 2 / 2 |" in row for row in rows) and "(n=2)" in rows[1]  # giou paired with ciou on both seeds
    for name in ("summary.md", "summary.csv", "runs.csv", "bars.png", "curves.png"):
        assert (sweep / "summary" / name).stat().st_size > 0


JOBLIB = importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is not None


@pytest.mark.slow
def test_a_diverging_run_is_recorded_and_the_sweep_goes_on_with_the_joblib_launcher(tmp_path):
    """loss.weights.box=nan makes every step non-finite: the LightningModule raises NonFiniteLossError after
    max_nonfinite_steps=1. Job 0 fails, job 1 must still run. With hydra-joblib-launcher installed (the
    `sweep` extra) the two jobs run in parallel worker processes, else in sequence (the basic launcher)."""
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if JOBLIB else []
    result = run(["train.py", "-m", *launcher, "loss.weights.box=nan,7.5", "module.max_nonfinite_steps=1",
                  *tiny(tmp_path), "data.batch_size=4", "trainer.limit_val_batches=1"])
    assert ("Joblib" in result.stdout + result.stderr) == JOBLIB
    sweep = tmp_path / "multirun"
    failed, ok = (json.loads((sweep / str(job) / "metrics.json").read_text()) for job in range(2))
    assert ok["status"] == "ok" and ok["history"][0]["train_steps"] == 2
    assert failed["status"] == "failed" and failed["map"] is None and failed["error"]["type"] == "NonFiniteLossError"
    assert "consecutive steps with non-finite loss" in failed["error"]["message"]
    assert failed["history"][0]["train_nonfinite_steps"] == 1 and failed["overrides"][0] == "loss.weights.box=nan"
    out = run(["scripts/summarize_sweep.py", str(sweep), "--baseline", "loss.weights.box=7.5", "--no-plots"], timeout=120).stdout
    problems = out.split("## Missing or failed runs (1)")[1]
    assert "loss.weights.box=nan" in problems and "| failed | NonFiniteLossError: 1 consecutive steps" in problems


@pytest.mark.slow
def test_a_preempted_sweep_is_resumed_into_its_own_directory(tmp_path):
    """A 4-job multirun, then the state a preemption of parallel jobs leaves: jobs 0 and 2 done, job 1 killed
    before writing its metrics.json, job 3 never started (its folder gone). --resume-command relaunches the two
    (seed 1 of both losses: one command) into the same sweep directory; their folders come after the existing
    ones, the finished jobs are not touched, and the summary then counts 4 of 4. (A metrics.json cut off while
    being written counts as failed and is relaunched too: tests/sweeps/test_summarize.py.)"""
    tiny_args = [*tiny(tmp_path), "data.batch_size=4", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]
    run(["train.py", "-m", "loss/box=ciou,giou", "seed=0,1", *tiny_args])
    sweep = tmp_path / "multirun"
    finished = {job: (sweep / job / "metrics.json").read_text() for job in ("0", "2")}
    (sweep / "1" / "metrics.json").unlink()
    shutil.rmtree(sweep / "3")

    out = run(["scripts/summarize_sweep.py", str(sweep), "--resume-command"], timeout=120).stdout
    assert out.startswith("# 2 of 4 jobs done; relaunching 2 (1 incomplete, 1 missing)")
    [command] = [shlex.split(line) for line in out.splitlines() if not line.startswith("#")]
    assert command[:3] == ["python", "train.py", "-m"] and "seed=1" in command and "loss/box=ciou,giou" in command
    assert f"hydra.sweep.dir={sweep.resolve()}" in command
    run(command[1:])
    assert {job: (sweep / job / "metrics.json").read_text() for job in ("0", "2")} == finished
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1", "2", "3", "4"]
    assert not (sweep / "1" / "metrics.json").exists()  # the killed job's folder is left as it was
    assert [json.loads((sweep / job / "metrics.json").read_text())["overrides"][:2] for job in ("3", "4")] == [
        ["loss/box=ciou", "seed=1"], ["loss/box=giou", "seed=1"]]
    assert (sweep / "multirun.0.yaml").is_file()  # the first launch's grid, kept

    out = run(["scripts/summarize_sweep.py", str(sweep), "--no-plots"], timeout=120).stdout
    assert "- Runs: 4 (4 ok, 0 failed, 0 incomplete, 0 missing)" in out and "## Missing or failed runs (0)" in out
    rows = [line for line in out.splitlines() if line.startswith("| `loss/box=")]
    assert len(rows) == 2 and all("| 2 / 2 |" in row for row in rows) and "(n=2)" in rows[1]
    assert "Superseded by a rerun (1)" in out  # the killed run, replaced
    resumed = run(["scripts/summarize_sweep.py", str(sweep), "--resume-command"], timeout=120).stdout
    assert resumed.startswith("# nothing to resume: all 4 jobs are done")
