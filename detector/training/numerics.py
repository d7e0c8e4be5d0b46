"""What decides the float rounding of a CPU run besides the code: torch's intra-op thread count and the kernel sets
of ATen, oneDNN and MKL. Two runs repeat to the digit only where all of them agree (docs/results.md, "Same numbers
on another machine"), so a run pins the thread count on request and records all of them in metrics.json. torch is
imported where it is used, so that the sweep summary formats a record with `describe` without loading it."""

from __future__ import annotations

import os
from typing import Any

# environment variables that select kernels or split sums; read by torch, oneDNN and MKL at start-up
NUMERICS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR",
                "MKL_ENABLE_INSTRUCTIONS")


def set_cpu_threads(threads: int | None) -> None:
    """`torch.set_num_threads(threads)`; None keeps torch's default (one thread per core). Unlike OMP_NUM_THREADS,
    which this torch build caps at the core count, any count is honoured: `cpu_threads=16` on a 2-core machine
    splits the sums as a 16-core machine does (slowly)."""
    import torch

    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"cpu_threads must be a positive integer or null, got {threads!r}")
    torch.set_num_threads(threads)


def numerics() -> dict[str, Any]:
    """The settings that change a CPU run's numbers: torch version, intra-op threads, ATen's kernel set and the
    environment variables of NUMERICS_ENV that are set."""
    import torch

    return {
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "environment": {name: os.environ[name] for name in NUMERICS_ENV if name in os.environ},
    }


def describe(settings: dict[str, Any]) -> str:
    """One line for the log and the sweep summary, e.g. 'torch 2.14.1, 2 CPU threads, AVX512 kernels'."""
    line = f"torch {settings.get('torch')}, {settings.get('cpu_threads')} CPU threads, {settings.get('cpu_capability')} kernels"
    environment = " ".join(f"{name}={value}" for name, value in (settings.get("environment") or {}).items())
    return f"{line} ({environment})" if environment else line
