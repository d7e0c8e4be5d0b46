"""Augmentation keeps boxes on their objects; mosaic keeps every visible box; the letterbox inverse is exact;
mosaic can be closed inside running DataLoader workers; workers do not repeat each other's augmentations."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import lightning as L
import numpy as np
import pytest
import torch

from detector.data.dataset import DetectionDataset, Record, collate
from detector.data.transforms import build_pipeline, letterbox, unletterbox_boxes

# pure hues (OpenCV hue units 0..179) for object classes; background and padding are grey (saturation 0)
HUES = [0, 30, 60, 90, 120, 150]


def hue_colour(hue: int) -> tuple[int, int, int]:
    hsv = np.array([[[hue, 255, 255]]], np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def rectangles_image(path: Path, width: int, height: int, rng: np.random.Generator, colours: list[tuple[int, int, int]]) -> tuple[np.ndarray, list[int]]:
    """Grey image with one filled, non-overlapping rectangle per colour; saved losslessly (PNG)."""
    image = np.full((height, width, 3), 100, np.uint8)
    boxes, labels = [], []
    for label, colour in enumerate(colours):
        for _ in range(100):
            w, h = rng.integers(width // 8, width // 3), rng.integers(height // 8, height // 3)
            x, y = rng.integers(3, width - w - 3), rng.integers(3, height - h - 3)
            box = np.array([x, y, x + w, y + h])
            if all(box[0] >= b[2] + 3 or box[2] + 3 <= b[0] or box[1] >= b[3] + 3 or box[3] + 3 <= b[1] for b in boxes):
                break
        image[y:y + h, x:x + w] = colour
        boxes.append(box)
        labels.append(label)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return np.asarray(boxes, np.float32), labels


def hue_mask(image: np.ndarray, hue: int) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(int)
    distance = np.minimum(np.abs(hsv[..., 0] - hue), 180 - np.abs(hsv[..., 0] - hue))
    return (hsv[..., 1] > 25) & (hsv[..., 2] > 60) & (distance <= 8)


def tight_box(mask: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(mask)
    return None if len(xs) == 0 else np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def coco128_augmentations() -> list[A.BasicTransform]:
    """The train_augmentations of configs/data/coco128.yaml."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[2] / "configs" / "data" / "coco128.yaml")
    return instantiate(cfg.train_augmentations)


def test_augmented_boxes_still_enclose_their_objects(tmp_path):
    rng = np.random.default_rng(0)
    colours = [hue_colour(h) for h in HUES[:4]]
    records = []
    for i, (w, h) in enumerate([(320, 240), (200, 300), (256, 256)]):
        boxes, labels = rectangles_image(tmp_path / f"{i}.png", w, h, rng, colours)
        records.append(Record(tmp_path / f"{i}.png", i + 1, w, h, boxes, np.asarray(labels, np.int64)))
    augmentations = coco128_augmentations()
    for mosaic_prob in (0.0, 1.0):
        dataset = DetectionDataset(records, ["a", "b", "c", "d"], 192, augmentations, min_visibility=0.1, min_area=4,
                                   mosaic_prob=mosaic_prob)
        dataset.seed(0)
        for trial in range(24):
            sample = dataset[trial % len(records)]
            image = sample["image"].permute(1, 2, 0).numpy()
            boxes, labels = sample["boxes"].numpy(), sample["labels"].tolist()
            assert len(boxes) > 0
            for box, label in zip(boxes, labels):
                mask = hue_mask(image, HUES[label])
                x1, y1, x2, y2 = np.round(box).astype(int)
                interior = mask[y1 + 1:y2 - 1, x1 + 1:x2 - 1]  # (edge pixels are blended by resampling)
                # the box is filled by its object's colour ...
                assert interior.size < 4 or interior.mean() > 0.9, (mosaic_prob, trial, label, box)
                if mosaic_prob == 0.0:  # (mosaic may show a second copy of an image elsewhere)
                    # ... and its object lies inside the box, tightly
                    # (resampling at scale <= 1.5, twice, blends up to ~3 px of edge into the colour mask)
                    assert tight_box(mask) is not None and np.abs(tight_box(mask) - box).max() <= 3.5, (trial, label, box, tight_box(mask))


