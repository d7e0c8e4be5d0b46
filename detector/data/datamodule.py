"""LightningDataModule: any reader (COCO json now; VOC, YOLO later) -> DetectionDataset -> DataLoaders."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import albumentations as A
import lightning as L
import torch
from torch.utils.data import DataLoader

from detector.data.dataset import DetectionDataset, Record, collate

Reader = Callable[[], tuple[list[Record], list[str], list[int]]]


class DetectionDataModule(L.LightningDataModule):
    """`train_reader` / `val_reader` return (records, class names, category ids); `prepare`, when given,
    creates the dataset on disk once (the synthetic default does this)."""

    def __init__(
        self, train_reader: Reader, val_reader: Reader, num_classes: int, img_size: int = 640,
        batch_size: int = 16, num_workers: int = 2, train_augmentations: Sequence[A.BasicTransform] = (),
        min_visibility: float = 0.2, min_area: float = 4.0, prepare: Callable[[], object] | None = None,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        self.train_reader, self.val_reader, self.prepare = train_reader, val_reader, prepare
        self.num_classes, self.img_size, self.batch_size, self.num_workers = num_classes, img_size, batch_size, num_workers
        self.train_augmentations = list(train_augmentations)
        self.min_visibility, self.min_area = min_visibility, min_area
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.train_dataset: DetectionDataset | None = None
        self.val_dataset: DetectionDataset | None = None

    def prepare_data(self) -> None:
        if self.prepare is not None:
            self.prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.prepare is not None:
            self.prepare()  # idempotent; covers processes that skipped prepare_data
        if self.val_dataset is None:
            self.val_dataset = self._dataset(self.val_reader, augmentations=())
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self._dataset(self.train_reader, augmentations=self.train_augmentations)

    def _dataset(self, reader: Reader, augmentations: Sequence[A.BasicTransform]) -> DetectionDataset:
        records, names, category_ids = reader()
        if len(names) != self.num_classes:
            raise ValueError(f"data.num_classes={self.num_classes} but the dataset has {len(names)} classes: {names}")
        return DetectionDataset(records, names, self.img_size, augmentations, category_ids, self.min_visibility, self.min_area)

    @property
    def class_names(self) -> list[str]:
        assert self.val_dataset is not None, "call setup() first"
        return self.val_dataset.class_names

    def _loader(self, dataset: DetectionDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
            collate_fn=collate, pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(dataset) > self.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False)
