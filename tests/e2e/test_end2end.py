"""An end-to-end (NMS-free) model through every command: `python train.py model.end2end=true`, then evaluate.py
from its one-to-one branch and, on the same checkpoint, from its one-to-many branch + NMS; predict.py; export.py
with the NMS-free selection in the ONNX graph."""

from __future__ import annotations

import json

import pytest

from ..conftest import run_script
from .conftest import run_train, tiny_overrides


@pytest.mark.slow
def test_end_to_end_model_trains_evaluates_predicts_and_exports(tmp_path, write_image):
    run_train([*tiny_overrides(tmp_path), "model.end2end=true", "trainer.max_epochs=1", "trainer.limit_train_batches=2"])
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "ok"
    (log,) = (tmp_path / "run" / "csv").rglob("metrics.csv")
    assert "val/one2one" in log.read_text()  # the one-to-one branch's loss is logged

    one2one = tmp_path / "eval_one2one"
    run_script("scripts/evaluate.py", [f"ckpt_path={ckpt}", f"hydra.run.dir={one2one}"])
    nms = tmp_path / "eval_nms"
    run_script("scripts/evaluate.py", [f"ckpt_path={ckpt}", "postprocess.one2one=false", f"hydra.run.dir={nms}"])
    first, second = (json.loads((d / "evaluation.json").read_text()) for d in (one2one, nms))
    assert first["postprocess"]["one2one"] is None and second["postprocess"]["one2one"] is False

    image = write_image(tmp_path / "images" / "a.jpg", 80, 60)
    run_script("scripts/predict.py", [f"ckpt_path={ckpt}", f"source={image.parent}", f"hydra.run.dir={tmp_path / 'predict'}"])
    assert (tmp_path / "predict" / "predictions.json").is_file()

    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    export = tmp_path / "export"
    result = run_script("scripts/export.py", [f"ckpt_path={ckpt}", "nms=true", f"hydra.run.dir={export}"])
    info = json.loads((export / "best.json").read_text())
    assert info["outputs"] == ["detections"] and "onnxruntime matches PyTorch" in result.stdout
