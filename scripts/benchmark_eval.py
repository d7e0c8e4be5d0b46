"""Speed of the COCO evaluator backends (pycocotools vs faster-coco-eval) on the same detections, and a check
that they give the same 12 stats.

    python scripts/benchmark_eval.py                       # COCO128 val ground truth, 300 detections per image
    python scripts/benchmark_eval.py --gt path/to/instances_val2017.json --per-image 100 --repeats 5
    python scripts/benchmark_eval.py --from-detections logs/evaluate/runs/<time>/detections.json --gt ...

Detections are random but realistic (default): per image, jittered copies of each GT box (some with a wrong
class) plus random boxes, up to --per-image, random scores; or real ones from evaluate.py's detections.json.
Each backend runs loadRes + evaluate + accumulate + summarize --repeats times; the median time is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detector.evaluation.backends import BACKENDS, faster_coco_eval_available, run_coco_eval, stats_dict  # noqa: E402


def default_gt() -> Path:
    shared = Path(os.environ.get("DETECTOR_SHARED_DATA", REPO.parent / "shared" / "data"))
    return shared / "coco128" / "annotations" / "instances_val2017.json"


def random_detections(dataset: dict, per_image: int, seed: int = 0) -> list[dict]:
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
            for _ in range(3):  # three jittered copies: one good, two worse, some with a wrong class
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", type=Path, default=None, help="COCO ground-truth json (default: COCO128 val)")
    parser.add_argument("--from-detections", type=Path, default=None,
                        help="COCO results json instead of random detections")
    parser.add_argument("--per-image", type=int, default=300, help="random detections per image (default 300)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="write the result as json here")
    args = parser.parse_args(argv)

    from pycocotools.coco import COCO

    gt_path = args.gt or default_gt()
    if not gt_path.is_file():
        raise SystemExit(f"ground truth not found: {gt_path} (pass --gt)")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
    detections = (json.loads(args.from_detections.read_text()) if args.from_detections
                  else random_detections(coco_gt.dataset, args.per_image, args.seed))
    image_ids = coco_gt.getImgIds()
    backends = [b for b in BACKENDS if b == "pycocotools" or faster_coco_eval_available()]
    result = {"gt": str(gt_path), "images": len(image_ids), "gt_boxes": len(coco_gt.dataset["annotations"]),
              "detections": len(detections), "repeats": args.repeats, "seconds": {}, "stats": {}}
    print(f"{len(image_ids)} images, {result['gt_boxes']} GT boxes, {len(detections)} detections")
    for backend in backends:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            evaluator = run_coco_eval(coco_gt, detections, image_ids, backend)
            times.append(time.perf_counter() - start)
        result["seconds"][backend] = statistics.median(times)
        result["stats"][backend] = stats_dict(evaluator)
        print(f"{backend:>17}: {statistics.median(times):.3f} s (median of {args.repeats}; all: "
              f"{', '.join(f'{t:.3f}' for t in times)})  mAP {result['stats'][backend]['map']:.4f}")
    if len(backends) == 2:
        reference, fast = result["stats"]["pycocotools"], result["stats"]["faster_coco_eval"]
        result["max_stat_difference"] = max(abs(reference[k] - fast[k]) for k in reference)
        result["speedup"] = result["seconds"]["pycocotools"] / result["seconds"]["faster_coco_eval"]
        print(f"faster_coco_eval is {result['speedup']:.1f}x faster; largest difference of the 12 stats "
              f"{result['max_stat_difference']:.2e}")
    else:
        print("faster-coco-eval is not installed (pip install -e .[fast]): pycocotools only")
    if args.output:
        args.output.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
