"""scripts/benchmark.py: one command for every section; tiny sizes here (the real figures need a quiet machine)."""

from __future__ import annotations

import argparse
import json

import pytest

from ..conftest import ROOT, run_script

# every case runs in a fresh process (a torch import each): a generous limit for a busy 2-core machine
TIMEOUT = 900


@pytest.mark.slow
def test_criterion_and_assigner_sections_compare_with_their_references(tmp_path):
    out = tmp_path / "benchmark.json"
    result = run_script("scripts/benchmark.py", [
        "--only", "criterion", "assigner", "--batch", "1", "--sizes", "64", "--num-gt", "3", "--repeats", "1",
        "--warmup", "0", "--statistics-overhead", "--out", out,
    ], timeout=TIMEOUT)
    figures = json.loads(out.read_text())
    assert figures["batch"] == 1 and figures["sizes"] == [64] and set(figures) >= {"machine", "criterion", "assigner"}
    assert set(figures["criterion"]) == {"3 GT/img, sparse", "3 GT/img, dense reference"}
    assert figures["criterion"]["3 GT/img, sparse"]["vs_reference"]["reference"] == "3 GT/img, dense reference"
    methods = ("tal dense reference", "tal small objects", "atss", "simota")
    assert set(figures["assigner"]) == {"3 GT/img, tal", *(f"3 GT/img, {m}" for m in methods)}
    for method in methods:  # every assigner next to the sparse TAL of the same case, with its peak memory
        case = figures["assigner"][f"3 GT/img, {method}"]
        assert case["vs_reference"]["reference"] == "3 GT/img, tal" and case["peak_extra_mib"] >= 0
    assert figures["criterion"]["3 GT/img, sparse"]["vs_reference"]["max_losses_difference"] < 1e-4
    # --statistics-overhead: the forward with and without the assignment statistics, and the statistics alone
    assert {"forward_median_s", "forward_off_median_s", "statistics_median_s"} <= set(figures["criterion"]["3 GT/img, sparse"])
    assert "3 GT/img, sparse: " in result.stdout and "x the speed of 3 GT/img, dense reference" in result.stdout


@pytest.mark.slow  # a benchmark subprocess of four sections: about 6 s
def test_coco128_sections_are_skipped_with_the_reason_without_the_data(tmp_path):
    out = tmp_path / "benchmark.json"
    result = run_script("scripts/benchmark.py", ["--only", "data", "data_profile", "loader", "eval", "--sizes", "64",
                                                 "--cache", "ram", "--workers", "0", "2", "--coco128",
                                                 tmp_path / "missing", "--out", out], timeout=TIMEOUT)
    figures = json.loads(out.read_text())
    # each of ours next to the ultralytics reference of the same setting
    assert set(figures["data"]) == {f"@64, mosaic {m}, cache ram{u}" for m in ("off", "on") for u in ("", ", ultralytics")}
    assert set(figures["loader"]) == {"@64, cache ram, 0 workers", "@64, cache ram, 2 workers"}
    assert set(figures["data_profile"]) == {"@64, mosaic sample, no cache"}
    for section in ("data", "data_profile", "loader"):
        assert all("no COCO128 at" in case["skipped"] for case in figures[section].values())
    assert "no COCO128 val annotations" in figures["eval"]["pycocotools"]["skipped"]
    assert result.stdout.count("| skipped |") == 9


@pytest.mark.slow
def test_box_ops_and_nms_sections_compare_with_torchvision(tmp_path):
    out = tmp_path / "benchmark.json"
    result = run_script("scripts/benchmark.py", [
        "--only", "box_ops", "nms", "--batch", "2", "--sizes", "64", "--num-boxes", "50", "--candidates", "300",
        "--repeats", "1", "--warmup", "0", "--out", out,
    ], timeout=TIMEOUT)
    figures = json.loads(out.read_text())
    assert figures["num_boxes"] == 50 and figures["candidates"] == 300
    box_ops = figures["box_ops"]
    assert "no element-wise IoU loss" in box_ops["IoULoss"]["note"] and "vs_reference" not in box_ops["IoULoss"]
    for ours, theirs in [("GIoULoss", "generalized"), ("DIoULoss", "distance"), ("CIoULoss", "complete")]:
        comparison = box_ops[ours]["vs_reference"]
        assert comparison["reference"] == f"torchvision {theirs}_box_iou_loss"
        assert comparison["max_losses_difference"] < 1e-5 and comparison["max_gradients_difference"] < 1e-5
        assert f"{ours}: " in result.stdout and f"x the speed of torchvision {theirs}_box_iou_loss" in result.stdout
    assert "torchvision.ops.box_iou" in box_ops["pairwise IoU"]["skipped"]
    nms = figures["nms"]
    assert nms["class_aware"]["vs_reference"]["reference"] == nms["diou"]["vs_reference"]["reference"] == \
        "torchvision batched_nms"
    assert nms["class_agnostic"]["vs_reference"]["reference"] == nms["diou_agnostic"]["vs_reference"]["reference"] == \
        "torchvision nms"
    assert nms["class_aware"]["vs_reference"]["same_kept"] and nms["class_agnostic"]["vs_reference"]["same_kept"]
    assert "may differ" in nms["diou"]["note"] and nms["class_aware"]["candidates_per_image"] == 300
    assert "class_agnostic: " in result.stdout and "x the speed of torchvision nms, kept identical" in result.stdout
    assert not any("outputs" in case for section in (box_ops, nms) for case in section.values())


