"""scripts/visualize_assignment.py: the per-GT summary of a hand-made assignment, and a figure for every assigner."""

from __future__ import annotations

import math
from types import SimpleNamespace

import cv2
import pytest
import torch

from detector.assigners.base import Assignment
from detector.cli import visualize_assignment
from detector.diagnostics.assignment import summarize_gts
from detector.models.priors import Priors


def test_summary_counts_positives_per_gt_and_level_and_the_best_iou():
    # 3 anchors on level 0 (stride 8), 2 on level 1 (stride 16); prior boxes given (anchor-based)
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 20, 20], [30, 30, 40, 40], [0, 0, 10, 20], [50, 50, 60, 60.]])
    priors = Priors(boxes[:, :2] + 5, torch.tensor([[8.], [8], [8], [16], [16]]), boxes, (3, 2))
    gt = torch.tensor([[0, 0, 10, 10], [30, 30, 40, 40], [100, 100, 110, 110.]])
    foreground = torch.tensor([[True, True, False, True, False]])
    gt_index = torch.tensor([[0, 0, 0, 1, 0]])  # anchor 2 is background although its box equals GT 1
    scores = torch.zeros(1, 5, 2)
    scores[0, 0, 1], scores[0, 1, 1], scores[0, 3, 0] = 0.8, 0.4, 0.5
    assignment = Assignment(torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 5, 4), scores, foreground, gt_index)
    summaries = summarize_gts(assignment, SimpleNamespace(priors=priors), gt, torch.tensor([1, 0, 1]))
    first, second, third = summaries
    assert (first.positives, first.level_positives) == (2, [2, 0])
    assert first.best_iou == pytest.approx(1.0) and first.best_positive_iou == pytest.approx(1.0)
    assert first.mean_target == pytest.approx(0.6)
    assert (second.positives, second.level_positives) == (1, [0, 1])
    assert second.best_iou == pytest.approx(1.0)  # offered by anchor 2, which is not its positive
    assert second.best_positive_iou == pytest.approx(0.0)  # anchor 3 does not overlap it
    assert (third.positives, third.best_iou) == (0, 0.0) and math.isnan(third.best_positive_iou)
    line = first.line(["a", "b"], [8, 16])
    assert line.startswith("GT 0 b 10x10 px: 2 positives (stride 8: 2)") and "best IoU 1.00" in line


def _run(tmp_path, *overrides: str) -> list[str]:
    out = tmp_path / "out"
    argv = [f"paths.data_dir={tmp_path / 'data'}", "data.prepare.num_train=2", "data.prepare.num_val=2",
            "data.prepare.image_size=64", "data.img_size=64", "num_images=1", f"output_dir={out}", *overrides]
    assert visualize_assignment(argv) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 1 and cv2.imread(str(pngs[0])) is not None
    return (out / "summary.txt").read_text().splitlines()


@pytest.mark.slow
def test_one_figure_with_a_row_per_assigner(tmp_path):
    lines = _run(tmp_path, "assigner=tal,tal_small,atss,simota")
    for name in ("tal", "tal_small", "atss", "simota"):
        assert any(line.strip().startswith(f"{name}: GT 0 ") for line in lines), lines


@pytest.mark.slow
def test_anchor_based_model_draws_its_prior_boxes(tmp_path):
    lines = _run(tmp_path, "model=ssd_csp_n", "split=train")
    assert any(line.strip().startswith("ssd: GT 0 ") for line in lines), lines


def test_help_prints_the_usage(capsys):
    assert visualize_assignment(["--help"]) == 0
    assert "assigner=tal,atss,simota" in capsys.readouterr().out


@pytest.mark.slow
def test_a_checkpoint_is_drawn_with_its_own_model(trained, tmp_path):
    from ..conftest import TRAINED_IMG_SIZE, TRAINED_NUM_VAL

    out = tmp_path / "out"
    argv = [f"ckpt_path={trained['ckpt']}", f"paths.data_dir={trained['data'].parent}", "data.prepare.num_train=12",
            f"data.prepare.num_val={TRAINED_NUM_VAL}", f"data.prepare.image_size={TRAINED_IMG_SIZE}",
            f"data.img_size={TRAINED_IMG_SIZE}", "num_images=1", f"output_dir={out}", "assigner=tal,atss"]
    assert visualize_assignment(argv) == 0
    assert len(list(out.glob("*.png"))) == 1
    with pytest.raises(SystemExit, match="the checkpoint has 5 classes, data.num_classes is 3"):
        visualize_assignment([*argv, "data.num_classes=3"])
