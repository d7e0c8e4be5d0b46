"""Export a checkpoint's inference model (network + box decoding, optionally + NMS) to ONNX.

    python scripts/export.py ckpt_path=logs/train/runs/<time>/checkpoints/best.ckpt format=onnx
    python scripts/export.py ckpt_path=... nms=true postprocess.conf_threshold=0.3 output=model_nms.onnx

Input `images` float32 (B, 3, S, S) RGB 0..1, letterboxed (S = the training image size unless img_size=...),
dynamic batch. Outputs `boxes` (B, A, 4) xyxy input pixels and `scores` (B, A, C); with nms=true `detections`
(N, 7) [batch index, x1, y1, x2, y2, score, class]. With onnxruntime installed (pip install -e .[export]) the
ONNX outputs are compared with PyTorch's (verify=true). See detector/deploy/export.py.

The same as `detector-export` (detector.cli.export).
"""

import os
from pathlib import Path

from detector.cli import export

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))  # this checkout's configs/, data/, logs/

if __name__ == "__main__":
    export()
