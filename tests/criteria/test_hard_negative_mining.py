"""Hard negative mining of the MultiBox criterion: the 3:1 ratio, the ranking, edge cases and ties."""

import torch

from detector.criteria.hard_negative_mining import HardNegativeMiner


def test_hard_negative_mining_keeps_the_largest_losses_at_three_to_one():
    loss = torch.tensor([[0.5, 0.9, 0.1, 0.7, 0.95, 0.3, 0.2, 0.8, 0.6]])
    positive = torch.zeros(1, 9, dtype=torch.bool)
    positive[0, 1] = True  # a positive's loss never counts in the ranking (0.9 here)
    selected = HardNegativeMiner()(loss, positive)
    # 1 positive -> 3 negatives: the losses 0.95 (4), 0.8 (7), 0.7 (3)
    assert selected[0].nonzero().flatten().tolist() == [1, 3, 4, 7]
    two = positive.clone()
    two[0, 5] = True
    # ratio 1.5 with 2 positives -> 3 negatives; ratio 3 with 2 positives -> 6 = every negative but 1 (the smallest)
    assert HardNegativeMiner(1.5)(loss, two)[0].nonzero().flatten().tolist() == [1, 3, 4, 5, 7]
    assert HardNegativeMiner(3.0)(loss, two)[0].nonzero().flatten().tolist() == [0, 1, 3, 4, 5, 6, 7, 8]


def test_hard_negative_mining_edge_cases():
    loss = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    positive = torch.tensor([[True, False, False, False], [False] * 4, [True, True, True, False]])
    selected = HardNegativeMiner()(loss, positive)
    assert selected[0].tolist() == [True, True, True, True]  # 3 wanted, 3 available (ties in index order)
    assert not selected[1].any()  # no positives: no negatives (SSD)
    assert selected[2].tolist() == [True, True, True, True]  # 9 wanted, 1 available
    assert HardNegativeMiner(1.0, min_negatives=2)(loss, positive)[1].tolist() == [False, False, True, True]
    # ties resolved towards the lower index, deterministically
    tied = HardNegativeMiner(1.0)(torch.ones(1, 5), torch.tensor([[False, False, True, False, False]]))
    assert tied[0].tolist() == [True, False, True, False, False]
