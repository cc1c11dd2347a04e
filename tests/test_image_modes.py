"""Every PIL image mode becomes the right 8-bit RGB image, or is refused by name (evalkit.data.images.to_rgb).

Expected pixels come from numpy on the arrays the files were written from, not from PIL's conversions.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from evalkit.data.hub_datasets import _decode
from evalkit.data.images import BadImageError, ImageSource, to_rgb

RNG = np.random.default_rng(13)
GREY16 = RNG.integers(0, 65536, size=(6, 7), dtype=np.uint16)
RGB8 = RNG.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, size=(6, 7), dtype=np.uint8)


def _grey_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def _open(path) -> np.ndarray:
    image = ImageSource().open(str(path))
    assert image.mode == "RGB" and image.size == (7, 6)
    return np.asarray(image)


def test_16_bit_png_keeps_the_high_byte_not_white(tmp_path):
    path = tmp_path / "grey16.png"
    Image.frombytes("I;16", (7, 6), GREY16.astype("<u2").tobytes()).save(path)
    assert Image.open(path).mode == "I;16"
    assert np.array_equal(_open(path), _grey_rgb((GREY16 >> 8).astype(np.uint8)))


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16B", ">u2"), ("I;16L", "<u2")])
def test_16_bit_modes_in_memory(mode, dtype):
    image = Image.frombytes(mode, (7, 6), GREY16.astype(dtype).tobytes())
    assert np.array_equal(np.asarray(to_rgb("x", image)), _grey_rgb((GREY16 >> 8).astype(np.uint8)))


def test_mode_i_is_read_as_16_bit_and_out_of_range_is_refused():
    image = Image.frombytes("I", (7, 6), GREY16.astype("<i4").tobytes())
    assert np.array_equal(np.asarray(to_rgb("x", image)), _grey_rgb((GREY16 >> 8).astype(np.uint8)))
    big = Image.frombytes("I", (2, 1), np.array([0, 70000], dtype="<i4").tobytes())
    with pytest.raises(BadImageError, match=r"image big.tif: mode I holds values outside 0\.\.65535"):
        to_rgb("big.tif", big)


def test_float_images_are_refused_by_name(tmp_path):
    path = tmp_path / "float.tif"
    Image.frombytes("F", (7, 6), RNG.random((6, 7)).astype("<f4").tobytes()).save(path)
    with pytest.raises(BadImageError, match=f"image {path}: mode F"):
        ImageSource().open(str(path))


def test_palette_with_transparency_keeps_palette_colours(tmp_path):
    palette = RNG.integers(0, 256, size=(256, 3), dtype=np.uint8)
    index = RNG.integers(0, 256, size=(6, 7), dtype=np.uint8)
    image = Image.frombytes("P", (7, 6), index.tobytes())
    image.putpalette(palette.flatten().tolist())
    path = tmp_path / "palette.png"
    image.save(path, transparency=int(index[0, 0]))
    assert Image.open(path).mode == "P" and "transparency" in Image.open(path).info
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Palette images with Transparency" warning either
        assert np.array_equal(_open(path), palette[index])


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_dropped_not_composited_as_lavis(tmp_path, mode):
    if mode == "RGBA":
        array, expected = np.dstack([RGB8, ALPHA]), RGB8
    else:
        array, expected = np.dstack([RGB8[..., 0], ALPHA]), _grey_rgb(RGB8[..., 0])
    path = tmp_path / f"{mode}.png"
    Image.frombytes(mode, (7, 6), array.tobytes()).save(path)
    assert np.array_equal(_open(path), expected)


def test_cmyk_uses_the_naive_formula(tmp_path):
    cmyk = RNG.integers(0, 256, size=(6, 7, 4), dtype=np.uint8)
    path = tmp_path / "cmyk.tif"
    Image.frombytes("CMYK", (7, 6), cmyk.tobytes()).save(path)
    cmy, k = cmyk[..., :3].astype(float), cmyk[..., 3:].astype(float)
    expected = (255 - cmy) * (255 - k) / 255
    assert np.abs(_open(path).astype(float) - expected).max() <= 1


def test_grey_and_bilevel(tmp_path):
    grey = RGB8[..., 1]
    Image.frombytes("L", (7, 6), grey.tobytes()).save(tmp_path / "l.png")
    assert np.array_equal(_open(tmp_path / "l.png"), _grey_rgb(grey))
    bits = grey > 127
    Image.fromarray(bits).save(tmp_path / "bits.png")
    assert Image.open(tmp_path / "bits.png").mode == "1"
    assert np.array_equal(_open(tmp_path / "bits.png"), _grey_rgb(np.where(bits, 255, 0).astype(np.uint8)))


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_a_bad_image(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(40_000, 40_000))
    with pytest.raises(BadImageError, match=f"image {path}: decompression bomb"):
        ImageSource().open(str(path))


def test_a_bomb_warning_turned_error_is_a_bad_image(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(_png_header_only(10_000, 10_000))  # over MAX_IMAGE_PIXELS, under twice it
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(BadImageError, match="decompression bomb"):
            ImageSource().open(str(path))


def test_hub_rows_use_the_same_conversion():
    buffer = io.BytesIO()
    Image.frombytes("I;16", (7, 6), GREY16.astype("<u2").tobytes()).save(buffer, format="PNG")
    image = _decode("hub-row:0:0", {"bytes": buffer.getvalue()})
    assert np.array_equal(np.asarray(image), _grey_rgb((GREY16 >> 8).astype(np.uint8)))
    with pytest.raises(BadImageError, match="hub-row:0:1: decompression bomb"):
        _decode("hub-row:0:1", _png_header_only(40_000, 40_000))
