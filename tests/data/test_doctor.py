"""The dataset doctor (detector.data.doctor, run by check_dataset): counts on crafted boxes and priors."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from detector.assigners.tal import widen_small_boxes
from detector.cli import check_dataset
from detector.data.dataset import Record
from detector.data.doctor import diagnose, plot_labels, points_inside, report_lines
from detector.data.formats.synthetic import generate_shapes
from detector.models.priors import Priors, anchor_points


def record(boxes, labels, size=(32, 32), name="a.jpg") -> Record:
    return Record(Path(name), 1, size[0], size[1], np.asarray(boxes, np.float32).reshape(-1, 4),
                  np.asarray(labels, np.int64))


def test_points_strictly_inside_a_box():
    boxes = np.array([[0, 0, 8, 8], [5, 5, 11, 11], [0, 0, 16, 16], [4, 4, 12, 12], [-10, -10, 100, 100.]])
    # points of stride 8 at 4, 12, 20, 28 (grid 4); a point on the border is not inside
    assert points_inside(boxes, 8, 4).tolist() == [1, 0, 4, 0, 16]
    # TAL's rule, which the doctor uses: sides under the second stride (16 here) widened to it
    assert widen_small_boxes(torch.tensor([[5, 5, 11, 11.]]), anchor_free_priors(32)).tolist() == [[0, 0, 16, 16]]


def anchor_free_priors(size: int, strides=(8, 16)) -> Priors:
    sizes = [(size // s, size // s) for s in strides]
    points, point_strides = anchor_points(sizes, strides)
    return Priors(points * point_strides, point_strides, None, tuple(h * w for h, w in sizes))


def test_anchor_free_counts_boxes_without_an_anchor_point():
    records = [
        record([[9, 9, 11.5, 11.5], [0, 0, 16, 16]], [0, 1]),  # the first holds no point of stride 8 or 16
        record([[1, 1, 3, 3]], [0], size=(64, 64)),  # letterboxed 64 -> 32: [0.5, 0.5, 1.5, 1.5], no point
    ]
    priors = anchor_free_priors(32)
    diagnosis = diagnose(records, 2, 32, priors, widen=partial(widen_small_boxes, priors=priors))
    assert diagnosis.no_anchor_point == 2
    assert diagnosis.no_anchor_point_widened == 0  # widened to 16 px, both hold the point (8, 8)
    assert diagnosis.class_counts == [2, 1]
    np.testing.assert_allclose(diagnosis.sizes, [2.5, 16, 1])
    text = "\n".join(report_lines(diagnosis, ["a", "b"]))
    assert "boxes that contain no anchor point at strides 8, 16: 2 (66.7%)" in text
    assert "with assigner=tal_small 0 (0.0%)" in text


def test_anchor_based_counts_boxes_below_the_matcher_threshold():
    prior = torch.tensor([[0, 0, 10, 10.]])
    priors = Priors(torch.tensor([[5, 5.]]), torch.tensor([[8.]]), prior, (1,))
    records = [record([[0, 0, 10, 10], [0, 0, 10, 4], [20, 20, 30, 30]], [0, 0, 0])]
    diagnosis = diagnose(records, 1, 32, priors, iou_threshold=0.5)
    assert (diagnosis.below_threshold, diagnosis.no_prior) == (2, 1)  # IoU 1, 0.4, 0
    assert diagnosis.prior_sizes == [10.0]


def test_duplicates_imbalance_and_whole_image_boxes():
    records = [
        record([[0, 0, 10, 10], [0, 0, 10, 10.2], [0, 0, 10, 10]], [0, 0, 1], name="dup.jpg"),  # 1 same-class pair
        record([[0, 0, 31, 31]], [0], name="whole.jpg"),  # 94% of the image
        record(np.zeros((0, 4)), [], name="empty.jpg"),
    ]
    diagnosis = diagnose(records, 3, 32, anchor_free_priors(32))
    assert diagnosis.duplicates == 1 and diagnosis.duplicate_examples == ["dup.jpg: 1 pair(s)"]
    assert diagnosis.whole_image == 1 and diagnosis.whole_image_examples == ["whole.jpg"]
    assert diagnosis.class_counts == [3, 1, 0]
    text = "\n".join(report_lines(diagnosis, ["a", "b", "c"]))
    assert "most/least frequent present class 3.0x" in text and "c (0)" in text


def test_tiny_shapes_are_tiny_and_the_default_shapes_keep_their_stamp(tmp_path):
    root = generate_shapes(tmp_path / "tiny", num_train=6, num_val=1, image_size=128, object_size=(4, 16),
                           objects=(5, 20))
    boxes = np.array([a["bbox"] for a in json.loads((root / "annotations/train.json").read_text())["annotations"]])
    assert len(boxes) >= 30 and boxes[:, 2:].max() <= 20 and boxes[:, 2:].min() >= 2
    generate_shapes(tmp_path / "default", num_train=1, num_val=1, image_size=64)
    # the stamp of the default parameters is that of the versions before object_size/objects existed
    assert (tmp_path / "default/GENERATED").read_text() == "04347c04be9b34269918dc8331b417ce07e92e4e"


def test_the_labels_figure_draws_every_letterboxed_box_by_class(tmp_path):
    # a 64 x 32 image letterboxed to 32: scale 0.5; a 32 x 32 one: scale 1
    records = [record([[0, 0, 16, 8], [32, 16, 64, 32]], [0, 2], size=(32, 64)), record([[4, 4, 12, 20]], [2])]
    diagnosis = diagnose(records, 3, 32, priors=None)
    assert diagnosis.boxes.tolist() == [[0, 0, 8, 4], [16, 8, 32, 16], [4, 4, 12, 20]]
    assert diagnosis.labels.tolist() == [0, 2, 2] and diagnosis.class_counts == [1, 0, 2]
    assert diagnosis.strides == [] and diagnosis.no_anchor_point is None  # no model: the label statistics alone
    import matplotlib.image

    path = plot_labels(diagnosis, ["a", "b", "c"], tmp_path / "labels.png")
    height, width = matplotlib.image.imread(path).shape[:2]
    assert 1000 < width < 1300 and 650 < height < 800


@pytest.mark.slow
def test_check_dataset_prints_the_doctor_and_the_train_command(tmp_path, capsys):
    argv = ["data=shapes_tiny", f"paths.data_dir={tmp_path}", "data.prepare.num_train=3", "data.prepare.num_val=1",
            "data.prepare.image_size=64", "data.img_size=64", "--out", str(tmp_path / "doctor")]
    assert check_dataset(argv) == 0
    out = capsys.readouterr().out
    assert "doctor: [train]" in out and "boxes that contain no anchor point at strides 8, 16, 32" in out
    assert "train on it with:\n  python train.py data=shapes_tiny " in out
    assert (tmp_path / "doctor" / "box_sizes_train.png").is_file() and (tmp_path / "doctor" / "labels_train.png").is_file()
    assert check_dataset(argv + ["model=ssd_csp_n"]) == 0
    assert "boxes whose best prior IoU < 0.5" in capsys.readouterr().out


def test_the_doctor_can_be_skipped(tmp_path, capsys):
    argv = ["data=shapes", f"paths.data_dir={tmp_path}", "data.prepare.num_train=1", "data.prepare.num_val=1",
            "data.prepare.image_size=32", "--no-doctor"]
    assert check_dataset(argv) == 0
    assert "doctor:" not in capsys.readouterr().out
