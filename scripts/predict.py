"""Detect objects in an image or a folder of images with a trained checkpoint.

    python scripts/predict.py ckpt_path=logs/train/runs/<time>/checkpoints/best.ckpt source=path/to/images
    python scripts/predict.py ckpt_path=... source=img.jpg postprocess.conf_threshold=0.4 device=cpu

Writes to the run directory (logs/predict/runs/<time>, or hydra.run.dir=...): images/<relative path> with the
boxes, class names and scores drawn, and predictions.json (COCO results format: image_id, category_id,
bbox [x, y, w, h] in original-image pixels, score, plus file_name). Device auto: the first GPU, else the CPU.

The same as `detector-predict` (detector.cli.predict).
"""

import os
from pathlib import Path

from detector.cli import predict

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))  # this checkout's configs/, data/, logs/

if __name__ == "__main__":
    predict()
