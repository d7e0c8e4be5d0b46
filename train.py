"""Train a detector: `python train.py [group=option ...] [key=value ...]` (see README); `detector-train` is the same."""

import os
from pathlib import Path

from detector.cli import train

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))  # this checkout's configs/, data/, logs/

if __name__ == "__main__":
    train()
