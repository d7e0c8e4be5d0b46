"""LightningModule: training/validation steps, optimizer and schedule, COCO evaluation each epoch, the per-epoch
assignment statistics (`assign/...`) and the warning when too many boxes get no positive anchor."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import nn

from detector.assigners.statistics import AssignmentStatistics, summarize, totals_to_python, unassigned_warning
from detector.criteria.base import Criterion, CriterionOutput
from detector.data.transforms import unletterbox_boxes
from detector.evaluation.coco import COCOEvaluator
from detector.postprocess.postprocessors import Postprocessor
from detector.schedules import EpochScheduled
from detector.training.finetune import keep_frozen_norms_in_eval


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/Inf losses or gradients for too many consecutive steps."""


OptimizerFactory = Callable[[list[dict]], torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class LitDetector(L.LightningModule):
    def __init__(
        self, model: nn.Module, criterion: Criterion, postprocess: Postprocessor | Callable,
        optimizer: OptimizerFactory, scheduler: SchedulerFactory | None = None, channels_last: bool = False,
        compile_model: bool = False, max_nonfinite_steps: int = 10, run_config: dict | None = None,
        unassigned_warning: float | None = 0.05,
    ) -> None:
        """A step whose loss or gradients are NaN/Inf is skipped with a warning; after
        `max_nonfinite_steps` such steps in a row training stops with NonFiniteLossError.
        `channels_last`: the model's weights and the input images in channels_last memory format.
        `compile_model`: torch.compile the model's forward when the Trainer sets the module up.
        The assignment statistics that the criterion returns for training steps (`CriterionOutput.assignment_stats`)
        are summed over each training epoch and logged as `assign/<name>` (`detector.assigners.statistics.summarize`);
        `unassigned_warning`: warn when more than this share of an epoch's GT boxes got no positive (None: never)."""
        super().__init__()
        self.model, self.criterion, self.postprocess = model, criterion, postprocess
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.channels_last, self.compile_model = channels_last, compile_model
        # the resolved run config (plain types), stored in checkpoints so that they rebuild the model alone
        self.run_config = run_config
        self.max_nonfinite_steps = max_nonfinite_steps
        self.nonfinite_steps = 0
        self._last_losses: dict[str, torch.Tensor] = {}
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.evaluator: COCOEvaluator | None = None
        self.class_names: list[str] = []
        self.category_ids: list[int] = []
        self.best_metrics: dict[str, float] = {}
        self.unassigned_warning = unassigned_warning
        # sums over the training epoch (reduced across DDP ranks by compute); kept out of the module tree, so that
        # it is neither in the checkpoints nor in the model summary (moved to the device at each epoch start)
        object.__setattr__(self, "assignment_stats", AssignmentStatistics())
        self._assignment_totals: tuple[int, dict | None] | None = None  # (epoch, totals) once computed
        self._input_size: int | None = None

    def setup(self, stage: str) -> None:
        """Compile the model's forward in place (nn.Module.compile: the parameter names, hence the checkpoint
        keys, do not change). Here rather than in __init__: after the callbacks' setup, so that the EMA copy of
        the module is an ordinary module, and in the process that trains (DDP spawn pickles the module)."""
        if self.compile_model:
            self.model.compile()

    def train(self, mode: bool = True) -> LitDetector:
        """nn.Module.train, except that the model's BatchNorm layers whose parameters are frozen (`model.freeze`)
        stay in eval mode."""
        super().train(mode)
        if mode:
            keep_frozen_norms_in_eval(self.model)
        return self

    def forward(self, images: torch.Tensor):
        images = images.float() / 255 if images.dtype == torch.uint8 else images
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def _follow_epoch(self) -> None:
        """Hand the trainer's epoch to the epoch-scheduled parts of the criterion (detector.schedules)."""
        max_epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        for module in self.criterion.modules():
            if isinstance(module, EpochScheduled):
                module.set_epoch(self.current_epoch, max_epochs)

    def on_train_epoch_start(self) -> None:
        self._follow_epoch()
        self.assignment_stats.to(self.device).reset()
        self._assignment_totals = None

    def _criterion(self, batch: dict, output) -> CriterionOutput:
        result = self.criterion(output, batch["labels"], batch["boxes"], batch["mask"],
                                image_size=tuple(batch["images"].shape[-2:]))
        if not isinstance(result, CriterionOutput):
            raise TypeError(f"{type(self.criterion).__name__} returned a {type(result).__name__}: a criterion returns a "
                            "CriterionOutput(losses, assignment_stats) (detector.criteria.base)")
        return result

    def training_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor | dict[str, torch.Tensor]]:
        """The loss to minimise, and its components (detached) for the callbacks' per-epoch means."""
        losses, stats = self._criterion(batch, self(batch["images"]))
        if stats is not None:
            self.assignment_stats.update(stats)
        self._input_size = int(batch["images"].shape[-1])
        self._last_losses = {k: v.detach() for k, v in losses.items()}
        self.log_dict({f"train/{k}": v for k, v in self._last_losses.items()}, prog_bar=True,
                      batch_size=len(batch["images"]))
        return {"loss": losses["loss"], "losses": self._last_losses}

    def _epoch_assignment_totals(self) -> dict | None:
        """This training epoch's assignment totals as Python numbers (None: the criterion recorded none), computed
        once per epoch: the first call reduces them across DDP ranks, so every rank calls it (the epoch-end hooks)."""
        if self._assignment_totals is None or self._assignment_totals[0] != self.current_epoch:
            totals = None
            if self.assignment_stats.update_count > 0:
                totals = totals_to_python(self.assignment_stats.compute())
            self._assignment_totals = (self.current_epoch, totals)
        return self._assignment_totals[1]

    def assignment_summary(self) -> dict[str, float]:
        """This training epoch's assignment statistics ({} when the criterion records none), by name without the
        `assign/` prefix: see `detector.assigners.statistics.summarize`. Read by MetricsHistory at the epoch end."""
        totals = self._epoch_assignment_totals()
        return summarize(totals) if totals is not None else {}

    def on_train_epoch_end(self) -> None:
        totals = self._epoch_assignment_totals()
        if totals is None:
            return
        self.log_dict({f"assign/{name}": value for name, value in summarize(totals).items()}, sync_dist=True)
        if self.unassigned_warning is not None:
            message = unassigned_warning(totals, self.unassigned_warning, self._img_size(), self.current_epoch)
            if message is not None:
                rank_zero_warn(message)

    def _img_size(self) -> int | None:
        """The training input size: the datamodule's `img_size` (data.img_size), else the last batch's width."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        size = getattr(datamodule, "img_size", None)
        return int(size) if size is not None else self._input_size

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Skip the update when the gradients are not finite (gradients are already reduced across DDP
        ranks here, so every rank takes the same decision)."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads)
        self.log("train/grad_norm", norm, batch_size=1)
        if torch.isfinite(norm):
            self.nonfinite_steps = 0
            return
        for parameter in self.parameters():
            parameter.grad = None  # the optimizer skips parameters without gradient
        self.nonfinite_steps += 1
        culprits = [k for k, v in self._last_losses.items() if not torch.isfinite(v)] or ["gradients only"]
        rank_zero_warn(
            f"step {self.global_step}: non-finite {', '.join(culprits)}; skipped the update "
            f"({self.nonfinite_steps}/{self.max_nonfinite_steps} in a row)"
        )
        if self.nonfinite_steps >= self.max_nonfinite_steps:
            raise NonFiniteLossError(
                f"{self.nonfinite_steps} consecutive steps with non-finite loss/gradients (last: {', '.join(culprits)}); "
                "lower the learning rate, check the data (check_dataset), or raise module.max_nonfinite_steps"
            )

    def on_validation_epoch_start(self) -> None:
        self._follow_epoch()  # also before the first training epoch (sanity check) and after a resume
        if self.evaluator is None:
            dataset = self.trainer.datamodule.val_dataset
            self.evaluator = COCOEvaluator(dataset.coco_ground_truth(), dataset.category_ids)
            self.class_names = dataset.class_names
            self.category_ids = list(dataset.category_ids)
        self.evaluator.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> dict[str, list[dict[str, torch.Tensor]]]:
        """Logs the losses, adds the detections to the COCO evaluation; returns them in the batch's letterboxed pixels
        (`detections`: one dict of boxes, scores, labels per image), for callbacks that draw them."""
        output = self(batch["images"])
        losses = self._criterion(batch, output).losses
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, batch_size=len(batch["images"]), sync_dist=True)
        detections = self.postprocess(output)
        for image_detections, image_id, (height, width), scale in zip(
            detections, batch["image_ids"], batch["orig_sizes"], batch["scales"]
        ):
            boxes = unletterbox_boxes(image_detections["boxes"], scale, height, width)
            self.evaluator.update(image_id, boxes, image_detections["scores"], image_detections["labels"])
        return {"detections": detections}

    def on_validation_epoch_end(self) -> None:
        stats = self.evaluator.compute()
        self.log_dict({f"val/{name}": value for name, value in stats.items()}, prog_bar=False, sync_dist=True)
        self.log("val/mAP50-95", stats["map"], prog_bar=True, sync_dist=True)
        self.log("val/mAP50", stats["map_50"], prog_bar=True, sync_dist=True)
        if not self.trainer.sanity_checking and stats["map"] >= self.best_metrics.get("map", -1.0):
            self.best_metrics = {**stats, "epoch": float(self.current_epoch)}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # plain types only, so that torch.load(..., weights_only=True) reads the checkpoint (detector.deploy.load)
        class_names, category_ids = self.class_names, self.category_ids
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if not class_names and getattr(datamodule, "val_dataset", None) is not None:
            class_names, category_ids = datamodule.val_dataset.class_names, datamodule.val_dataset.category_ids
        checkpoint["class_names"] = list(class_names)
        checkpoint["category_ids"] = [int(c) for c in category_ids]
        if getattr(datamodule, "img_size", None) is not None:
            checkpoint["img_size"] = int(datamodule.img_size)
        if self.run_config is not None:
            checkpoint["run_config"] = self.run_config
        checkpoint["best_metrics"] = {key: float(value) for key, value in self.best_metrics.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # a resumed run reports the best epoch over the whole run, not only over the epochs after the resume
        self.best_metrics = dict(checkpoint.get("best_metrics") or {})

    def configure_optimizers(self):
        # frozen parameters are included too, so that unfreezing later needs no new optimizer
        decay, no_decay = [], []
        for module in self.model.modules():
            for name, parameter in module.named_parameters(recurse=False):
                is_norm = isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm))
                (no_decay if is_norm or name == "bias" else decay).append(parameter)
        # the optimizer's own weight_decay applies to conv/linear weights; norms and biases get none
        optimizer = self.optimizer_factory([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
        if self.scheduler_factory is None:
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        scheduler = self.scheduler_factory(optimizer, total_steps=total_steps, steps_per_epoch=max(total_steps // epochs, 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
