"""A checkpoint trained for two steps on a tiny synthetic set (made once per session by running train.py), and
the scripts run on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NUM_VAL = 6
IMG_SIZE = 64
BATCH = 3


def run_script(script: str, args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict:
    """dict(ckpt, run, data): best.ckpt of `train.py` on 12 + 6 synthetic 64-px images, 1 epoch of 2 steps."""
    tmp = tmp_path_factory.mktemp("trained")
    run_script("train.py", [
        f"paths.data_dir={tmp / 'data'}", f"hydra.run.dir={tmp / 'run'}", "data.prepare.num_train=12",
        f"data.prepare.num_val={NUM_VAL}", f"data.prepare.image_size={IMG_SIZE}", f"data.img_size={IMG_SIZE}",
        f"data.batch_size={BATCH}", "data.num_workers=0", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
    ])
    ckpt = tmp / "run" / "checkpoints" / "best.ckpt"
    assert ckpt.is_file()
    return {"ckpt": ckpt, "run": tmp / "run", "data": tmp / "data" / "shapes", "tmp": tmp}


@pytest.fixture(scope="session")
def evaluated(trained) -> dict:
    """evaluate.py on the checkpoint (the data it was trained on, from the checkpoint)."""
    out = trained["tmp"] / "evaluate"
    result = run_script("scripts/evaluate.py", [f"ckpt_path={trained['ckpt']}", f"hydra.run.dir={out}", "device=cpu"])
    return {"dir": out, "stdout": result.stdout}


@pytest.fixture(scope="session")
def predicted(trained) -> dict:
    """predict.py on the val images folder with evaluate's post-processing (conf 0.001, 300 detections)."""
    out = trained["tmp"] / "predict"
    result = run_script("scripts/predict.py", [
        f"ckpt_path={trained['ckpt']}", f"source={trained['data'] / 'images' / 'val'}", f"hydra.run.dir={out}",
        "postprocess.conf_threshold=0.001", f"batch_size={BATCH}", "device=cpu",
    ])
    return {"dir": out, "stdout": result.stdout}
