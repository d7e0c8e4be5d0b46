"""Export the inference model (network + box decoding, optionally + NMS) to ONNX, and check it with onnxruntime.

Input  `images`: float32 (B, 3, S, S), RGB scaled to 0..1, letterboxed like `detector.deploy.predict.letterbox_image`
(longest side S, grey padding bottom/right); the batch axis B is dynamic.
Outputs without NMS: `boxes` (B, A, 4) xyxy in input pixels and `scores` (B, A, C) class probabilities, decoded by
the head output's own `decode_boxes` / `class_scores` (the decoding the criterion and the evaluation use).
Outputs with NMS: `detections` (N, 7) = [batch index, x1, y1, x2, y2, score, class] for all images together,
class-aware NMS over the (anchor, class) pairs with score > conf_threshold, at most max_detections per image.
Map boxes back to the original image with `detector.data.transforms.unletterbox_boxes`.
End-to-end models (`model.end2end=true`): the outputs are the one-to-one branch's, and `nms=true` puts its NMS-free
selection into the graph instead of NMS (the `max_detections` best (anchor, class) pairs with score > conf_threshold,
`detector.postprocess.postprocessors.top_detections`), in the same `detections` layout.

The TorchScript-based exporter (torch.onnx.export(dynamo=False)) is used by default: torchvision's `nms` has an
ONNX mapping there (NonMaxSuppression) and the data-dependent shapes of the NMS graph export; the newer
torch.export-based exporter (dynamo=True, needs `onnxscript`) is available for the model without NMS.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torchvision.ops import nms as torchvision_nms

from detector.deploy.load import load_detector
from detector.postprocess.postprocessors import detecting_output, top_detections

INPUT_NAME = "images"
# export formats of `export_checkpoint` (configs/export.yaml `format`)
FORMATS = ("onnx",)


class InferenceModel(nn.Module):
    """images (B, 3, S, S) float 0..1 -> boxes (B, A, 4) input pixels, scores (B, A, C) (`activation` of the
    class logits, as trained); of the one-to-one branch when the model has one, unless `one2one` is False."""

    def __init__(self, model: nn.Module, activation: str = "sigmoid", one2one: bool | None = None) -> None:
        super().__init__()
        self.model, self.activation, self.one2one = model, activation, one2one

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output, _ = detecting_output(self.model(images), self.one2one)
        return output.decode_boxes(), output.class_scores(self.activation)


class InferenceModelNMS(InferenceModel):
    """images -> detections (N, 7) [batch index, x1, y1, x2, y2, score, class], in decreasing score.
    The same selection as `Postprocessor(nms="class_aware")` (up to the order of equal scores), without its
    `max_candidates` cap."""

    def __init__(self, model: nn.Module, activation: str = "sigmoid", conf_threshold: float = 0.25,
                 iou_threshold: float = 0.7, max_detections: int = 300, one2one: bool | None = None) -> None:
        super().__init__(model, activation, one2one)
        self.conf_threshold, self.iou_threshold, self.max_detections = conf_threshold, iou_threshold, max_detections

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        output, nms_free = detecting_output(self.model(images), self.one2one)
        boxes, scores = output.decode_boxes(), output.class_scores(self.activation)
        if nms_free:
            return self.nms_free(boxes, scores)
        batch, _, num_classes = scores.shape
        candidates = (scores > self.conf_threshold).nonzero()
        image, anchor, label = candidates[:, 0], candidates[:, 1], candidates[:, 2]
        candidate_boxes, candidate_scores = boxes[image, anchor], scores[image, anchor, label]
        # one NMS for every (image, class) group: shift each group's boxes apart (torchvision's batched_nms
        # "coordinate trick"), so that boxes of different groups never overlap
        offsets = (image * num_classes + label).to(candidate_boxes) * (boxes.max() + 1)
        keep = torchvision_nms(candidate_boxes + offsets[:, None], candidate_scores, self.iou_threshold)
        image, label = image[keep], label[keep]
        candidate_boxes, candidate_scores = candidate_boxes[keep], candidate_scores[keep]
        # rank of each detection within its image (keep is in decreasing score): a running count per image
        one_hot = (image[:, None] == torch.arange(batch, device=image.device)[None]).long()
        rank = (one_hot.cumsum(0) * one_hot).sum(1) - 1
        selected = rank < self.max_detections
        return torch.cat((image[selected, None].float(), candidate_boxes[selected], candidate_scores[selected, None],
                          label[selected, None].float()), 1)

    def nms_free(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The one-to-one branch's selection (`top_detections`, no NMS) in the same (N, 7) layout."""
        boxes, scores, labels = top_detections(boxes, scores, self.max_detections)
        image = torch.zeros_like(scores) + torch.arange(boxes.shape[0], device=boxes.device)[:, None]  # traced batch size
        rows = torch.cat((image[..., None], boxes, scores[..., None], labels[..., None].float()), -1)
        return rows[scores > self.conf_threshold]


