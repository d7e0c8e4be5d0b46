"""Checkpoint writing that never leaves a half-written file (Lightning CheckpointIO plugin)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from detector.atomic import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint with `detector.atomic.atomic_write` (`<name>.tmp<pid>`, fsync, rename): a kill
    during the write leaves the previous checkpoint intact, never a truncated one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        with atomic_write(path, "wb") as f:
            torch.save(checkpoint, f)
