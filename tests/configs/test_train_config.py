"""The Hydra config tree: composition, Trainer coverage, refusal of unknown choices."""

import inspect
import subprocess
import sys
from pathlib import Path

import hydra
import lightning
import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]


def test_trainer_config_lists_every_lightning_trainer_argument(compose_config):
    cfg = compose_config()
    arguments = set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self", "callbacks", "logger"}
    assert arguments == set(cfg.trainer) - {"_target_"}


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


def test_unknown_choice_is_refused_with_the_valid_options():
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "loss=nope"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode != 0
    assert "Could not find 'loss/nope'" in result.stderr and "ciou" in result.stderr


@pytest.mark.parametrize("group", ["optimizer=sgd", "scheduler=linear", "logger=tensorboard", "trainer=ddp", "callbacks=none"])
def test_every_group_option_composes(compose_config, group):
    compose_config([group])