def build_export_module(model: nn.Module, postprocessor, nms: bool = False, **nms_settings) -> InferenceModel:
    """The module to export, scoring with the postprocessor's activation; `nms_settings` (conf_threshold,
    iou_threshold, max_detections; None = the postprocessor's) apply with nms=True."""
    one2one = getattr(postprocessor, "one2one", None)
    if not nms:
        return InferenceModel(model, postprocessor.activation, one2one).eval()
    settings = {k: getattr(postprocessor, k) for k in ("conf_threshold", "iou_threshold", "max_detections")}
    settings.update({k: v for k, v in nms_settings.items() if v is not None})
    return InferenceModelNMS(model, postprocessor.activation, one2one=one2one, **settings).eval()


def output_names(module: nn.Module) -> list[str]:
    return ["detections"] if isinstance(module, InferenceModelNMS) else ["boxes", "scores"]


def export_onnx(module: InferenceModel, path: str | Path, img_size: int, batch_size: int = 1,
                dynamic_batch: bool = True, opset: int = 17, dynamo: bool = False) -> Path:
    """Write `module` (from `build_export_module`) to `path` as ONNX; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = next(module.parameters()).device
    example = torch.rand(batch_size, 3, img_size, img_size, device=device)
    names = output_names(module)
    if dynamo and isinstance(module, InferenceModelNMS):
        raise ValueError("the NMS graph exports with the TorchScript exporter only (dynamo=false)")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=4096) if dynamic_batch else None
            torch.onnx.export(module, (example,), str(path), input_names=[INPUT_NAME], output_names=names,
                              dynamic_shapes={INPUT_NAME: {0: batch}} if batch is not None else None,
                              opset_version=max(opset, 18), dynamo=True, external_data=False)
        else:
            axes = {INPUT_NAME: {0: "batch"}}
            if not isinstance(module, InferenceModelNMS):
                axes.update({"boxes": {0: "batch"}, "scores": {0: "batch"}})
            else:
                axes["detections"] = {0: "num_detections"}
            torch.onnx.export(module, (example,), str(path), input_names=[INPUT_NAME], output_names=names,
                              dynamic_axes=axes if dynamic_batch else None, opset_version=opset, dynamo=False)
    return path


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def run_onnx(path: str | Path, images: np.ndarray) -> list[np.ndarray]:
    """Run the exported model with onnxruntime on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: images.astype(np.float32)})


def _sorted_detections(detections: np.ndarray) -> np.ndarray:
    """Rows ordered by (batch index, class, score, box), so that equal-score orders do not matter."""
    return detections[np.lexsort((*detections[:, 4:0:-1].T, -detections[:, 5], detections[:, 6], detections[:, 0]))]


def _has_score_ties(module: InferenceModelNMS, images: torch.Tensor) -> bool:
    """Whether two NMS candidates of the same image and class have exactly the same score."""
    with torch.no_grad():
        _, scores = InferenceModel.forward(module, images)
    for image_scores in scores.transpose(1, 2):  # (C, A) per image
        for class_scores in image_scores:
            candidates = class_scores[class_scores > module.conf_threshold]
            if candidates.unique().numel() < candidates.numel():
                return True
    return False


