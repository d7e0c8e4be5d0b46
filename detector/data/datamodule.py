"""LightningDataModule: any reader (COCO json, Pascal VOC, YOLO txt) -> start-up check -> DetectionDataset
-> DataLoaders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import albumentations as A
import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from torch.utils.data import DataLoader

from detector.atomic import write_text
from detector.data.allocator import init_worker
from detector.data.batch_augment import BatchAugment
from detector.data.checks import DatasetReport, Reader, check_records
from detector.data.dataset import DetectionDataset, collate
from detector.data.image_cache import cache_mode
from detector.data.sampler import EpochSampler
from detector.data.split import write_image_list


class DetectionDataModule(L.LightningDataModule):
    """`train_reader` / `val_reader` return (records, class names, category ids); `prepare`, when given,
    creates the dataset on disk once (the synthetic default does this).

    Every split goes through `detector.data.checks.check_records` in `setup` (missing/unreadable images
    skipped and counted, boxes clipped/dropped and counted; more than `max_bad_fraction` bad images stops
    the run); the reports are kept in `self.reports`. When training (`setup("fit")` under a Trainer), the class
    names and the train and val image lists are written into the run directory (`write_split`).
    mosaic_prob: share of training samples that are 4-image mosaics (`set_mosaic(False)` / the
        `detector.training.callbacks.CloseMosaic` callback turn it off for the last epochs).
    min_box_size: drop training boxes that augmentation leaves thinner than this many pixels.
    cache_images: "ram" (true is the same), "disk" or false: keep the decoded, resized images of both splits in one
        RAM block shared by the DataLoader workers, or as .npy files under `cache_dir` (default
        `~/.cache/detector/images`; delete it any time); see `detector.data.image_cache`.
    cache_max_gb: the largest RAM cache of a split; a larger one is refused at start-up with the alternatives named.
    augment_on: "worker" (the DataLoader workers augment each sample with albumentations) or "device": the workers
        only decode and letterbox, and `batch_augment` (`detector.data.batch_augment.BatchAugment`, built from the same
        `train_augmentations` and `mosaic_prob`) augments each training batch after it reached the device
        (`on_after_batch_transfer`); transforms it has no batch version of are left out with a warning.
    verify_images: read every image header at start-up (sizes, unreadable files); False = only check
        that the files exist.
    seed: base seed of the augmentations and of the shuffling (the run's `seed`).
    root, format: where the data lives and its label format, as the data configs name them (the readers
        receive them by interpolation; kept here for reference).
    val_fraction, split_seed: the split of a dataset that has none (`data=auto`; the readers receive them by
        interpolation, see `detector.data.split`; kept here for reference).
    class_names: when a list, the class names the readers must return (checked); a string (a file or
        "collect", for the VOC reader) is not checked here.
    """

    def __init__(
        self, train_reader: Reader, val_reader: Reader, num_classes: int, img_size: int = 640,
        batch_size: int = 16, num_workers: int = 2, train_augmentations: Sequence[A.BasicTransform] = (),
        min_visibility: float = 0.2, min_area: float = 4.0, prepare: Callable[[], object] | None = None,
        pin_memory: bool | None = None, mosaic_prob: float = 0.0, cache_images: bool = False,
        max_bad_fraction: float = 0.05, verify_images: bool = True, persistent_workers: bool = True,
        prefetch_factor: int | None = None, root: str | None = None, format: str | None = None,
        class_names: Sequence[str] | str | None = None, min_box_size: float = 1.0, seed: int = 0,
        val_fraction: float | None = None, split_seed: int = 0, cache_max_gb: float = 16.0,
        cache_dir: str | None = None, augment_on: str = "worker",
    ) -> None:
        super().__init__()
        self.train_reader, self.val_reader, self.prepare = train_reader, val_reader, prepare
        self.num_classes, self.img_size, self.batch_size, self.num_workers = num_classes, img_size, batch_size, num_workers
        self.train_augmentations = list(train_augmentations)
        self.min_visibility, self.min_area, self.min_box_size = min_visibility, min_area, min_box_size
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.mosaic_prob, self.cache_images = mosaic_prob, cache_mode(cache_images)  # a bad value fails here, early
        self.cache_max_gb, self.cache_dir = cache_max_gb, cache_dir
        self.max_bad_fraction, self.verify_images = max_bad_fraction, verify_images
        self.persistent_workers, self.prefetch_factor = persistent_workers, prefetch_factor
        self.root, self.format = root, format
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.seed = seed
        self.expected_class_names = list(class_names) if class_names is not None and not isinstance(class_names, str) else None
        if augment_on not in ("worker", "device"):
            raise ValueError(f"data.augment_on={augment_on!r}: choose worker or device")
        self.augment_on = augment_on
        self.batch_augment: BatchAugment | None = None
        self.reports: dict[str, DatasetReport] = {}
        self.train_dataset: DetectionDataset | None = None
        self.val_dataset: DetectionDataset | None = None

    def prepare_data(self) -> None:
        if self.prepare is not None:
            self.prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.prepare is not None:
            self.prepare()  # idempotent; covers processes that skipped prepare_data
        if self.val_dataset is None:
            self.val_dataset = self._dataset(self.val_reader, "val", augmentations=())
        if stage in (None, "fit") and self.train_dataset is None:
            on_workers = self.augment_on == "worker"
            self.train_dataset = self._dataset(self.train_reader, "train",
                                               augmentations=self.train_augmentations if on_workers else ())
            if not on_workers:
                self.batch_augment = self._batch_augment()
            if self.train_dataset.class_names != self.val_dataset.class_names:
                raise ValueError(
                    f"train and val class names differ: {self.train_dataset.class_names} vs {self.val_dataset.class_names}"
                )
            rank_zero_info(f"{len(self.class_names)} classes: {', '.join(self.class_names)}")
            if self.trainer is not None and self.trainer.default_root_dir:
                self.write_split(Path(self.trainer.default_root_dir))

    @rank_zero_only
    def write_split(self, folder: Path) -> None:
        """Write the class names (one per line, in label order) and the train and val image lists (paths relative to
        `root` when under it) into `folder`, the run directory: class_names.txt, train_images.txt, val_images.txt."""
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "class_names.txt", "".join(f"{name}\n" for name in self.class_names))
        for split, dataset in (("train", self.train_dataset), ("val", self.val_dataset)):
            write_image_list(folder / f"{split}_images.txt", dataset.records, self.root)

    def _dataset(self, reader: Reader, split: str, augmentations: Sequence[A.BasicTransform]) -> DetectionDataset:
        records, names, category_ids = reader()
        if len(names) != self.num_classes:
            raise ValueError(f"data.num_classes={self.num_classes} but the dataset has {len(names)} classes: {names}")
        if self.expected_class_names is not None and list(names) != self.expected_class_names:
            raise ValueError(f"data.class_names={self.expected_class_names} but the {split} reader gives {list(names)}")
        records, report = check_records(
            records, names, name=split, max_bad_fraction=self.max_bad_fraction, verify_images=self.verify_images,
        )
        self.reports[split] = report
        (rank_zero_warn if report.problems else rank_zero_info)(report.summary())
        train = split == "train"
        return DetectionDataset(
            records, names, self.img_size, augmentations, category_ids, self.min_visibility, self.min_area,
            mosaic_prob=self.mosaic_prob if train and self.augment_on == "worker" else 0.0, cache_images=self.cache_images, substitute_bad_images=train,
            min_box_size=self.min_box_size, seed=self.seed, cache_max_gb=self.cache_max_gb, cache_dir=self.cache_dir,
            name=split,
        )

    def _batch_augment(self) -> BatchAugment:
        augment, left_out = BatchAugment.from_albumentations(
            self.train_augmentations, mosaic_prob=self.mosaic_prob, min_visibility=self.min_visibility,
            min_area=self.min_area, min_box_size=self.min_box_size, seed=self.seed,
        )
        if left_out:
            rank_zero_warn(f"data.augment_on=device leaves out what has no batch version: {', '.join(left_out)} "
                           "(HorizontalFlip, ColorJitter and Affine's scale/translate_percent run on the device)")
        return augment

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """With `augment_on="device"`, the training batches are augmented here, on the device."""
        if self.batch_augment is not None and self.trainer is not None and self.trainer.training:
            batch = self.batch_augment(batch, epoch=self.trainer.current_epoch)
        return batch

    def unaugmented_dataset(self, split: str) -> DetectionDataset:
        """The `split` ("train" or "val") set as validation serves it: letterboxed, no augmentation, no mosaic."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', not {split!r}")
        if self.prepare is not None:
            self.prepare()
        dataset = self._dataset(self.train_reader if split == "train" else self.val_reader, split, augmentations=())
        dataset.set_mosaic(False)
        return dataset

    @property
    def class_names(self) -> list[str]:
        assert self.val_dataset is not None, "call setup() first"
        return self.val_dataset.class_names

    def set_mosaic(self, enabled: bool) -> None:
        """Turn mosaic on/off for the training set (also inside running DataLoader workers, or on the device)."""
        if self.train_dataset is not None:
            self.train_dataset.set_mosaic(enabled)
        if self.batch_augment is not None:
            self.batch_augment.set_mosaic(enabled)

    def _loader(self, dataset: DetectionDataset, shuffle: bool) -> DataLoader:
        workers = self.num_workers > 0
        sampler = None
        if shuffle:  # training: (index, epoch) keys, sharded here for DDP (see detector.data.sampler)
            world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
            sampler = EpochSampler(dataset, shuffle=True, seed=self.seed, num_replicas=world, rank=rank)
            # Lightning sets the epoch of the first (or resumed) epoch only after it has created the iterator and
            # the workers have drawn their first indices: set it here, from the restored trainer
            sampler.set_epoch(self.trainer.current_epoch if self.trainer else 0)
        return DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
            collate_fn=collate, pin_memory=self.pin_memory, persistent_workers=workers and self.persistent_workers,
            worker_init_fn=init_worker,
            prefetch_factor=self.prefetch_factor if workers else None,
            drop_last=shuffle and len(dataset) > self.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False)
