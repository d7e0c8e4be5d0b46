"""A synthetic detection dataset that the project generates itself: coloured shapes on textured,
noisy backgrounds, written once (deterministically from a seed) as JPEG images + COCO json.

Five shape classes in random colours, 2-8 objects per image, sizes from about 10 px to half the
image (COCO small/medium/large all occur; `object_size`/`objects` make other variants, e.g. tiny objects); two boxes may overlap by at most 30% of the smaller
one, so every object stays identifiable. The box of an object is the tight box of its drawn pixels.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import cv2
import numpy as np

CLASS_NAMES = ("circle", "square", "triangle", "star", "cross")


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    if kind == "square":
        radii, n = [r] * 4, 4
    elif kind == "triangle":
        radii, n = [r] * 3, 3
    elif kind == "star":
        radii, n = [r, r * 0.45] * 5, 10
    else:  # cross: a plus sign of arm width r / 2.5
        a = r / 2.5
        pts = np.array([(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a), (a, r), (-a, r), (-a, a), (-r, a), (-r, -a), (-a, -a)])
        c, s = math.cos(angle), math.sin(angle)
        return (pts @ np.array([[c, s], [-s, c]]) + (cx, cy)).astype(np.int32)
    theta = angle + np.arange(n) * 2 * math.pi / n
    return np.stack([cx + np.array(radii) * np.cos(theta), cy + np.array(radii) * np.sin(theta)], -1).astype(np.int32)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour gradient + low-frequency blobs + a few random lines + pixel noise."""
    base = rng.uniform(40, 215, 3)
    gradient = np.linspace(-1, 1, width)[None, :, None] * rng.uniform(-40, 40, 3)
    image = np.broadcast_to(base + gradient, (height, width, 3)).copy()
    blobs = cv2.resize(rng.normal(0, 25, (6, 6, 3)), (width, height), interpolation=cv2.INTER_CUBIC)
    image += blobs
    for _ in range(rng.integers(0, 6)):
        p1, p2 = rng.integers(0, [width, height], 2), rng.integers(0, [width, height], 2)
        cv2.line(image, tuple(int(v) for v in p1), tuple(int(v) for v in p2), rng.uniform(0, 255, 3).tolist(), int(rng.integers(1, 3)))
    image += rng.normal(0, 8, image.shape)
    return image


def _overlap_of_smaller(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over the area of the smaller box, for `box` against each of `boxes`."""
    if len(boxes) == 0:
        return np.zeros(0)
    lt, rb = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), 1)
    area = lambda b: np.prod(b[..., 2:] - b[..., :2], -1)  # noqa: E731
    return inter / np.minimum(area(box), area(boxes))


def render_image(
    rng: np.random.Generator, size: int, object_size: tuple[float, float] | None = None, objects: tuple[int, int] = (2, 8),
) -> tuple[np.ndarray, list[list[float]], list[int]]:
    """One RGB image (size x size) and its xyxy boxes and class indices. `object_size`: (smallest, largest) object
    diameter in px, log-uniform (None: 12 px to half the image); `objects`: (fewest, most) objects per image."""
    image = _background(rng, size, size)
    low, high = (6, size / 4) if object_size is None else (object_size[0] / 2, object_size[1] / 2)
    min_pixels = min(16, int(low**2))  # a drawn object needs this many pixels
    boxes, labels = [], []
    for _ in range(rng.integers(objects[0], objects[1] + 1)):
        for _attempt in range(20):
            label = int(rng.integers(len(CLASS_NAMES)))
            r = float(np.exp(rng.uniform(np.log(low), np.log(high))))
            cx, cy = rng.uniform(r, size - r, 2)
            mask = np.zeros((size, size), np.uint8)
            if CLASS_NAMES[label] == "circle":
                cv2.circle(mask, (int(cx), int(cy)), int(r), 255, -1)
            else:
                cv2.fillPoly(mask, [_polygon(CLASS_NAMES[label], cx, cy, r, rng.uniform(0, 2 * math.pi))], 255)
            ys, xs = np.nonzero(mask)
            if len(xs) < min_pixels:
                continue
            box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
            if (_overlap_of_smaller(box, np.array(boxes).reshape(-1, 4)) > 0.3).any():
                continue
            colour = rng.uniform(0, 255, 3)
            while np.abs(colour - image[int(cy), int(cx)]).max() < 60:
                colour = rng.uniform(0, 255, 3)
            image[mask > 0] = colour + rng.normal(0, 8, (int((mask > 0).sum()), 3))
            boxes.append(box.tolist())
            labels.append(label)
            break
    return np.clip(image, 0, 255).astype(np.uint8), boxes, labels


def generate_shapes(
    root: str | Path, num_train: int = 1500, num_val: int = 250, image_size: int = 256, seed: int = 0,
    object_size: tuple[float, float] | None = None, objects: tuple[int, int] = (2, 8),
) -> Path:
    """Write root/images/{train,val}/*.jpg and root/annotations/{train,val}.json (COCO format). `object_size` and
    `objects` as in `render_image` (configs/data/shapes_tiny.yaml: objects of 4 to 16 px, 5 to 20 per image).

    Idempotent: a stamp file records the parameters; an existing dataset with the same stamp is kept.
    """
    root = Path(root)
    params = dict(num_train=num_train, num_val=num_val, image_size=image_size, seed=seed, classes=CLASS_NAMES, version=1)
    if object_size is not None or tuple(objects) != (2, 8):  # the default's stamp is that of earlier versions
        params.update(object_size=None if object_size is None else list(object_size), objects=list(objects))
    stamp = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()
    stamp_file = root / "GENERATED"
    if stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        return root
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASS_NAMES)]
    for split, count, split_seed in (("train", num_train, seed), ("val", num_val, seed + 10_000)):
        rng = np.random.default_rng(split_seed)
        image_dir = root / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            image, boxes, labels = render_image(rng, image_size, object_size, tuple(objects))
            file_name = f"{index:06d}.jpg"
            cv2.imwrite(str(image_dir / file_name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            images.append({"id": index + 1, "file_name": file_name, "width": image_size, "height": image_size})
            for (x1, y1, x2, y2), label in zip(boxes, labels):
                annotations.append({
                    "id": len(annotations) + 1, "image_id": index + 1, "category_id": label + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                })
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        with open(root / "annotations" / f"{split}.json", "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    stamp_file.write_text(stamp)
    return root
