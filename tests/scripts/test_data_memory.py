"""scripts/data_memory.py: the label start-up measurement on a small synthetic COCO json."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_labels_reads_every_image_and_box(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "data_memory.py"), "labels", "--images", "50", "--boxes", "300",
         "--folder", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "50 images, 300 boxes kept" in result.stdout
    assert len(list((tmp_path / "train2017").iterdir())) == 50 and (tmp_path / "instances_train2017.json").is_file()
    assert "bytes per image" in result.stdout
