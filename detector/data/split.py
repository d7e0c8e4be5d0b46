"""A seeded, reproducible train/val split of a dataset that has none, stratified by class.

Each image is put in the stratum of its rarest class (the class, among its boxes, that the fewest images of the
dataset hold; background images form a stratum of their own). The validation set takes round(N * val_fraction)
images (at least 1, at most N - 1): first one image of every stratum of at least 2 images, the smallest strata
first, while that total allows (so that a rare class is validated whenever it can be), then one at a time to the
stratum furthest below its share, total * size / N, keeping an image of every stratum in training while any
stratum has room; inside a stratum the images are shuffled by `seed`. The result depends only on
the image paths, the labels, `val_fraction` and `seed`, never on the order in which a reader listed the images.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detector.atomic import write_text
from detector.data.dataset import Record

DEFAULT_VAL_FRACTION = 0.2


def rarest_class(record: Record, images_per_class: Counter) -> int:
    """The label of `record` held by the fewest images (ties: the smaller label); -1 for a background image."""
    labels = set(record.labels.tolist())
    return min(labels, key=lambda label: (images_per_class[label], label)) if labels else -1


def holdout_split(records: Sequence[Record], val_fraction: float, seed: int = 0) -> tuple[list[Record], list[Record]]:
    """(train, val) records: round(N * val_fraction) images to val (at least 1, at most N - 1), stratified by each
    image's rarest class. Both parts keep the reader's order."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"data.val_fraction={val_fraction}: expected a fraction strictly between 0 and 1")
    if len(records) < 2:
        raise ValueError(f"a train/val split needs at least 2 images, the dataset has {len(records)}")
    order = sorted(range(len(records)), key=lambda i: str(records[i].image_path))
    images_per_class = Counter(label for r in records for label in set(r.labels.tolist()))
    strata: dict[int, list[int]] = {}
    for i in order:
        strata.setdefault(rarest_class(records[i], images_per_class), []).append(i)
    total = min(max(round(len(records) * val_fraction), 1), len(records) - 1)
    keys = sorted(strata)
    sizes = np.array([len(strata[k]) for k in keys])
    counts = np.zeros(len(keys), np.int64)
    for j in np.argsort(sizes, kind="stable"):
        if sizes[j] >= 2 and counts.sum() < total:
            counts[j] = 1
    share, cap = sizes * total / len(records), np.where(sizes >= 2, sizes - 1, sizes)
    while counts.sum() < total:
        room = counts < cap if (counts < cap).any() else counts < sizes
        counts[int(np.argmax(np.where(room, share - counts, -np.inf)))] += 1
    rng = np.random.default_rng(seed)
    val = set()
    for key, count in zip(keys, counts):
        members = strata[key]
        val.update(members[j] for j in rng.permutation(len(members))[:count])
    return [r for i, r in enumerate(records) if i not in val], [r for i, r in enumerate(records) if i in val]


def write_image_list(path: Path, records: Sequence[Record], root: str | Path | None = None) -> None:
    """One image path per line, relative to `root` when the image lies under it (a YOLO-style image list)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    base = os.path.abspath(root) if root is not None else None
    lines = []
    for record in records:
        image = os.path.abspath(record.image_path)
        lines.append(os.path.relpath(image, base) if base and image.startswith(base + os.sep) else image)
    write_text(path, "".join(f"{line}\n" for line in lines))
