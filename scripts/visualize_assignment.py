"""Draw what assigners do on a few images (`python scripts/visualize_assignment.py --help`; the same as
`detector-visualize-assignment`): per GT box its positive anchors, one panel per feature level, one row per assigner.
See detector.cli (VISUALIZE_USAGE, visualize_assignment)."""

import os
import sys
from pathlib import Path

from detector.cli import visualize_assignment

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))  # this checkout's configs/, data/


def main(argv: list[str] | None = None) -> int:
    return visualize_assignment(argv)


if __name__ == "__main__":
    sys.exit(main())
