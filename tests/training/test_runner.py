"""What `detector.training.runner.train` writes into metrics.json (status, overrides, combination, history), on success
and on failure (recorded; swallowed in a multirun, re-raised in a single run), with a fake trainer; and the
MetricsHistory callback on its own."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from detector.training import runner
from detector.training.callbacks import MetricsHistory
from detector.training.module import NonFiniteLossError


def fake_instantiate(fit):
    def instantiate_all(cfg, extra_callbacks=()):
        history = extra_callbacks[0]
        assert isinstance(history, MetricsHistory)
        module = SimpleNamespace(best_metrics={}, model=torch.nn.Linear(3, 2))  # 8 parameters
        trainer = SimpleNamespace(checkpoint_callback=None, fit=lambda *a, **k: fit(module, history))
        return None, module, trainer
    return instantiate_all


def fake_epochs(module, history, epochs=2, fail_at=None):
    for epoch in range(epochs):
        trainer = SimpleNamespace(current_epoch=epoch, accumulate_grad_batches=1, sanity_checking=False,
                                  callback_metrics={"val/map": torch.tensor(0.1 * (epoch + 1)), "val/map_50": torch.tensor(0.5)})
        history.on_train_epoch_start(trainer, module)
        history.on_train_batch_end(trainer, module, {"loss": torch.tensor(2.0 - epoch)}, None, 0)
        if epoch == fail_at:  # a skipped non-finite step, then one that raises before the end of its step
            history.on_before_backward(trainer, module, torch.tensor(math.nan))
            history.on_train_batch_end(trainer, module, {"loss": torch.tensor(math.nan)}, None, 1)
            history.on_before_backward(trainer, module, torch.tensor(math.inf))
            error = NonFiniteLossError("loss was non-finite for 3 consecutive steps")
            history.on_exception(trainer, module, error)
            raise error
        history.on_validation_end(trainer, module)
        module.best_metrics = {"map": 0.1 * (epoch + 1), "map_50": 0.5, "images": 8.0, "epoch": float(epoch)}
        history.on_train_epoch_end(trainer, module)


@pytest.fixture
def hydra_cfg(compose_config, tmp_path):
    """A composed config whose HydraConfig is set, as inside `python train.py [-m] loss/box=giou seed=3`."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    def make(mode: str):
        cfg = compose_config(["loss/box=giou", "seed=3", f"paths.output_dir={tmp_path}"], return_hydra_config=True)
        cfg.hydra.mode = mode
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):  # as Hydra's run_job hands the task its config: without the hydra node
            del cfg["hydra"]
        return cfg

    yield make
    HydraConfig.instance().cfg = None


def test_ok_run_records_status_overrides_seed_combination_and_history(hydra_cfg, tmp_path, monkeypatch):
    cfg = hydra_cfg("RUN")
    monkeypatch.setattr(runner, "instantiate_all", fake_instantiate(fake_epochs))
    returned = runner.train(cfg)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert returned["status"] == record["status"] == "ok" and record["error"] is None
    assert record["map"] == pytest.approx(0.2) and record["seed"] == 3 and record["parameters"] == 8
    assert record["overrides"] == ["loss/box=giou", "seed=3", f"paths.output_dir={tmp_path}"]
    assert record["choices"]["loss"] == "yolov8" and record["choices"]["loss/box"] == "giou"
    combination = record["combination"]
    assert set(combination) == {"loss.cls", "loss.box", "loss.dfl", "assigner", "loss.weights"}
    assert combination["loss.box"]["_target_"].endswith("GIoULoss") and combination["loss.weights"]["box"] == 7.5
    assert combination["assigner"]["num_classes"] == 5  # resolved interpolation
    assert [h["epoch"] for h in record["history"]] == [0, 1]
    assert [h["train_loss"] for h in record["history"]] == [2.0, 1.0]
    assert [h["val_map"] for h in record["history"]] == pytest.approx([0.1, 0.2])
    assert record["numerics"]["cpu_threads"] == torch.get_num_threads()