def test_mosaic_keeps_every_visible_box(tmp_path):
    """4 images with 2 uniquely coloured rectangles each; in every mosaic, each visible rectangle piece
    (connected component of its colour) has exactly one box of its class that fits it tightly."""
    rng = np.random.default_rng(1)
    size, records = 128, []
    colours = [hue_colour(h) for h in range(0, 180, 180 // 8)][:8]
    for i, (w, h) in enumerate([(128, 96), (96, 128), (128, 128), (128, 64)]):  # already at network scale: no resize
        boxes, labels = rectangles_image(tmp_path / f"{i}.png", w, h, rng, colours[2 * i:2 * i + 2])
        records.append(Record(tmp_path / f"{i}.png", i + 1, w, h, boxes, np.asarray(labels, np.int64) + 2 * i))
    dataset = DetectionDataset(records, [str(i) for i in range(8)], size, (), min_visibility=0.0, min_area=0.0, mosaic_prob=1.0,
                               min_box_size=0.5)
    dataset.seed(0)
    for trial in range(24):
        sample = dataset[trial % 4]
        image = sample["image"].permute(1, 2, 0).numpy()
        boxes, labels = sample["boxes"].numpy(), np.asarray(sample["labels"])
        pieces = []
        for label, colour in enumerate(colours):
            mask = (image == np.array(colour, np.uint8)).all(-1).astype(np.uint8)
            _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
            for x, y, w, h, _area in stats[1:]:
                pieces.append((label, np.array([x, y, x + w, y + h], np.float32)))
        assert len(pieces) == len(boxes), (trial, len(pieces), len(boxes))
        unmatched = list(range(len(boxes)))
        for label, piece in pieces:
            match = [j for j in unmatched if labels[j] == label and np.abs(boxes[j] - piece).max() <= 1e-3]
            assert match, (trial, label, piece, boxes[labels == label])
            unmatched.remove(match[0])


@pytest.mark.parametrize("height, width", [(480, 640), (333, 517), (1000, 100), (64, 64), (17, 900)])
def test_letterbox_inverse_is_exact_and_val_output_unchanged(tmp_path, height, width):
    rng = np.random.default_rng(height * width)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    xy = rng.uniform(0, [width, height], (20, 2))
    wh = rng.uniform(2, [width / 2, height / 2], (20, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [width, height])], 1).astype(np.float32)
    record = Record(tmp_path / "a.png", 1, width, height, boxes, np.zeros(20, np.int64))
    size = 320
    sample = DetectionDataset([record], ["a"], size, min_area=0.0, min_box_size=0.0)[0]
    assert sample["image"].shape == (3, size, size) and len(sample["boxes"]) == 20
    back = unletterbox_boxes(sample["boxes"], sample["scale"], height, width)
    np.testing.assert_allclose(back.numpy(), boxes, rtol=0, atol=1e-3)
    # identical to letterboxing the original image in one albumentations pipeline
    reference = build_pipeline(size, (), 0.0, 0.0)(image=image, bboxes=boxes, labels=np.zeros(20, np.int64))
    np.testing.assert_array_equal(sample["image"].permute(1, 2, 0).numpy(), reference["image"])
    np.testing.assert_allclose(sample["boxes"].numpy(), np.asarray(reference["bboxes"]), atol=1e-3)
    assert len(letterbox(size)) == 2


def test_cache_images_gives_the_same_samples(tmp_path):
    rng = np.random.default_rng(3)
    boxes, labels = rectangles_image(tmp_path / "a.png", 300, 200, rng, [hue_colour(0)])
    record = Record(tmp_path / "a.png", 1, 300, 200, boxes, np.asarray(labels, np.int64))
    plain, cached = DetectionDataset([record], ["a"], 96), DetectionDataset([record], ["a"], 96, cache_images=True)
    assert cached.cache_bytes == 96 * 64 * 3
    expected = plain[0]
    (tmp_path / "a.png").unlink()  # served from RAM now
    np.testing.assert_array_equal(expected["image"].numpy(), cached[0]["image"].numpy())
    np.testing.assert_array_equal(expected["boxes"].numpy(), cached[0]["boxes"].numpy())
    assert cached.load_failures == 0


def solid_records(tmp_path, n):
    records = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), np.full((48, 64, 3), (20 * i + 20, 255 - 20 * i, 60), np.uint8))
        records.append(Record(path, i + 1, 64, 48, np.array([[8, 8, 40, 40]], np.float32), np.zeros(1, np.int64)))
    return records


