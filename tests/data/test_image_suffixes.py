"""One list of image suffixes: prediction finds the images that the YOLO and VOC readers take."""

from __future__ import annotations

from detector.data.dataset import IMAGE_SUFFIXES
from detector.data.formats.voc import _image_path
from detector.data.formats.yolo import list_images
from detector.deploy.predict import find_images


def test_prediction_and_the_readers_take_the_same_image_files(tmp_path):
    names = ["a.jpg", "b.TIF", "c.webp", "d.tiff", "e.png"]
    for name in [*names, "notes.txt", "labels.json"]:
        (tmp_path / name).write_bytes(b"")
    expected = [tmp_path / name for name in names]
    assert find_images(tmp_path) == list_images([tmp_path]) == expected
    assert {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"} <= set(IMAGE_SUFFIXES)


def test_voc_finds_an_image_with_another_suffix_in_either_case(tmp_path):
    images = tmp_path / "JPEGImages"
    images.mkdir()
    (images / "000001.TIFF").write_bytes(b"")
    (images / "000002.png").write_bytes(b"")
    assert _image_path(images, "000001", None) == images / "000001.TIFF"
    assert _image_path(images, "000002", "missing.jpg") == images / "000002.png"
    assert _image_path(images, "000003", None) == images / "000003.jpg"  # missing: the default
