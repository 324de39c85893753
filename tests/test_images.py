"""load_image: file modes and EXIF orientations against PIL's own conversion of the same file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from dpmesh_infer.images import load_image


def _reference(path) -> np.ndarray:
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "P", "PA"):
            img = Image.alpha_composite(Image.new("RGBA", img.size, (0, 0, 0, 255)), img.convert("RGBA"))
        return np.asarray(img.convert("RGB"))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    pixels = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.jpg"
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    got = load_image(path)
    assert got.shape == ((30, 50, 3) if orientation < 5 else (50, 30, 3))  # 5..8 turn the picture
    np.testing.assert_array_equal(got, _reference(path))


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK", "I;16"])
def test_file_modes_become_rgb(tmp_path, mode):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (20, 40), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 255, (20, 40, 4), dtype=np.uint8), "RGBA").convert(mode)
    path = tmp_path / ("m.jpg" if mode == "CMYK" else "m.png")
    img.save(path)
    got = load_image(path)
    assert got.shape == (20, 40, 3) and got.dtype == np.uint8
    if mode != "I;16":  # 16-bit is scaled to 0..255 by load_image's own rule
        np.testing.assert_array_equal(got, _reference(path))


def test_a_pil_image_passed_in_is_left_as_it_was():
    exif = Image.Exif()
    exif[0x0112] = 6
    img = Image.fromarray(np.arange(24, dtype=np.uint8).reshape(2, 4, 3))
    img.info["exif"] = exif.tobytes()
    img.getexif()[0x0112] = 6
    got = load_image(img)
    assert got.shape == (4, 2, 3) and img.size == (4, 2) and img.getexif().get(0x0112) == 6
