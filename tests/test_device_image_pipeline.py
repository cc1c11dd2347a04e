"""The opt-in device image pipeline against the LAVIS/PIL path, on real COCO JPEGs and synthetic images.

Expected pixels come from ``lavis_pixel_values`` (PIL's resize), an independent implementation; the bounds
are in uint8 levels (difference x std x 255). Measured: at most 1 level (2 on a 9x upscale) on at most
0.121% of the values per image; the tests allow 2 levels on 0.25%.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from evalkit.models.device_image_pipeline import DevicePixelValues, decode_uint8
from evalkit.models.image_preprocessing import lavis_pixel_values

COCO = sorted((Path(__file__).parent / "fixtures" / "coco_val2017" / "val2017").glob("*.jpg"))
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
MAX_LEVELS = 2
MAX_FRACTION = 0.0025  # of the values that differ at all


def _coco(index: int) -> Image.Image:
    with Image.open(COCO[index]) as image:
        return image.convert("RGB")


def _synthetic() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    photo = _coco(0)
    checker = ((np.indices((301, 517)).sum(0) % 2) * 255).astype(np.uint8)
    return {"noise 40x48 (upscale)": Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)),
            "photo 40x48 (upscale)": photo.resize((40, 48), Image.BICUBIC),
            "photo 1000x60": photo.resize((1000, 60), Image.BICUBIC),
            "photo 37x700": photo.resize((37, 700), Image.BICUBIC),
            "noise 900x30": Image.fromarray(rng.integers(0, 256, (30, 900, 3), dtype=np.uint8)),
            "checkerboard 517x301": Image.fromarray(checker).convert("RGB")}


def _levels(pixels: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """|pixels - expected| in uint8 levels."""
    return ((pixels - expected) * torch.tensor(STD).view(-1, 1, 1) * 255).abs()


def _within_bound(pixels: torch.Tensor, expected: torch.Tensor) -> bool:
    levels = _levels(pixels, expected)
    return levels.max().item() <= MAX_LEVELS + 1e-3 and (levels > 0.5).float().mean().item() < MAX_FRACTION


def _device(image: Image.Image, size: int) -> torch.Tensor:
    return DevicePixelValues(size, MEAN, STD, torch.device("cpu"))([decode_uint8(image)])[0]


def _one_pass(image: Image.Image, size: int, mode: str = "bicubic", antialias: bool = True) -> torch.Tensor:
    """A plausible but wrong device resize: one 2-D pass, no uint8 rounding between the axes."""
    pixels = decode_uint8(image)[None].float()
    resized = F.interpolate(pixels, size=(size, size), mode=mode, antialias=antialias, align_corners=False)
    mean, std = torch.tensor(MEAN).view(-1, 1, 1), torch.tensor(STD).view(-1, 1, 1)
    return resized[0].round().clamp(0, 255).div(255).sub(mean).div(std)


@pytest.mark.parametrize("size", [224, 364])
@pytest.mark.parametrize("index", range(len(COCO)))
def test_coco_pixels_match_pil_within_bound(index, size):
    image = _coco(index)
    assert _within_bound(_device(image, size), lavis_pixel_values([image], size, MEAN, STD)[0])


@pytest.mark.parametrize("size", [224, 364])
@pytest.mark.parametrize("name", list(_synthetic()))
def test_synthetic_pixels_match_pil_within_bound(name, size):
    image = _synthetic()[name]
    assert _within_bound(_device(image, size), lavis_pixel_values([image], size, MEAN, STD)[0])


@pytest.mark.parametrize("wrong", [{}, {"antialias": False}, {"mode": "bilinear"}])
def test_bound_rejects_a_wrong_resize(wrong):
    """The bound means something: a single 2-D pass (what torch does by default), the non-antialiased
    bicubic and the antialiased bilinear each break it on the real photos."""
    broken = 0
    for index in range(len(COCO)):
        image = _coco(index)
        broken += not _within_bound(_one_pass(image, 224, **wrong), lavis_pixel_values([image], 224, MEAN, STD)[0])
    assert broken == len(COCO)


def test_batch_of_mixed_sizes_has_shape_dtype_device_and_equals_one_at_a_time():
    images = [decode_uint8(_coco(i)) for i in range(3)] + [decode_uint8(_synthetic()["photo 40x48 (upscale)"])]
    pixels = DevicePixelValues(224, MEAN, STD, torch.device("cpu"))(images)
    assert pixels.shape == (4, 3, 224, 224) and pixels.dtype == torch.float32 and pixels.device.type == "cpu"
    one = DevicePixelValues(224, MEAN, STD, torch.device("cpu"))
    assert torch.equal(pixels, torch.cat([one([image]) for image in images]))
    assert DevicePixelValues(224, MEAN, STD, torch.device("cpu"))([]).shape == (0, 3, 224, 224)


def test_decode_uint8_is_the_rgb_array_channels_first():
    image = _coco(1)
    decoded = decode_uint8(image)
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, image.height, image.width)
    assert torch.equal(decoded.permute(1, 2, 0), torch.from_numpy(np.array(image)))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_other_modes_equal_converting_to_rgb_first(mode):
    image = _coco(2).resize((120, 90), Image.BICUBIC)
    other = image.convert(mode)
    rgb = other.convert("RGB")
    assert torch.equal(decode_uint8(other), decode_uint8(rgb))
    assert torch.equal(_device(other, 224), _device(rgb, 224))
    assert _within_bound(_device(other, 224), lavis_pixel_values([other], 224, MEAN, STD)[0])


def test_bound_rejects_the_other_pass_order(monkeypatch):
    """The pass order matters: the uint8 rounding between the passes clips overshoot differently. Height first
    (what Pillow 13's own resize picks for tall images) breaks the bound on the photos."""
    import evalkit.models.device_image_pipeline as pipeline

    def height_first(pixels, size):
        return pipeline._resize_pass(pipeline._resize_pass(pixels, size, pixels.shape[-1]), size, size)

    monkeypatch.setattr(pipeline, "resize_passes", height_first)
    broken = sum(not _within_bound(_device(_coco(i), 224), lavis_pixel_values([_coco(i)], 224, MEAN, STD)[0])
                 for i in range(len(COCO)))
    assert broken == len(COCO)
