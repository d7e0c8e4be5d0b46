"""Export a checkpoint's inference model (network + box decoding, optionally + NMS) to ONNX.

    python scripts/export.py ckpt_path=logs/train/runs/<time>/checkpoints/best.ckpt format=onnx
    python scripts/export.py ckpt_path=... nms=true postprocess.conf_threshold=0.3 output=model_nms.onnx

Input `images` float32 (B, 3, S, S) RGB 0..1, letterboxed (S = the training image size unless img_size=...),
dynamic batch. Outputs `boxes` (B, A, 4) xyxy input pixels and `scores` (B, A, C); with nms=true `detections`
(N, 7) [batch index, x1, y1, x2, y2, score, class]. With onnxruntime installed (pip install -e .[export]) the
ONNX outputs are compared with PyTorch's (verify=true). See detector/export.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PROJECT_ROOT", str(REPO))

from detector.deploy.export import (  # noqa: E402
    build_export_module,
    export_onnx,
    onnxruntime_available,
    output_names,
    verify_onnx,
)
from detector.deploy.load import load_detector  # noqa: E402

FORMATS = ("onnx",)


@hydra.main(version_base="1.3", config_path="../configs", config_name="export")
def main(cfg: DictConfig) -> None:
    if cfg.format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {cfg.format!r}")
    output_dir = Path(cfg.paths.output_dir)
    model, postprocessor, meta = load_detector(cfg.ckpt_path, cfg.device, cfg.weights)
    img_size = int(cfg.img_size or meta["img_size"])
    module = build_export_module(model, postprocessor, nms=cfg.nms, **cfg.postprocess)
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


if __name__ == "__main__":
    main()