@pytest.mark.slow
def test_data_sections_on_coco128_time_samples_stages_and_loader_epochs(tmp_path, coco128):
    out = tmp_path / "benchmark.json"
    run_script("scripts/benchmark.py", [
        "--only", "data", "data_profile", "loader", "device_augment", "--sizes", "64", "--data-images", "16", "--cache", "ram",
        "--workers", "0", "--batch", "8", "--repeats", "1", "--warmup", "0", "--coco128", coco128, "--out", out,
    ], timeout=TIMEOUT)
    figures = json.loads(out.read_text())
    ours = figures["data"]["@64, mosaic on, cache ram"]
    assert ours["images_per_s"] == pytest.approx(16 / ours["median_s"]) and 0 < ours["cpu_per_image_s"] < 1
    ultralytics = figures["data"]["@64, mosaic on, cache ram, ultralytics"]
    assert "not installed" in ultralytics.get("skipped", "not installed") and (
        "skipped" in ultralytics or ours["vs_reference"]["reference"] == "@64, mosaic on, cache ram, ultralytics")
    profile = figures["data_profile"]["@64, mosaic sample, no cache"]
    assert {"compose_mosaic", "ColorJitter", "Affine", "HorizontalFlip"} <= set(profile["stages_ms"])
    assert profile["median_s"] == pytest.approx(sum(profile["stages_ms"].values()) / 1e3)
    assert profile["a_mosaic_ms"] > profile["stages_ms"]["compose_mosaic"] > 0
    loader = figures["loader"]["@64, cache ram, 0 workers"]
    assert loader["images_per_epoch"] == 128 - 128 % 8 and loader["first_epoch_s"] > 0
    device = figures["device_augment"]
    assert device["@64, device path: the worker's share, cache ram"]["vs_reference"]["reference"] == \
        "@64, worker path, cache ram"
    assert device["@64, BatchAugment on cpu"]["note"] == "COCO128 batches"
    assert device["@64, BatchAugment on cpu"]["images_per_s"] == pytest.approx(4 * 8 / device["@64, BatchAugment on cpu"]["median_s"])


def test_device_augment_times_the_batch_augmentation_on_synthetic_batches_without_coco128(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from benchmarks import device_augment

    args = argparse.Namespace(sizes=[64], cache=["false", "ram"], data_images=8, batch=4, device="cpu",
                              coco128=tmp_path / "absent")
    cases = device_augment.cases(args)
    skipped = {case.name: device_augment.skip(case, args) for case in cases}
    assert [name for name, reason in skipped.items() if reason is None] == [
        "@64, BatchAugment on cpu", "@64, BatchAugment on cpu, without colour"]
    assert all("no COCO128 at" in reason for reason in skipped.values() if reason is not None) and len(skipped) == 6
    assert {case.name: case.reference for case in cases}["@64, BatchAugment on cpu, without colour"] == \
        "@64, BatchAugment on cpu"
    result = device_augment.batch_augment_case(**cases[-1].kwargs, repeats=1, warmup=0)
    assert result["note"] == "synthetic batches (no COCO128)"
    assert result["images_per_s"] == pytest.approx(4 * 4 / result["median_s"])


def test_a_case_whose_process_dies_is_reported_and_the_run_goes_on(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from benchmarks import harness

    assert harness.run_isolated(harness.compare, {}) == {
        "failed": "the case's process exited with code 1 (traceback above)"}  # compare() without its arguments
