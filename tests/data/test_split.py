"""The seeded, stratified train/val split of a dataset without one: counts by hand, reproducibility, order
independence, rare classes, edge cases, and the image lists."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from detector.data.dataset import Record
from detector.data.split import holdout_split, rarest_class, write_image_list


def record(index: int, labels: list[int]) -> Record:
    boxes = np.tile(np.array([[0, 0, 4, 4]], np.float32), (len(labels), 1))
    return Record(Path(f"/data/img_{index:03d}.jpg"), index + 1, 8, 8, boxes, np.asarray(labels, np.int64))


def paths(records: list[Record]) -> list[str]:
    return [str(r.image_path) for r in records]


def test_rarest_class_by_hand():
    images_per_class = Counter({0: 90, 1: 10, 2: 10})
    assert rarest_class(record(0, [0, 0, 1]), images_per_class) == 1
    assert rarest_class(record(0, [2, 1]), images_per_class) == 1  # tie: the smaller label
    assert rarest_class(record(0, [0]), images_per_class) == 0
    assert rarest_class(record(0, []), images_per_class) == -1  # background


def test_stratified_counts_by_hand():
    # 80 images of class 0 only, 15 with classes 0 and 1 (rarest: 1), 5 background: strata 80 / 15 / 5.
    # val = round(100 * 0.2) = 20: exact shares 16 / 3 / 1, no remainders.
    records = [record(i, [0]) for i in range(80)] + [record(80 + i, [0, 1]) for i in range(15)]
    records += [record(95 + i, []) for i in range(5)]
    train, val = holdout_split(records, 0.2, seed=0)
    assert len(train) == 80 and len(val) == 20
    assert sorted(paths(train) + paths(val)) == sorted(paths(records))  # a partition
    assert sum(1 in r.labels for r in val) == 3 and sum(len(r.labels) == 0 for r in val) == 1


def test_rare_classes_first():
    # strata 7 (class 0) and 3 (class 1), val = round(10 * 0.25) = 2 (round half to even): one image each
    records = [record(i, [0]) for i in range(7)] + [record(7 + i, [1]) for i in range(3)]
    _, val = holdout_split(records, 0.25, seed=3)
    assert sorted(int(r.labels[0]) for r in val) == [0, 1]
    # class 2 on 2 of 20 images: val = 4, its share 0.4 < 1, yet it gets one of them (class 0: 3)
    records = [record(i, [0]) for i in range(18)] + [record(18, [0, 2]), record(19, [2])]
    _, val = holdout_split(records, 0.2, seed=0)
    assert len(val) == 4 and sum(2 in r.labels for r in val) == 1
    # a single val image goes to the smallest stratum of at least 2 images
    _, val = holdout_split(records, 0.05, seed=0)
    assert len(val) == 1 and 2 in val[0].labels


def test_a_stratum_keeps_a_training_image():
    # strata of 2 (class 1) and 2 (class 0): val 3 of 4 -> 1 + 1 first, the third takes the last of a stratum
    # only because no stratum has room left
    records = [record(0, [0]), record(1, [0]), record(2, [1]), record(3, [1])]
    train, val = holdout_split(records, 0.75, seed=0)
    assert len(val) == 3 and len(train) == 1
    records = [record(i, [0]) for i in range(6)] + [record(6, [1]), record(7, [1])]
    train, _ = holdout_split(records, 0.5, seed=0)  # val 4: class 1 gets 1 (cap 1), class 0 gets 3
    assert sum(1 in r.labels for r in train) == 1


def test_reproducible_and_independent_of_reader_order():
    records = [record(i, [i % 3]) for i in range(30)]
    _, val = holdout_split(records, 0.2, seed=7)
    _, again = holdout_split(records, 0.2, seed=7)
    _, shuffled = holdout_split(list(reversed(records)), 0.2, seed=7)
    _, other_seed = holdout_split(records, 0.2, seed=8)
    assert paths(val) == paths(again)
    assert sorted(paths(val)) == sorted(paths(shuffled))
    assert sorted(paths(val)) != sorted(paths(other_seed))
    assert Counter(int(r.labels[0]) for r in val) == {0: 2, 1: 2, 2: 2}  # stratified: 10 images each, 2 to val


def test_parts_keep_the_reader_order():
    records = [record(i, [0]) for i in range(10)]
    train, val = holdout_split(records, 0.3, seed=0)
    assert [r.image_id for r in train] == sorted(r.image_id for r in train)
    assert [r.image_id for r in val] == sorted(r.image_id for r in val)


@pytest.mark.parametrize(("count", "fraction", "expected"), [(2, 0.2, 1), (3, 0.01, 1), (3, 0.99, 2), (10, 0.5, 5)])
def test_val_count_limits(count, fraction, expected):
    train, val = holdout_split([record(i, []) for i in range(count)], fraction)
    assert len(val) == expected and len(train) == count - expected


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        holdout_split([record(i, [0]) for i in range(5)], fraction)


def test_too_few_images():
    with pytest.raises(ValueError, match="at least 2 images"):
        holdout_split([record(0, [0])], 0.2)


def test_write_image_list(tmp_path):
    records = [Record(tmp_path / "images" / "a.jpg", 1, 8, 8, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)),
               Record(Path("/elsewhere/b.png"), 2, 8, 8, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))]
    write_image_list(tmp_path / "run" / "val_images.txt", records, tmp_path)
    assert (tmp_path / "run" / "val_images.txt").read_text() == "images/a.jpg\n/elsewhere/b.png\n"
