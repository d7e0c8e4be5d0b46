"""SIGTERM during `python train.py` saves last.ckpt (atomically) and the run can be resumed from it."""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sigterm_saves_last_checkpoint_and_resume_continues(tmp_path):
    args = [
        f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}", "data.prepare.num_train=64",
        "data.prepare.num_val=8", "data.prepare.image_size=64", "data.img_size=64", "data.batch_size=4",
        "data.num_workers=0", "trainer.max_epochs=50",
    ]
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    started = threading.Event()

    def read():
        for line in process.stdout:
            output.append(line)
            if "Epoch 2/" in line:  # the progress bar counts from 1: the second epoch has started
                started.set()

    threading.Thread(target=read, daemon=True).start()
    assert started.wait(300), "".join(output)[-3000:]
    os.kill(process.pid, signal.SIGTERM)
    process.wait(120)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert last.exists(), "".join(output)[-3000:]
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] >= 1 and checkpoint["global_step"] > 16
    # resume: finish the interrupted epoch from the saved state
    resumed = subprocess.run([sys.executable, str(ROOT / "train.py"), *args[:-1], f"trainer.max_epochs={checkpoint['epoch'] + 1}",
                              f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'resumed'}"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint" in resumed.stdout + resumed.stderr
