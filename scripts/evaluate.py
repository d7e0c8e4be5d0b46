"""Evaluate a checkpoint: COCO stats, per-class AP table, VOC07 AP50, PR curves and confusion matrix.

    python scripts/evaluate.py ckpt_path=logs/train/runs/<time>/checkpoints/best.ckpt
    python scripts/evaluate.py ckpt_path=... data=coco128 data.format=coco split=val evaluator=faster_coco_eval
    python scripts/evaluate.py ckpt_path=... postprocess.nms=diou postprocess.iou_threshold=0.6

Without `data=...` the data the checkpoint was trained on is used. Everything is written to the run directory
(logs/evaluate/runs/<time>, or hydra.run.dir=...): evaluation.json, per_class.md/.csv, pr_curve_*.png,
confusion_matrix.png, detections.json. See configs/evaluate.yaml for every option.

The same as `detector-evaluate` (detector.cli.evaluate).
"""

import os
from pathlib import Path

from detector.cli import evaluate

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))  # this checkout's configs/, data/, logs/

if __name__ == "__main__":
    evaluate()