def verify_onnx(path: str | Path, module: InferenceModel, img_size: int, batch_size: int = 2, atol: float = 1e-4,
                rtol: float = 1e-4, seed: int = 0) -> dict:
    """Compare onnxruntime with PyTorch on random images of `batch_size` (another batch size than exported
    exercises the dynamic axis); raises AssertionError on a mismatch, returns the largest differences."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, img_size, img_size, generator=generator)
    device = next(module.parameters()).device
    with torch.no_grad():
        expected = module(images.to(device))
    expected = [t.cpu().numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
    actual = run_onnx(path, images.numpy())
    report = {"batch_size": batch_size}
    for name, want, got in zip(output_names(module), expected, actual):
        if name == "detections":
            want, got = _sorted_detections(want), _sorted_detections(got)
            try:
                assert want.shape == got.shape, f"detections: PyTorch {want.shape} vs ONNX {got.shape}"
                np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)
            except AssertionError as error:
                if not _has_score_ties(module, images.to(device)):
                    raise
                # equal scores (typical of an untrained model): which of two equal-score boxes NMS keeps depends on
                # the sort order, which differs between implementations, so the results may legitimately differ
                first_line = str(error).strip().splitlines()[0]
                report["note"] = f"not compared: equal candidate scores make NMS results order-dependent ({first_line})"
                continue
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)
        report[f"{name}_shape"] = list(got.shape)
        report[f"{name}_max_abs_diff"] = float(np.abs(got - want).max()) if got.size else 0.0
    return report


def export_checkpoint(cfg: DictConfig) -> None:
    """Export `cfg.ckpt_path` as configs/export.yaml describes (`python scripts/export.py` / `detector-export`): the
    model file, its metadata in <model>.json, and the onnxruntime check when onnxruntime is installed."""
    if cfg.format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {cfg.format!r}")
    output_dir = Path(cfg.paths.output_dir)
    settings = dict(cfg.postprocess)
    model, postprocessor, meta = load_detector(cfg.ckpt_path, cfg.device, cfg.weights, one2one=settings.pop("one2one", None))
    img_size = int(cfg.img_size or meta["img_size"])
    module = build_export_module(model, postprocessor, nms=cfg.nms, **settings)
    path = Path(cfg.output) if cfg.output else output_dir / f"{Path(cfg.ckpt_path).stem}.onnx"
    export_onnx(module, path, img_size, batch_size=int(cfg.batch_size), dynamic_batch=cfg.dynamic_batch,
                opset=int(cfg.opset), dynamo=cfg.dynamo)
    info = {
        "onnx": str(path), "ckpt_path": str(cfg.ckpt_path), "weights": meta["weights"], "img_size": img_size,
        "input": {"name": "images", "dtype": "float32", "range": "0..1 RGB, letterboxed",
                  "shape": ["batch" if cfg.dynamic_batch else int(cfg.batch_size), 3, img_size, img_size]},
        "outputs": output_names(module), "class_names": meta["class_names"], "category_ids": meta["category_ids"],
        "nms": bool(cfg.nms),
    }
    if cfg.nms:
        info["postprocess"] = {k: getattr(module, k) for k in ("conf_threshold", "iou_threshold", "max_detections")}
    if cfg.verify and onnxruntime_available():
        info["verify"] = verify_onnx(path, module, img_size, batch_size=int(cfg.batch_size) + 1)
        print(f"onnxruntime vs PyTorch: {info['verify']}" if "note" in info["verify"]
              else f"onnxruntime matches PyTorch: {info['verify']}")
    elif cfg.verify:
        print("onnxruntime is not installed (pip install -e .[export]): not verified")
    output_dir.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(info, indent=2))
    print(f"Exported {path} ({path.stat().st_size / 1e6:.1f} MB); metadata in {path.with_suffix('.json')}")
