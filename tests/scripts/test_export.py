"""ONNX export round trip: scripts/export.py, then onnxruntime vs PyTorch with a dynamic batch."""

import json

import numpy as np
import pytest
import torch

from detector.deploy.export import InferenceModel, run_onnx
from detector.deploy.load import load_detector

from ..conftest import TRAINED_IMG_SIZE as IMG_SIZE
from ..conftest import run_script

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def test_export_script_round_trip_with_dynamic_batch(trained):
    out = trained["tmp"] / "export"
    result = run_script("scripts/export.py", [f"ckpt_path={trained['ckpt']}", "format=onnx", f"hydra.run.dir={out}"])
    onnx_path = out / "best.onnx"
    info = json.loads(onnx_path.with_suffix(".json").read_text())
    assert info["outputs"] == ["boxes", "scores"] and info["img_size"] == IMG_SIZE and info["weights"] == "ema"
    assert info["verify"]["boxes_max_abs_diff"] <= 1e-4 * IMG_SIZE and "onnxruntime matches PyTorch" in result.stdout

    # independently: three images (the example batch was 1) against the PyTorch model with the EMA weights
    model, postprocessor, _ = load_detector(trained["ckpt"], "cpu")
    images = torch.rand(3, 3, IMG_SIZE, IMG_SIZE, generator=torch.Generator().manual_seed(1))
    boxes, scores = run_onnx(onnx_path, images.numpy())
    with torch.no_grad():
        expected_boxes, expected_scores = InferenceModel(model, postprocessor.activation)(images)
        # the exported graph decodes with the head output's own decode, the one evaluate.py's post-processing uses
        assert torch.equal(expected_boxes, model(images).decode_boxes())
    anchors = 8 * 8 + 4 * 4 + 2 * 2  # strides 8, 16, 32 on 64 px
    assert boxes.shape == (3, anchors, 4) and scores.shape == (3, anchors, 5)
    np.testing.assert_allclose(boxes, expected_boxes.numpy(), atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(scores, expected_scores.numpy(), atol=1e-4, rtol=0)
