"""detector.deploy.export: NMS in the ONNX graph gives the detections of the PyTorch post-processor."""

import numpy as np
import pytest
import torch

from detector.deploy.export import build_export_module, export_onnx, run_onnx, verify_onnx
from detector.deploy.load import load_detector
from detector.postprocess.postprocessors import Postprocessor

from ..conftest import TRAINED_IMG_SIZE as IMG_SIZE

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def test_nms_in_the_graph_matches_the_postprocessor(trained, tmp_path):
    model, _, _ = load_detector(trained["ckpt"], "cpu")
    # an untrained head gives many exactly equal scores (NMS then keeps an arbitrary one of equal boxes);
    # random weights in the class branch make every score distinct
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.head.named_parameters():
            if "cls" in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    postprocessor = Postprocessor(conf_threshold=0.05, iou_threshold=0.5, max_detections=20)
    module = build_export_module(model, postprocessor, nms=True)
    path = export_onnx(module, tmp_path / "nms.onnx", IMG_SIZE, batch_size=2)
    report = verify_onnx(path, module, IMG_SIZE, batch_size=3)  # raises on any difference
    assert "note" not in report and report["detections_max_abs_diff"] <= 1e-4 * IMG_SIZE

    images = torch.rand(3, 3, IMG_SIZE, IMG_SIZE, generator=torch.Generator().manual_seed(2))
    (detections,) = run_onnx(path, images.numpy())
    with torch.no_grad():
        expected = postprocessor(model(images))
    assert detections.shape[1] == 7 and len(detections) > 10
    for b, reference in enumerate(expected):
        mine = detections[detections[:, 0] == b]
        assert len(mine) == len(reference["scores"]) <= 20
        order = np.argsort(-mine[:, 5], kind="stable")
        np.testing.assert_allclose(mine[order, 5], reference["scores"].numpy(), atol=1e-5)
        np.testing.assert_allclose(mine[order, 1:5], reference["boxes"].numpy(), atol=1e-3)
        assert mine[order, 6].tolist() == reference["labels"].float().tolist()


def test_an_ssd_model_exports_with_its_softmax_scores(tmp_path):
    from detector.models.detectors.ssd import SSDCSP
    from detector.postprocess.postprocessors import SSDPostprocessor

    torch.manual_seed(0)
    model = SSDCSP(num_classes=3).eval()
    module = build_export_module(model, SSDPostprocessor(activation="softmax"))
    report = verify_onnx(export_onnx(module, tmp_path / "ssd.onnx", IMG_SIZE), module, IMG_SIZE, batch_size=2)
    assert report["boxes_shape"][2] == 4 and report["scores_shape"][2] == 3  # 3 classes, background dropped
    images = torch.rand(1, 3, IMG_SIZE, IMG_SIZE)
    with torch.no_grad():
        output = model(images)
        boxes, scores = module(images)
    # the head output's own decoding: the one the criterion and evaluate.py's post-processing use
    assert torch.equal(boxes, output.decode_boxes()) and torch.equal(scores, output.class_scores("softmax"))
    torch.testing.assert_close(scores.sum(-1), 1 - output.cls_logits.softmax(-1)[..., 0])


@pytest.mark.slow
def test_end_to_end_model_exports_its_nms_free_selection(tmp_path):
    from detector.models import YOLODetector

    torch.manual_seed(0)
    model = YOLODetector(3, "n", image_size=IMG_SIZE, end2end=True).eval()
    with torch.no_grad():
        for name, parameter in model.one2one_head.named_parameters():
            if "cls" in name:  # distinct scores, as after training
                parameter.add_(torch.randn(parameter.shape) * 0.1)
    # the top 10 scores of each image are distinct (lower down, symmetric cells of an untrained model tie exactly)
    postprocessor = Postprocessor(conf_threshold=0.05, max_detections=10)
    module = build_export_module(model, postprocessor, nms=True)
    path = export_onnx(module, tmp_path / "e2e.onnx", IMG_SIZE, batch_size=2)
    assert "note" not in verify_onnx(path, module, IMG_SIZE, batch_size=3)
    images = torch.rand(2, 3, IMG_SIZE, IMG_SIZE, generator=torch.Generator().manual_seed(2))
    (detections,) = run_onnx(path, images.numpy())
    with torch.no_grad():
        expected = postprocessor(model(images))
    assert len(detections) == sum(len(r["scores"]) for r in expected) > 0
    for b, reference in enumerate(expected):
        mine = detections[detections[:, 0] == b]
        np.testing.assert_allclose(mine[:, 5], reference["scores"].numpy(), atol=1e-5)
        np.testing.assert_allclose(mine[:, 1:5], reference["boxes"].numpy(), atol=1e-3)
        assert mine[:, 6].tolist() == reference["labels"].float().tolist()
    # without the selection: the one-to-one branch's boxes and scores; one2one=false: the one-to-many branch's
    with torch.no_grad():
        output = model(images)
        boxes, scores = build_export_module(model, postprocessor)(images)
        assert torch.equal(boxes, output.one2one.decode_boxes()) and torch.equal(scores, output.one2one.class_scores())
        boxes, _ = build_export_module(model, Postprocessor(one2one=False))(images)
        assert torch.equal(boxes, output.decode_boxes())
