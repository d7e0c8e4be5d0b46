"""Training sampler whose output fixes every random choice of the data pipeline.

It yields (index, epoch) keys; `DetectionDataset` seeds its augmentations from (seed, epoch, index),
so a sample is the same whatever the number of DataLoader workers, under DDP, and after resuming
from a checkpoint (Lightning calls `set_epoch` every epoch, also after a restart).
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Dataset, DistributedSampler


class EpochSampler(DistributedSampler):
    """A DistributedSampler (shuffled with seed + epoch, sharded over `num_replicas` ranks) that yields
    (index, epoch) pairs. Being a DistributedSampler, Lightning keeps it as it is under DDP."""

    def __init__(self, dataset: Dataset, shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((index, epoch) for index in super().__iter__())
