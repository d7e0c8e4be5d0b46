"""`model.compile=true`: every model config takes it, the LitDetector compiles the model's forward in place
(nn.Module.compile) when the Trainer sets it up, the parameter names (checkpoint keys) stay those of the eager
model, and the training loss and gradients equal the eager ones."""

from __future__ import annotations

import hydra
import pytest
import torch

from detector.models import YOLODetector
from detector.models.build import build_model

from .conftest import assert_same_step


@pytest.fixture(scope="module")
def inductor() -> None:
    """Skip when torch.compile's default backend cannot compile here (on CPU inductor needs a C++ compiler)."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(3))
    except Exception as error:  # noqa: BLE001 - whatever stops inductor (no compiler, unsupported platform)
        pytest.skip(f"torch.compile (inductor) does not work here: {type(error).__name__}: {error}")


@pytest.mark.parametrize("overrides", [[], ["experiment=ssd"], ["experiment=ssd300"]], ids=["yolov8", "ssd", "ssd300"])
def test_every_model_config_takes_the_option(compose_config, overrides, tmp_path):
    cfg = compose_config([*overrides, "model.compile=true", f"paths.data_dir={tmp_path}"])
    assert hydra.utils.instantiate(cfg.module).compile_model is True
    assert compose_config(overrides).module.compile_model is False


def test_build_model_leaves_the_run_options_out():
    model = build_model({"_target_": "detector.models.YOLODetector", "num_classes": 3, "compile": True})
    assert isinstance(model, YOLODetector) and model._compiled_call_impl is None


@pytest.mark.slow
def test_compiled_training_loss_and_gradients_equal_eager(inductor, tiny_module, batch, training_step):
    eager, compiled = tiny_module(), tiny_module(compile_model=True)
    compiled.setup("fit")
    assert compiled.model._compiled_call_impl is not None and eager.model._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no `_orig_mod.` prefix in checkpoints

    # fused kernels sum in another order
    assert_same_step(training_step(eager, batch), training_step(compiled, batch), loss_rtol=1e-4)
