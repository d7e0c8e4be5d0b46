"""Fixtures for the data tests: the shared real datasets (skipped when absent) and small image writers."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest


def shared_data_dir() -> Path:
    """<repo>/../shared/data, or $DETECTOR_SHARED_DATA."""
    env = os.environ.get("DETECTOR_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def coco128() -> Path:
    path = shared_data_dir() / "coco128"
    if not (path / "data.yaml").is_file():
        pytest.skip(f"COCO128 not found at {path.resolve()} (set DETECTOR_SHARED_DATA to the folder holding coco128/)")
    return path


@pytest.fixture(scope="session")
def fruit_voc() -> Path:
    path = shared_data_dir() / "fruit_voc"
    if not (path / "Annotations").is_dir():
        pytest.skip(f"fruit_voc not found at {path.resolve()} (set DETECTOR_SHARED_DATA to the folder holding fruit_voc/)")
    return path


@pytest.fixture
def write_image():
    """write_image(path, width, height, value=(90, 90, 90)) -> path: a solid-colour image (format from the suffix)."""
    def write(path: Path, width: int, height: int, value=(90, 90, 90)) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))
        return path

    return write
