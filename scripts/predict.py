"""Detect objects in an image or a folder of images with a trained checkpoint.

    python scripts/predict.py ckpt_path=logs/train/runs/<time>/checkpoints/best.ckpt source=path/to/images
    python scripts/predict.py ckpt_path=... source=img.jpg postprocess.conf_threshold=0.4 device=cpu

Writes to the run directory (logs/predict/runs/<time>, or hydra.run.dir=...): images/<relative path> with the
boxes, class names and scores drawn, and predictions.json (COCO results format: image_id, category_id,
bbox [x, y, w, h] in original-image pixels, score, plus file_name). Device auto: the first GPU, else the CPU.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import cv2
import hydra
import numpy as np
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PROJECT_ROOT", str(REPO))

from detector.data.dataset import image_ids_from_stems  # noqa: E402
from detector.deploy.load import load_detector  # noqa: E402
from detector.deploy.predict import find_images, predict_files  # noqa: E402
from detector.evaluation.coco import to_coco_results  # noqa: E402


def class_color(label: int) -> tuple[int, int, int]:
    """A fixed, distinct BGR colour per class."""
    hue = (label * 47) % 180
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 230]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def draw_detections(image_rgb: np.ndarray, detections: dict, class_names: list[str],
                    line_width: int | None = None) -> np.ndarray:
    """BGR image (for cv2.imwrite) with one box and a 'name score' label per detection."""
    image = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    line_width = line_width or max(1, round(max(image.shape[:2]) / 400))
    font_scale = max(0.35, line_width / 3)
    boxes, scores, labels = detections["boxes"].tolist(), detections["scores"].tolist(), detections["labels"].tolist()
    for box, score, label in zip(boxes, scores, labels):
        x1, y1, x2, y2 = (round(v) for v in box)
        color = class_color(int(label))
        cv2.rectangle(image, (x1, y1), (x2, y2), color, line_width, cv2.LINE_AA)
        text = f"{class_names[int(label)]} {score:.2f}"
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(1, line_width // 2))
        top = y1 - th - baseline - 2 if y1 - th - baseline - 2 >= 0 else y1  # above the box, else inside it
        cv2.rectangle(image, (x1, top), (x1 + tw + 2, top + th + baseline + 2), color, -1)
        cv2.putText(image, text, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                    max(1, line_width // 2), cv2.LINE_AA)
    return image


@hydra.main(version_base="1.3", config_path="../configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    output_dir = Path(cfg.paths.output_dir)
    model, postprocessor, meta = load_detector(cfg.ckpt_path, cfg.device, cfg.weights, **cfg.postprocess)
    img_size = int(cfg.img_size or meta["img_size"])
    source = Path(cfg.source)
    paths = find_images(source)
    if not paths:
        raise FileNotFoundError(f"no images in {source}")
    print(f"{len(paths)} images, {img_size} px, on {meta['device']}; postprocess {meta['postprocess']}")
    image_ids = dict(zip(paths, image_ids_from_stems(paths)))
    results, start = [], time.perf_counter()
    for path, image, detections in predict_files(model, postprocessor, paths, img_size, int(cfg.batch_size)):
        relative = path.relative_to(source) if source.is_dir() else Path(path.name)
        results += to_coco_results(image_ids[path], detections, meta["category_ids"], file_name=str(relative))
        if cfg.save_images:
            target = output_dir / "images" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(target), draw_detections(image, detections, meta["class_names"], cfg.line_width)):
                raise OSError(f"could not write {target}")
        print(f"{relative}: {len(detections['scores'])} detections")
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "predictions.json").write_text(json.dumps(results))
    seconds = time.perf_counter() - start
    print(f"{len(results)} detections in {len(paths)} images ({seconds:.1f} s); results in {output_dir}")


if __name__ == "__main__":
    main()
