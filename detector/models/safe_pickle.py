"""Read a pickled PyTorch checkpoint of another framework (a `torch.save` zip file whose pickle names that
framework's classes) without importing the framework and without running any code from the file.

`torch.load` rebuilds every object a pickle names by calling the class or function it names: a checkpoint that
pickles whole modules (ultralytics' `.pt` files hold `DetectionModel` objects) needs their package installed, and a
malicious file can name `os.system`. This reader's `find_class` answers instead:
    tensors            torch's tensor/parameter rebuild functions and storage types -> our own rebuild (the bytes
                       of `<archive>/data/<key>` as a tensor of the storage's dtype, viewed with the pickled
                       offset, size and stride); dtypes, torch.Size, torch.device
    plain data         collections.OrderedDict, set, frozenset, datetime's date, time, datetime, timedelta, timezone
    named classes      classes of the `stand_in_prefixes` modules (e.g. `ultralytics.`, `torch.nn.modules.`) and the
                       data types official checkpoints carry (numpy scalars and dtypes, pathlib paths,
                       namespaces) -> a `StandIn` subclass of that name: never imported, its instances only record
                       the arguments and the state (`__dict__`) the pickle gives them
    anything else      refused: `UnsafePickleError` naming the global (os.system, builtins.eval, ...)
so the result is a tree of dicts, lists, tensors and `StandIn` records; `module_state_dict` reads a pickled
`nn.Module` record's parameters and buffers as a state dict.

Before anything is read into memory, `check_checkpoint` checks the file (`UnsafeCheckpointError` names the file and
the record): every zip entry stored uncompressed (as torch.save writes them: no deflate bomb) under a name inside
the archive, the entries no larger together than the file; then a first pass over the pickle that reads no tensor
data: each storage's declared size equals its zip entry's, each tensor view has no negative stride, no stride 0 on a
dimension of size > 1 and stays inside its storage, containers nest at most MAX_DEPTH deep, and the bytes it would
all take (storages, the tensors cloned from their views, TENSOR_COST per tensor, PICKLE_BYTE_COST per byte of pickle
for the objects it can build) stay within `max_bytes` (default BUDGET_FILE_FACTOR x the file size + BUDGET_BASE).
`load_weights_only` applies the same checks before `torch.load(weights_only=True)` (this project's checkpoints).
Every failure to read a file is a `CheckpointError` whose message is `<file>: <reason>` (`checkpoint_file`).
"""

from __future__ import annotations

import datetime
import io
import math
import pickle
import re
import reprlib
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

MiB = 1 << 20
BUDGET_FILE_FACTOR, BUDGET_BASE = 4, 64 * MiB  # default max_bytes: 4 x the file size + 64 MiB
PICKLE_BYTE_COST = 256  # Python objects one byte of pickle can build, at most (an empty set: 1 byte, ~220 bytes)
TENSOR_COST = 1024  # a tensor object beside its data (about 600 bytes measured)
MAX_DEPTH = 100  # containers nested deeper are refused (an ultralytics checkpoint nests about 25 deep)
READ_CHUNK = 16 * MiB
STORAGE_KEY = re.compile(r"[A-Za-z0-9_]+")

