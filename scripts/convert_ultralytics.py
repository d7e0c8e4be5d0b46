"""Convert an ultralytics YOLOv8 detection checkpoint into a checkpoint of this project (`--help`; the same as
`detector-convert-ultralytics`):

    python scripts/convert_ultralytics.py yolov8n.pt yolov8n.ckpt

The file is read without ultralytics and without running code from it (detector.training.yolov8_import); the result
is taken by model.init_from=, scripts/evaluate.py, scripts/predict.py and scripts/export.py. Exit status 0 = written,
2 = refused with one line `error: <file>: <reason>` on stderr (a file that fails the reader's checks, another task,
another architecture, a pickle naming anything beyond tensors and model classes; `--debug` shows the traceback)."""

import sys

from detector.cli import convert_ultralytics


def main(argv: list[str] | None = None) -> int:
    return convert_ultralytics(argv)


if __name__ == "__main__":
    sys.exit(main())
