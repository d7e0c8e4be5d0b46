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


SIMPLE_GROUPS = ("optimizer", "scheduler", "logger", "trainer", "callbacks")


def group_files(*groups: str) -> list[str]:
    """`group=option` of every file in configs/<group>/: a new option is tested without being listed here."""
    return [f"{group}={path.stem}" for group in groups for path in sorted((ROOT / "configs" / group).glob("*.yaml"))]


def own_values(group: str, option: str) -> dict:
    """What configs/<group>/<option>.yaml sets itself (its `defaults` list left out), unresolved."""
    values = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / group / f"{option}.yaml"))
    return {k: v for k, v in (values or {}).items() if k != "defaults"}


@pytest.mark.parametrize("override", group_files(*SIMPLE_GROUPS))
def test_every_group_option_composes_to_its_own_values(compose_config, override):
    cfg = compose_config([override], return_hydra_config=True)
    group, option = override.split("=")
    assert cfg.hydra.runtime.choices[group] == option
    composed = {} if cfg[group] is None else OmegaConf.to_container(cfg[group])
    for key, value in own_values(group, option).items():
        assert composed[key] == value, key


def parameter() -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.ones(2))


@pytest.mark.parametrize("override", group_files("optimizer"))
def test_every_optimizer_builds_from_parameter_groups_and_steps(compose_config, override):
    cfg = compose_config([override])
    weight = parameter()
    optimizer = hydra.utils.instantiate(cfg.optimizer)([weight])
    assert isinstance(optimizer, torch.optim.Optimizer) and optimizer.defaults["lr"] == cfg.optimizer.lr
    weight.sum().backward()
    optimizer.step()
    assert (weight < 1).all()  # a step against the gradient


@pytest.mark.parametrize("override", group_files("scheduler"))
def test_every_scheduler_warms_up_and_decays_to_its_final_ratio(compose_config, override):
    cfg = compose_config([override])
    optimizer = torch.optim.SGD([parameter()], lr=1.0)
    scheduler = hydra.utils.instantiate(cfg.scheduler)(optimizer, total_steps=400, steps_per_epoch=20)
    rates = []
    for _ in range(400):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    peak = rates.index(max(rates))
    assert rates[0] < 0.02 and peak > 0 and rates[:peak] == sorted(rates[:peak]) and rates[peak:] == sorted(rates[peak:])[::-1]
    assert rates[-1] == pytest.approx(cfg.scheduler.final_lr_ratio, abs=0.01)


@pytest.mark.parametrize("override", group_files("logger"))
def test_every_logger_option_builds_lightning_loggers_in_the_run_folder(compose_config, override, tmp_path):
    cfg = compose_config([override, f"paths.output_dir={tmp_path}"])
    if any("TensorBoard" in c._target_ for c in cfg.logger.values()):
        pytest.importorskip("tensorboard")  # the optional extra .[tensorboard]
    loggers = [hydra.utils.instantiate(c) for c in cfg.logger.values()]
    assert loggers and all(isinstance(log, lightning.pytorch.loggers.Logger) for log in loggers)
    assert all(Path(log.save_dir) == tmp_path for log in loggers)


@pytest.mark.parametrize("override", group_files("callbacks"))
def test_every_callbacks_option_builds_its_lightning_callbacks(compose_config, override, tmp_path):
    from detector.training.runner import instantiate_callbacks

    cfg = compose_config([override, f"paths.output_dir={tmp_path}"])
    callbacks = instantiate_callbacks(cfg)
    assert all(isinstance(c, lightning.Callback) for c in callbacks)
    assert len(callbacks) == sum(1 for c in (cfg.callbacks or {}).values() if c)
