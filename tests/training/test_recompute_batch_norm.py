"""RecomputeBatchNorm: before validation, the BatchNorm statistics are the plain average over the last N training
batches, computed with the weights being validated; frozen (eval-mode) layers keep theirs; the model's mode is
restored; GradientNorms logs one norm per model part."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import torch
from torch import nn

from detector.training.callbacks import GradientNorms, RecomputeBatchNorm, recompute_batch_norm


class TwoNorms(nn.Module):
    """x -> BN(a) -> conv -> BN(b): b's statistics depend on the conv's weights."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.conv, self.b = nn.BatchNorm2d(2, momentum=0.03), nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2, momentum=0.03)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.b(self.conv(self.a(images.float())))


def fake_trainer(sanity_checking: bool = False) -> SimpleNamespace:
    return SimpleNamespace(sanity_checking=sanity_checking, precision_plugin=SimpleNamespace(forward_context=contextlib.nullcontext))


def batches(count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(4, 2, 3, 3, generator=generator) * (i + 1) + i for i in range(count)]


def test_statistics_are_the_average_over_the_last_batches():
    torch.manual_seed(0)
    model, callback = TwoNorms(), RecomputeBatchNorm(batches=2)
    data = batches(3)
    for images in data:
        callback.on_train_batch_end(fake_trainer(), model, None, {"images": images}, 0)
    model.eval()
    callback.on_validation_epoch_start(fake_trainer(), model)
    # hand computation: per-batch mean and unbiased variance of BN a's input, averaged over the last two batches
    last = data[1:]
    mean = torch.stack([x.mean((0, 2, 3)) for x in last]).mean(0)
    var = torch.stack([x.transpose(0, 1).flatten(1).var(1) for x in last]).mean(0)
    torch.testing.assert_close(model.a.running_mean, mean)
    torch.testing.assert_close(model.a.running_var, var)
    # BN b sees the conv output of the current weights (the first batch, older, is not in the average)
    with torch.no_grad():
        inner = [model.conv((x - x.mean((0, 2, 3), keepdim=True)) / (x.var((0, 2, 3), unbiased=False, keepdim=True)
                 + model.a.eps).sqrt() * model.a.weight[:, None, None] + model.a.bias[:, None, None]) for x in last]
    torch.testing.assert_close(model.b.running_mean, torch.stack([y.mean((0, 2, 3)) for y in inner]).mean(0))
    assert not model.training and model.a.momentum == 0.03 and model.b.momentum == 0.03


def test_frozen_norms_and_sanity_check_keep_their_statistics():
    model, callback = TwoNorms(), RecomputeBatchNorm(batches=2)
    callback.on_train_batch_end(fake_trainer(), model, None, {"images": batches(1)[0] + 5}, 0)
    before_a = model.a.running_mean.clone()
    callback.on_validation_epoch_start(fake_trainer(sanity_checking=True), model)
    torch.testing.assert_close(model.a.running_mean, before_a)

    model.train()
    model.a.eval()  # a frozen layer: LitDetector/YOLODetector keep frozen norms in eval mode through train()
    original_train = model.train

    def train(mode: bool = True):
        original_train(mode)
        model.a.eval()
        return model

    model.train = train
    callback.on_validation_epoch_start(fake_trainer(), model)
    torch.testing.assert_close(model.a.running_mean, before_a)
    assert not torch.equal(model.b.running_mean, torch.zeros(2))
    assert model.training  # restored


def test_only_the_epochs_batches_count():
    model, callback = TwoNorms(), RecomputeBatchNorm(batches=4)
    old, new = batches(2)
    callback.on_train_batch_end(fake_trainer(), model, None, {"images": old}, 0)
    callback.on_train_epoch_start(fake_trainer(), model)
    callback.on_train_batch_end(fake_trainer(), model, None, {"images": new}, 0)
    callback.on_validation_epoch_start(fake_trainer(), model)
    torch.testing.assert_close(model.a.running_mean, new.mean((0, 2, 3)))


def test_zero_batches_turns_it_off():
    model, callback = TwoNorms(), RecomputeBatchNorm(batches=0)
    callback.on_train_batch_end(fake_trainer(), model, None, {"images": batches(1)[0]}, 0)
    callback.on_validation_epoch_start(fake_trainer(), model)
    torch.testing.assert_close(model.a.running_mean, torch.zeros(2))


def test_gradient_norms_log_one_norm_per_part(tiny_module, batch, training_step):
    module = tiny_module()
    logged: dict[str, float] = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))
    training_step(module, batch)
    trainer = SimpleNamespace(global_step=0, log_every_n_steps=10)
    GradientNorms().on_before_optimizer_step(trainer, module, None)
    grads = [p.grad for name, p in module.model.named_parameters() if name.startswith("backbone.stage2.")]
    torch.testing.assert_close(logged["grad_norm/backbone.stage2"], float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))))
    assert {"grad_norm/head.box_branches", "grad_norm/head.cls_branches", "grad_norm/head.cls_bias", "grad_norm/neck.top_down4"} <= set(logged)
    # the class prior at init: sigmoid(log(5 / nc / (64 / stride)^2)) = 5 / nc / cells / (1 + that)
    prior = 5 / 5 / (64 / 8) ** 2
    assert abs(logged["cls_prior/level0"] - prior / (1 + prior)) < 1e-6


def test_the_function_averages_any_iterable_of_inputs_and_restores_the_mode():
    model = TwoNorms().eval()
    data = batches(3)
    recompute_batch_norm(model, iter(data))  # a generator: read once
    mean = torch.stack([x.mean((0, 2, 3)) for x in data]).mean(0)
    torch.testing.assert_close(model.a.running_mean, mean)
    with torch.no_grad():
        inner = [model.conv(nn.functional.batch_norm(x, None, None, model.a.weight, model.a.bias, training=True))
                 for x in data]
    torch.testing.assert_close(model.b.running_mean, torch.stack([y.mean((0, 2, 3)) for y in inner]).mean(0))
    assert not model.a.training and model.b.momentum == 0.03  # eval mode restored
