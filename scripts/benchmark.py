"""Speed and memory benchmarks, each case in a fresh process and compared with a reference measured in the same run.

    python scripts/benchmark.py                  # every section, prints the tables, writes logs/benchmark/benchmark.json
    python scripts/benchmark.py --only criterion assigner --repeats 5
    python scripts/benchmark.py --batch 2 --sizes 64 --num-gt 10 --data-images 4 --repeats 1 --warmup 0 --out /tmp/b.json

Each section is a module of scripts/benchmarks/ (its docstring says what it times and against what), run by the
harness in scripts/benchmarks/harness.py: train_step, criterion, assigner, data, data_profile, loader, device_augment,
eval, inference, box_ops, nms.

Times are medians over --repeats runs after --warmup runs (min-max in brackets). Peak memory is the growth of
the process's maximum resident set while a case runs. `data`, `data_profile`, `loader` and `eval` need COCO128
(--coco128, default ../shared/data/coco128 or $DETECTOR_SHARED_DATA/coco128) and are skipped, saying why, without it
(`device_augment` then times only its batch augmentation, on synthetic batches).
"""

from __future__ import annotations

from benchmarks import (
    assigner,
    box_ops,
    coco_eval,
    criterion,
    data,
    data_profile,
    device_augment,
    harness,
    inference,
    loader,
    nms,
    train_step,
)

SECTIONS = (train_step, criterion, assigner, data, data_profile, loader, device_augment, coco_eval, inference, box_ops, nms)

if __name__ == "__main__":
    harness.main(SECTIONS, __doc__)
