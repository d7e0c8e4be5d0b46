"""Helpers of the end-to-end tests: `python train.py` as a subprocess on a freshly generated tiny shapes set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..conftest import ROOT


def tiny_overrides(tmp_path: Path, num_train: int = 16, num_val: int = 8, img_size: int = 64) -> list[str]:
    """A run on a freshly generated tiny shapes set, with every output under tmp_path."""
    return [
        f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}",
        f"data.prepare.num_train={num_train}", f"data.prepare.num_val={num_val}",
        f"data.prepare.image_size={img_size}", f"data.img_size={img_size}", "data.batch_size=4", "data.num_workers=0",
    ]


def run_train(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result
