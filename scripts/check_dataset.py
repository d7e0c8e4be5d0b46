"""Check a dataset before training: counts of images, boxes and classes, and every problem found
(missing/unreadable images, background images, boxes of zero area or outside the image, sizes that differ
from the annotation). Malformed label files and unknown classes are reported with the file and line/object.

    python scripts/check_dataset.py data=coco128 [data.format=coco] [data.root=...] [--decode] [--per-class]
    python scripts/check_dataset.py --format yolo --path /data/mydata/data.yaml [--split train val]
    python scripts/check_dataset.py --format coco --path annotations/train.json --images images/train
    python scripts/check_dataset.py --format voc --path data/VOCdevkit --split VOC2007/trainval VOC2012/trainval
    python scripts/check_dataset.py --format voc --path /data/fruit --split train val --classes labels.txt

The first form composes the training config (any `data=...` option and `data.key=value` override) and
checks its train and val readers exactly as training would. `--decode` decodes every image fully (slower;
finds corrupt files that a header read misses). Exit status: 0 = usable, 1 = not usable (the reason is printed).
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

from detector.data.checks import check_records  # noqa: E402


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--format", choices=("yolo", "coco", "voc"), help="check files directly instead of a data config")
    parser.add_argument("--path", help="yolo: data.yaml; coco: the json; voc: VOCdevkit or dataset folder")
    parser.add_argument("--images", help="coco: the image folder")
    parser.add_argument("--split", nargs="+", help="yolo: data.yaml keys (default train val); voc: [YEAR/]SPLIT ...")
    parser.add_argument("--classes", nargs="+", help="voc: class names, a names file, or 'collect' (default: the 20 VOC classes)")
    parser.add_argument("--decode", action="store_true", help="decode every image fully (slower)")
    parser.add_argument("--per-class", action="store_true", help="print the box count of every class")
    parser.add_argument("--max-bad-fraction", type=float, default=None, help="default: the config's, else 0.05")
    return parser.parse_known_args(argv)


def readers_from_config(overrides: list[str]) -> tuple[dict, dict]:
    """{split: reader} from the composed training config, and info about it (name, root, format, classes, ...)."""
    import hydra
    from hydra import compose, initialize_config_dir

    from detector.training.runner import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    data = cfg.data
    if data.get("prepare") is not None:
        hydra.utils.instantiate(data.prepare)()
    readers = {split: hydra.utils.instantiate(data[f"{split}_reader"]) for split in ("train", "val")}
    info = {
        "data": next((o.split("=", 1)[1] for o in overrides if o.startswith("data=")), "(train.yaml default)"),
        "root": data.get("root"), "format": data.get("format"), "num_classes": data.get("num_classes"),
        "max_bad_fraction": data.get("max_bad_fraction", 0.05),
    }
    return readers, info


def readers_from_args(args: argparse.Namespace) -> tuple[dict, dict]:
    from functools import partial

    if not args.path:
        raise SystemExit("--path is required with --format")
    if args.format == "yolo":
        from detector.data.formats.yolo import read_yolo

        readers = {split: partial(read_yolo, args.path, split) for split in args.split or ["train", "val"]}
    elif args.format == "coco":
        from detector.data.formats.coco import read_coco

        if not args.images:
            raise SystemExit("--images (the image folder) is required with --format coco")
        readers = {Path(args.path).stem: partial(read_coco, args.images, args.path)}
    else:
        from detector.data.formats.voc import read_voc

        classes = args.classes[0] if args.classes and len(args.classes) == 1 and (
            args.classes[0] == "collect" or Path(args.classes[0]).is_file()) else args.classes
        readers = {}
        for split in args.split or ["train", "val"]:
            year, _, name = split.rpartition("/")
            readers[split] = partial(read_voc, args.path, [[year or ".", name]], class_names=classes)
    return readers, {"data": f"{args.format} files", "root": args.path, "format": args.format, "num_classes": None,
                     "max_bad_fraction": 0.05}


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        readers, info = readers_from_args(args) if args.format else readers_from_config(overrides)
    except Exception as error:  # a config that does not compose / instantiate
        print(f"ERROR: {type(error).__name__}: {error}")
        return 1
    max_bad = args.max_bad_fraction if args.max_bad_fraction is not None else info["max_bad_fraction"]
    root = os.path.normpath(str(info["root"])) if info["root"] else None
    print(f"dataset: {info['data']}  root: {root}  format: {info['format']}  max_bad_fraction: {max_bad}")
    usable, names_seen = True, {}
    for split, reader in readers.items():
        start = time.perf_counter()
        try:
            records, names, _ = reader()
            if info["num_classes"] is not None and len(names) != info["num_classes"]:
                raise ValueError(f"data.num_classes={info['num_classes']} but the dataset has {len(names)} classes")
            _, report = check_records(records, names, name=split, max_bad_fraction=max_bad, decode=args.decode)
        except (ValueError, OSError) as error:
            print(f"[{split}] ERROR: {error}")
            usable = False
            continue
        names_seen[split] = names
        print(report.summary(per_class=args.per_class) + f"\n[{split}] checked in {time.perf_counter() - start:.1f} s")
    if len({tuple(n) for n in names_seen.values()}) > 1:
        print(f"ERROR: the splits have different class names: {names_seen}")
        usable = False
    if names_seen:
        names = next(iter(names_seen.values()))
        print(f"{len(names)} classes: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
    print("RESULT: " + ("usable" if usable else "NOT usable"))
    return 0 if usable else 1


if __name__ == "__main__":
    sys.exit(main())
