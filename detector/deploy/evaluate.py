"""Evaluate a checkpoint (`python scripts/evaluate.py` / `detector-evaluate`, configs/evaluate.yaml): its detections
on a dataset's split, then the full report (COCO stats, per-class AP, VOC07 AP50, PR curves, confusion matrix) in
the run directory."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from detector.config import config_dir
from detector.deploy.load import SAFE_DATA_TARGET_PREFIXES, check_targets, load_detector
from detector.deploy.predict import detect
from detector.evaluation.coco import to_coco_results
from detector.evaluation.report import evaluate_report, summary_lines


def data_config(cfg: DictConfig, meta: dict) -> dict:
    """The data config to instantiate: the command line's data=... when given, else the checkpoint's; set up for
    evaluation (checkpoint image size, no augmentation, `split` served as the validation set)."""
    if cfg.get("data") is not None:
        if "_target_" not in cfg.data:
            raise ValueError(f"data.{', data.'.join(cfg.data)} given without a data=<option> (an ablation/budget?): "
                             "the evaluation reads the checkpoint's data config; leave them out, or choose data=<option>")
        data = OmegaConf.to_container(cfg.data, resolve=True)
        source = "command line"
    elif "data" not in meta["run_config"]:
        raise ValueError(f"{cfg.ckpt_path} holds no data config (a converted checkpoint, e.g. from "
                         "detector-convert-ultralytics): choose the data on the command line, data=<option> "
                         "[data.root=...], with the checkpoint's classes")
    else:
        data = dict(meta["run_config"]["data"])
        check_targets(data, SAFE_DATA_TARGET_PREFIXES, "data")
        source = "checkpoint"
    if int(data["num_classes"]) != meta["num_classes"]:
        raise ValueError(f"data.num_classes={data['num_classes']} but the model has {meta['num_classes']} classes")
    if cfg.split not in ("val", "train"):
        raise ValueError(f"split must be 'val' or 'train', not {cfg.split!r}")
    if cfg.split == "train":
        data["val_reader"] = data["train_reader"]
    data.update(img_size=int(cfg.img_size or meta["img_size"]), mosaic_prob=0.0, train_augmentations=[],
                cache_images=False, persistent_workers=False)
    if cfg.batch_size:
        data["batch_size"] = int(cfg.batch_size)
    if cfg.num_workers is not None:
        data["num_workers"] = int(cfg.num_workers)
    print(f"Data: {data.get('root') or data['val_reader'].get('annotation_file') or ''} ({source}), split {cfg.split}")
    return data


def evaluation_config(ckpt_path: str | Path, output_dir: str | Path, **overrides) -> DictConfig:
    """What `python scripts/evaluate.py ckpt_path=<ckpt_path> hydra.run.dir=<output_dir> [key=value ...]` hands
    `evaluate_checkpoint`: configs/evaluate.yaml's settings (the checkpoint's data, split and post-processing) with
    `overrides` (top-level keys, e.g. device="cuda:0"). For evaluations inside another run (the training's eval/)."""
    cfg = OmegaConf.load(config_dir() / "evaluate.yaml")
    for key in ("defaults", "hydra", "task_name"):
        cfg.pop(key, None)
    return OmegaConf.merge(cfg, {"ckpt_path": str(ckpt_path), "paths": {"output_dir": str(output_dir)}, **overrides})


def evaluate_checkpoint(cfg: DictConfig) -> float:
    """Evaluate `cfg.ckpt_path` as configs/evaluate.yaml describes; prints the tables, returns mAP50-95."""
    output_dir = Path(cfg.paths.output_dir)
    model, postprocessor, meta = load_detector(cfg.ckpt_path, cfg.device, cfg.weights, **cfg.postprocess)
    weights = "EMA" if meta["weights"] == "ema" else "raw"
    print(f"Checkpoint: {cfg.ckpt_path} (epoch {meta['epoch']}, {weights} weights, {meta['num_classes']} classes, "
          f"{meta['img_size']} px) on {meta['device']}; postprocess {meta['postprocess']}")

    datamodule = hydra.utils.instantiate(data_config(cfg, meta))
    datamodule.prepare_data()
    datamodule.setup("validate")
    dataset = datamodule.val_dataset
    if len(dataset.class_names) != meta["num_classes"]:
        raise ValueError(f"the data has {len(dataset.class_names)} classes, the model {meta['num_classes']}")
    if dataset.class_names != meta["class_names"]:
        warnings.warn(f"class names differ: data {dataset.class_names} vs checkpoint {meta['class_names']}",
                      stacklevel=1)

    start, detections, image_ids = time.perf_counter(), [], []
    for batch in datamodule.val_dataloader():
        results = detect(model, postprocessor, batch["images"], batch["scales"], batch["orig_sizes"])
        for image_id, result in zip(batch["image_ids"], results):
            image_ids.append(int(image_id))
            detections += to_coco_results(image_id, result, dataset.category_ids)
    inference_seconds = time.perf_counter() - start

    start = time.perf_counter()
    result = evaluate_report(
        dataset.coco_ground_truth(), detections, image_ids, dataset.class_names, dataset.category_ids, output_dir,
        backend=cfg.evaluator, plots=cfg.plots, confusion_iou=cfg.confusion.iou_threshold,
        confusion_conf=cfg.confusion.conf_threshold,
        extra={"ckpt_path": str(cfg.ckpt_path), "split": cfg.split, "weights": meta["weights"], "epoch": meta["epoch"],
               "img_size": int(dataset.image_size), "device": meta["device"], "postprocess": meta["postprocess"],
               "inference_seconds": inference_seconds},
    )
    if cfg.save_detections:
        (output_dir / "detections.json").write_text(json.dumps(detections))
    print(result["per_class_markdown"])
    print("\n".join(summary_lines(result)))
    seconds = time.perf_counter() - start
    print(f"Inference {inference_seconds:.1f} s, evaluation {seconds:.1f} s; results in {output_dir}")
    return result["coco"]["map"]
