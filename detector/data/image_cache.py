"""The image cache of `DetectionDataset` (`data.cache_images=ram|disk|false`): images decoded and resized for the
letterbox once, then served without decoding.

- ram: one uint8 block holding every image back to back, allocated and filled in the main process before the
  DataLoader workers start. Forked workers (the default on Linux) read the parent's pages: the block is shared, not
  copied per worker, persistent or not (docs/benchmark.md, "Image cache", measures it). Under the spawn start
  method each worker would receive its own copy.
- disk: one `.npy` file per image under `<cache_dir>/<img_size>px/`, named by a hash of the image's absolute path,
  size and modification time (an edited image is cached again); written once, read by every run and worker.
  Deleting the folder is always safe.

Before filling, the size is estimated exactly (the letterbox shape of each record) and printed; a RAM cache larger
than `max_gb` or than the memory available, or a disk cache larger than the free disk space, is refused with a
ValueError that names the alternatives.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

GB = 1024**3
CACHE_MODES = ("ram", "disk")


def cache_mode(value: bool | str | None) -> str | None:
    """`data.cache_images` as "ram", "disk" or None (no cache); true is an alias of "ram"."""
    if value is True:
        return "ram"
    if value is None or value is False or (isinstance(value, str) and value.lower() in ("false", "none", "off", "")):
        return None
    if isinstance(value, str) and value.lower() in CACHE_MODES:
        return value.lower()
    raise ValueError(f"data.cache_images={value!r}: choose ram, disk or false (true is ram)")


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/detector/images`, else `~/.cache/detector/images`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "detector" / "images"


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux' MemAvailable); None when unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


Loader = Callable[[int], np.ndarray]  # index -> the image resized for the letterbox; OSError when unreadable


class RamCache:
    """Every image in one shared uint8 block; `get` returns a read-only view of it (no copy) or None."""

    def __init__(self, shapes: Sequence[tuple[int, int]], load: Loader, max_gb: float, name: str = "dataset",
                 num_threads: int = 8) -> None:
        self.shapes = np.asarray(shapes, np.int64).reshape(-1, 2)
        self.offsets = np.concatenate([[0], np.cumsum(self.shapes.prod(1) * 3)])
        nbytes = int(self.offsets[-1])
        available = available_memory()
        log.info("[%s] caching %d images in RAM: %.2f GB (data.cache_max_gb=%g, %s available)", name, len(self.shapes),
                 nbytes / GB, max_gb, "?" if available is None else f"{available / GB:.1f} GB")
        if nbytes > max_gb * GB or (available is not None and nbytes > 0.9 * available):
            limit = f"data.cache_max_gb={max_gb:g}" if nbytes > max_gb * GB else f"90% of the {available / GB:.1f} GB available"
            raise ValueError(
                f"[{name}] data.cache_images=ram needs {nbytes / GB:.2f} GB for {len(self.shapes)} images, more than "
                f"{limit}: use data.cache_images=disk (a .npy per image), data.cache_images=false, a smaller "
                "data.img_size, or raise data.cache_max_gb"
            )
        self.buffer = np.empty(nbytes, np.uint8)
        self.cached = np.zeros(len(self.shapes), bool)

        def fill(index: int) -> None:
            try:
                image = load(index)
            except OSError:
                return  # served by decoding (and failing) again, counted by the dataset
            self.buffer[self.offsets[index]:self.offsets[index + 1]] = image.reshape(-1)
            self.cached[index] = True

        with ThreadPoolExecutor(num_threads) as pool:  # OpenCV releases the GIL
            list(pool.map(fill, range(len(self.shapes))))

    @property
    def nbytes(self) -> int:
        return self.buffer.nbytes

    def get(self, index: int) -> np.ndarray | None:
        if not self.cached[index]:
            return None
        height, width = self.shapes[index]
        image = self.buffer[self.offsets[index]:self.offsets[index + 1]].reshape(height, width, 3)
        image.flags.writeable = False
        return image


class DiskCache:
    """A `.npy` per image under `folder`; `get` returns the image or None (not cached, or an unreadable file)."""

    def __init__(self, paths: Sequence[Path], shapes: Sequence[tuple[int, int]], load: Loader, folder: Path,
                 name: str = "dataset", num_threads: int = 8) -> None:
        self.folder, self.shapes = Path(folder), [tuple(shape) for shape in shapes]
        self.folder.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(num_threads) as pool:
            self.files = list(pool.map(self._file, paths))
        todo = [i for i, file in enumerate(self.files) if file is not None and not file.is_file()]
        nbytes = sum(int(np.prod(shapes[i])) * 3 + 128 for i in todo)  # + the .npy header
        free = shutil.disk_usage(self.folder).free
        log.info("[%s] caching images as .npy files in %s: %d of %d to write, %.2f GB (%.1f GB free there)", name,
                 self.folder, len(todo), len(self.files), nbytes / GB, free / GB)
        if nbytes > 0.95 * free:
            raise ValueError(
                f"[{name}] data.cache_images=disk needs {nbytes / GB:.2f} GB more in {self.folder}, which has "
                f"{free / GB:.1f} GB free: point data.cache_dir= at a larger disk, or use data.cache_images=false"
            )

        def fill(index: int) -> None:
            try:
                image = load(index)
            except OSError:
                return
            part = self.files[index].with_suffix(f".{os.getpid()}.part")
            with open(part, "wb") as file:
                np.save(file, image)
            os.replace(part, self.files[index])  # atomic: other processes (DDP ranks) never see half a file

        with ThreadPoolExecutor(num_threads) as pool:
            list(pool.map(fill, todo))

    def _file(self, path: Path) -> Path | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        return self.folder / f"{hashlib.sha1(key.encode()).hexdigest()[:24]}.npy"

    @property
    def nbytes(self) -> int:
        return sum(file.stat().st_size for file in self.files if file is not None and file.is_file())

    def get(self, index: int) -> np.ndarray | None:
        file = self.files[index]
        if file is None:
            return None
        try:
            image = np.load(file)
        except (OSError, ValueError, EOFError):
            return None
        return image if image.shape == (*self.shapes[index], 3) and image.dtype == np.uint8 else None
