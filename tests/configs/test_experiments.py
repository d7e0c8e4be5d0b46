"""The ablation presets (configs/experiment/ablate_*.yaml): they compose, sweep options that exist, compare
against a configuration of their own grid, and leave the dataset to the command line."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
# every ablation preset: a new one is tested by existing
ABLATIONS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("ablate_*.yaml"))
# the part of the criterion a sweep of a group changes: (criterion attribute, config node that names its class)
SWEPT_PART = {"loss/box": ("box_loss", "loss.box"), "loss/cls": ("cls_loss", "loss.cls"), "assigner": ("assigner", "assigner")}


@pytest.mark.parametrize("preset", ABLATIONS)
def test_preset_sweeps_existing_options_over_three_seeds(compose_config, preset):
    cfg = compose_config([f"experiment={preset}"], return_hydra_config=True)
    params = dict(cfg.hydra.sweeper.params)
    assert list(params)[0] == "seed" and params["seed"] == "0,1,2"  # seeds first: complete seeds survive a stop
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and cfg.task_name == preset
    assert cfg.hydra.runtime.choices.data.startswith("shapes")  # a real dataset comes from the command line
    swept = {key: value.split(",") for key, value in params.items() if key != "seed"}
    baseline = dict(override.split("=") for override in cfg.ablation.baseline.split())
    assert swept and baseline.keys() == swept.keys() and all(baseline[key] in swept[key] for key in swept)
    for key, options in swept.items():
        for option in options:
            assert (ROOT / "configs" / key / f"{option}.yaml").exists(), option
            run_cfg = compose_config([f"experiment={preset}", f"{key}={option}", "seed=1"], return_hydra_config=True)
            assert run_cfg.seed == 1 and run_cfg.hydra.runtime.choices[key] == option
            criterion = hydra.utils.instantiate(run_cfg.module.criterion)  # the combination can be built
            if key in SWEPT_PART:
                attribute, node = SWEPT_PART[key]
                part = getattr(criterion, attribute)
                assert f"{type(part).__module__}.{type(part).__name__}" == OmegaConf.select(run_cfg, node)._target_


@pytest.mark.parametrize("data", ["voc", "coco", "coco128"])
def test_dataset_comes_from_the_command_line(compose_config, data):
    cfg = compose_config(["experiment=ablate_box_loss", f"data={data}"], return_hydra_config=True)
    assert cfg.hydra.runtime.choices.data == data and dict(cfg.hydra.sweeper.params)["loss/box"].startswith("iou,")


@pytest.mark.parametrize("launcher, package, overrides", [
    ("joblib", "hydra_joblib_launcher", ["hydra.launcher.n_jobs=2"]),
    ("submitit_slurm", "hydra_submitit_launcher",
     ["hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1", "hydra.launcher.cpus_per_task=8",
      "hydra.launcher.mem_gb=32", "hydra.launcher.timeout_min=240", "hydra.launcher.array_parallelism=8"]),
])
def test_documented_launcher_overrides_compose(compose_config, launcher, package, overrides):
    import importlib.util

    if importlib.util.find_spec(f"hydra_plugins.{package}") is None:
        pytest.skip("pip install -e '.[sweep]'")
    cfg = compose_config(["experiment=ablate_box_loss", f"hydra/launcher={launcher}", *overrides], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.startswith(f"hydra_plugins.{package}")
    assert (launcher != "submitit_slurm") or (cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.partition == "gpu")


def test_voc_box_loss_preset(compose_config):
    """The GPU-scale preset: VOC 07+12 -> 07 test, n model, one GPU, 100 epochs, 3 seeds of the DIoU paper's four
    losses and the losses after 2022, every option buildable."""
    cfg = compose_config(["experiment=voc_box_loss"], return_hydra_config=True)
    params = dict(cfg.hydra.sweeper.params)
    assert list(params) == ["seed", "loss/box"] and params["seed"] == "0,1,2"
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and cfg.task_name == "voc_box_loss"
    assert cfg.hydra.runtime.choices.data == "voc" and cfg.hydra.runtime.choices.trainer == "gpu"
    assert cfg.model.scale == "n" and cfg.trainer.max_epochs == 100 and cfg.trainer.accelerator == "gpu"
    assert [tuple(s) for s in cfg.data.train_reader.splits] == [("VOC2007", "trainval"), ("VOC2012", "trainval")]
    assert [tuple(s) for s in cfg.data.val_reader.splits] == [("VOC2007", "test")]
    options = params["loss/box"].split(",")
    assert options[:4] == ["iou", "giou", "diou", "ciou"] and cfg.ablation.baseline == "loss/box=ciou"
    for option in options:
        run_cfg = compose_config(["experiment=voc_box_loss", f"loss/box={option}"], return_hydra_config=True)
        criterion = hydra.utils.instantiate(run_cfg.module.criterion)
        assert f"{type(criterion.box_loss).__module__}.{type(criterion.box_loss).__name__}" == run_cfg.loss.box._target_


def test_tiny_objects_preset(compose_config):
    """TAL's overlap x the box loss, CIoU or NWD, on the tiny shapes; every cell and the documented Inner-IoU
    variant build a criterion whose assigner and box loss are the ones named."""
    cfg = compose_config(["experiment=ablate_tiny_objects"], return_hydra_config=True)
    params = dict(cfg.hydra.sweeper.params)
    assert params == {"seed": "0,1,2", "assigner/overlap": "ciou,nwd", "loss/box": "ciou,nwd"}
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and cfg.task_name == "ablate_tiny_objects"
    assert cfg.hydra.runtime.choices.data == "shapes_tiny"
    assert cfg.ablation.baseline == "assigner/overlap=ciou loss/box=ciou"
    cells = [(o, b, []) for o in ("ciou", "nwd") for b in ("ciou", "nwd")] + [("ciou", "inner_ciou", ["loss.box.ratio=1.13"])]
    for overlap, box, extra in cells:
        run_cfg = compose_config(["experiment=ablate_tiny_objects", f"assigner/overlap={overlap}", f"loss/box={box}", *extra])
        criterion = hydra.utils.instantiate(run_cfg.module.criterion)
        assert criterion.assigner.overlap.func.__name__ == overlap
        assert f"{type(criterion.box_loss).__module__}.{type(criterion.box_loss).__name__}" == run_cfg.loss.box._target_
        if box == "inner_ciou":  # the ratio of the command line reaches the wrapper
            assert criterion.box_loss.ratio == 1.13
