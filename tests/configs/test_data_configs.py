"""Every data config composes with the training config and instantiates; real ones read their data."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf.errors import MissingMandatoryValue

from detector.data.datamodule import DetectionDataModule

REPO = Path(__file__).resolve().parents[2]
DATA_CONFIGS = sorted(p.stem for p in (REPO / "configs" / "data").glob("*.yaml"))


def data_config(monkeypatch, *overrides: str):
    monkeypatch.setenv("PROJECT_ROOT", str(REPO))
    from detector.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides)).data


@pytest.mark.parametrize("name", [n for n in DATA_CONFIGS if not n.startswith("custom_") and n != "auto"])
def test_data_config_instantiates(monkeypatch, name):
    cfg = data_config(monkeypatch, f"data={name}")
    datamodule = instantiate(cfg)
    assert isinstance(datamodule, DetectionDataModule) and callable(datamodule.train_reader) and callable(datamodule.val_reader)
    assert all(type(a).__module__.startswith("albumentations") for a in datamodule.train_augmentations)


@pytest.mark.parametrize("name", ["custom_yolo", "custom_coco", "custom_voc", "auto"])
def test_templates_need_a_root(monkeypatch, tmp_path, name):
    cfg = data_config(monkeypatch, f"data={name}")
    with pytest.raises(MissingMandatoryValue):
        instantiate(cfg)
    extra = ["data.class_names=[a,b]"] if name == "custom_voc" else []
    cfg = data_config(monkeypatch, f"data={name}", f"data.root={tmp_path}", "data.num_classes=2", *extra)
    datamodule = instantiate(cfg)
    assert datamodule.num_classes == 2 and str(tmp_path) in str(datamodule.train_reader.keywords)


def test_coco128_formats_and_root_override(monkeypatch, coco128):
    for fmt in ("yolo", "coco"):
        cfg = data_config(monkeypatch, "data=coco128", f"data.format={fmt}", f"data.root={coco128}")
        assert cfg.train_reader.format == fmt and cfg.train_reader.data_yaml == f"{coco128}/data.yaml"
        records, names, _ = instantiate(cfg.train_reader)()
        assert len(records) == 128 and len(names) == cfg.num_classes == 80
        crowd = sum(len(r.crowd) for r in records)
        assert crowd == (10 if fmt == "coco" else 0)


def test_default_shared_data_locations(monkeypatch, coco128, fruit_voc):
    monkeypatch.delenv("DETECTOR_SHARED_DATA", raising=False)
    for name, expected in (("coco128", coco128), ("fruit_voc", fruit_voc)):
        cfg = data_config(monkeypatch, f"data={name}")
        if Path(cfg.root).resolve() != expected.resolve():
            pytest.skip("the shared data is found through DETECTOR_SHARED_DATA here, not <repo>/../shared/data")
    records, names, _ = instantiate(data_config(monkeypatch, "data=fruit_voc").val_reader)()
    assert len(records) == 60 and names == ["apple", "banana", "orange"]
