"""The restricted reader of torch.save files (detector.models.safe_pickle): tensors come back exactly, named classes
become inert records, and anything that could run code is refused before it runs."""

from __future__ import annotations

import builtins
import os
import subprocess

import pytest
import torch
from torch import nn

from detector.models.safe_pickle import (
    CheckpointError,
    StandIn,
    UnsafePickleError,
    check_checkpoint,
    load_weights_only,
    load_without_code,
    module_state_dict,
)

MODULES = ("torch.nn.modules.",)


class RunsCommand:
    """Pickles as a call of `function(*args)`: what a malicious checkpoint does."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def test_tensors_of_every_dtype_views_and_shared_storage_come_back_exactly(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {
        "half": torch.randn(3, 5).half(), "float": torch.randn(2, 3), "double": torch.randn(4).double(),
        "bf16": torch.randn(3).bfloat16(), "long": torch.tensor([1, -2, 3]), "bool": torch.tensor([True, False]),
        "uint8": torch.tensor([0, 255], dtype=torch.uint8), "empty": torch.empty(0, 3),
        "scalar": torch.tensor(2.5), "transposed": base.t(), "slice": base[1:, 2:5], "same_storage": base,
        "parameter": nn.Parameter(torch.randn(2, 2)),
    }
    torch.save({"tensors": tensors, "meta": [1, "two", 3.0, None, (4, 5), {"nested": True}]}, tmp_path / "t.pt")
    loaded = load_without_code(tmp_path / "t.pt", MODULES)
    assert loaded["meta"] == [1, "two", 3.0, None, (4, 5), {"nested": True}]
    for name, expected in tensors.items():
        actual = loaded["tensors"][name]
        assert type(actual) is torch.Tensor and actual.dtype == expected.dtype and actual.shape == expected.shape, name
        assert torch.equal(actual, expected.detach()), name


def test_a_pickled_module_is_a_record_whose_state_dict_is_the_modules(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.SiLU(), nn.ModuleList([nn.Linear(4, 2)])).half()
    model[1].register_buffer("scratch", torch.ones(1), persistent=False)  # not part of a state dict
    torch.save({"model": model}, tmp_path / "m.pt")
    record = load_without_code(tmp_path / "m.pt", MODULES)["model"]
    assert isinstance(record, StandIn) and record.qualname == "torch.nn.modules.container.Sequential"
    assert record.name == "Sequential" and record.state["_modules"]["2"].name == "SiLU"
    state = module_state_dict(record)
    assert list(state) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value), key
    assert record.state["_modules"]["1"].state["eps"] == 1e-5  # settings are readable too
    with pytest.raises(ValueError, match="not a pickled torch module"):
        module_state_dict(StandIn())


@pytest.mark.parametrize("function, args", [
    (os.system, ("touch {marker}",)),
    (builtins.eval, ("open({marker!r}, 'w')",)),
    (builtins.exec, ("open({marker!r}, 'w')",)),
    (subprocess.call, (["touch", "{marker}"],)),
    (torch.load, ("{marker}",)),  # torch functions other than the tensor rebuilds are refused too
    (builtins.__import__, ("os",)),
])
@pytest.mark.parametrize("reader", ["without_code", "weights_only"])
def test_a_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path, function, args, reader):
    marker = tmp_path / "ran"
    args = tuple(a.format(marker=str(marker)) if isinstance(a, str) else
                 [x.format(marker=str(marker)) for x in a] if isinstance(a, list) else a for a in args)
    torch.save({"model": RunsCommand(function, *args)}, tmp_path / "evil.pt")
    with pytest.raises(UnsafePickleError, match=r"evil.pt: refusing to load: its pickle references \S+, which is neither"):
        if reader == "without_code":
            load_without_code(tmp_path / "evil.pt", MODULES)
        else:  # this project's checkpoints: checked by the same reader before torch.load(weights_only=True)
            load_weights_only(tmp_path / "evil.pt")
    assert not marker.exists()


def test_classes_outside_the_allowed_prefixes_are_refused_by_name(tmp_path):
    torch.save({"model": nn.Conv2d(1, 1, 1)}, tmp_path / "conv.pt")
    with pytest.raises(UnsafePickleError, match=r"torch\.nn\.modules\.conv\.Conv2d"):
        load_without_code(tmp_path / "conv.pt", ("ultralytics.",))


def test_the_check_lists_the_globals_a_pickle_names_and_reads_no_tensor_data(tmp_path, monkeypatch):
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU())
    torch.save({"model": model, "x": torch.ones(2)}, tmp_path / "m.pt")

    def no_data(*_):
        raise AssertionError("the check read tensor data")

    monkeypatch.setattr(torch, "frombuffer", no_data)
    names = check_checkpoint(tmp_path / "m.pt", MODULES)
    assert {"torch.nn.modules.container.Sequential", "torch.nn.modules.conv.Conv2d",
            "torch._utils._rebuild_tensor_v2", "collections.OrderedDict"} <= names
    torch.save({"model": RunsCommand(os.system, "true")}, tmp_path / "evil.pt")
    with pytest.raises(UnsafePickleError, match=r"references (posix|nt)\.system"):
        check_checkpoint(tmp_path / "evil.pt", MODULES)


def test_files_that_are_not_torch_zip_archives_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing.pt: no such file$"):
        load_without_code(tmp_path / "missing.pt", MODULES)
    (tmp_path / "legacy.pt").write_bytes(b"\x80\x02not a zip")
    with pytest.raises(CheckpointError, match=r"legacy.pt: not a torch.save zip archive"):
        load_without_code(tmp_path / "legacy.pt", MODULES)