# torch's storage classes (the zip format pickles the storage type of each tensor) and their element types
STORAGE_DTYPES = {
    "HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
# data types that checkpoints pickle beside the model (training metrics as numpy scalars, paths, argument
# namespaces): recorded as stand-ins, never imported
DATA_STAND_INS = {
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
    ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib._local", "PosixPath"),
    ("pathlib._local", "WindowsPath"), ("types", "SimpleNamespace"), ("argparse", "Namespace"),
    ("builtins", "getattr"),  # `getattr(SomeModule, 'forward')` in some checkpoints: recorded, never looked up
}
# plain data types, built for real: their constructors only make a value (or raise) whatever the arguments
PLAIN_TYPES = {
    ("collections", "OrderedDict"): OrderedDict, ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
    ("datetime", "date"): datetime.date, ("datetime", "time"): datetime.time,
    ("datetime", "datetime"): datetime.datetime, ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
}
TENSOR_REBUILDS = {("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2")}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or written: `str()` is `<file>: <reason>` (the file once known)."""

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        super().__init__(reason)
        self.reason, self.path = reason, None if path is None else str(path)

    def __str__(self) -> str:
        return self.reason if self.path is None else f"{self.path}: {self.reason}"


class UnsafeCheckpointError(CheckpointError):
    """A file refused before its data is read: a malformed archive, storage or tensor view, or over the budget."""


class UnsafePickleError(CheckpointError, pickle.UnpicklingError):
    """The pickle names something that is neither a tensor, plain data nor an allowed class."""


@contextmanager
def checkpoint_file(path: str | Path) -> Iterator[None]:
    """Reading or writing the checkpoint `path`: any error inside becomes a `CheckpointError` naming the file
    (`<file>: <type>: <message>` on one line, the error as its cause); a CheckpointError without a file gets it."""
    try:
        yield
    except CheckpointError as error:
        if error.path is None:
            error.path = str(path)
        raise
    except Exception as error:  # MemoryError, RecursionError, BadZipFile, KeyError, TypeError, ... of a bad file
        message = " ".join(str(error).split())
        raise CheckpointError(f"{type(error).__name__}: {message}" if message else type(error).__name__,
                              path) from error


class StandIn:
    """A class named by the pickle, in its place: instances record the constructor arguments (`args`) and the
    pickled state (`state`, a module's `__dict__`). `qualname` is the name the pickle gave."""

    qualname = "StandIn"

    def __new__(cls, *args: Any) -> StandIn:
        record = super().__new__(cls)
        record.args, record.state = args, None
        return record

    def __init__(self, *args: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    @property
    def name(self) -> str:
        """The class name without its module (`Detect` for `ultralytics.nn.modules.head.Detect`)."""
        return self.qualname.rsplit(".", 1)[-1]

    def __repr__(self) -> str:
        return f"StandIn({self.qualname})"


class _Marker:
    """A torch class the pickle names only as an argument (a storage type, Tensor, Parameter)."""

    def __init__(self, name: str, dtype: torch.dtype | None = None) -> None:
        self.name, self.dtype = name, dtype


class _StorageRecord:
    """The checking pass's storage: its zip entry, dtype and element count (no data read)."""

    def __init__(self, entry: str, dtype: torch.dtype, numel: int) -> None:
        self.entry, self.dtype, self.numel = entry, dtype, numel


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    """torch._utils._rebuild_parameter(_with_state): a parameter is read as its plain tensor."""
    return data


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """_codecs.encode as protocol-2 pickles use it for `bytes` objects (`encode(text, 'latin1')`), nothing else."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _reconstruct(cls: Any, base: Any, state: Any) -> Any:
    """copyreg._reconstructor (pickle protocols 0 and 1), for stand-in classes only."""
    if not (isinstance(cls, type) and issubclass(cls, StandIn)):
        raise UnsafePickleError(f"refusing copyreg._reconstructor for {reprlib.repr(cls)}")
    return cls.__new__(cls)


TORCH_FUNCTIONS = {
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("copyreg", "_reconstructor"): _reconstruct, ("_codecs", "encode"): _latin1_bytes,
    ("torch", "Size"): torch.Size, ("torch", "device"): torch.device,
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Unpickler(pickle.Unpickler):
    """The reading pass (after `_Checker`'s): storages are the bytes of their zip entries, tensors copies of views."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, stand_in_prefixes: tuple[str, ...], path: str) -> None:
        super().__init__(io.BytesIO(archive.read(f"{prefix}data.pkl")))
        self.archive, self.prefix, self.stand_in_prefixes, self.path = archive, prefix, stand_in_prefixes, path
        self.stand_ins: dict[str, type[StandIn]] = {}
        self.storages: dict[str, Any] = {}
        self.declared: dict[str, tuple[torch.dtype, int]] = {}
        self.names: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # protocol 2 pickles name Python 2's module
        key = (module, name)
        self.names.add(f"{module}.{name}")
        if key in PLAIN_TYPES:
            return PLAIN_TYPES[key]
        if key in TENSOR_REBUILDS:
            return self.rebuild_tensor
        if key == ("torch._tensor", "_rebuild_from_type_v2"):
            return self.rebuild_from_type
        if key in TORCH_FUNCTIONS:
            return TORCH_FUNCTIONS[key]
        if module == "torch" and name in STORAGE_DTYPES:
            return _Marker(name, STORAGE_DTYPES[name])
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if key in (("torch", "Tensor"), ("torch.nn.parameter", "Parameter")):
            return _Marker(name)
        if key in DATA_STAND_INS or module.startswith(self.stand_in_prefixes):
            qualname = f"{module}.{name}"
            if qualname not in self.stand_ins:
                self.stand_ins[qualname] = type(name, (StandIn,), {"qualname": qualname})
            return self.stand_ins[qualname]
        allowed = f"a tensor, plain data nor a class of {', '.join(p + '*' for p in self.stand_in_prefixes)}" \
            if self.stand_in_prefixes else "a tensor nor plain data"
        raise UnsafePickleError(
            f"refusing to load: its pickle references {module}.{name}, which is neither {allowed} (this "
            "reader runs no code from a checkpoint; a genuine checkpoint does not need it)", self.path)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Marker)
                and pid[1].dtype is not None and isinstance(pid[2], str) and STORAGE_KEY.fullmatch(pid[2])
                and _is_int(pid[4]) and pid[4] >= 0):
            raise UnsafePickleError(
                f"refusing to load: unknown persistent id {reprlib.repr(pid)} (not a torch storage)", self.path)
        _, storage_type, key, _location, numel = pid
        if self.declared.setdefault(key, (storage_type.dtype, numel)) != (storage_type.dtype, numel):
            raise UnsafeCheckpointError(f"refusing to load: storage {key} is declared as {self.declared[key]} and as "
                                        f"{(storage_type.dtype, numel)}", self.path)
        if key not in self.storages:
            self.storages[key] = self.storage(f"{self.prefix}data/{key}", storage_type.dtype, numel)
        return self.storages[key]

    def storage(self, entry: str, dtype: torch.dtype, numel: int) -> Any:
        """The storage's bytes as a flat tensor, read in chunks into one buffer (no second copy)."""
        data = bytearray(self.archive.getinfo(entry).file_size)
        with self.archive.open(entry) as file:
            position = 0
            while chunk := file.read(READ_CHUNK):
                data[position:position + len(chunk)] = chunk
                position += len(chunk)
        return torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)

    def rebuild_tensor(self, storage: Any, offset: int, size: tuple, stride: tuple, *_: Any) -> Any:
        """torch._utils._rebuild_tensor(_v2): a contiguous copy of the view of `storage` at offset/size/stride."""
        return storage.as_strided(tuple(size), tuple(stride), offset).clone(memory_format=torch.contiguous_format)

    def rebuild_from_type(self, function: Any, new_type: Any, args: tuple, state: Any) -> Any:
        """torch._tensor._rebuild_from_type_v2: allowed only for plain tensors and parameters."""
        if function not in (self.rebuild_tensor, _rebuild_parameter) or getattr(new_type, "name", None) not in (
                "Tensor", "Parameter"):
            raise UnsafePickleError(f"refusing a tensor rebuilt as {reprlib.repr(getattr(new_type, 'name', new_type))}",
                                    self.path)
        return function(*args)


class _Checker(_Unpickler):
    """The checking pass: the same pickle with the same globals, but storages and tensors are records (no data is
    read); each storage and view is checked and, with the pickle, charged against `max_bytes`."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, stand_in_prefixes: tuple[str, ...], path: str,
                 max_bytes: int) -> None:
        self.path, self.max_bytes, self.charged, self.tensors = path, max_bytes, 0, 0
        size = archive.getinfo(f"{prefix}data.pkl").file_size
        self.charge(PICKLE_BYTE_COST * size, f"its {size}-byte pickle, counted as {PICKLE_BYTE_COST} bytes of objects "
                                             "per byte,")  # before the pickle is read
        super().__init__(archive, prefix, stand_in_prefixes, path)

    def refuse(self, reason: str) -> UnsafeCheckpointError:
        return UnsafeCheckpointError(f"refusing to load: {reason}", self.path)

    def charge(self, nbytes: int, what: str) -> None:
        self.charged += nbytes
        if self.charged > self.max_bytes:
            raise self.refuse(f"reading it would take more than max_bytes={self.max_bytes} bytes ({what} brings the "
                              f"total to {self.charged} after {self.tensors} tensors); pass a larger max_bytes if you "
                              "trust the file")

    def storage(self, entry: str, dtype: torch.dtype, numel: int) -> _StorageRecord:
        try:
            info = self.archive.getinfo(entry)
        except KeyError:
            raise self.refuse(f"its pickle names storage {entry}, which the archive does not have") from None
        nbytes = numel * dtype.itemsize
        if nbytes != info.file_size:
            raise self.refuse(f"storage {entry} declares {numel} {str(dtype).removeprefix('torch.')} elements "
                              f"({nbytes} bytes), its zip entry holds {info.file_size} bytes")
        self.charge(nbytes, f"storage {entry}")
        return _StorageRecord(entry, dtype, numel)

    def rebuild_tensor(self, storage: Any, offset: int, size: tuple, stride: tuple, *_: Any) -> Any:
        if not (isinstance(storage, _StorageRecord) and _is_int(offset) and isinstance(size, (tuple, list))
                and isinstance(stride, (tuple, list)) and len(size) == len(stride)
                and all(_is_int(n) for n in (*size, *stride))):
            raise self.refuse(f"a tensor rebuilt from {reprlib.repr((storage, offset, size, stride))}, not from a "
                              "storage, an offset, a size and a stride")
        view = f"the view of {storage.entry} at offset {offset} with size {tuple(size)}, stride {tuple(stride)}"
        if offset < 0 or any(n < 0 for n in size):
            raise self.refuse(f"{view} has a negative offset or size")
        if any(s < 0 for s in stride):
            raise self.refuse(f"{view} has a negative stride")
        if any(s == 0 and n > 1 for n, s in zip(size, stride)):
            raise self.refuse(f"{view} has stride 0 on a dimension of size > 1 (one element repeated)")
        numel = math.prod(size)
        end = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if numel else offset
        if end > storage.numel:
            raise self.refuse(f"{view} reaches element {end} of a storage of {storage.numel}")
        self.tensors += 1
        self.charge(numel * storage.dtype.itemsize + TENSOR_COST, view)
        return _Marker("Tensor")


def _children(value: Any) -> tuple | None:
    """What a container of the unpickled tree holds (None: not a container)."""
    if isinstance(value, dict):
        return (*value.keys(), *value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(value)
    if isinstance(value, StandIn):
        return value.args, value.state
    return None


def _nests_deeper_than(root: Any, limit: int) -> bool:
    """Whether containers nest more than `limit` deep in `root` (iterative: a deep tree needs no recursion)."""
    stack, seen = [(root, 1)], set()
    while stack:
        value, depth = stack.pop()
        children = _children(value)
        if children is None or id(value) in seen:
            continue
        if depth > limit:
            return True
        seen.add(id(value))
        stack.extend((child, depth + 1) for child in children)
    return False


@contextmanager
def _archive(path: Path) -> Iterator[tuple[zipfile.ZipFile, str]]:
    """The torch.save zip file `path` open, and its prefix (`archive/`), once its entries pass the checks."""
    if not path.is_file():
        raise CheckpointError("no such file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError("not a torch.save zip archive (torch >= 1.6 format); cannot read it without code")
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise UnsafeCheckpointError("refusing to load: its zip file names an entry twice")
        for info in infos:
            parts = info.filename.split("/")
            if info.filename.startswith("/") or "\\" in info.filename or ".." in parts or ":" in parts[0]:
                raise UnsafeCheckpointError(f"refusing to load: zip entry {info.filename!r} names a path outside the "
                                            "archive")
            if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                raise UnsafeCheckpointError(
                    f"refusing to load: zip entry {info.filename} is compressed (method {info.compress_type}: "
                    f"{info.compress_size} bytes stored for {info.file_size}); torch.save stores entries uncompressed")
        total, size = sum(info.file_size for info in infos), path.stat().st_size
        if total > size:
            raise UnsafeCheckpointError(f"refusing to load: its zip entries hold {total} bytes, more than the file's "
                                        f"{size} (entries that overlap)")
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"expected one <archive>/data.pkl in the zip file, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in names and archive.read(byteorder).decode().strip() != "little":
            raise CheckpointError("big-endian tensors are not supported")
        yield archive, prefix


def _check(archive: zipfile.ZipFile, prefix: str, stand_in_prefixes: tuple[str, ...], path: Path,
           max_bytes: int | None) -> set[str]:
    budget = BUDGET_FILE_FACTOR * path.stat().st_size + BUDGET_BASE if max_bytes is None else max_bytes
    checker = _Checker(archive, prefix, stand_in_prefixes, str(path), budget)
    tree = checker.load()
    if _nests_deeper_than(tree, MAX_DEPTH):
        raise checker.refuse(f"its containers nest more than {MAX_DEPTH} deep")
    return checker.names


def check_checkpoint(path: str | Path, stand_in_prefixes: tuple[str, ...] = (), *,
                     max_bytes: int | None = None) -> set[str]:
    """Check the torch.save zip file `path` without reading its tensor data (see the module doc; max_bytes: the
    memory budget, default BUDGET_FILE_FACTOR x the file size + BUDGET_BASE); returns the `module.name` globals its
    pickle names. A CheckpointError naming the file for a file that fails a check."""
    path = Path(path)
    with checkpoint_file(path), _archive(path) as (archive, prefix):
        return _check(archive, prefix, stand_in_prefixes, path, max_bytes)


def load_without_code(path: str | Path, stand_in_prefixes: tuple[str, ...], *, max_bytes: int | None = None) -> Any:
    """The object pickled in the torch.save zip file `path`, with the classes of modules starting with
    `stand_in_prefixes` as `StandIn` records and tensors on the CPU, once `check_checkpoint` passes; a
    CheckpointError naming the file otherwise (UnsafePickleError for any other global)."""
    path = Path(path)
    with checkpoint_file(path), _archive(path) as (archive, prefix):
        _check(archive, prefix, stand_in_prefixes, path, max_bytes)
        return _Unpickler(archive, prefix, stand_in_prefixes, str(path)).load()


def load_weights_only(path: str | Path, *, max_bytes: int | None = None) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU once `check_checkpoint` passes (no class allowed beyond
    tensors and plain data); a CheckpointError naming the file for any failure."""
    with checkpoint_file(path):
        check_checkpoint(path, max_bytes=max_bytes)
        return torch.load(path, map_location="cpu", weights_only=True)


def module_state_dict(module: StandIn, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict (`name.sub.weight` -> tensor, persistent buffers included) of a pickled nn.Module record,
    as `nn.Module.state_dict` would give it."""
    state = module.state if isinstance(module, StandIn) else None
    if not isinstance(state, dict) or "_modules" not in state:
        raise ValueError(f"{prefix or 'the object'} is not a pickled torch module ({module!r})")
    tensors: dict[str, torch.Tensor] = {}
    skipped = set(state.get("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is not None and name not in skipped:
                if not isinstance(value, torch.Tensor):
                    raise ValueError(f"{prefix}{name} is not a tensor ({type(value).__name__})")
                tensors[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            tensors.update(module_state_dict(child, f"{prefix}{name}."))
    return tensors

