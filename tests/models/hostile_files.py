"""torch.save zip files crafted byte by byte (zipfile + pickle opcodes), hostile or not: the tests of
detector.models.safe_pickle's checks and of the commands' refusals build their files with these."""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch


class Storage:
    """A storage in the pickle: torch.save's persistent id ('storage', <type>, key, location, element count)."""

    def __init__(self, key: str, numel: int, kind: str = "FloatStorage") -> None:
        self.key, self.numel, self.kind = key, numel, kind


class View:
    """Pickles as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""

    def __init__(self, storage: Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self) -> tuple:
        return torch._utils._rebuild_tensor_v2, self.args


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> tuple | None:
        if isinstance(obj, Storage):
            return "storage", getattr(torch, obj.kind), obj.key, "cpu", obj.numel
        return None


def dumps(obj: Any) -> bytes:
    buffer = io.BytesIO()
    TorchPickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def torch_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None,
              compressed: dict[str, tuple[bytes, int]] | None = None, names: tuple[str, ...] = ()) -> Path:
    """A zip laid out as torch.save's (archive/data.pkl, archive/byteorder, archive/data/<key>); `compressed`:
    entries deflated while written (chunk, repeats), `names`: extra entries of one byte."""
    with zipfile.ZipFile(path, "w", compresslevel=1) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        for key, data in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", data)
        for key, (chunk, repeats) in (compressed or {}).items():
            info = zipfile.ZipInfo(f"archive/data/{key}")
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as entry:
                for _ in range(repeats):
                    entry.write(chunk)
        for name in names:
            archive.writestr(name, b"x")
    return path


FOUR_FLOATS = {"0": struct.pack("<4f", 0.0, 1.0, 2.0, 3.0)}


def one_view(offset: int, size: tuple, stride: tuple, numel: int = 4) -> bytes:
    return dumps({"x": View(Storage("0", numel), offset, size, stride)})


def nested_lists(depth: int) -> bytes:
    """[[[...]]] `depth` deep: EMPTY_LIST pushed `depth` times, each appended to the one below."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def text(value: str) -> bytes:
    """BINUNICODE: a str in a pickle."""
    return b"X" + struct.pack("<I", len(value)) + value.encode()


def many_tensors(count: int) -> bytes:
    """A list of `count` one-element tensors of the same storage: the rebuild function and its argument tuple are
    pickled once and memoized, then each tensor costs 5 bytes (BINGET, BINGET, REDUCE)."""
    pid = b"(" + text("storage") + b"ctorch\nFloatStorage\n" + text("0") + text("cpu") + b"K\x04tQ"
    args = (b"(" + pid + b"K\x00" + b"K\x01\x85" + b"K\x01\x85" + b"\x89"
            + b"ccollections\nOrderedDict\n)R" + b"tq\x01")
    return (b"\x80\x02](ctorch._utils\n_rebuild_tensor_v2\nq\x00" + args + b"R"  # the first tensor
            + b"h\x00h\x01R" * (count - 1) + b"e.")
