"""Assignment statistics (detector/assigners/statistics.py): exact numbers on a hand-made assignment (a GT without
positive, padded rows, an image without GT), exact epoch sums over batches, the warning threshold and its message,
both criteria returning them, LitDetector logging and warning at the epoch end, and two DDP ranks reducing to the
whole batch."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from detector.assigners.base import Assignment
from detector.assigners.ssd_matcher import SSDMatcher
from detector.assigners.statistics import (
    NO_GT,
    STATES,
    AssignmentStatistics,
    assignment_statistics,
    summarize,
    totals_to_python,
    unassigned_warning,
)
from detector.assigners.tal import TaskAlignedAssigner
from detector.criteria.multibox import MultiBoxCriterion
from detector.criteria.yolov8 import YOLOv8Criterion
from detector.losses.classification import BCEWithLogits, CrossEntropy
from detector.losses.dfl import DFLoss
from detector.losses.iou import CIoULoss
from detector.losses.regression import SmoothL1Loss
from detector.models import YOLODetector
from detector.models.heads.dfl import DFLHeadOutput
from detector.models.heads.ssd import SSDHeadOutput
from detector.models.priors import Priors, box_centres
from detector.postprocess.postprocessors import Postprocessor
from detector.training.module import LitDetector

# two levels: 4 anchors of stride 8, then 2 of stride 16 (anchor-free: no prior boxes)
PRIORS = Priors(torch.zeros(6, 2), torch.tensor([[8.0]] * 4 + [[16.0]] * 2), None, (4, 2))

# image 0: a small GT (10 x 10) with 2 positives (anchors 0 and 4), a large one (100 x 100) with 3 (1, 2, 5), a padded row
# image 1: a medium GT (40 x 40) with 1 positive (anchor 3), a small one (4 x 6: narrower than stride 8) with none,
#          a padded row holding a large box
# image 2: no GT, no positive
GT_BOXES = torch.tensor([
    [[0.0, 0, 10, 10], [0, 0, 100, 100], [0, 0, 0, 0]],
    [[0.0, 0, 40, 40], [50, 50, 54, 56], [0, 0, 200, 200]],
    [[0.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
])
GT_MASK = torch.tensor([[True, True, False], [True, True, False], [False, False, False]])


def hand_made() -> tuple[Assignment, torch.Tensor]:
    """The assignment described above and the decoded predicted boxes (their IoU with the GT in the comments)."""
    foreground = torch.zeros(3, 6, dtype=torch.bool)
    gt_index = torch.zeros(3, 6, dtype=torch.long)
    foreground[0, [0, 4, 1, 2, 5]] = True
    gt_index[0, [1, 2, 5]] = 1
    foreground[1, 3] = True
    boxes = GT_BOXES.gather(1, gt_index.unsqueeze(-1).expand(-1, -1, 4))
    pred = torch.zeros(3, 6, 4)
    pred[0, 0] = torch.tensor([0.0, 0, 10, 10])  # IoU 1
    pred[0, 4] = torch.tensor([0.0, 0, 10, 5])  # 0.5
    pred[0, 1] = torch.tensor([0.0, 0, 100, 50])  # 0.5
    pred[0, 2] = torch.tensor([0.0, 0, 50, 50])  # 0.25
    pred[0, 5] = torch.tensor([0.0, 0, 100, 100])  # 1
    pred[1, 3] = torch.tensor([20.0, 0, 60, 40])  # 800 / 2400 = 1/3
    pred[1, 0] = torch.tensor([50.0, 50, 54, 56])  # a background anchor on the unassigned GT: ignored
    scores = torch.zeros(3, 6, 2)
    for (image, anchor), quality in zip([(0, 0), (0, 4), (0, 1), (0, 2), (0, 5), (1, 3)], [0.9, 0.5, 0.8, 0.2, 0.6, 1.0]):
        scores[image, anchor] = torch.tensor([quality, quality / 2])  # the max over classes is the first
    scores[2, 0, 1] = 0.7  # a background anchor's score: ignored
    labels = torch.zeros(3, 6, dtype=torch.long)
    return Assignment(labels, boxes, scores, foreground, gt_index), pred


EXPECTED = {
    "gt_count": 4.0, "pos_per_gt": 6 / 4, "pos_per_gt_min": 0.0, "gt_without_pos": 1 / 4,
    "gt_count_small": 2.0, "pos_per_gt_small": 1.0, "pos_per_gt_min_small": 0.0, "gt_without_pos_small": 0.5,
    "gt_count_medium": 1.0, "pos_per_gt_medium": 1.0, "pos_per_gt_min_medium": 1.0, "gt_without_pos_medium": 0.0,
    "gt_count_large": 1.0, "pos_per_gt_large": 3.0, "pos_per_gt_min_large": 3.0, "gt_without_pos_large": 0.0,
    "level0_pos_per_gt": 4 / 4, "level0_share": 4 / 6, "level1_pos_per_gt": 2 / 4, "level1_share": 2 / 6,
    "pos_iou": (1 + 0.5 + 0.5 + 0.25 + 1 + 1 / 3) / 6, "pos_quality": (0.9 + 0.5 + 0.8 + 0.2 + 0.6 + 1.0) / 6,
    "pos_per_image": 6 / 3,
}


def test_hand_made_batch_gives_the_exact_numbers():
    assignment, pred = hand_made()
    sums = assignment_statistics(assignment, GT_BOXES, GT_MASK, PRIORS, pred)
    assert set(sums) == set(STATES)
    assert sums["gts"].tolist() == [2, 1, 1] and sums["gts_without"].tolist() == [1, 0, 0]
    assert sums["without_small"] == 1 and sums["without_small_size"] == 4.0  # the 4 x 6 box, shorter side 4 < 8
    assert sums["images"] == 3 and sums["levels"] == 2 and sums["level_positives"][:3].tolist() == [4, 2, 0]
    summary = summarize(sums)
    assert summary.keys() == EXPECTED.keys()
    for name, value in EXPECTED.items():
        assert summary[name] == pytest.approx(value, rel=1e-6), name
    # the criteria that have the positives' indices pass them: the same sums
    gathered = assignment_statistics(assignment, GT_BOXES, GT_MASK, PRIORS, pred, assignment.foreground.nonzero(as_tuple=True))
    assert all(torch.allclose(gathered[name].float(), sums[name].float()) for name in STATES)


def test_a_batch_without_gt_columns_and_without_positives():
    empty = Assignment(torch.zeros(2, 6, dtype=torch.long), torch.zeros(2, 6, 4), torch.zeros(2, 6, 2),
                       torch.zeros(2, 6, dtype=torch.bool), torch.zeros(2, 6, dtype=torch.long))
    sums = assignment_statistics(empty, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool), PRIORS, torch.zeros(2, 6, 4))
    summary = summarize(sums)
    assert summary["gt_count"] == 0 and summary["pos_per_image"] == 0 and sums["min_positives"].tolist() == [NO_GT] * 3
    assert math.isnan(summary["pos_per_gt"]) and math.isnan(summary["pos_iou"]) and math.isnan(summary["pos_per_gt_min"])


def test_epoch_sums_over_two_batches_are_those_of_the_whole_batch():
    assignment, pred = hand_made()
    whole = summarize(assignment_statistics(assignment, GT_BOXES, GT_MASK, PRIORS, pred))
    metric = AssignmentStatistics()
    for part in (slice(0, 1), slice(1, 3)):  # image 0, then images 1 and 2
        sliced = Assignment(*(field[part] for field in assignment))
        metric.update(assignment_statistics(sliced, GT_BOXES[part], GT_MASK[part], PRIORS, pred[part]))
    totals = totals_to_python(metric.compute())
    assert summarize(totals) == pytest.approx(whole, rel=1e-6, nan_ok=True)
    assert summarize(totals)["pos_per_gt_min_small"] == 0.0  # min(2 in the first batch, 0 in the second)
    metric.reset()
    assert metric.positives == 0 and metric.min_stride == math.inf


def totals(gts: int, without: int, small: int = 0, small_size: float = 0.0, min_prior: float = math.inf) -> dict:
    """Epoch totals with `gts` GT boxes (small ones), `without` of them without positive, `small` of those small."""
    values = {name: torch.full(shape, initial, dtype=dtype).tolist() for name, (shape, dtype, initial, _) in STATES.items()}
    values.update(gts=[gts, 0, 0], gts_without=[without, 0, 0], without_small=small, without_small_size=small_size,
                  min_stride=8.0, min_prior=min_prior, positives=gts, images=1, levels=1)
    return values


def test_warning_threshold():
    assert unassigned_warning(totals(1000, 49), 0.05) is None  # 4.9%
    message = unassigned_warning(totals(1000, 51, small=51, small_size=51 * 4.0), 0.05, img_size=640, epoch=3)
    assert message is not None and message.startswith("epoch 3: 51 of 1000 ground-truth boxes (5.1%) got no positive")
    assert "small 51, medium 0, large 0" in message
    # boxes of 4 px under stride 8: a larger input (x2, rounded to 32) or TAL's small-object option
    assert "data.img_size=1280" in message and "assigner=tal_small" in message and "assigner.small_objects=true" in message
    assert unassigned_warning(totals(1000, 51), 0.06) is None  # the threshold is a parameter


def test_warning_names_the_prior_scales_for_prior_boxes_and_crowding_otherwise():
    message = unassigned_warning(totals(100, 20, small=10, small_size=10 * 12.8, min_prior=32.0), 0.05, img_size=640)
    assert "20 of 100 ground-truth boxes (20.0%)" in message and "smallest prior box (32.0 px)" in message
    assert "model.first_scale=0.020" in message and "model.min_scale" in message and "model.scales" in message
    assert "10 of them are not smaller than the priors" in message and "assigner.topk" in message


# --------------------------------------------------------------------------- both criteria record the statistics


def test_yolov8_criterion_returns_its_main_branch_statistics_only_in_training():
    torch.manual_seed(0)
    points = torch.tensor([[4.0, 4], [12, 4], [4, 12], [12, 12]])
    priors = Priors(points, torch.full((4, 1), 8.0), None, (4,))
    output = DFLHeadOutput(torch.randn(1, 4, 64), torch.randn(1, 4, 2), priors)
    one2one = DFLHeadOutput(torch.randn(1, 4, 64), torch.randn(1, 4, 2), priors)
    gt = (torch.tensor([[1]]), torch.tensor([[[0.0, 0, 16, 16]]]), torch.tensor([[True]]))
    criterion = YOLOv8Criterion(TaskAlignedAssigner(2, topk=3), BCEWithLogits(), CIoULoss(), DFLoss(),
                                one2one_assigner=TaskAlignedAssigner(2, topk=1))
    losses, stats = criterion(output._replace(one2one=one2one), *gt)
    assert set(stats) == set(STATES) and stats["positives"] == 3  # the one-to-many branch's top 3, not the top 1
    assert stats["gts"].tolist() == [1, 0, 0] and not stats["iou_sum"].requires_grad
    without = YOLOv8Criterion(TaskAlignedAssigner(2, topk=3), BCEWithLogits(), CIoULoss(), DFLoss(),
                              one2one_assigner=TaskAlignedAssigner(2, topk=1), statistics=False)
    unchanged, none = without(output._replace(one2one=one2one), *gt)
    assert none is None
    assert all(torch.equal(losses[name], unchanged[name]) for name in losses)  # no loss value changes
    criterion.eval()
    assert criterion(output, *gt).assignment_stats is None  # validation: none computed
    assert not hasattr(criterion, "last_assignment_stats")  # and nothing kept between calls


def test_multibox_criterion_returns_the_prior_boxes():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30], [20, 20, 30, 30], [40, 40, 50, 50]])
    priors = Priors(box_centres(boxes), torch.full((5, 1), 10.0), boxes, (4, 1))
    output = SSDHeadOutput(torch.zeros(2, 5, 4), torch.zeros(2, 5, 3), priors)
    criterion = MultiBoxCriterion(SSDMatcher(2), CrossEntropy(), SmoothL1Loss())
    stats = criterion(output, torch.tensor([[1], [-1]]), torch.tensor([[[0.0, 0, 10, 12]], [[0.0, 0, 0, 0]]]),
                      torch.tensor([[True], [False]])).assignment_stats
    summary = summarize(stats)
    # one GT (small), matched by prior 0 only (IoU 100 / 120); its zero deltas decode to the prior itself
    assert summary["gt_count"] == 1 and summary["pos_per_gt"] == 1 and summary["pos_per_image"] == 0.5
    assert summary["level0_share"] == 1 and summary["level1_share"] == 0
    assert summary["pos_iou"] == pytest.approx(100 / 120) and summary["pos_quality"] == 1.0
    assert stats["min_prior"] == 10.0


def test_lit_detector_logs_and_warns_at_the_epoch_end_naming_the_count(monkeypatch):
    criterion = YOLOv8Criterion(TaskAlignedAssigner(2), BCEWithLogits(), CIoULoss(), DFLoss())
    module = LitDetector(YOLODetector(2, "n", image_size=64), criterion, Postprocessor(),
                         lambda groups: torch.optim.SGD(groups, lr=0.01), unassigned_warning=0.2)
    logged = {}
    monkeypatch.setattr(module, "log_dict", lambda values, **options: logged.update(values))
    assignment, pred = hand_made()
    module.assignment_stats.update(assignment_statistics(assignment, GT_BOXES, GT_MASK, PRIORS, pred))
    assert module.assignment_summary() == pytest.approx(EXPECTED, rel=1e-6)
    with pytest.warns(UserWarning, match=r"epoch 0: 1 of 4 ground-truth boxes \(25.0%\) got no positive anchor"):
        module.on_train_epoch_end()
    assert logged == pytest.approx({f"assign/{name}": value for name, value in EXPECTED.items()}, rel=1e-6)
    module.unassigned_warning = 0.3  # 25% is not above it: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module.on_train_epoch_end()


def _ddp_rank(rank: int, port: int, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        assignment, pred = hand_made()
        part = slice(0, 1) if rank == 0 else slice(1, 3)  # rank 0: image 0; rank 1: images 1 and 2
        metric = AssignmentStatistics()
        metric.update(assignment_statistics(Assignment(*(f[part] for f in assignment)), GT_BOXES[part], GT_MASK[part],
                                            PRIORS, pred[part]))
        queue.put((rank, summarize(totals_to_python(metric.compute()))))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ddp_ranks_reduce_to_the_whole_batch():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_ddp_rank, args=(rank, port, queue)) for rank in range(2)]
    for process in processes:
        process.start()
    results = dict(queue.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    for rank in range(2):  # every rank gets the totals of both (min of the minima, sums of the sums)
        assert results[rank] == pytest.approx(EXPECTED, rel=1e-6), rank
