"""Renamed config options and classes keep working for a deprecation period: the old name composes (or resolves to)
the same thing, and a run that uses it warns once per old name."""

from __future__ import annotations

import hydra
import pytest

from detector.config import RENAMED_CHOICES, renamed_choices
from detector.criteria.yolov8 import YOLOv8Criterion
from detector.training import runner


@pytest.mark.parametrize("group, old", sorted(RENAMED_CHOICES))
def test_an_old_option_composes_exactly_the_new_one(compose_config, group, old):
    assert compose_config([f"{group}={old}"])[group] == compose_config([f"{group}={RENAMED_CHOICES[group, old]}"])[group]


class Stop(Exception):
    """Raised where the run would start instantiating: the test needs only what happens before."""


def test_a_run_that_selects_old_names_warns_once_per_name(compose_config, monkeypatch, tmp_path):
    cfg = compose_config(["criterion=yolo", "loss=ciou", f"paths.output_dir={tmp_path}"], return_hydra_config=True)

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(runner, "instantiate_all", stop)
    with pytest.warns(FutureWarning) as caught, pytest.raises(Stop):
        runner.train(cfg)
    assert sorted(str(w.message) for w in caught if w.category is FutureWarning) == [
        "criterion=yolo is deprecated: it is now criterion=yolov8 (the same config)",
        "loss=ciou is deprecated: it is now loss=yolov8 (the same config)",
    ]


def test_the_default_run_uses_no_old_name(compose_config):
    assert renamed_choices(runner.config_choices(compose_config([], return_hydra_config=True))) == []


def test_the_old_criterion_class_path_resolves_with_one_warning():
    with pytest.warns(FutureWarning, match=r"now detector\.criteria\.yolov8\.YOLOv8Criterion") as caught:
        assert hydra.utils.get_class("detector.criteria.dense.DetectionCriterion") is YOLOv8Criterion
    assert len(caught) == 1
