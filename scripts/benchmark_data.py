"""Throughput of the training data pipeline (decode + mosaic + augmentations + letterbox) on COCO128.

    python scripts/benchmark_data.py [--sizes 320 640] [--images 128] [--workers 0] [--cache] [data.root=...]

Uses the `data=coco128` config (its train reader and train_augmentations; any `data.key=value` override
applies) and prints images/second for each image size, with mosaic off (mosaic_prob=0) and on (1.0).
--workers 0 (default) times one process (= per-core throughput); N > 0 times a DataLoader with N workers
and batch size 16 (collate included). --cache decodes the images into RAM first (not timed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PROJECT_ROOT", str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    parser.add_argument("--images", type=int, default=128, help="samples timed per setting")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--cache", action="store_true")
    args, overrides = parser.parse_known_args()

    import cv2
    import hydra
    import torch
    from hydra import compose, initialize_config_dir
    from torch.utils.data import DataLoader

    from detector.data.checks import check_records
    from detector.data.dataset import DetectionDataset, collate
    from detector.runner import register_resolvers

    cv2.setNumThreads(1)  # what a DataLoader worker gets
    torch.set_num_threads(1)
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["data=coco128", *overrides])
    records, names, category_ids = hydra.utils.instantiate(cfg.data.train_reader)()
    records, _ = check_records(records, names, name="train")
    augmentations = hydra.utils.instantiate(cfg.data.train_augmentations)
    print(f"COCO128 train ({len(records)} images, {cfg.data.format} labels), augmentations: "
          f"{', '.join(type(a).__name__ for a in augmentations)}; workers={args.workers}, cache={args.cache}")
    print(f"{'size':>5} {'mosaic':>7} {'images/s':>9} {'ms/image':>9}")
    for size in args.sizes:
        for mosaic in (0.0, 1.0):
            dataset = DetectionDataset(records, names, size, augmentations, category_ids, cfg.data.min_visibility,
                                       cfg.data.min_area, mosaic_prob=mosaic, cache_images=args.cache)
            n = args.images
            if args.workers == 0:
                for i in range(8):  # warm-up
                    dataset[i]
                start = time.perf_counter()
                for i in range(n):
                    dataset[i % len(dataset)]
            else:
                loader = DataLoader(dataset, batch_size=16, shuffle=True, num_workers=args.workers, collate_fn=collate)
                iterator = iter(loader)
                next(iterator)  # workers started
                start, n = time.perf_counter(), 0
                for batch in iterator:
                    n += len(batch["images"])
            elapsed = time.perf_counter() - start
            print(f"{size:>5} {'on' if mosaic else 'off':>7} {n / elapsed:>9.1f} {1000 * elapsed / n:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
