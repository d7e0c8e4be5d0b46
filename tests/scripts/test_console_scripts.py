"""The console scripts of pyproject.toml (detector/cli.py): declared, --help, and a tiny run of each deploy command,
started as the installed `detector-*` wrappers start them and compared with what the scripts wrote."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from detector import cli

from .conftest import ROOT, run_script

COMMANDS = {
    "detector-train": "train", "detector-evaluate": "evaluate", "detector-predict": "predict",
    "detector-export": "export", "detector-check-dataset": "check_dataset",
    "detector-visualize-assignment": "visualize_assignment",
    "detector-convert-ultralytics": "convert_ultralytics",
}


def run_console(command: str, args: list, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """`command args` as pip's generated wrapper runs it (sys.exit(entry())), from another folder and without
    PROJECT_ROOT: the configs are found from the package's location."""
    code = (f"import sys; from detector.cli import {COMMANDS[command]} as entry; sys.argv[0] = {command!r}; "
            "sys.exit(entry())")
    env = {k: v for k, v in os.environ.items() if k != "PROJECT_ROOT"}
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, cwd=cwd, env=env, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_pyproject_declares_the_console_scripts():
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {name: f"detector.cli:{function}" for name, function in COMMANDS.items()}
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function))


def test_configs_are_found_beside_the_package_or_at_project_root(monkeypatch, tmp_path):
    monkeypatch.delenv("PROJECT_ROOT", raising=False)
    assert cli.project_root() == Path(cli.__file__).resolve().parents[1]
    assert (cli.config_dir() / "train.yaml").is_file()
    monkeypatch.setenv("PROJECT_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no configs folder at .*pip install -e"):
        cli.config_dir()
    monkeypatch.setattr(sys, "argv", ["detector-evaluate", "ckpt_path=x"])
    with pytest.raises(SystemExit, match=r"^error: no configs folder at "):  # a message, not a traceback
        cli.evaluate()


@pytest.mark.parametrize("command", ["detector-train", "detector-evaluate", "detector-predict", "detector-export"])
def test_hydra_commands_answer_help(command, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [command, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        getattr(cli, COMMANDS[command])()
    assert exit_info.value.code == 0
    name = COMMANDS[command]
    assert f"{name} is powered by Hydra" in capsys.readouterr().out  # the job name of the script (hydra.job.name)


def test_check_dataset_command(monkeypatch, capsys, trained):
    monkeypatch.setattr(sys, "argv", ["detector-check-dataset", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        cli.check_dataset()
    assert exit_info.value.code == 0 and "usage: detector-check-dataset" in capsys.readouterr().out
    data = trained["data"]
    argv = ["--format", "coco", "--path", str(data / "annotations" / "val.json"), "--images", str(data / "images" / "val"),
            "--out", str(trained["tmp"] / "doctor")]
    assert cli.check_dataset(argv) == 0
    assert "[val] 6/6 images usable" in capsys.readouterr().out


def test_convert_ultralytics_command_answers_help_and_refuses_with_a_message(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["detector-convert-ultralytics", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        cli.convert_ultralytics()
    assert exit_info.value.code == 0
    assert "usage: detector-convert-ultralytics [-h] [--debug] source target" in capsys.readouterr().out
    for source, reason in ((tmp_path / "missing.pt", "no such file"),
                           (ROOT / "README.md", "not a torch.save zip archive")):
        with pytest.raises(SystemExit) as exit_info:  # tests/scripts/test_checkpoint_errors.py: every refusal
            cli.convert_ultralytics([str(source), str(tmp_path / "out.ckpt")])
        assert exit_info.value.code == 2 and capsys.readouterr().err.startswith(f"error: {source}: {reason}")
    assert not (tmp_path / "out.ckpt").exists()


@pytest.mark.slow  # the whole deploy command twice; the fast tier runs the scripts once
def test_detector_evaluate_equals_the_script(trained, evaluated):
    out = trained["tmp"] / "console_evaluate"
    result = run_console("detector-evaluate", [f"ckpt_path={trained['ckpt']}", f"hydra.run.dir={out}", "device=cpu"],
                         cwd=trained["tmp"])
    mine, script = (json.loads((d / "evaluation.json").read_text()) for d in (out, evaluated["dir"]))
    assert mine["coco"] == script["coco"] and mine["per_class"] == script["per_class"]
    assert (out / "detections.json").read_text() == (evaluated["dir"] / "detections.json").read_text()
    assert (out / "per_class.md").read_text() in result.stdout
    assert yaml.safe_load((out / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["name"] == "evaluate"
    assert (out / "evaluate.log").is_file() and (evaluated["dir"] / "evaluate.log").is_file()


@pytest.mark.slow  # the whole deploy command twice; the fast tier runs the scripts once
def test_detector_predict_equals_the_script(trained, predicted):
    out = trained["tmp"] / "console_predict"
    run_console("detector-predict", [
        f"ckpt_path={trained['ckpt']}", f"source={trained['data'] / 'images' / 'val'}", f"hydra.run.dir={out}",
        "postprocess.conf_threshold=0.001", "batch_size=3", "device=cpu", "save_images=false",
    ], cwd=trained["tmp"])
    assert (out / "predictions.json").read_text() == (predicted["dir"] / "predictions.json").read_text()


@pytest.mark.slow  # the whole deploy command twice; the fast tier runs the scripts once
def test_detector_export_and_the_script_write_the_same_metadata(trained):
    pytest.importorskip("onnx")
    outputs = {}
    for how, out in (("console", trained["tmp"] / "console_export"), ("script", trained["tmp"] / "script_export")):
        args = [f"ckpt_path={trained['ckpt']}", f"hydra.run.dir={out}", "verify=false"]
        if how == "console":
            run_console("detector-export", args, cwd=trained["tmp"])
        else:
            run_script("scripts/export.py", args)
        assert (out / "best.onnx").stat().st_size > 0
        outputs[how] = json.loads((out / "best.json").read_text())
        outputs[how].pop("onnx")
    assert outputs["console"] == outputs["script"] and outputs["console"]["outputs"] == ["boxes", "scores"]
