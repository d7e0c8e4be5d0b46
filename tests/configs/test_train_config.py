"""The Hydra config tree of `python train.py`: the trainer group holds Lightning Trainer arguments only, the default
combination, command-line overrides, every option of the simple groups, refusal of unknown choices."""

import inspect
from pathlib import Path

import hydra
import lightning
import pytest
import torch
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("trainer", sorted(p.stem for p in (ROOT / "configs" / "trainer").glob("*.yaml")))
def test_every_key_of_the_trainer_config_is_a_lightning_trainer_argument(compose_config, trainer):
    # the other direction (every Trainer argument listed) would break on each Lightning release that adds one
    cfg = compose_config([f"trainer={trainer}"])
    arguments = set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self"}
    keys = set(cfg.trainer) - {"_target_"}
    assert keys - arguments == set()
    assert not keys & {"callbacks", "logger"}  # they come from their own config groups
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"


def test_default_config_instantiates_the_yolov8_combination(compose_config, tmp_path):
    cfg = compose_config([f"paths.data_dir={tmp_path}"], return_hydra_config=True)
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    module = hydra.utils.instantiate(cfg.module)
    criterion = module.criterion
    assert type(criterion.box_loss).__name__ == "CIoULoss" and type(criterion.cls_loss).__name__ == "BCEWithLogits"
    assert criterion.gains == {"box": 7.5, "cls": 0.5, "dfl": 1.5}
    assert (criterion.assigner.topk, criterion.assigner.alpha, criterion.assigner.beta) == (10, 0.5, 6.0)
    assert module.model.num_classes == cfg.data.num_classes == 5
    assert OmegaConf.select(cfg, "trainer.max_epochs") == 8


def test_command_line_overrides_reach_model_data_and_trainer(compose_config):
    cfg = compose_config(["model.scale=s", "data.batch_size=3", "data.img_size=320", "trainer.fast_dev_run=true"])
    assert cfg.model.scale == "s" and cfg.data.batch_size == 3 and cfg.model.image_size == 320
    assert cfg.trainer.fast_dev_run is True


def test_unknown_choice_is_refused_with_the_valid_options(compose_config):
    with pytest.raises(MissingConfigException) as error:
        compose_config(["loss=nope"])
    assert "Could not find 'loss/nope'" in str(error.value) and "ciou" in str(error.value)


# every option of the groups below, with values that tell it from the default
GROUP_OPTIONS = {
    "optimizer=adamw": {"optimizer._target_": "torch.optim.AdamW", "optimizer.lr": 0.002},
    "optimizer=sgd": {"optimizer._target_": "torch.optim.SGD", "optimizer.lr": 0.16, "optimizer.nesterov": True},
    "scheduler=cosine": {"scheduler.decay": "cosine", "scheduler.warmup_epochs": 1.0},
    "scheduler=linear": {"scheduler.decay": "linear", "scheduler.warmup_epochs": 1.0},  # cosine's warm-up
    "logger=csv": {"logger": ["csv"]},
    "logger=tensorboard": {"logger": ["tensorboard"]},
    "logger=many": {"logger": ["csv", "tensorboard"]},
    "trainer=default": {"trainer.accelerator": "auto", "trainer.strategy": "auto", "trainer.max_epochs": 8},
    "trainer=cpu": {"trainer.accelerator": "cpu", "trainer.devices": 1, "trainer.max_epochs": 8},
    "trainer=gpu": {"trainer.accelerator": "gpu", "trainer.devices": 1, "trainer.max_epochs": 8},
    "trainer=ddp": {"trainer.strategy": "ddp", "trainer.devices": 2, "trainer.sync_batchnorm": False},
    "callbacks=default": {"callbacks": ["model_checkpoint", "last_checkpoint", "ema", "recompute_batch_norm",
                                       "progress_bar", "lr_monitor", "save_on_interrupt", "close_mosaic",
                                       "data_stall", "plots"]},
    "callbacks=none": {"callbacks": []},
}


def test_every_option_of_the_simple_groups_is_listed():
    options = {f"{group}={p.stem}" for group in ("optimizer", "scheduler", "logger", "trainer", "callbacks")
               for p in (ROOT / "configs" / group).glob("*.yaml")}
    assert options == set(GROUP_OPTIONS)


@pytest.mark.parametrize("override", sorted(GROUP_OPTIONS))
def test_every_group_option_composes_to_its_values(compose_config, override):
    cfg = compose_config([override], return_hydra_config=True)
    group, option = override.split("=")
    assert cfg.hydra.runtime.choices[group] == option
    for key, expected in GROUP_OPTIONS[override].items():
        value = OmegaConf.select(cfg, key)
        assert (list(value or {}) if key in ("logger", "callbacks") else value) == expected, key
    if group == "optimizer":  # a partial that builds the optimizer from the parameter groups
        optimizer = hydra.utils.instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(2))])
        assert type(optimizer).__name__ == cfg.optimizer._target_.rsplit(".", 1)[1]
