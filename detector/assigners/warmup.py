"""A static-to-dynamic assignment schedule: one assigner for the first epochs, another after (YOLOv6, PP-YOLOE).

YOLOv6 and PP-YOLOE assign with ATSS (geometry only: boxes and anchor positions) while the predictions are still
meaningless, and with TAL (which ranks by predicted score and box) once they are not. `warmup` assigns in epochs
0 .. warmup_epochs - 1, `main` from epoch `warmup_epochs` on (YOLOv6's `atss_warmup_epoch`, default 4). The switch
happens at an epoch boundary and follows the trainer's epoch (`detector.schedules`), so it survives a resume.
`configs/assigner/atss_then_tal.yaml` is ATSS then TAL.
"""

from __future__ import annotations

from detector.assigners.base import Assigner, AssignerInput, Assignment
from detector.schedules import EpochScheduled


class WarmupAssigner(Assigner, EpochScheduled):
    def __init__(self, num_classes: int, warmup: Assigner, main: Assigner, warmup_epochs: int = 4) -> None:
        super().__init__(num_classes)
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        self.warmup, self.main, self.warmup_epochs = warmup, main, warmup_epochs
        self.epoch = 0

    def set_epoch(self, epoch: int, max_epochs: int) -> None:
        self.epoch = epoch

    @property
    def active(self) -> Assigner:
        """The assigner of the current epoch."""
        return self.warmup if self.epoch < self.warmup_epochs else self.main

    def forward(self, inputs: AssignerInput) -> Assignment:
        return self.active(inputs)
