"""The tensors a sample and a batch hand to the model: the channels-first image equals the transposed copy it
replaced, and a DataLoader worker stacks the images straight into the shared memory that carries the batch."""

from __future__ import annotations

import numpy as np
import torch

from detector.data.dataset import DetectionDataset, Record, channels_first, collate


def test_channels_first_is_the_transposed_image():
    rng = np.random.default_rng(0)
    for image in (rng.integers(0, 256, (37, 53, 3), dtype=np.uint8), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)[:, ::-1]):
        out = channels_first(image)
        assert out.is_contiguous() and out.dtype == torch.uint8
        assert torch.equal(out, torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))


def collate_and_tell_if_shared(samples: list[dict]) -> dict:
    batch = collate(samples)
    return {**batch, "shared": batch["images"].is_shared()}


def test_a_worker_collates_the_images_into_shared_memory(tmp_path, write_image):
    records = []
    for i in range(4):
        write_image(tmp_path / f"{i}.png", 40 + 8 * i, 32, (30 * i, 90, 160))
        records.append(Record(tmp_path / f"{i}.png", i + 1, 40 + 8 * i, 32, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)))
    dataset = DetectionDataset(records, ["a"], 48)
    direct = collate([dataset[i] for i in range(4)])
    assert not direct["images"].is_shared()  # in this process: an ordinary stack
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=1, collate_fn=collate_and_tell_if_shared)
    batch = next(iter(loader))
    assert batch["shared"] and torch.equal(batch["images"], direct["images"])
    assert torch.equal(direct["images"], torch.stack([dataset[i]["image"] for i in range(4)]))
