import torch

from detector.models.priors import anchor_points


def test_anchor_points_are_cell_centres_level_by_level():
    points, strides = anchor_points([(2, 3), (1, 1)], (8, 16))
    assert points.shape == (7, 2) and strides.shape == (7, 1)
    # level 0: row-major (y outer, x inner), centres at +0.5 in grid units
    expected = torch.tensor([[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 1.5], [0.5, 0.5]])
    torch.testing.assert_close(points, expected)
    torch.testing.assert_close(strides.squeeze(1), torch.tensor([8.0] * 6 + [16.0]))
    # in pixels the first level's second point sits at x = 1.5 * 8 = 12
    assert (points * strides)[1].tolist() == [12.0, 4.0]


def test_anchor_points_for_a_640_input_give_8400_points():
    sizes = [(80, 80), (40, 40), (20, 20)]
    points, strides = anchor_points(sizes, (8, 16, 32))
    assert len(points) == 8400
    assert strides[:6400].eq(8).all() and strides[6400:8000].eq(16).all() and strides[8000:].eq(32).all()
    # last point of each level is the bottom-right cell centre
    assert points[6399].tolist() == [79.5, 79.5] and points[-1].tolist() == [19.5, 19.5]


def test_offset_zero_gives_cell_corners():
    points, _ = anchor_points([(1, 2)], (8,), offset=0.0)
    assert points.tolist() == [[0.0, 0.0], [1.0, 0.0]]
