"""detector.data.allocator: the DataLoader workers keep freed image memory instead of page-faulting it in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from detector.data.allocator import init_worker
from detector.data.datamodule import DetectionDataModule

from .test_checks import coco_reader

# four 1.5 MiB images alive at once, freed, 50 times over: the minor page faults of the process meanwhile
SCRIPT = """
import resource, sys
import numpy as np
from detector.data.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def step():
    images = [np.ones(3 * 2**19, np.uint8) for _ in range(4)]
    del images
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(result.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt (elsewhere the setting is skipped)")
def test_freed_images_are_reused_without_page_faults():
    # default glibc: the freed blocks go back to the OS and each new image faults in its 384 pages again
    assert page_faults("default") > 50 * 4 * 300
    assert page_faults("keep") < 1000


def test_the_dataloaders_set_it_in_their_workers(tmp_path, write_image):
    datamodule = DetectionDataModule(coco_reader(tmp_path, write_image, 4, 0, "train"),
                                     coco_reader(tmp_path, write_image, 2, 0, "val"), num_classes=1, img_size=64)
    datamodule.setup("fit")
    assert datamodule.train_dataloader().worker_init_fn is init_worker
    assert datamodule.val_dataloader().worker_init_fn is init_worker