def test_close_mosaic_reaches_persistent_workers(tmp_path):
    """Images are single colours, so an image with several colours is a mosaic."""
    dataset = DetectionDataset(solid_records(tmp_path, 8), ["a"], 64, mosaic_prob=1.0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=1, persistent_workers=True, collate_fn=collate)

    def mosaics(batch):
        return sum(len(torch.unique(img.reshape(3, -1), dim=1).T) > 2 for img in batch["images"])

    assert mosaics(next(iter(loader))) >= 6
    dataset.set_mosaic(False)
    assert not dataset.mosaic_enabled
    assert mosaics(next(iter(loader))) == 0  # same worker process, new epoch
    dataset.set_mosaic(True)
    assert mosaics(next(iter(loader))) >= 6


def is_mosaic(image: torch.Tensor) -> bool:
    """Images of `solid_records` are single colours, so an image with several colours is a mosaic."""
    return len(torch.unique(image.reshape(3, -1), dim=1).T) > 2


def test_close_mosaic_is_decided_by_the_sample_epoch(tmp_path):
    from types import SimpleNamespace

    from detector.training.callbacks import CloseMosaic

    dataset = DetectionDataset(solid_records(tmp_path, 4), ["a"], 64, mosaic_prob=1.0)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(train_dataset=dataset), max_epochs=10)
    CloseMosaic(epochs=2).on_fit_start(trainer, None)
    assert is_mosaic(dataset[(0, 7)]["image"]) and not is_mosaic(dataset[(0, 8)]["image"])
    assert [dataset.mosaic_wanted(epoch) for epoch in (0, 7, 8, 9)] == [True, True, False, False]
    CloseMosaic(epochs=20).on_fit_start(trainer, None)  # longer than the run: closed from the first epoch
    assert not dataset.mosaic_wanted(0)


