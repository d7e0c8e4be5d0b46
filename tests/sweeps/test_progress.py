"""How far a multirun is (detector.sweep_progress): the size of a launch, its first job folder, and the lines a real
Hydra multirun of a trivial app prints after each job (done, failed, left), the second launch into a directory
counted on its own."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from detector.sweep_progress import SweepProgress, first_folder, launch_size

from .conftest import write_hydra_app

ROOT = Path(__file__).resolve().parents[2]
BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def multirun_config(task: list[str], params: dict | None = None, target: str = BASIC, subdir: str = "${hydra.job.num}",
                    **sweeper) -> OmegaConf:
    return OmegaConf.create({"hydra": {"sweeper": {"_target_": target, "params": params, **sweeper},
                                       "overrides": {"task": task}, "sweep": {"dir": "/tmp/s", "subdir": subdir}}})


@pytest.mark.parametrize(("task", "params", "size"), [
    (["loss/box=iou,giou", "seed=0,1,2", "trainer.max_epochs=3"], None, 6),
    (["loss/box=iou,giou"], {"seed": "0,1,2"}, 6),
    (["seed=5,6", "loss/box=iou,giou,ciou"], {"seed": "0,1,2"}, 6),  # the command line's seed= replaces the preset's
    (["seed=range(0,4)"], None, 4),
    (["a=1"], None, 1),
])
def test_the_launch_size_is_the_basic_sweepers_grid(task, params, size):
    assert launch_size(multirun_config(task, params)) == size


def test_other_sweepers_give_their_trials_or_nothing():
    assert launch_size(multirun_config(["x=1"], target="hydra_plugins.optuna.OptunaSweeper", n_trials=20)) == 20
    assert launch_size(multirun_config(["x=1"], target="some.OtherSweeper")) is None
    assert launch_size(multirun_config(["x=glob(*)"])) is None  # needs the config loader


def test_the_first_folder_follows_the_job_numbering_of_detector_sweeps():
    assert first_folder(multirun_config([])) == 0
    assert first_folder(multirun_config([], subdir="${offset_job_num:7}")) == 7
    assert first_folder(multirun_config([], subdir="custom_${hydra.job.num}")) is None


def test_counts_read_the_status_of_this_launchs_folders(tmp_path):
    for folder, status in (("0", "ok"), ("3", "ok"), ("4", "failed"), ("5", None), ("7", "ok")):
        (tmp_path / folder).mkdir()
        if status:
            (tmp_path / folder / "metrics.json").write_text(json.dumps({"status": status}))
    progress = SweepProgress()
    progress.sweep_dir, progress.total, progress.first = tmp_path, 4, 3  # folders 3..6: ok, failed, running, not yet
    assert progress.counts() == (1, 1, 2)
    assert progress.counts(failed_now=5) == (1, 2, 1)  # a job that raised before writing metrics.json
    assert progress.line((1, 1, 2)) == f"sweep {tmp_path}: 1 of 4 runs done, 1 failed, 2 left"


APP = '''
import json
from pathlib import Path

import hydra


@hydra.main(version_base="1.3", config_path="conf", config_name="app")
def main(cfg):
    from hydra.core.hydra_config import HydraConfig

    if cfg.x == "raise":
        raise ValueError("refused before metrics.json")
    status = "failed" if cfg.x == "fail" else "ok"
    (Path(HydraConfig.get().runtime.output_dir) / "metrics.json").write_text(json.dumps({"status": status}))


if __name__ == "__main__":
    main()
'''


def test_a_multirun_says_after_each_job_how_many_runs_are_done_failed_and_left(tmp_path):
    env = write_hydra_app(tmp_path, APP)
    sweep = tmp_path / "sweep"

    def launch(*overrides: str) -> list[str]:
        result = subprocess.run([sys.executable, "app.py", "-m", *overrides, f"hydra.sweep.dir={sweep}"], check=False,
                                capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)
        output = result.stdout + result.stderr
        return re.findall(r"sweep \S+?(?: finished)?: \d+ of \d+ runs done, \d+ failed, \d+ left", output)

    assert launch("x=a,fail,b") == [
        f"sweep {sweep}: 1 of 3 runs done, 0 failed, 2 left",
        f"sweep {sweep}: 1 of 3 runs done, 1 failed, 1 left",
        f"sweep {sweep}: 2 of 3 runs done, 1 failed, 0 left",
        f"sweep {sweep} finished: 2 of 3 runs done, 1 failed, 0 left",
    ]
    # a second launch into the directory counts its own jobs (folders 3, 4); Hydra stops at the job that raised
    assert launch("x=c,raise") == [
        f"sweep {sweep}: 1 of 2 runs done, 0 failed, 1 left",
        f"sweep {sweep}: 1 of 2 runs done, 1 failed, 0 left",
    ]
