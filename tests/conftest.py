"""Shared test helpers: the repository root, the real data in ../shared (optional), Hydra composition, image files."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))


def shared_data_dir() -> Path:
    return Path(os.environ.get("DETECTOR_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def compose_config():
    """compose_config(overrides) -> the composed train config (Hydra), as `python train.py` would see it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from detector.config import register_resolvers

    register_resolvers()

    def _compose(overrides: list[str] = (), return_hydra_config: bool = False):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=return_hydra_config)

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def write_image():
    """write_image(path, width, height, value=(90, 90, 90)) -> path: a solid-colour image (format from the suffix)."""
    def write(path: Path, width: int, height: int, value=(90, 90, 90)) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))
        return path

    return write
