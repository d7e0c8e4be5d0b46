"""A box loss, a classification loss and an assigner written outside the package (one module and one config each,
in a temporary folder) train through `python train.py`, evaluate with `scripts/evaluate.py` and are summarised by
`scripts/summarize_sweep.py`: the extension recipe of docs/architecture.md ("Extending from outside"), run as written.
Nothing of the package, configs/ or tests/ is changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BOX_LOSS = '''\
"""1 - IoU^2: a box loss defined outside the detector package."""
import torch

from detector.losses.base import BoxLoss
from detector.losses.iou import iou


class SquaredIoULoss(BoxLoss):
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1 - iou(pred.float(), target.float()) ** 2
'''
CLS_LOSS = '''\
"""The Brier score: squared error of the sigmoid probabilities against the soft targets."""
import torch

from detector.losses.base import ClassificationLoss


class BrierLoss(ClassificationLoss):
    activation = "sigmoid"

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (logits.float().sigmoid() - targets) ** 2
'''
ASSIGNER = '''\
"""Every prior whose point lies inside a GT box learns the smallest such box, with class target 1."""
import torch

from detector.assigners.base import Assigner, AssignerInput, Assignment, background_assignment


class CentreInsideAssigner(Assigner):
    @torch.no_grad()
    def forward(self, inputs: AssignerInput) -> Assignment:
        batch, anchors, _ = inputs.pred_scores.shape
        if not inputs.gt_mask.any():
            return background_assignment(batch, anchors, self.num_classes, inputs.pred_boxes)
        x, y = inputs.priors.points[None, :, None].unbind(-1)  # (1, A, 1)
        gt = inputs.gt_boxes[:, None]  # (B, 1, M, 4)
        inside = (x > gt[..., 0]) & (y > gt[..., 1]) & (x < gt[..., 2]) & (y < gt[..., 3]) & inputs.gt_mask[:, None]
        area = (gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1])
        gt_index = area.expand_as(inside).masked_fill(~inside, float("inf")).argmin(-1)  # (B, A)
        foreground = inside.any(-1)
        labels = inputs.gt_labels.gather(1, gt_index).clamp(min=0)
        boxes = inputs.gt_boxes.gather(1, gt_index[..., None].expand(-1, -1, 4))
        scores = torch.nn.functional.one_hot(labels, self.num_classes).to(inputs.pred_scores.dtype)
        return Assignment(labels, boxes, scores * foreground[..., None], foreground, gt_index)
'''
# (config path under the search-path folder, its text, module file, module text)
EXTENSIONS = [
    ("loss/box/squared_iou.yaml", "_target_: my_box_loss.SquaredIoULoss\n", "my_box_loss.py", BOX_LOSS),
    ("loss/cls/brier.yaml", "_target_: my_cls_loss.BrierLoss\n", "my_cls_loss.py", CLS_LOSS),
    ("assigner/centre_inside.yaml", "_target_: my_assigner.CentreInsideAssigner\nnum_classes: ${data.num_classes}\n",
     "my_assigner.py", ASSIGNER),
]


def write_extensions(folder: Path) -> tuple[Path, Path]:
    """(the config folder to add to Hydra's search path, the folder of the modules to put on sys.path)."""
    configs, modules = folder / "configs", folder / "modules"
    for config, config_text, module, module_text in EXTENSIONS:
        (configs / config).parent.mkdir(parents=True, exist_ok=True)
        (configs / config).write_text(config_text)
        modules.mkdir(exist_ok=True)
        (modules / module).write_text(module_text)
    return configs, modules


def run(args: list[str], modules: Path | None, timeout: int = 400) -> subprocess.CompletedProcess:
    """`python <args>` from the repository root, with `modules` (the extension's folder) on the path when given."""
    # one intra-op thread: on a busy 2-core machine, 2 spinning threads make the few steps about 10x slower
    path = [str(modules)] if modules is not None else []
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([*path, str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, *args], check=False, capture_output=True, text=True,
                            timeout=timeout, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_extensions_compose_from_the_search_path(compose_config, tmp_path, monkeypatch):
    """Composition and instantiation only (fast): the outside configs join their groups and build their classes."""
    configs, modules = write_extensions(tmp_path)
    monkeypatch.syspath_prepend(str(modules))
    import hydra

    cfg = compose_config([f"hydra.searchpath=[file://{configs}]", "loss/box=squared_iou", "loss/cls=brier",
                          "assigner=centre_inside"])
    criterion = hydra.utils.instantiate(cfg.module.criterion)
    assert [type(part).__name__ for part in (criterion.box_loss, criterion.cls_loss, criterion.assigner)] == [
        "SquaredIoULoss", "BrierLoss", "CentreInsideAssigner"]
    assert criterion.assigner.num_classes == 5 and cfg.postprocess.activation == "sigmoid"


@pytest.mark.slow
def test_outside_losses_and_assigner_train_evaluate_and_summarise(tmp_path):
    configs, modules = write_extensions(tmp_path / "my_extension")
    sweep = tmp_path / "multirun"
    run(["train.py", "-m", f"hydra.searchpath=[file://{configs}]", "loss/box=squared_iou", "loss/cls=brier",
         "assigner=tal,centre_inside",
         f"paths.data_dir={tmp_path / 'data'}", f"hydra.sweep.dir={sweep}", "data.prepare.num_train=8",
         "data.prepare.num_val=4", "data.prepare.image_size=64", "data.img_size=64", "data.batch_size=4",
         "data.num_workers=0", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
         "callbacks.recompute_batch_norm.batches=0", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false"], modules)
    records = [json.loads((sweep / str(job) / "metrics.json").read_text()) for job in range(2)]
    for record, assigner in zip(records, ("detector.assigners.tal.TaskAlignedAssigner",
                                          "my_assigner.CentreInsideAssigner")):
        assert record["status"] == "ok" and record["images"] == 4 and 0 <= record["map"] <= 1
        combination = record["combination"]
        assert combination["loss.box"]["_target_"] == "my_box_loss.SquaredIoULoss"
        assert combination["loss.cls"]["_target_"] == "my_cls_loss.BrierLoss"
        assert combination["assigner"]["_target_"] == assigner
        [epoch] = record["history"]
        assert epoch["train_steps"] == 1 and epoch["train_loss"] > 0

    out = tmp_path / "evaluation"
    ckpt = sweep / "1" / "checkpoints" / "best.ckpt"
    # the checkpoint rebuilds the model and the post-processor only: it evaluates without the extension on the path
    run(["scripts/evaluate.py", f"ckpt_path={ckpt}", f"hydra.run.dir={out}", "device=cpu"], modules=None)
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["images"] == 4 and 0 <= evaluation["coco"]["map"] <= 1

    summary = run(["scripts/summarize_sweep.py", str(sweep), "--group-by", "assigner", "--baseline", "assigner=tal",
                   "--no-plots"], modules, timeout=120).stdout
    table = summary.split("\n## ")[0]  # the comparison table, before the power and per-run sections
    rows = [line for line in table.splitlines() if line.startswith("| `assigner=")]
    assert [row.split("`")[1] for row in rows] == ["assigner=tal", "assigner=centre_inside"]
    assert "## Missing or failed runs (0)" in summary
