"""Crash-consistent files: every file of a run folder (checkpoints, metrics.json, the split lists, sweep summaries)
is written to `<name>.tmp<pid>` beside it, fsynced and renamed over `<name>` (atomic on POSIX), so that a kill at
any moment leaves either the previous complete file or the new complete one. A kill can leave the temporary file;
`remove_stale_temporaries` deletes those of processes that no longer run (at the next start)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

_TEMPORARY = re.compile(r"^.+\.tmp(\d+)$")


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_args: Any) -> Iterator[IO]:
    """`with atomic_write(path) as f: f.write(...)`: `path` holds the new content only once the block has ended
    without an error; until then (and after an error, or a kill) it holds what it held before."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(temporary, mode, **open_args) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """`Path(path).write_text(text)`, atomically."""
    with atomic_write(path) as f:
        f.write(text)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a power cut after it keeps the new name)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform or file system that cannot open folders: the rename is still atomic
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folders: Iterable[str | Path]) -> list[Path]:
    """Delete the `<name>.tmp<pid>` files that `atomic_write` left in `folders` (not recursive) when process `pid`,
    on this machine, no longer runs; log one info line naming them. Returns the deleted paths."""
    removed = []
    for folder in dict.fromkeys(Path(f) for f in folders):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            match = _TEMPORARY.match(path.name)
            if match and path.is_file() and not _running(int(match.group(1))):
                path.unlink(missing_ok=True)
                removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted write: %s", len(removed),
                 ", ".join(str(p) for p in removed))
    return removed
