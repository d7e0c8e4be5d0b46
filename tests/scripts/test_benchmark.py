"""scripts/benchmark.py: one command for every section; tiny sizes here (the real figures need a quiet machine)."""

from __future__ import annotations

import json

from .conftest import run_script


def test_criterion_and_assigner_sections_compare_with_the_dense_reference(tmp_path):
    out = tmp_path / "benchmark.json"
    result = run_script("scripts/benchmark.py", [
        "--only", "criterion", "assigner", "--batch", "1", "--sizes", "64", "--num-gt", "3", "--repeats", "1",
        "--warmup", "0", "--out", out,
    ])
    figures = json.loads(out.read_text())
    assert figures["batch"] == 1 and figures["sizes"] == [64] and set(figures) >= {"machine", "criterion", "assigner"}
    for section in ("criterion", "assigner"):
        assert set(figures[section]) == {"3 GT/img, sparse", "3 GT/img, dense reference"}
        assert figures[section]["3 GT/img, sparse"]["vs_reference"]["reference"] == "3 GT/img, dense reference"
    assert figures["criterion"]["3 GT/img, sparse"]["vs_reference"]["max_losses_difference"] < 1e-4
    assert "3 GT/img, sparse: " in result.stdout and "x the speed of 3 GT/img, dense reference" in result.stdout


def test_coco128_sections_are_skipped_with_the_reason_without_the_data(tmp_path):
    out = tmp_path / "benchmark.json"
    result = run_script("scripts/benchmark.py", ["--only", "data", "eval", "--sizes", "64", "--coco128",
                                                 tmp_path / "missing", "--out", out])
    figures = json.loads(out.read_text())
    assert set(figures["data"]) == {"@64, mosaic off", "@64, mosaic on"}
    assert all("no COCO128 at" in case["skipped"] for case in figures["data"].values())
    assert "no COCO128 val annotations" in figures["eval"]["pycocotools"]["skipped"]
    assert result.stdout.count("| skipped |") == 4
