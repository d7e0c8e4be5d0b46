"""scripts/benchmark_device_augment.py: without COCO128 it times BatchAugment on synthetic batches."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def test_times_the_batch_augmentation_on_synthetic_batches(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("benchmark_device_augment", ROOT / "scripts" / "benchmark_device_augment.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", ["benchmark_device_augment.py", "--root", str(tmp_path / "absent"), "--sizes", "64",
                                      "--batch", "4", "--repeats", "1", "--warmup", "0", "--device", "cpu",
                                      "--threads", str(torch.get_num_threads())])
    try:
        script.main()
    finally:
        logging.disable(logging.NOTSET)  # the script silences the data checks' summaries
    out = capsys.readouterr().out
    assert "synthetic batches, worker rows skipped" in out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| 64 |")]
    assert [row[2].strip() for row in rows] == ["device path, BatchAugment on cpu: mosaic + colour + flip + affine",
                                                "device path, BatchAugment on cpu: the same without colour"]
    assert all(float(row[3].split("[")[0]) > 0 for row in rows)
