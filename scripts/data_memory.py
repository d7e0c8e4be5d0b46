"""Start-up time and memory of the data side (docs/benchmark.md, "Labels and image cache").

    python scripts/data_memory.py labels [--images 118287 --boxes 860001] [--folder F] [--no-tracemalloc]
    python scripts/data_memory.py cache [--images 256 --size 640 --workers 2]   # the RAM image cache in workers

labels: writes a COCO json with that many images and boxes and an empty file per image (no pixels: with
verify_images=false only their existence is checked) into a temporary folder (or `--folder`, reused when it has them),
then times each start-up stage as `DetectionDataModule.setup` runs it (json parse + records, the start-up check, the
dataset; wall and CPU seconds) and reports the resident memory after start-up and the Python memory the records
keep (tracemalloc, in a second pass).
cache: caches synthetic images with data.cache_images=ram, runs one epoch of a DataLoader with persistent workers,
and reports each worker's private and proportional memory (Linux /proc/<pid>/smaps_rollup): a worker that copied
the cache would hold it privately; then the samples served per second in one process without a cache, from RAM and
from the .npy files (the disk cache is written on its first use, before timing).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

MB = 1024**2


def write_coco(folder: Path, images: int, boxes: int, seed: int = 0) -> tuple[Path, Path]:
    """A COCO json with `images` entries (COCO's common sizes) and `boxes` annotations spread over them, and an empty
    file per image; returns (image folder, json path)."""
    rng = np.random.default_rng(seed)
    image_dir = folder / "train2017"
    image_dir.mkdir(parents=True)
    sizes = np.array([(640, 480), (480, 640), (640, 427), (427, 640), (500, 375)])[rng.integers(0, 5, images)]
    entries = [{"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": int(w), "height": int(h)}
               for i, (w, h) in enumerate(sizes.tolist())]
    for entry in entries:
        (image_dir / entry["file_name"]).touch()
    owner = rng.integers(0, images, boxes)
    wh = rng.uniform(0.02, 0.5, (boxes, 2)) * sizes[owner]
    xy = rng.uniform(0, 1, (boxes, 2)) * (sizes[owner] - wh)
    annotations = [
        {"id": k + 1, "image_id": int(owner[k]) + 1, "category_id": int(c), "bbox": [round(v, 2) for v in (*p, *s)],
         "area": float(s[0] * s[1]), "iscrowd": 0}
        for k, (p, s, c) in enumerate(zip(xy.tolist(), wh.tolist(), rng.integers(1, 81, boxes).tolist()))
    ]
    path = folder / "instances_train2017.json"
    path.write_text(json.dumps({"images": entries, "annotations": annotations,
                                "categories": [{"id": c, "name": f"class{c}"} for c in range(1, 81)]}))
    return image_dir, path


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def labels(args: argparse.Namespace) -> None:
    from detector.data.checks import check_records
    from detector.data.dataset import DetectionDataset
    from detector.data.formats.coco import read_coco

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder or tmp)
        path, image_dir = folder / "instances_train2017.json", folder / "train2017"
        if not path.is_file():
            start = time.perf_counter()
            write_coco(folder, args.images, args.boxes)
            print(f"written in {time.perf_counter() - start:.1f} s")
        print(f"COCO json: {path.stat().st_size / MB:.0f} MB")
        base = rss_mb()
        times = {}
        clock = time.perf_counter(), time.process_time()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter(), time.process_time()
            times[stage] = (now[0] - clock[0], now[1] - clock[1])
            clock = now

        records, names, category_ids = read_coco(image_dir, path)
        lap("read_coco (json parse + records)")
        records, report = check_records(records, names, "train", verify_images=False)
        lap("check_records (verify_images=false)")
        DetectionDataset(records, names, 640, category_ids=category_ids)
        lap("DetectionDataset")
        for stage, (wall, cpu) in times.items():
            print(f"{stage}: {wall:.1f} s wall, {cpu:.1f} s CPU")
        print(f"start-up total: {sum(t[0] for t in times.values()):.1f} s wall, {sum(t[1] for t in times.values()):.1f} s "
              f"CPU; {len(records)} images, {report.boxes} boxes kept")
        gc.collect()
        print(f"resident memory: +{rss_mb() - base:.0f} MB after start-up")
        if args.no_tracemalloc:
            return
        del records, report
        gc.collect()
        tracemalloc.start()
        records, names, _ = read_coco(image_dir, path)
        records, _ = check_records(records, names, "train", verify_images=False)
        gc.collect()
        kept, peak = tracemalloc.get_traced_memory()
        print(f"records: {kept / MB:.0f} MB kept ({kept / len(records):.0f} bytes per image), {peak / MB:.0f} MB peak "
              "while reading (tracemalloc)")


def smaps(pid: int) -> dict[str, float]:
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                values[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return values


def cache(args: argparse.Namespace) -> None:
    import cv2
    from torch.utils.data import DataLoader, get_worker_info

    from detector.data.dataset import DetectionDataset, Record, collate

    class Reporting(DetectionDataset):
        """Puts each worker's memory (after serving its samples) into the sample."""

        def __getitem__(self, key):
            sample = super().__getitem__(key)
            if get_worker_info() is not None:
                memory = smaps(os.getpid())
                sample["image_id"] = (os.getpid(), memory["Private_Clean"] + memory["Private_Dirty"], memory["Pss"])
            return sample

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        records = []
        for i in range(args.images):
            path = Path(tmp) / f"{i}.jpg"
            cv2.imwrite(str(path), rng.integers(0, 255, (480, 640, 3), np.uint8))
            records.append(Record(path, i + 1, 640, 480, np.array([[10, 10, 100, 100]], np.float32), np.zeros(1, np.int64)))
        dataset = Reporting(records, ["a"], args.size, cache_images="ram")
        print(f"RAM cache: {dataset.cache_bytes / MB:.0f} MB for {args.images} images at {args.size} px; "
              f"main process: {rss_mb():.0f} MB resident")
        loader = DataLoader(dataset, batch_size=8, num_workers=args.workers, persistent_workers=True, collate_fn=collate)
        for epoch in range(2):
            last: dict[int, tuple[float, float]] = {}
            for batch in loader:
                for pid, private, pss in batch["image_ids"]:
                    last[pid] = (private, pss)
            for pid, (private, pss) in sorted(last.items()):
                print(f"epoch {epoch}: worker {pid}: {private:.0f} MB private, {pss:.0f} MB proportional (PSS)")
        del loader
        for mode in ("false", "ram", "disk", "false", "ram", "disk"):  # serving speed in this process, alternated
            served = DetectionDataset(records, ["a"], args.size, cache_images=mode, cache_dir=Path(tmp) / "cache")
            start = time.perf_counter()
            for index in range(len(served)):
                served[index]
            print(f"cache_images={mode}: {len(served) / (time.perf_counter() - start):.0f} img/s served (one process, "
                  "letterbox only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    label_parser = sub.add_parser("labels")
    label_parser.add_argument("--images", type=int, default=118287)
    label_parser.add_argument("--boxes", type=int, default=860001)
    label_parser.add_argument("--folder", help="where to write (or find) the json and the empty image files")
    label_parser.add_argument("--no-tracemalloc", action="store_true", help="skip the second, slower pass")
    cache_parser = sub.add_parser("cache")
    cache_parser.add_argument("--images", type=int, default=256)
    cache_parser.add_argument("--size", type=int, default=640)
    cache_parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    (labels if args.what == "labels" else cache)(args)


if __name__ == "__main__":
    main()
