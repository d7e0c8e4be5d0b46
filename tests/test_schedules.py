"""detector/schedules.py: the learning-rate factor and the epoch-linear schedule, by hand."""

import math

import pytest
import torch

from detector.schedules import linear_schedule, warmup_decay


def factors(total_steps: int, **options) -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = warmup_decay(optimizer, total_steps, steps_per_epoch=2, **options)
    values = []
    for _ in range(total_steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_warm_up_then_cosine_or_linear_decay_by_hand():
    # W = max(1 epoch x 2 steps, 2) = 2: 1/3, 2/3; then p = 0, 1/4, 2/4, 3/4 over T - W = 4 steps, f = 0.1
    cosine = factors(6, warmup_epochs=1.0, min_warmup_steps=2, final_lr_ratio=0.1)
    expected = [1 / 3, 2 / 3] + [0.1 + 0.9 * (1 + math.cos(math.pi * p)) / 2 for p in (0, 0.25, 0.5, 0.75)]
    assert cosine == pytest.approx(expected)
    linear = factors(6, warmup_epochs=1.0, min_warmup_steps=2, final_lr_ratio=0.1, decay="linear")
    assert linear == pytest.approx([1 / 3, 2 / 3, 1.0, 1 - 0.9 / 4, 1 - 0.9 / 2, 1 - 0.9 * 3 / 4])
    with pytest.raises(ValueError, match="unknown decay 'step'"):
        factors(6, decay="step")


def test_linear_schedule_runs_from_the_first_to_the_last_epoch():
    assert [linear_schedule(0.8, 0.1, epoch, 11) for epoch in (0, 5, 10, 12)] == pytest.approx([0.8, 0.45, 0.1, 0.1])
    assert linear_schedule(0.8, 0.1, 0, 1) == 0.8  # a one-epoch run stays at the start
