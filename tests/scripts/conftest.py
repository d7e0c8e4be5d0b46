"""The scripts run once per session on the checkpoint of the `trained` fixture (tests/conftest.py)."""

from __future__ import annotations

import pytest

from ..conftest import ROOT, TRAINED_BATCH, run_script

__all__ = ["ROOT", "run_script"]


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
        "postprocess.conf_threshold=0.001", f"batch_size={TRAINED_BATCH}", "device=cpu",
    ])
    return {"dir": out, "stdout": result.stdout}
