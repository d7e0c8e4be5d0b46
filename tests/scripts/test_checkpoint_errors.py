"""Every command turns a checkpoint file it cannot read into one line, `error: <file>: <reason>` on stderr, and exit
status 2, without a traceback; `--debug` (detector-convert-ultralytics) or HYDRA_FULL_ERROR=1 (the Hydra commands)
lets the error through with its traceback. In-process calls (sys.argv patched, SystemExit caught), and a
subprocess of each kind of command for what a user sees."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detector import cli
from detector.models.detectors.yolo import YOLODetector
from detector.models.safe_pickle import CheckpointError, UnsafeCheckpointError

from ..models.hostile_files import FOUR_FLOATS, one_view, text, torch_zip
from ..training.fake_ultralytics import fuse, save_ultralytics_checkpoint, ultralytics_layout
from .conftest import ROOT


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Broken checkpoint files, one of each way to fail: name -> path."""
    folder = tmp_path_factory.mktemp("broken")
    made = {
        "stride 0 view": torch_zip(folder / "stride0.pt", one_view(0, (1 << 16, 1 << 16), (0, 0)), FOUR_FLOATS),
        "truncated pickle": torch_zip(folder / "truncated.pt", b"\x80\x02]"),
        "bad opcode": torch_zip(folder / "opcode.pt", b"\x80\x02\xff"),
        "call of a stand-in": torch_zip(folder / "call.pt", b"\x80\x02cbuiltins\ngetattr\n" + text("x") + b"\x85R)R."),
        "not a zip": folder / "text.pt",
        "missing": folder / "missing.pt",
        "a list": folder / "list.ckpt",
        "bad CRC": folder / "crc.pt",
        "fused": folder / "fused.pt",
        "ultralytics": folder / "yolov8n.pt",
    }
    made["not a zip"].write_text("not a checkpoint")
    torch.save([torch.ones(2)], made["a list"])
    torch.save({"x": torch.full((16,), 7.0)}, made["bad CRC"])  # one stored byte changed: its CRC-32 no longer holds
    data = made["bad CRC"].read_bytes()
    made["bad CRC"].write_bytes(data.replace(torch.full((16,), 7.0).numpy().tobytes(),
                                             torch.full((16,), 8.0).numpy().tobytes()))
    model = YOLODetector(3, "n")
    save_ultralytics_checkpoint(made["ultralytics"], ultralytics_layout(model, "n"))
    save_ultralytics_checkpoint(made["fused"], fuse(ultralytics_layout(model, "n")))
    return made


def error_line(capsys, path: Path) -> str:
    """The reason of the one line on stderr, which names `path`; no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), err
    return lines[0][len(f"error: {path}: "):]


@pytest.mark.parametrize("name, reason", [
    ("stride 0 view", r"refusing to load: the view of archive/data/0 .* has stride 0 on a dimension of size > 1"),
    ("truncated pickle", r"EOFError: Ran out of input"),
    ("bad opcode", r"UnpicklingError: invalid load key, '\\xff'"),
    ("call of a stand-in", r"TypeError: 'getattr' object is not callable"),
    ("not a zip", r"not a torch.save zip archive"),
    ("missing", r"no such file"),
    ("bad CRC", r"BadZipFile: Bad CRC-32 for file 'crc/data/0'"),
    ("fused", r"its Conv layers have no BatchNorm: it was saved after model.fuse\(\)"),
])
def test_convert_refuses_with_one_line_and_status_2(files, tmp_path, capsys, name, reason):
    with pytest.raises(SystemExit) as exit_info:
        cli.convert_ultralytics([str(files[name]), str(tmp_path / "out.ckpt")])
    assert exit_info.value.code == 2
    assert re.match(reason, error_line(capsys, files[name]))
    assert not (tmp_path / "out.ckpt").exists()
    with pytest.raises(CheckpointError, match=reason):  # --debug: the error itself, with its traceback
        cli.convert_ultralytics([str(files[name]), str(tmp_path / "out.ckpt"), "--debug"])


def test_convert_writes_an_ultralytics_file(files, tmp_path, capsys):
    assert cli.convert_ultralytics([str(files["ultralytics"]), str(tmp_path / "n.ckpt")]) == 0
    assert "YOLOv8n, 3 classes (class0, class1, class2), 64 px" in capsys.readouterr().out
    assert (tmp_path / "n.ckpt").is_file()


HYDRA_COMMANDS = {  # command -> (arguments, the file it is given, its reason)
    "evaluate": (["ckpt_path={path}"], "stride 0 view", r"refusing to load: the view of archive/data/0"),
    "predict": (["ckpt_path={path}", "source={path}"], "missing", r"no such file$"),
    "export": (["ckpt_path={path}"], "a list", r"not a checkpoint of this project \(a list, not a dict\)$"),
    "train": (["model.init_from={path}", "data.num_workers=0"], "fused",
              r"its Conv layers have no BatchNorm: it was saved after model.fuse\(\)"),
}


@pytest.mark.parametrize("command", HYDRA_COMMANDS)
def test_hydra_commands_refuse_with_one_line_and_status_2(command, files, tmp_path, capsys, monkeypatch):
    arguments, name, reason = HYDRA_COMMANDS[command]
    path = files[name]
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", [command, *(a.format(path=path) for a in arguments), f"hydra.run.dir={tmp_path}",
                                      f"paths.data_dir={tmp_path / 'data'}"])
    with pytest.raises(SystemExit) as exit_info:
        getattr(cli, command)()
    assert exit_info.value.code == 2
    assert re.match(reason, error_line(capsys, path))


def test_evaluate_of_an_ultralytics_file_says_to_convert_it(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["evaluate", f"ckpt_path={files['ultralytics']}", f"hydra.run.dir={tmp_path}"])
    with pytest.raises(SystemExit) as exit_info:
        cli.evaluate()
    assert exit_info.value.code == 2
    assert error_line(capsys, files["ultralytics"]).startswith("an ultralytics checkpoint: convert it first "
                                                               "(detector-convert-ultralytics")


def test_hydra_full_error_lets_the_error_through(files, tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(sys, "argv", ["train", f"model.init_from={files['stride 0 view']}", "data.num_workers=0",
                                      f"hydra.run.dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}"])
    with pytest.raises(UnsafeCheckpointError, match="stride0.pt: refusing to load"):  # the reader's error, as raised
        cli.train()


def subprocess_env() -> dict[str, str]:
    """The environment of a script run as a process, importing this checkout's package whatever is installed."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def test_what_a_user_of_the_converter_sees(files, tmp_path):
    """As a process: one line on stderr, nothing on stdout, status 2. The file is one that any reader refuses
    without harm (a wrong package imported would fail this test, not fill the memory)."""
    broken = files["bad opcode"]
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_ultralytics.py"), str(broken),
                             str(tmp_path / "out.ckpt")], capture_output=True, text=True, timeout=120, check=False,
                            env=subprocess_env())
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"error: {broken}: UnpicklingError: invalid load key, '\\xff'.\n"


@pytest.mark.slow  # a Hydra command as a process; the fast tier checks HYDRA_FULL_ERROR in-process
def test_hydra_full_error_prints_the_traceback(files, tmp_path):
    broken = files["bad opcode"]
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), f"ckpt_path={broken}",
                             f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=120, check=False,
                            env={**subprocess_env(), "HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert f"CheckpointError: {broken}: UnpicklingError: invalid load key" in result.stderr
