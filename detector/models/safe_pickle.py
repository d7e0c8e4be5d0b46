"""Read a pickled PyTorch checkpoint of another framework (a `torch.save` zip file whose pickle names that
framework's classes) without importing the framework and without running any code from the file.

`torch.load` rebuilds every object a pickle names by calling the class or function it names: a checkpoint that
pickles whole modules (ultralytics' `.pt` files hold `DetectionModel` objects) needs their package installed, and a
malicious file can name `os.system`. This reader's `find_class` answers instead:
    tensors            torch's tensor/parameter rebuild functions and storage types -> our own rebuild (the bytes
                       of `<archive>/data/<key>` as a tensor of the storage's dtype, viewed with the pickled
                       offset, size and stride); dtypes, torch.Size, torch.device
    plain containers   collections.OrderedDict, set, frozenset
    named classes      classes of the `stand_in_prefixes` modules (e.g. `ultralytics.`, `torch.nn.modules.`) and the
                       data types official checkpoints carry (numpy scalars and dtypes, pathlib paths,
                       namespaces) -> a `StandIn` subclass of that name: never imported, its instances only record
                       the arguments and the state (`__dict__`) the pickle gives them
    anything else      refused: `UnsafePickleError` naming the global (os.system, builtins.eval, ...)
so the result is a tree of dicts, lists, tensors and `StandIn` records; `module_state_dict` reads a pickled
`nn.Module` record's parameters and buffers as a state dict.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

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
PLAIN_CONTAINERS = {("collections", "OrderedDict"): OrderedDict, ("builtins", "set"): set,
                    ("builtins", "frozenset"): frozenset}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names something that is neither a tensor, a plain container nor an allowed class."""


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


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_: Any) -> torch.Tensor:
    """torch._utils._rebuild_tensor(_v2): the tensor viewing `storage` (a flat tensor) at offset/size/stride."""
    return storage.as_strided(tuple(size), tuple(stride), offset).clone(memory_format=torch.contiguous_format)


def _rebuild_parameter(data: torch.Tensor, *_: Any) -> torch.Tensor:
    """torch._utils._rebuild_parameter(_with_state): a parameter is read as its plain tensor."""
    return data


def _rebuild_from_type(function: Any, new_type: Any, args: tuple, state: Any) -> Any:
    """torch._tensor._rebuild_from_type_v2: allowed only for plain tensors and parameters."""
    if function not in (_rebuild_tensor, _rebuild_parameter) or getattr(new_type, "name", None) not in ("Tensor", "Parameter"):
        raise UnsafePickleError(f"refusing a tensor rebuilt as {getattr(new_type, 'name', new_type)!r}")
    return function(*args)


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """_codecs.encode as protocol-2 pickles use it for `bytes` objects (`encode(text, 'latin1')`), nothing else."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _reconstruct(cls: Any, base: Any, state: Any) -> Any:
    """copyreg._reconstructor (pickle protocols 0 and 1), for stand-in classes only."""
    if not (isinstance(cls, type) and issubclass(cls, StandIn)):
        raise UnsafePickleError(f"refusing copyreg._reconstructor for {cls!r}")
    return cls.__new__(cls)


TORCH_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor, ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type, ("copyreg", "_reconstructor"): _reconstruct,
    ("_codecs", "encode"): _latin1_bytes,
    ("torch", "Size"): torch.Size, ("torch", "device"): torch.device,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, stand_in_prefixes: tuple[str, ...],
                 source: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.stand_in_prefixes, self.source = archive, prefix, stand_in_prefixes, source
        self.stand_ins: dict[str, type[StandIn]] = {}
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # protocol 2 pickles name Python 2's module
        key = (module, name)
        if key in PLAIN_CONTAINERS:
            return PLAIN_CONTAINERS[key]
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
        raise UnsafePickleError(
            f"{self.source}: refusing to load: its pickle references {module}.{name}, which is neither a tensor, a "
            f"plain container nor a class of {', '.join(self.stand_in_prefixes)} (this reader runs no code from a "
            "checkpoint; a genuine checkpoint does not need it)"
        )

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Marker)
                and pid[1].dtype is not None):
            raise UnsafePickleError(f"{self.source}: unknown persistent id {pid!r} (not a torch storage)")
        _, storage_type, key, _location, _numel = pid
        if key not in self.storages:
            raw = self.archive.read(f"{self.prefix}data/{key}")
            dtype = storage_type.dtype
            self.storages[key] = (torch.frombuffer(bytearray(raw), dtype=dtype) if raw
                                  else torch.empty(0, dtype=dtype))
        return self.storages[key]


def load_without_code(path: str | Path, stand_in_prefixes: tuple[str, ...]) -> Any:
    """The object pickled in the `torch.save` zip file `path`, with the classes of modules starting with
    `stand_in_prefixes` as `StandIn` records and tensors on the CPU; UnsafePickleError for any other global."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a torch.save zip archive (torch >= 1.6 format); cannot read it without code")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError(f"{path}: expected one <archive>/data.pkl in the zip file, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).decode().strip() != "little":
            raise ValueError(f"{path}: big-endian tensors are not supported")
        return _Unpickler(archive.read(pickles[0]), archive, prefix, stand_in_prefixes, str(path)).load()


def referenced_globals(path: str | Path) -> set[str]:
    """The `module.name` globals the pickle of a torch.save zip file references, read without unpickling
    (pickletools); empty for a file that is not such an archive."""
    import pickletools

    path = Path(path)
    if not zipfile.is_zipfile(path):
        return set()
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            return set()
        names, strings = set(), []
        for opcode, argument, _ in pickletools.genops(archive.read(pickles[0])):
            if opcode.name == "GLOBAL":
                names.add(argument.replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.add(f"{strings[-2]}.{strings[-1]}")
            if isinstance(argument, str):
                strings.append(argument)
        return names


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

