"""The C allocator setting of the processes that decode and augment images (the DataLoader workers).

Every augmentation step allocates a new image (1.2 MB at 640 px). glibc's malloc serves blocks that large from
fresh mmap'ed pages or trims them off the heap when they are freed, so the next sample touches new pages and pays a
page fault per 4 KiB: measured, a third of the CPU time of a 640-px mosaic sample (docs/benchmark.md, "Data
pipeline"). Letting the heap keep up to `KEEP_BYTES` of freed memory reuses the same pages from sample to sample;
the samples are unchanged.
"""

from __future__ import annotations

import ctypes

KEEP_BYTES = 32 * 2**20  # blocks below this come from the heap, and up to this much freed memory stays in it
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory(limit: int = KEEP_BYTES) -> bool:
    """Set glibc's mmap and trim thresholds of this process to `limit` bytes; False (and nothing changed) where the C
    library is not glibc."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))


def init_worker(worker_id: int) -> None:
    """`worker_init_fn` of the DataLoaders: the allocator setting above, in each worker process."""
    keep_freed_memory()
