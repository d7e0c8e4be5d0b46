"""Hostile torch.save zip files, crafted byte by byte (tests/models/hostile_files.py), are refused by the checks of
detector.models.safe_pickle before anything is allocated: each refusal is an UnsafeCheckpointError naming the file
and the record, within 2 s and 200 MB above the interpreter (peak RSS, Linux), by both readers (the stand-in reader
of ultralytics files and the weights-only reader of this project's checkpoints)."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from detector.models.safe_pickle import (
    CheckpointError,
    UnsafeCheckpointError,
    load_weights_only,
    load_without_code,
)

from .hostile_files import FOUR_FLOATS, Storage, View, dumps, many_tensors, nested_lists, one_view, text, torch_zip

MODULES = ("torch.nn.modules.",)
READERS = {"without_code": lambda path, **kw: load_without_code(path, MODULES, **kw), "weights_only": load_weights_only}
MAX_SECONDS, MAX_PEAK_MB = 2.0, 200.0


# name -> (the file's pickle (or what makes it, for the 50 MB one), storages, compressed storages, extra zip names;
# a pattern of the refusal)
HOSTILE = {
    "stride 0 view of a huge shape": (one_view(0, (1 << 16, 1 << 16), (0, 0)), FOUR_FLOATS, None, (),
                                      r"the view of archive/data/0 at offset 0 with size \(65536, 65536\), stride "
                                      r"\(0, 0\) has stride 0 on a dimension of size > 1"),
    "negative stride": (one_view(3, (4,), (-1,)), FOUR_FLOATS, None, (),
                        r"the view of archive/data/0 at offset 3 with size \(4,\), stride \(-1,\) has a negative "
                        r"stride"),
    "view past the storage's end": (one_view(2, (4,), (1,)), FOUR_FLOATS, None, (),
                                    r"the view of archive/data/0 at offset 2 with size \(4,\), "
                                    r"stride \(1,\) reaches element 6 of a storage of 4"),
    "huge declared storage, small entry": (one_view(0, (4,), (1,), numel=1 << 30), FOUR_FLOATS, None, (),
                                           r"storage archive/data/0 declares 1073741824 float32 elements \(4294967296 "
                                           r"bytes\), its zip entry holds 16 bytes"),
    "deflate bomb (256 MiB in 260 kB)": (one_view(0, (4,), (1,), numel=1 << 26), None, {"0": (bytes(1 << 20), 256)},
                                         (), r"zip entry archive/data/0 is compressed \(method 8: \d+ bytes stored for "
                                         r"268435456\); torch.save stores entries uncompressed"),
    "overlapping view over the budget": (one_view(0, (10_000, 10_000), (1, 1), numel=20_000),
                                         {"0": bytes(80_000)}, None, (),
                                         r"reading it would take more than max_bytes=\d+ bytes \(the view of "
                                         r"archive/data/0 at offset 0 with size \(10000, 10000\)"),
    "containers nested 10^5 deep": (nested_lists(100_000), None, None, (), r"its containers nest more than 100 deep"),
    "10^7 tiny tensors": (lambda: many_tensors(10_000_000), FOUR_FLOATS, None, (),
                          r"reading it would take more than max_bytes=\d+ bytes \(its 50000\d+-byte pickle, "
                          r"counted as 256 bytes of objects per byte"),
    "path traversal in a zip name": (one_view(0, (4,), (1,)), FOUR_FLOATS, None, ("archive/../../evil.sh",),
                                     r"zip entry 'archive/\.\./\.\./evil\.sh' names a path outside the archive"),
    "absolute zip name": (one_view(0, (4,), (1,)), FOUR_FLOATS, None, ("/etc/cron.d/evil",),
                          r"zip entry '/etc/cron.d/evil' names a path outside the archive"),
    "storage without a zip entry": (dumps({"x": View(Storage("7", 4), 0, (4,), (1,))}), FOUR_FLOATS, None, (),
                                    r"its pickle names storage archive/data/7, which the archive does not have"),
}


def measured(function: Callable[[], Any]) -> tuple[BaseException | None, float, float]:
    """(the error `function()` raised or None, seconds, peak resident memory above the start in MB): Linux's
    /proc/self/clear_refs resets the peak that /proc/self/status reports as VmHWM."""
    if not sys.platform.startswith("linux"):
        pytest.skip("peak memory is measured with Linux's /proc/self/clear_refs")

    def status(field: str) -> float:
        return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024

    Path("/proc/self/clear_refs").write_text("5")
    start, began, error = status("VmRSS"), time.perf_counter(), None
    try:
        function()
    except Exception as raised:
        error = raised
    return error, time.perf_counter() - began, status("VmHWM") - start


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("attack", HOSTILE)
def test_a_hostile_file_is_refused_before_anything_is_allocated(tmp_path, attack, reader):
    data_pkl, storages, compressed, names, message = HOSTILE[attack]
    data_pkl = data_pkl() if callable(data_pkl) else data_pkl
    path = torch_zip(tmp_path / "hostile.pt", data_pkl, storages, compressed, names)
    error, seconds, peak_mb = measured(lambda: READERS[reader](path))
    assert isinstance(error, UnsafeCheckpointError), repr(error)
    assert re.match(rf"{re.escape(str(path))}: refusing to load: {message}", str(error)), str(error)
    assert "\n" not in str(error)
    assert seconds < MAX_SECONDS and peak_mb < MAX_PEAK_MB, (seconds, peak_mb)


def test_the_crafted_files_are_torch_files_when_not_hostile(tmp_path):
    """The same builders with harmless numbers give files that both readers and torch.load read: the refusals above
    are the checks' doing, not a malformed file's."""
    for name, data_pkl in (("view", one_view(1, (2,), (2,))), ("tensors", many_tensors(3))):
        path = torch_zip(tmp_path / f"{name}.pt", data_pkl, FOUR_FLOATS)
        expected = torch.load(path, weights_only=True)
        for reader in READERS.values():
            loaded = reader(path)
            if name == "view":
                assert torch.equal(loaded["x"], torch.tensor([1.0, 3.0])) and torch.equal(expected["x"], loaded["x"])
            else:
                assert [t.tolist() for t in loaded] == [[0.0]] * 3 == [t.tolist() for t in expected]
    path = torch_zip(tmp_path / "nested.pt", nested_lists(100), None)
    assert load_without_code(path, MODULES) == torch.load(path, weights_only=True)  # 100 deep: allowed


def test_the_budget_counts_tensors_and_takes_max_bytes(tmp_path):
    """10^4 tensors of one element: 10 kB of data, but a tensor object each (charged 1 kB) and the objects of a 50 kB
    pickle (256 bytes per byte): refused under 20 MB, read with 30 MB or the default budget."""
    path = torch_zip(tmp_path / "tensors.pt", many_tensors(10_000), FOUR_FLOATS)
    for reader in READERS.values():
        with pytest.raises(UnsafeCheckpointError, match=r"more than max_bytes=20000000 bytes \(the view of "
                                                        r"archive/data/0 .* after \d{4} tensors\)"):
            reader(path, max_bytes=20_000_000)
        assert len(reader(path, max_bytes=30_000_000)) == len(reader(path)) == 10_000
    weights = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(1000, 1000)}, weights)  # 4 MB of data
    with pytest.raises(UnsafeCheckpointError, match=r"more than max_bytes=4000000 bytes \(storage"):
        load_without_code(weights, MODULES, max_bytes=4_000_000)
    assert torch.equal(load_without_code(weights, MODULES, max_bytes=9_000_000)["w"], torch.ones(1000, 1000))


def test_a_getattr_chain_is_recorded_never_looked_up(tmp_path):
    """getattr(getattr(OrderedDict, '__init__'), '__globals__') then called: getattr is only a stand-in record,
    which cannot be called; nothing is looked up and nothing runs."""
    marker = tmp_path / "ran"

    getattr_ = b"cbuiltins\ngetattr\n"
    inner = getattr_ + b"ccollections\nOrderedDict\n" + text("__init__") + b"\x86R"
    chain = getattr_ + inner + text("__globals__") + b"\x86R"
    data_pkl = b"\x80\x02" + chain + text(f"touch {marker}") + b"\x85R."
    path = torch_zip(tmp_path / "chain.pt", data_pkl)
    for reader in READERS.values():
        with pytest.raises(CheckpointError, match=r"chain.pt: TypeError: 'getattr' object is not callable"):
            reader(path)
    assert not marker.exists()
