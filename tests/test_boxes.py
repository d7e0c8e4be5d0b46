"""detector/boxes.py: the matched-pair IoU against torchvision's, and the IoU family's pair terms by hand."""

import torch
from torchvision.ops import box_iou

from detector.boxes import pair_terms, paired_box_iou


def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    corner = torch.rand(n, 2, generator=generator) * 100
    return torch.cat((corner, corner + torch.rand(n, 2, generator=generator) * 50), 1)


def test_paired_iou_is_torchvisions_diagonal_bit_for_bit_and_broadcasts():
    generator = torch.Generator().manual_seed(0)
    a, b = random_boxes(64, generator), random_boxes(64, generator)
    assert torch.equal(paired_box_iou(a, b), box_iou(a, b).diagonal())
    assert torch.equal(paired_box_iou(a[:, None], b[None]), box_iou(a, b))  # (N, 1, 4) x (1, M, 4): all pairs


def test_paired_iou_is_zero_without_a_positive_finite_union():
    point = torch.tensor([[5.0, 5, 5, 5]])
    assert paired_box_iou(point, point).item() == 0.0  # 0 / 0 in torchvision
    infinite = torch.tensor([[0.0, 0, float("inf"), 1]])
    assert paired_box_iou(infinite, infinite).item() == 0.0
    assert paired_box_iou(torch.tensor([0.0, 0, 2, 2]), torch.tensor([1.0, 1, 3, 3])) == torch.tensor(1 / 7)


def test_pair_terms_by_hand_with_yolov8s_eps_placement():
    # [0,0,2,2] vs [1,1,4,3]: inter 1, heights 2 + eps, union 4 + 6 - 1 (+ eps terms); enclosing 4 x 3
    eps = 0.5
    t = pair_terms(torch.tensor([0.0, 0, 2, 2]), torch.tensor([1.0, 1, 4, 3]), eps)
    assert (t["pw"], t["ph"], t["tw"], t["th"]) == (2.0, 2.5, 3.0, 2.5)
    assert t["union"] == 2 * 2.5 + 3 * 2.5 - 1 + eps and t["iou"] == 1 / t["union"]
    assert (t["enclose_w"], t["enclose_h"], t["enclose_diag2"]) == (4.0, 3.0, 25.5)
    assert (t["dx"], t["dy"], t["centre_dist2"]) == (1.5, 1.0, 3.25)
    assert pair_terms(torch.tensor([0.0, 0, 2, 2]), torch.tensor([1.0, 1, 4, 3]), 0.0)["iou"] == 1 / 9
