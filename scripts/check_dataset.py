"""Check a dataset before training (`python scripts/check_dataset.py --help`; the same as `detector-check-dataset`):
counts of images, boxes and classes and every problem found; exit status 0 = usable, 1 = not usable.
See detector.cli (CHECK_DATASET_USAGE, check_dataset)."""

import os
import sys
from pathlib import Path

from detector.cli import check_dataset

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))  # this checkout's configs/, data/


def main(argv: list[str] | None = None) -> int:
    return check_dataset(argv)


if __name__ == "__main__":
    sys.exit(main())
