"""The ablation budgets (configs/ablation/budget/): one choice stands for the overrides the published sweeps
spelled out, and keeps its generated data apart from the default's."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
# the overrides of every shapes sweep in docs/ablations/*/runs.csv, minus the machine's data folder
PUBLISHED_128PX_600 = [
    "data.prepare.num_train=600", "data.prepare.num_val=150", "data.prepare.image_size=128", "data.img_size=128",
    "data.num_workers=0", "trainer.max_epochs=12", "callbacks.ema.tau=100", "scheduler.min_warmup_steps=30",
]


def resolved(compose_config, overrides: list[str]) -> dict:
    from hydra.core.hydra_config import HydraConfig

    cfg = compose_config([*overrides, "paths.output_dir=run"], return_hydra_config=True)  # no multirun job here
    HydraConfig.instance().set_config(cfg)  # the budget names its data folder after the data choice
    return {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
            for key in cfg if key != "hydra"}


@pytest.mark.parametrize("data", ["shapes", "shapes_tiny"])
def test_shapes128_600_equals_the_published_overrides_but_for_the_data_folder(compose_config, data):
    budget = resolved(compose_config, ["experiment=ablate_box_loss", f"data={data}", "ablation/budget=shapes128_600"])
    spelled = resolved(compose_config, ["experiment=ablate_box_loss", f"data={data}", *PUBLISHED_128PX_600])
    folder = f"{ROOT / 'data'}/{data}_128px_600"
    assert budget["data"]["prepare"]["root"] == folder
    assert budget["data"]["train_reader"]["image_dir"] == f"{folder}/images/train"
    assert budget["data"]["val_reader"]["annotation_file"] == f"{folder}/annotations/val.json"
    assert spelled["data"]["prepare"]["root"] == f"{ROOT / 'data'}/{data}"  # the default data stays where it was
    for config in (budget, spelled):
        del config["data"]["prepare"]["root"], config["data"]["train_reader"], config["data"]["val_reader"]
    assert budget == spelled


def test_every_budget_composes_with_every_synthetic_data_config(compose_config):
    budgets = sorted(p.stem for p in (ROOT / "configs" / "ablation" / "budget").glob("*.yaml"))
    assert budgets
    for budget in budgets:
        for data in ("shapes", "shapes_tiny"):
            config = resolved(compose_config, [f"data={data}", f"ablation/budget={budget}"])
            assert config["data"]["prepare"]["root"].startswith(str(ROOT / "data"))


def test_shapes128_1500_changes_only_the_data_size_and_keeps_the_default_recipe(compose_config):
    budget = resolved(compose_config, ["data=shapes", "ablation/budget=shapes128_1500"])
    default = resolved(compose_config, ["data=shapes"])
    prepare = budget["data"]["prepare"]
    assert (prepare["num_train"], prepare["num_val"], prepare["image_size"]) == (1500, 250, 128)
    assert prepare["root"] == f"{ROOT / 'data'}/shapes_128px_1500"
    assert budget["data"]["img_size"] == 128 and budget["trainer"]["max_epochs"] == 12
    assert budget["callbacks"] == default["callbacks"] and budget["scheduler"] == default["scheduler"]
