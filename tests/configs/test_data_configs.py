"""Every data config composes with the training config and instantiates; real ones read their data."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf.errors import MissingMandatoryValue

from detector.data.datamodule import DetectionDataModule

REPO = Path(__file__).resolve().parents[2]
DATA_CONFIGS = sorted(p.stem for p in (REPO / "configs" / "data").glob("*.yaml"))


@pytest.mark.parametrize("name", [n for n in DATA_CONFIGS if not n.startswith("custom_") and n != "auto"])
def test_data_config_instantiates(compose_config, name):
    cfg = compose_config([f"data={name}"]).data
    datamodule = instantiate(cfg)
    assert isinstance(datamodule, DetectionDataModule) and callable(datamodule.train_reader) and callable(datamodule.val_reader)
    assert all(type(a).__module__.startswith("albumentations") for a in datamodule.train_augmentations)


@pytest.mark.parametrize("name", ["custom_yolo", "custom_coco", "custom_voc", "auto"])
def test_templates_need_a_root(compose_config, tmp_path, name):
    cfg = compose_config([f"data={name}"]).data
    with pytest.raises(MissingMandatoryValue):
        instantiate(cfg)
    extra = ["data.class_names=[a,b]"] if name == "custom_voc" else []
    cfg = compose_config([f"data={name}", f"data.root={tmp_path}", "data.num_classes=2", *extra]).data
    datamodule = instantiate(cfg)
    assert datamodule.num_classes == 2 and str(tmp_path) in str(datamodule.train_reader.keywords)


def test_coco128_formats_and_root_override(compose_config, coco128):
    for fmt in ("yolo", "coco"):
        cfg = compose_config(["data=coco128", f"data.format={fmt}", f"data.root={coco128}"]).data
        assert cfg.train_reader.format == fmt and cfg.train_reader.data_yaml == f"{coco128}/data.yaml"
        records, names, _ = instantiate(cfg.train_reader)()
        assert len(records) == 128 and len(names) == cfg.num_classes == 80
        crowd = sum(len(r.crowd) for r in records)
        assert crowd == (10 if fmt == "coco" else 0)


def test_default_shared_data_locations(compose_config, monkeypatch, coco128, fruit_voc):
    monkeypatch.delenv("DETECTOR_SHARED_DATA", raising=False)
    for name, expected in (("coco128", coco128), ("fruit_voc", fruit_voc)):
        cfg = compose_config([f"data={name}"]).data
        if Path(cfg.root).resolve() != expected.resolve():
            pytest.skip("the shared data is found through DETECTOR_SHARED_DATA here, not <repo>/../shared/data")
    records, names, _ = instantiate(compose_config(["data=fruit_voc"]).data.val_reader)()
    assert len(records) == 60 and names == ["apple", "banana", "orange"]
