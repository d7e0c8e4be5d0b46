"""Hyperparameter search (configs/hparams_search/, detector/search.py): what a run returns to the sweeper, the
presets' search spaces, and a real 3-trial TPE search on a tiny shapes set that a second launch resumes."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf

from detector import cli
from detector.config import ConfigError
from detector.search import StudyStorageCallback, objective, sqlite_path

ROOT = Path(__file__).resolve().parents[2]
# the files of configs/hparams_search/ that declare a search (the others are their bases)
PRESETS = [p.stem for p in sorted((ROOT / "configs" / "hparams_search").glob("*.yaml"))
           if OmegaConf.select(OmegaConf.load(p), "hydra.sweeper.params") is not None]


def optuna_sweeper() -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper",
                        reason="hydra-optuna-sweeper is not installed (pip install -e '.[search]')")


@pytest.mark.parametrize("metric, metrics, expected", [
    ("map", {"status": "ok", "map": 0.31, "map_50": 0.62}, 0.31),
    ("map_50", {"status": "ok", "map": 0.31, "map_50": 0.62}, 0.62),
    ("map", {"status": "failed", "map": math.nan, "partial_best": {"map": 0.2}}, math.nan),
    ("map", {"status": "ok"}, math.nan),  # never validated
])
def test_train_task_returns_the_optimized_metric_of_the_best_epoch(monkeypatch, metric, metrics, expected):
    monkeypatch.setattr("detector.training.runner.train", lambda cfg: metrics)
    value = cli._train_task(OmegaConf.create({"optimized_metric": metric}))
    assert math.isnan(value) if math.isnan(expected) else value == expected


def test_an_unknown_optimized_metric_is_refused_before_training(monkeypatch):
    def train(cfg):
        raise AssertionError("trained")

    monkeypatch.setattr("detector.training.runner.train", train)
    with pytest.raises(ConfigError, match=r"optimized_metric='mAP'.*choose one of map, map_50, .*mar_100"):
        cli._train_task(OmegaConf.create({"optimized_metric": "mAP"}))
    assert objective({"status": "ok", "map": 0.5}, "map") == 0.5


def test_a_relaunch_seeds_the_sampler_after_the_jobs_already_there(tmp_path):
    from detector.sweeps import resume_seed

    assert resume_seed(0, tmp_path / "new") == 0 and resume_seed("5", tmp_path) == 5
    for name in ("0", "1", "2", ".hydra", "optuna.db"):
        (tmp_path / name).mkdir()
    assert resume_seed(0, tmp_path) == 3 and resume_seed(1, str(tmp_path)) == 4


def test_a_search_without_the_sweeper_plugin_names_the_extra_to_install(monkeypatch):
    import importlib.util

    from detector.search import SWEEPER, require_sweeper

    require_sweeper(["hparams_search=tal"])  # installed here (or skipped below): no exit
    require_sweeper(["loss.weights.box=5"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == SWEEPER else real(name, *a))
    require_sweeper(["seed=1"])  # no search asked: nothing needed
    with pytest.raises(SystemExit, match=r"pip install -e '\.\[search\]'"):
        require_sweeper(["seed=1", "hparams_search=yolov8_gains"])


def test_the_study_storage_folder_is_created(tmp_path):
    database = tmp_path / "a" / "b" / "optuna.db"
    assert sqlite_path(f"sqlite:///{database}") == database
    assert sqlite_path("sqlite:///relative/x.db?timeout=5") == Path("relative/x.db")
    assert sqlite_path("postgresql://host/db") is None and sqlite_path(None) is None
    assert sqlite_path("sqlite:///:memory:") is None
    config = OmegaConf.create({"hydra": {"sweeper": {"storage": f"sqlite:///{database}"}}})
    StudyStorageCallback().on_multirun_start(config)
    assert database.parent.is_dir() and not database.exists()


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_searches_existing_keys_around_their_defaults(compose_config, preset):
    optuna_sweeper()
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    cfg = compose_config([f"hparams_search={preset}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.direction == "maximize" and cfg.optimized_metric == "map" and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert sweeper.study_name == preset and cfg.task_name == f"search_{preset}"
    assert sweeper.storage == f"sqlite:///{cfg.hydra.sweep.dir}/optuna.db" and sweeper.sampler.seed == 0
    assert "study_storage" in cfg.hydra.callbacks and "resumable_sweep" in cfg.hydra.callbacks
    distributions, fixed = create_params_from_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    assert list(distributions) == list(sweeper.params) and fixed == {}
    default = compose_config([])
    for key, distribution in distributions.items():
        assert distribution.low < OmegaConf.select(default, key) < distribution.high, key
        for bound in (distribution.low, distribution.high):  # the extremes reach the criterion that trains
            criterion = hydra.utils.instantiate(compose_config([f"{key}={bound}"]).module.criterion)
            part, name = key.rsplit(".", 1)
            used = getattr(criterion.assigner, name) if part == "assigner" else criterion.gains[name]
            assert used == bound, key
        integer = str(sweeper.params[key]).startswith("int(")
        assert (type(distribution).__name__ == "IntUniformDistribution") == integer, key


def completed_trials(database: Path) -> list[tuple[int, float, dict[str, float]]]:
    """(number, value, params) of the COMPLETE trials of the one study in an Optuna SQLite file, read with sqlite3
    (a float parameter is stored as its value)."""
    with sqlite3.connect(database) as db:
        [(study,)] = db.execute("SELECT study_name FROM studies").fetchall()
        assert study == "yolov8_gains"
        rows = db.execute("SELECT t.number, v.value FROM trials t JOIN trial_values v USING (trial_id) "
                          "WHERE t.state = 'COMPLETE' ORDER BY t.number").fetchall()
        params = db.execute("SELECT t.number, p.param_name, p.param_value FROM trials t "
                            "JOIN trial_params p USING (trial_id)").fetchall()
    proposals: dict[int, dict[str, float]] = {}
    for number, name, value in params:
        proposals.setdefault(number, {})[name] = value
    return [(number, value, proposals[number]) for number, value in rows]


def search(tmp_path: Path, trials: int) -> str:
    """`python train.py hparams_search=yolov8_gains` for `trials` trials of two steps on a tiny shapes set (all of
    them random start-up trials of TPE: the preset's 8)."""
    args = [
        "hparams_search=yolov8_gains", f"hydra.sweeper.n_trials={trials}",
        f"paths.data_dir={tmp_path / 'data'}", f"hydra.sweep.dir={tmp_path / 'search'}",
        "data.prepare.num_train=16", "data.prepare.num_val=8", "data.prepare.image_size=64", "data.img_size=64",
        "data.num_workers=0", "data.batch_size=4", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "callbacks=none", "trainer.enable_checkpointing=false",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "train.py", *args], capture_output=True, text=True, timeout=400,
                            cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_three_trial_search_then_a_relaunch_resumes_its_study(tmp_path):
    optuna_sweeper()
    out = search(tmp_path, trials=3)
    assert "Sampler: TPESampler" in out and "setup plugin alembic" not in out
    folder = tmp_path / "search"
    trials = completed_trials(folder / "optuna.db")
    assert [number for number, _, _ in trials] == [0, 1, 2]
    runs = [json.loads((folder / str(job) / "metrics.json").read_text()) for job in range(3)]
    for (_, value, proposal), run in zip(trials, runs):  # job k trained with trial k's proposal, returned its mAP
        assert proposal == {f"loss.weights.{k}": v for k, v in run["combination"]["loss.weights"].items()}
        assert run["status"] == "ok" and value == run["map"] and run["images"] == 4
    gains = [tuple(run["combination"]["loss.weights"].values()) for run in runs]
    assert len(set(gains)) == 3
    for gain in gains:
        assert 1.875 <= gain[0] <= 22.5 and 0.125 <= gain[1] <= 1.5 and 0.375 <= gain[2] <= 4.5
    best = OmegaConf.load(folder / "optimization_results.yaml")
    assert best.name == "optuna" and best.best_value == max(value for _, value, _ in trials)

    search(tmp_path, trials=1)  # the same folder: the same database and study, one more trial
    trials = completed_trials(folder / "optuna.db")
    assert [number for number, _, _ in trials] == [0, 1, 2, 3]
    resumed = json.loads((folder / "3" / "metrics.json").read_text())  # job folders continue after 0..2
    assert trials[3][2] == {f"loss.weights.{k}": v for k, v in resumed["combination"]["loss.weights"].items()}
    # the sampler seed moved on (resume_seed): the first launch's seed would propose trial 0's gains again
    assert tuple(resumed["combination"]["loss.weights"].values()) not in gains
