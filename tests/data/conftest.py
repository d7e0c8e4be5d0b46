"""Fixtures for the data tests: the shared real datasets (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

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
