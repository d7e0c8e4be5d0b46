"""Shared test helpers: the repository root, the real data in ../shared (optional), Hydra composition, image files,
script runs, and a checkpoint trained for two steps (for the deploy and scripts tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))


def shared_data_dir() -> Path:
    """<repo>/../shared/data, or $DETECTOR_SHARED_DATA."""
    return Path(os.environ.get("DETECTOR_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_dataset(name: str, marker: str) -> Path:
    """../shared/data/<name>, or a skip saying where it was looked for when <name>/<marker> is not there (a file,
    or a folder when `marker` ends with "/")."""
    path = shared_data_dir() / name
    if not ((path / marker).is_dir() if marker.endswith("/") else (path / marker).is_file()):
        pytest.skip(f"{name} not found at {path.resolve()} (set DETECTOR_SHARED_DATA to the folder holding {name}/)")
    return path


@pytest.fixture(scope="session")
def coco128() -> Path:
    return shared_dataset("coco128", "data.yaml")


@pytest.fixture(scope="session")
def fruit_voc() -> Path:
    return shared_dataset("fruit_voc", "Annotations/")


def pytest_sessionfinish(session, exitstatus):
    """No test collected (a wrong path or -m/-k expression) fails the run like a failed test, never passes it
    unnoticed: pytest's own exit code 5 for it is treated as success by some CI wrappers."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _no_hydra_state_between_tests():
    """A test that sets Hydra's global config (HydraConfig, GlobalHydra) does not leak it into the next test."""
    yield
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


@pytest.fixture(scope="package")
def compose_config():
    """compose_config(overrides, return_hydra_config=False) -> the composed train config, as `python train.py` would
    see it (detector.config.compose on the repository's configs/): the one compose helper of the config tests."""
    from detector.config import compose

    def _compose(overrides: Sequence[str] = (), return_hydra_config: bool = False):
        return compose("train", overrides, return_hydra_config=return_hydra_config, configs=ROOT / "configs")

    return _compose


@pytest.fixture
def write_image():
    """write_image(path, width, height, value=(90, 90, 90)) -> path: a solid-colour image (format from the suffix)."""
    def write(path: Path, width: int, height: int, value=(90, 90, 90)) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))
        return path

    return write


def run_script(script: str, args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """`python <script> <args>` from the repository root; asserts exit code 0 (showing the output's tail if not)."""
    result = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


# the run of the `trained` fixture
TRAINED_NUM_VAL = 6
TRAINED_IMG_SIZE = 64
TRAINED_BATCH = 3


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict:
    """dict(ckpt, run, data, tmp, stdout): best.ckpt of `python train.py` (a real process: the smoke run of
    tests/e2e/test_train.py checks it) on 12 + 6 synthetic 64-px images, 1 epoch of 2 steps."""
    tmp = tmp_path_factory.mktemp("trained")
    result = run_script("train.py", [
        f"paths.data_dir={tmp / 'data'}", f"hydra.run.dir={tmp / 'run'}", "data.prepare.num_train=12",
        f"data.prepare.num_val={TRAINED_NUM_VAL}", f"data.prepare.image_size={TRAINED_IMG_SIZE}",
        f"data.img_size={TRAINED_IMG_SIZE}", f"data.batch_size={TRAINED_BATCH}", "data.num_workers=0",
        "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        # BatchNorm statistics as trained: recomputed from 2 tiny batches, the scores tie and the export tests that
        # compare NMS results cannot compare them
        "callbacks.recompute_batch_norm.batches=0",
    ])
    ckpt = tmp / "run" / "checkpoints" / "best.ckpt"
    assert ckpt.is_file()
    return {"ckpt": ckpt, "run": tmp / "run", "data": tmp / "data" / "shapes", "tmp": tmp, "stdout": result.stdout}