def test_cpu_threads_is_applied_before_the_run_and_recorded(hydra_cfg, tmp_path, monkeypatch):
    cfg = hydra_cfg("RUN")
    cfg.cpu_threads = 1
    threads = torch.get_num_threads()
    monkeypatch.setattr(runner, "instantiate_all", fake_instantiate(fake_epochs))
    try:
        runner.train(cfg)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "metrics.json").read_text())["numerics"]["cpu_threads"] == 1


@pytest.mark.parametrize("mode", ["MULTIRUN", "RUN"])
def test_failed_run_is_recorded_then_swallowed_in_a_multirun_and_raised_in_a_single_run(hydra_cfg, tmp_path, monkeypatch, mode):
    cfg = hydra_cfg(mode)
    monkeypatch.setattr(runner, "instantiate_all", fake_instantiate(lambda m, h: fake_epochs(m, h, epochs=3, fail_at=1)))
    if mode == "MULTIRUN":
        returned = runner.train(cfg)
        assert returned["status"] == "failed" and math.isnan(returned["map"])
    else:
        with pytest.raises(NonFiniteLossError):
            runner.train(cfg)
    record = json.loads((tmp_path / "metrics.json").read_text())  # strict JSON: NaN written as null
    assert record["status"] == "failed" and record["map"] is None
    assert record["error"]["type"] == "NonFiniteLossError"
    assert record["error"]["message"] == "loss was non-finite for 3 consecutive steps"
    assert "NonFiniteLossError" in record["error"]["traceback"]
    assert record["partial_best"]["map"] == pytest.approx(0.1) and record["seed"] == 3
    assert record["history"][1] == {"epoch": 1, "train_loss": 1.0, "train_steps": 1, "train_nonfinite_steps": 2}


def test_failure_while_instantiating_is_recorded_too(hydra_cfg, tmp_path, monkeypatch):
    cfg = hydra_cfg("MULTIRUN")

    def broken(cfg, extra_callbacks=()):
        raise ValueError("batch_size should be a positive integer value")

    monkeypatch.setattr(runner, "instantiate_all", broken)
    assert runner.train(cfg)["status"] == "failed"
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["error"]["type"] == "ValueError" and record["history"] == [] and "parameters" not in record


def test_metrics_history_means_finite_steps_and_undoes_gradient_accumulation():
    history = MetricsHistory()
    trainer = SimpleNamespace(current_epoch=0, accumulate_grad_batches=2, sanity_checking=False,
                              callback_metrics={"val/map": torch.tensor(0.25), "val/map_50": torch.tensor(0.5),
                                                "val/loss": torch.tensor(3.0), "val/mAP50-95": torch.tensor(0.25)},
                              optimizers=[SimpleNamespace(param_groups=[{"lr": 0.01}])])
    history.on_fit_start(trainer, None)
    history.on_train_epoch_start(trainer, None)
    for loss in (1.0, math.inf, 2.0):  # Lightning hands the loss divided by accumulate_grad_batches
        components = {"loss": torch.tensor(2 * loss), "box": torch.tensor(loss / 4), "cls": torch.tensor(1.0)}
        history.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss), "losses": components}, None, 0)
    history.on_validation_end(trainer, None)
    history.on_train_epoch_end(trainer, None)
    trainer.current_epoch, trainer.sanity_checking = 1, True
    history.on_validation_end(trainer, None)  # sanity check: ignored
    trainer.sanity_checking = False
    history.on_train_epoch_start(trainer, None)
    history.on_train_batch_end(trainer, None, torch.tensor(0.5), None, 0)  # a bare tensor output; epoch unfinished
    rows = history.history()
    assert 0 <= rows[0].pop("minutes") < 1  # wall time from fit start to the end of the validation
    assert rows == [
        # the components are the criterion's own (not divided), each averaged over its finite steps; the progress
        # bar's upper-case twin val/mAP50-95 is not a second column
        {"epoch": 0, "train_loss": 3.0, "train_steps": 2, "train_nonfinite_steps": 1, "train_box": 0.375,
         "train_cls": 1.0, "val_map": 0.25, "val_map_50": 0.5, "val_loss": 3.0, "lr": 0.01},
        {"epoch": 1, "train_loss": 1.0, "train_steps": 1, "train_nonfinite_steps": 0},
    ]