class MosaicCounter(L.LightningModule):
    """Counts the mosaics of each training epoch; trains nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.mosaics: dict[int, int] = {}

    def training_step(self, batch, batch_index):
        count = sum(is_mosaic(image) for image in batch["images"])
        self.mosaics[self.current_epoch] = self.mosaics.get(self.current_epoch, 0) + count
        return self.weight * 0.0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class WorkerData(L.LightningDataModule):
    """The training loader as DetectionDataModule builds it: (index, epoch) keys, a persistent worker."""

    def __init__(self, dataset: DetectionDataset) -> None:
        super().__init__()
        self.train_dataset = dataset

    def train_dataloader(self):
        from detector.data.sampler import EpochSampler

        sampler = EpochSampler(self.train_dataset, seed=0)
        return torch.utils.data.DataLoader(self.train_dataset, batch_size=2, sampler=sampler, num_workers=1,
                                           persistent_workers=True, collate_fn=collate)


@pytest.mark.parametrize(("close_epochs", "expected"), [(1, {0: 8, 1: 0}), (2, {0: 0, 1: 0})])
def test_close_mosaic_in_a_trainer_holds_from_the_first_batch(tmp_path, close_epochs, expected):
    """Lightning starts the first epoch's workers before on_train_epoch_start: the first prefetched batches
    must already follow CloseMosaic (they did not when it switched a flag at epoch start). A slow on_train_start
    hook, between the two, gives the worker time to prefetch."""
    import time

    from detector.training.callbacks import CloseMosaic

    class SlowStart(L.Callback):
        def on_train_start(self, trainer, pl_module):
            time.sleep(2.0)

    dataset = DetectionDataset(solid_records(tmp_path, 8), ["a"], 64, mosaic_prob=1.0)
    module = MosaicCounter()
    trainer = L.Trainer(max_epochs=2, callbacks=[SlowStart(), CloseMosaic(epochs=close_epochs)], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(module, datamodule=WorkerData(dataset))
    assert module.mosaics == expected


def test_augmentations_depend_on_seed_epoch_and_index_only(tmp_path):
    from detector.data.sampler import EpochSampler

    dataset = DetectionDataset(solid_records(tmp_path, 16), ["a"], 64, [A.HorizontalFlip(p=0.5)])

    def flips(epoch, workers, shuffle=False):
        sampler = EpochSampler(dataset, shuffle=shuffle, seed=0)
        sampler.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=workers, collate_fn=collate)
        return [tuple(b["image_ids"]) + tuple((b["boxes"][:, 0, 0] > 20).tolist()) for b in loader]

    assert flips(0, workers=0) == flips(0, workers=2)  # the same samples whatever the workers
    assert flips(0, workers=0) != flips(1, workers=0)  # each epoch draws anew
    assert flips(3, workers=1, shuffle=True) == flips(3, workers=0, shuffle=True)  # e.g. after a resume at epoch 3


def test_seed_makes_samples_reproducible(tmp_path):
    records = solid_records(tmp_path, 6)
    augmentations = coco128_augmentations()
    samples = []
    for _ in range(2):
        dataset = DetectionDataset(records, ["a"], 64, augmentations, mosaic_prob=0.5)
        dataset.seed(7)
        samples.append([dataset[i] for i in range(6)])
    for a, b in zip(*samples):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])


def test_ram_and_disk_caches_give_the_same_samples_and_disk_files_are_reused(tmp_path):
    rng = np.random.default_rng(4)
    records = []
    for i, (width, height) in enumerate([(300, 200), (120, 180), (64, 64)]):
        boxes, labels = rectangles_image(tmp_path / f"{i}.png", width, height, rng, [hue_colour(i)])
        records.append(Record(tmp_path / f"{i}.png", i + 1, width, height, boxes, np.asarray(labels, np.int64)))
    augment = [A.HorizontalFlip(p=0.5), A.Affine(scale=(0.8, 1.2), p=0.5)]
    plain = DetectionDataset(records, ["a"], 96, augment, mosaic_prob=0.5)
    expected = [plain[(i, 1)] for i in range(3)]
    folder = tmp_path / "cache"
    for mode in ("ram", True, "disk"):
        cached = DetectionDataset(records, ["a"], 96, augment, mosaic_prob=0.5, cache_images=mode, cache_dir=folder)
        assert cached.cache_bytes >= (96 * 64 + 64 * 96 + 96 * 96) * 3
        for i in range(3):
            for key in ("image", "boxes", "labels"):
                np.testing.assert_array_equal(expected[i][key].numpy(), cached[(i, 1)][key].numpy())
    files = sorted((folder / "96px").glob("*.npy"))
    assert len(files) == 3 and {np.load(f).shape for f in files} == {(64, 96, 3), (96, 64, 3), (96, 96, 3)}
    written = [f.stat().st_mtime_ns for f in files]
    again = DetectionDataset(records, ["a"], 96, cache_images="disk", cache_dir=folder)
    assert [f.stat().st_mtime_ns for f in files] == written  # nothing written again
    letterboxed = [sample["image"].numpy() for sample in DetectionDataset(records, ["a"], 96)]
    for record in records:
        record.image_path.unlink()  # served from the .npy files now
    for i in range(3):
        np.testing.assert_array_equal(letterboxed[i], again[i]["image"].numpy())
    assert again.load_failures == 0


def test_a_cache_that_does_not_fit_is_refused_and_bad_modes_are_named(tmp_path, caplog):
    records = solid_records(tmp_path, 2)
    caplog.set_level("INFO", logger="detector.data.image_cache")
    with pytest.raises(ValueError, match=r"cache_images=ram needs 0.00 GB for 2 images, more than data.cache_max_gb=1e-06"):
        DetectionDataset(records, ["a"], 64, cache_images="ram", cache_max_gb=1e-6, name="train")
    assert "[train] caching 2 images in RAM: 0.00 GB (data.cache_max_gb=1e-06" in caplog.text  # printed before
    with pytest.raises(ValueError, match="choose ram, disk or false"):
        DetectionDataset(records, ["a"], 64, cache_images="gpu")
    assert DetectionDataset(records, ["a"], 64, cache_images="false").cache_bytes == 0


def test_the_ram_cache_is_served_the_same_by_persistent_workers(tmp_path):
    from torch.utils.data import DataLoader

    dataset = DetectionDataset(solid_records(tmp_path, 4), ["a"], 64, cache_images="ram")
    for record in dataset.records:
        record.image_path.unlink()  # only the cache can serve them
    direct = collate([dataset[i] for i in range(4)])
    loader = DataLoader(dataset, batch_size=4, num_workers=1, persistent_workers=True, collate_fn=collate)
    for _epoch in range(2):
        batch = next(iter(loader))
        assert torch.equal(batch["images"], direct["images"]) and batch["images"].float().std() > 0
    assert dataset.load_failures == 0
