"""eval: COCO evaluation (loadRes + evaluate + accumulate + summarize) of random detections on COCO128 val:
faster-coco-eval, against pycocotools, with the largest difference of the 12 stats."""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import numpy as np

from detector.evaluation.coco import BACKENDS, faster_coco_eval_available, run_coco_eval, stats_dict

from .harness import Case, timed

NAME = "eval"


def random_detections(dataset: dict, per_image: int, seed: int = 0) -> list[dict]:
    """Realistic random detections: per image, three jittered copies of each GT box (20% with a random class),
    then random boxes up to `per_image`, random scores."""
    rng = np.random.default_rng(seed)
    category_ids = [c["id"] for c in dataset["categories"]]
    by_image: dict[int, list] = {image["id"]: [] for image in dataset["images"]}
    for ann in dataset["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    sizes = {image["id"]: (image["width"], image["height"]) for image in dataset["images"]}
    detections = []
    for image_id, anns in by_image.items():
        width, height = sizes.get(image_id, (640, 480))
        boxes, labels = [], []
        for ann in anns:
            x, y, w, h = ann["bbox"]
            for _ in range(3):
                jitter = rng.normal(0, 0.1, 4) * [w, h, w, h]
                boxes.append([x + jitter[0], y + jitter[1], max(w + jitter[2], 1), max(h + jitter[3], 1)])
                labels.append(ann["category_id"] if rng.uniform() < 0.8 else int(rng.choice(category_ids)))
        while len(boxes) < per_image:
            w, h = rng.uniform(4, width / 2), rng.uniform(4, height / 2)
            boxes.append([rng.uniform(0, width - w), rng.uniform(0, height - h), w, h])
            labels.append(int(rng.choice(category_ids)))
        scores = rng.uniform(0.001, 1, len(boxes))
        for box, label, score in list(zip(boxes, labels, scores))[:per_image]:
            detections.append({"image_id": image_id, "category_id": int(label),
                               "bbox": [round(float(v), 2) for v in box], "score": float(score)})
    return detections


def eval_case(root: str, backend: str, per_image: int, repeats: int, warmup: int) -> dict:
    """loadRes + evaluate + accumulate + summarize of `per_image` random detections per COCO128 val image."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(Path(root) / "annotations" / "instances_val2017.json"))
    detections = random_detections(coco_gt.dataset, per_image)
    image_ids = coco_gt.getImgIds()
    evaluated = []
    result = timed(lambda: evaluated.append(run_coco_eval(coco_gt, detections, image_ids, backend)), repeats, warmup)
    result.update(images=len(image_ids), detections=len(detections), stats=stats_dict(evaluated[-1]))
    return result



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--per-image", type=int, default=300, help="random detections per image (eval)")


def cases(args: argparse.Namespace) -> list[Case]:
    return [Case(backend, eval_case, dict(root=str(args.coco128), backend=backend, per_image=args.per_image),
                 None if backend == "pycocotools" else "pycocotools") for backend in BACKENDS]


def skip(case: Case, args: argparse.Namespace) -> str | None:
    if not (args.coco128 / "annotations" / "instances_val2017.json").is_file():
        return f"no COCO128 val annotations at {args.coco128}/annotations (pass --coco128 or set DETECTOR_SHARED_DATA)"
    if case.kwargs["backend"] == "faster_coco_eval" and not faster_coco_eval_available():
        return 'faster-coco-eval is not installed (pip install -e ".[fast]")'
    return None
