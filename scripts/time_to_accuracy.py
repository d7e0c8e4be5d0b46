"""Time to accuracy: wall-clock minutes of training until validation mAP50 first reaches a threshold.

    python scripts/time_to_accuracy.py coco128     # from scratch, COCO128 train images, evaluated on the same images
    python scripts/time_to_accuracy.py shapes      # the default `python train.py` (synthetic shapes)
    python scripts/time_to_accuracy.py --run-dir logs/train/runs/<date> --threshold 0.5   # a finished run

Each preset trains with `python train.py <overrides>` (extra overrides after `--` are appended), then
reads the per-epoch history of the run's metrics.json: `minutes` counts from the start of fitting to the
end of each validation, so validation time is included. The result is printed and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name: (train.py overrides, mAP50 threshold)
PRESETS: dict[str, tuple[list[str], float]] = {
    # an overfitting check: configs/experiment/coco128_overfit.yaml
    "coco128": (["experiment=coco128_overfit"], 0.3),
    "shapes": ([], 0.8),
}


def first_crossing(history: list[dict], threshold: float) -> dict | None:
    """The first epoch whose validation mAP50 is >= threshold (None if never)."""
    for row in history:
        if row.get("val_map_50") is not None and row["val_map_50"] >= threshold:
            return row
    return None


def summarize(metrics: dict, threshold: float) -> dict:
    history = [row for row in metrics["history"] if row.get("val_map_50") is not None]
    hit = first_crossing(history, threshold)
    return {
        "threshold_map50": threshold,
        "reached": hit is not None,
        "minutes_to_threshold": hit["minutes"] if hit else None,
        "epoch_reached": hit["epoch"] + 1 if hit else None,
        "best_map50": max((row["val_map_50"] for row in history), default=None),
        "best_map50_95": metrics.get("map"),
        "train_minutes": metrics.get("train_minutes"),
        "curve": [{"epoch": row["epoch"] + 1, "minutes": round(row["minutes"], 3), "map50": round(row["val_map_50"], 4)}
                  for row in history if row.get("minutes") is not None],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", nargs="?", choices=sorted(PRESETS), help="train this preset, then measure")
    parser.add_argument("--run-dir", type=Path, help="measure an existing run directory (holding metrics.json) instead")
    parser.add_argument("--threshold", type=float, help="mAP50 to reach (default: the preset's; required with --run-dir)")
    parser.add_argument("--out", type=Path, help="JSON file to write (default: <run dir>/time_to_accuracy.json)")
    args, extra = parser.parse_known_args()
    extra = [arg for arg in extra if arg != "--"]
    if (args.preset is None) == (args.run_dir is None):
        parser.error("give a preset or --run-dir (one of them)")
    if args.run_dir is not None and args.threshold is None:
        parser.error("--run-dir needs --threshold")

    if args.preset is not None:
        overrides, preset_threshold = PRESETS[args.preset]
        threshold = preset_threshold if args.threshold is None else args.threshold
        run_dir = ROOT / "logs" / "time_to_accuracy" / f"{args.preset}_{datetime.now():%Y-%m-%d_%H-%M-%S}"
        command = [sys.executable, str(ROOT / "train.py"), *overrides, *extra, f"hydra.run.dir={run_dir}"]
        print("running:", " ".join(command[1:]), flush=True)
        subprocess.run(command, cwd=ROOT, check=True)
    else:
        run_dir, threshold = args.run_dir, args.threshold
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        sys.exit(f"no metrics.json in {run_dir}: not a run directory of train.py")
    shown = run_dir.resolve().relative_to(ROOT) if run_dir.resolve().is_relative_to(ROOT) else run_dir  # no machine path
    result = {"run_dir": str(shown), **summarize(json.loads(metrics_file.read_text()), threshold)}

    print(f"{'epoch':>6} {'minutes':>8} {'mAP50':>7}")
    for row in result["curve"]:
        print(f"{row['epoch']:>6} {row['minutes']:>8.2f} {row['map50']:>7.3f}")
    if result["reached"]:
        print(f"mAP50 >= {threshold} after {result['minutes_to_threshold']:.1f} min (epoch {result['epoch_reached']}); "
              f"best mAP50 {result['best_map50']:.3f}")
    else:
        print(f"mAP50 never reached {threshold}; best {result['best_map50']}")
    out = args.out or run_dir / "time_to_accuracy.json"
    out.write_text(json.dumps(result, indent=2))
    print("written:", out)


if __name__ == "__main__":
    main()
