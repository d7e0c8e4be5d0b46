"""faster-coco-eval gives the same 12 COCO stats (and precision array) as pycocotools on the same detections."""

import numpy as np
import pytest

from detector.evaluation.coco import BACKENDS, STAT_NAMES, evaluate_detections, run_coco_eval, stats_dict

from .conftest import make_coco, make_results


def random_case(seed=0, images=30):
    rng = np.random.default_rng(seed)
    gt, detections = {}, {}
    for image_id in range(1, images + 1):
        n = int(rng.integers(0, 7))
        xy, wh = rng.uniform(0, 120, (n, 2)), rng.uniform(4, 80, (n, 2))  # small, medium and large boxes
        gt[image_id] = [(*xy[i], *(xy[i] + wh[i]), int(rng.integers(2)), int(rng.uniform() < 0.1)) for i in range(n)]
        dets = [(*(np.array(b[:4]) + rng.normal(0, 3, 4)), float(rng.uniform()), b[4] if rng.uniform() < 0.8 else 1 - b[4])
                for b in gt[image_id]]
        dets += [(*xy, *(xy + wh), float(rng.uniform()), int(rng.integers(2)))
                 for xy, wh in zip(rng.uniform(0, 150, (3, 2)), rng.uniform(4, 40, (3, 2)))]
        detections[image_id] = dets
    return make_coco(gt), make_results(detections), list(gt)


def test_pycocotools_backend_equals_the_training_evaluator():
    coco, results, image_ids = random_case()
    ours = stats_dict(run_coco_eval(coco, results, image_ids, "pycocotools"))
    reference = evaluate_detections(coco, results, image_ids)
    assert ours == pytest.approx(reference, abs=1e-12)
    assert 0.1 < ours["map"] < 0.9


def test_faster_coco_eval_gives_the_same_stats():
    pytest.importorskip("faster_coco_eval")
    for seed in (0, 1):
        coco, results, image_ids = random_case(seed)
        reference = run_coco_eval(coco, results, image_ids, "pycocotools")
        fast = run_coco_eval(coco, results, image_ids, "faster_coco_eval")
        assert len(STAT_NAMES) == 12
        for name, want, got in zip(STAT_NAMES, reference.stats, fast.stats[:12]):
            assert got == pytest.approx(want, abs=1e-4), name
        np.testing.assert_allclose(fast.eval["precision"], reference.eval["precision"], atol=1e-4)
        assert list(fast.params.catIds) == list(reference.params.catIds)
        # a subset of images and no detections at all agree too
        assert stats_dict(run_coco_eval(coco, results, image_ids[:10], "faster_coco_eval")) == pytest.approx(
            stats_dict(run_coco_eval(coco, results, image_ids[:10], "pycocotools")), abs=1e-4)
    assert stats_dict(run_coco_eval(coco, [], image_ids, "faster_coco_eval")) == dict.fromkeys(STAT_NAMES, 0.0)


def test_unknown_backend_is_refused():
    coco, results, image_ids = random_case(images=2)
    with pytest.raises(ValueError, match="pycocotools"):
        run_coco_eval(coco, results, image_ids, "nope")
    assert BACKENDS == ("pycocotools", "faster_coco_eval")
