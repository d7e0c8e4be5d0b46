"""Crash-consistent run folders: `python train.py` (and scripts/summarize_sweep.py) killed with SIGKILL at each write
point in turn leaves every file either as it was or complete and new, the next start removes the temporary file the
kill left (one info line), and a run resumed from `last.ckpt` after the kills ends with the uninterrupted run's
metrics.json.

The kill is injected from outside the package: a wrapper script, written here, replaces `os.replace` (the rename
that detector.atomic.atomic_write ends every write with) by one that SIGKILLs the process at the n-th rename onto
a given file name, either mid-write (the temporary file cut to half its size, not renamed) or just after it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ..conftest import ROOT
from ..sweeps.conftest import fabricate, write_job

WRAPPER = '''\
import os, runpy, signal, sys
from pathlib import Path

name, nth, when = os.environ["CRASH_AT"].split(":")
real_replace, seen = os.replace, 0


def replace(source, target, *args, **kwargs):
    global seen
    if Path(target).name == name:
        seen += 1
        if seen == int(nth):
            if when == "during":
                os.truncate(source, os.path.getsize(source) // 2)
            else:
                real_replace(source, target, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(source, target, *args, **kwargs)


os.replace = replace
script = sys.argv.pop(1)
sys.argv[0] = script
sys.path.insert(0, os.path.dirname(script))
runpy.run_path(script, run_name="__main__")
'''

TRAIN_ARGS = [
    "data.prepare.num_train=8", "data.prepare.num_val=2", "data.prepare.image_size=32", "data.img_size=32",
    "data.batch_size=4", "data.num_workers=0", "trainer.max_epochs=2", "trainer.limit_train_batches=1", "seed=3",
    "trainer.deterministic=true", "callbacks.recompute_batch_norm.batches=0",
]
REMOVED = "temporary file(s) left by an interrupted write"


def run(tmp_path: Path, script: str, args: list[str], crash_at: str | None = None) -> subprocess.CompletedProcess:
    """`python <script> <args>` (through the wrapper when `crash_at` = "<file name>:<n>:<during|after>")."""
    wrapper = tmp_path / "crash_wrapper.py"
    wrapper.write_text(WRAPPER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(ROOT / script), *args]
    if crash_at:
        command = [sys.executable, str(wrapper), str(ROOT / script), *args]
        env["CRASH_AT"] = crash_at
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    expected = -signal.SIGKILL if crash_at else 0
    assert result.returncode == expected, (crash_at, result.stdout[-2000:] + result.stderr[-4000:])
    return result


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp*"))


def steps_of(checkpoint: Path) -> int:
    """The optimizer steps a checkpoint holds (it loads: it is complete)."""
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]


def comparable(metrics: dict) -> dict:
    """metrics.json without what differs between two folders or two processes (paths, wall time, overrides)."""
    skip = {"train_minutes", "best_checkpoint", "overrides"}
    history = [{k: v for k, v in row.items() if k != "minutes"} for row in metrics["history"]]
    return {**{k: v for k, v in metrics.items() if k not in skip}, "history": history}


@pytest.mark.slow
def test_kill_at_each_training_write_then_resume_matches_the_uninterrupted_run(tmp_path):
    data = f"paths.data_dir={tmp_path / 'data'}"
    run(tmp_path, "train.py", [data, f"hydra.run.dir={tmp_path / 'reference'}", *TRAIN_ARGS])
    reference = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    folder = tmp_path / "run"
    checkpoints = folder / "checkpoints"
    args = [data, f"hydra.run.dir={folder}", *TRAIN_ARGS]
    resume = [*args, f"ckpt_path={checkpoints / 'last.ckpt'}"]

    # 1. mid-write of a split file (before training): the class names are complete, the image list not there
    run(tmp_path, "train.py", args, crash_at="train_images.txt:1:during")
    assert (folder / "class_names.txt").read_text() == (tmp_path / "reference" / "class_names.txt").read_text()
    assert not (folder / "train_images.txt").exists()
    assert len(temporaries(folder)) == 1 and temporaries(folder)[0].startswith("train_images.txt.tmp")

    # 2. a fresh start removes it (one info line) and is killed mid-write of the first best.ckpt
    result = run(tmp_path, "train.py", args, crash_at="best.ckpt:1:during")
    assert result.stdout.count(REMOVED) + result.stderr.count(REMOVED) == 1
    assert (folder / "train_images.txt").read_text() == (tmp_path / "reference" / "train_images.txt").read_text()
    assert not (checkpoints / "best.ckpt").exists() and not (checkpoints / "last.ckpt").exists()
    assert [n.split(".tmp")[0] for n in temporaries(folder)] == ["best.ckpt"]

    # 3. killed just after the first last.ckpt is renamed into place: both checkpoints complete (epoch 0, 1 step)
    run(tmp_path, "train.py", args, crash_at="last.ckpt:1:after")
    assert temporaries(folder) == []
    assert steps_of(checkpoints / "best.ckpt") == steps_of(checkpoints / "last.ckpt") == 1

    # 4. resumed, killed mid-write of the next last.ckpt: the old one (epoch 0) is intact
    run(tmp_path, "train.py", resume, crash_at="last.ckpt:1:during")
    assert steps_of(checkpoints / "last.ckpt") == 1
    assert [n.split(".tmp")[0] for n in temporaries(folder)] == ["last.ckpt"]

    # 5. resumed again, killed mid-write of metrics.json (never written before: absent, not truncated)
    run(tmp_path, "train.py", resume, crash_at="metrics.json:1:during")
    assert steps_of(checkpoints / "last.ckpt") == 2  # both epochs
    assert not (folder / "metrics.json").exists()
    assert [n.split(".tmp")[0] for n in temporaries(folder)] == ["metrics.json"]

    # 6. resumed from the last epoch's checkpoint: nothing left to train, the whole run's metrics are reported
    result = run(tmp_path, "train.py", resume)
    assert REMOVED in result.stdout + result.stderr and temporaries(folder) == []
    resumed = json.loads((folder / "metrics.json").read_text())
    assert resumed["status"] == "ok" and len(resumed["history"]) == 2
    assert comparable(resumed) == comparable(reference)


@pytest.mark.slow
def test_kill_while_writing_the_sweep_summary_keeps_the_old_file_and_the_rerun_cleans_up(tmp_path):
    sweep = fabricate(tmp_path / "multirun")
    out = tmp_path / "multirun" / "summary"
    args = [str(sweep), "--baseline", "giou", "--group-by", "loss", "--no-plots"]
    run(tmp_path, "scripts/summarize_sweep.py", args)
    old = (out / "summary.csv").read_text()
    write_job(sweep / "12", ["loss=ciou", "seed=3", "trainer.max_epochs=3"], 3, 0.30)  # a fourth ciou seed

    run(tmp_path, "scripts/summarize_sweep.py", args, crash_at="summary.csv:1:during")
    assert (out / "summary.csv").read_text() == old  # the previous complete table, not half of the new one
    assert "- Runs: 13 " in (out / "summary.md").read_text()  # written before the kill: the new, complete one
    assert [n.split(".tmp")[0] for n in temporaries(out)] == ["summary.csv"]

    result = run(tmp_path, "scripts/summarize_sweep.py", args)
    assert result.stderr.count(REMOVED) == 1 and temporaries(out) == []
    new = (out / "summary.csv").read_text()
    assert new != old and "0 1 2 3" in new  # the ciou row lists the four seeds
