"""Adding jobs to a sweep directory: the grid of every launch (multirun*.yaml) expanded as Hydra's basic sweeper
does, the relaunch commands of --resume-command, and the job-folder numbering of detector/sweeps.py (a real Hydra
multirun of a trivial app, no training)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sweep_stats import collect_runs, expand_grid, expected_jobs, launch_records, resume_commands, summarize

from .conftest import write_hydra_app

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "summarize_sweep.py"


@pytest.mark.parametrize("arguments", [
    ["loss=ciou,giou", "seed=0,1,2", "trainer.max_epochs=3"],
    ["seed=0,1", "loss/box=iou,ciou", "experiment=ablate_box_loss", "seed=5,6"],  # a later seed= replaces the first
    ["seed=range(0,3)", "+trainer.x=1", "trainer.devices=[0,1]", "x='a,b'", "lr=0.1,0.2"],
    ["a=1"],
])
def test_grid_expansion_equals_hydras_basic_sweeper(arguments):
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    [batch] = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)
    assert expand_grid(arguments) == [tuple(job) for job in batch]


def multirun_yaml(task: list[str], params: dict[str, str] | None = None, hydra: list[str] = ()) -> str:
    lines = ["hydra:", "  sweeper:", "    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper"]
    lines += ["    params:"] + [f"      {k}: {v}" for k, v in (params or {}).items()] if params else ["    params: null"]
    lines += ["  overrides:", "    hydra:"] + [f"    - {o}" for o in hydra] + ["    task:"] + [f"    - {o}" for o in task]
    return "\n".join(lines) + "\n"


def test_expected_jobs_are_the_union_of_every_launch_in_order(tmp_path):
    (tmp_path / "multirun.yaml").write_text(multirun_yaml(["loss=giou,diou", "seed=3"]))
    (tmp_path / "multirun.0.yaml").write_text(multirun_yaml(["loss=ciou,giou", "seed=1"], params={"seed": "0,1"}))
    (tmp_path / "multirun.1.yaml").write_text(multirun_yaml(["loss=giou", "seed=1"]))  # a rerun: nothing new
    (tmp_path / "multirun.x.yaml").write_text("not a launch record")
    assert [p.name for p in launch_records(tmp_path)] == ["multirun.0.yaml", "multirun.1.yaml", "multirun.yaml"]
    # the preset's seed param is replaced by the command line's seed=1 (Hydra's order: params first)
    assert expected_jobs(tmp_path) == [("seed=1", "loss=ciou"), ("seed=1", "loss=giou"), ("loss=giou", "seed=3"),
                                       ("loss=diou", "seed=3")]


def test_the_two_launch_record_functions_agree(tmp_path):
    from detector import sweeps

    for name in ("multirun.yaml", "multirun.0.yaml", "multirun.10.yaml", "multirun.2.yaml", "multirun.a.yaml"):
        (tmp_path / name).write_text("")
    assert sweeps.launch_records(tmp_path) == launch_records(tmp_path)
    assert [p.name for p in launch_records(tmp_path)][-2:] == ["multirun.10.yaml", "multirun.yaml"]


def test_a_job_with_its_overrides_in_another_order_joins_its_configuration(tmp_path):
    """A preset's sweeper params come first in a job's overrides: a job launched later from the command line may
    list the same overrides in another order."""
    from .conftest import write_job

    write_job(tmp_path / "0", ["loss=ciou", "seed=0", "lr=1"], 0, 0.40)
    write_job(tmp_path / "1", ["loss=giou", "seed=0", "lr=1"], 0, 0.41)
    write_job(tmp_path / "2", ["lr=1", "seed=1", "loss=giou"], 1, 0.44)
    write_job(tmp_path / "3", ["seed=1", "loss=ciou", "lr=1"], 1, 0.42)
    summary = summarize(collect_runs([tmp_path])[0])
    assert [(c.label, len(c.runs)) for c in summary.configurations] == [("loss=ciou", 2), ("loss=giou", 2)]
    assert summary.configurations[1].comparisons["map"].n == 2


def test_resume_commands_relaunch_exactly_the_failed_incomplete_and_missing_jobs(fabricated_sweep):
    runs, _ = collect_runs([fabricated_sweep])
    commands, skipped = resume_commands(runs)
    d = fabricated_sweep.resolve()
    # diou seed 2 failed, siou seed 1 incomplete, siou seed 2 never started: two cartesian blocks
    assert commands == [f"python train.py -m loss=diou seed=2 trainer.max_epochs=3 hydra.sweep.dir={d}",
                        f"python train.py -m loss=siou seed=1,2 trainer.max_epochs=3 hydra.sweep.dir={d}"]
    assert skipped == []
    # what the commands launch, parsed back as Hydra will: exactly the jobs that are not ok
    relaunched = set()
    for command in commands:
        arguments = shlex.split(command)[3:]
        assert arguments[-1] == f"hydra.sweep.dir={d}"
        relaunched |= {frozenset(job) for job in expand_grid(arguments[:-1])}
    assert relaunched == {frozenset(r.overrides) for r in runs if r.status != "ok"}


def test_resume_commands_keep_the_launcher_and_drop_the_old_sweep_settings(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    hydra = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.mode=MULTIRUN",
             f"hydra.sweep.dir={sweep}", f"hydra.run.dir={tmp_path / 'single'}"]
    (sweep / "multirun.yaml").write_text(multirun_yaml(["model=yolov8", "seed=0,1", "data.img_size=${oc.env:SZ}"],
                                                       hydra=hydra + ["hydra.sweep.subdir=${offset_job_num:4}"]))
    [command], _ = resume_commands(collect_runs([sweep])[0])
    # an interpolation in the form Hydra records it in the jobs' overrides (escaped), which it parses back to the
    # same value; single-quoted for the shell
    assert shlex.split(command) == [
        "python", "train.py", "-m", "model=yolov8", "seed=0,1", r"data.img_size=$\{oc.env\:SZ\}",
        "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={sweep.resolve()}"]
    assert r"'data.img_size=$\{oc.env\:SZ\}'" in command


def test_resume_command_cli(fabricated_sweep, tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), str(fabricated_sweep), "--resume-command"], check=False,
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# 9 of 12 jobs done; relaunching 3 (1 failed, 1 incomplete, 1 missing)")
    assert lines[1:] == resume_commands(collect_runs([fabricated_sweep])[0])[0]
    assert not (fabricated_sweep / "summary").exists()  # writes nothing


APP = '''
import os
from pathlib import Path

import hydra


@hydra.main(version_base="1.3", config_path="conf", config_name="app")
def main(cfg):
    from hydra.core.hydra_config import HydraConfig

    (Path(HydraConfig.get().runtime.output_dir) / "done.txt").write_text(f"{cfg.x}")


if __name__ == "__main__":
    main()
'''


def test_a_second_launch_into_a_sweep_dir_continues_the_job_numbers(tmp_path):
    """configs/hydra/default.yaml with its callback, on a trivial Hydra app: the first launch is numbered as Hydra
    does (0, 1), a second one into the same directory after it (2, 3, 4), and the first grid stays on record."""
    env = write_hydra_app(tmp_path, APP)

    def launch(*overrides: str) -> None:
        result = subprocess.run([sys.executable, "app.py", "-m", *overrides], check=False, capture_output=True,
                                text=True, cwd=tmp_path, timeout=120, env=env)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    sweep = tmp_path / "sweep"
    launch("x=1,2", f"hydra.sweep.dir={sweep}")
    launch("x=3,4,5", f"hydra.sweep.dir={sweep}")
    assert {p.name: (p / "done.txt").read_text() for p in sweep.iterdir() if p.name.isdigit()} == {
        "0": "1", "1": "2", "2": "3", "3": "4", "4": "5"}
    assert [p.name for p in launch_records(sweep)] == ["multirun.0.yaml", "multirun.yaml"]
    assert expected_jobs(sweep) == [("x=1",), ("x=2",), ("x=3",), ("x=4",), ("x=5",)]
    assert "hydra.sweep.subdir=${offset_job_num:2}" in (sweep / "2" / ".hydra" / "hydra.yaml").read_text()
    # an explicit subdir is the user's choice: left alone
    launch("x=6", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=extra")
    assert (sweep / "extra" / "done.txt").read_text() == "6" and not (sweep / "5").exists()
