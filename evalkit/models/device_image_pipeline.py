"""Opt-in image pipeline that resizes and normalises on the model's device instead of in CPU workers.

The prefetch workers only decode (:func:`decode_uint8`: the RGB image as a uint8 tensor, no resize);
:class:`DevicePixelValues` then, on the main thread, copies the uint8 pixels to the device and does what
PIL does there: an antialiased bicubic resize (torch's ``antialias=True`` bicubic follows PIL's, a = -0.5)
as two separable passes, each rounded and clamped to uint8 like PIL's 8-bit output, in the order PIL does
them, then ``/ 255`` and ``(x - mean) / std`` in float32 as :func:`lavis_pixel_values` does.

Pass order: width first, then height, as :func:`image_preprocessing.lavis_resize` does (what Pillow <= 12,
and so LAVIS, did in one call). The order matters: the uint8 rounding between the passes clips bicubic
overshoot, so the other order moves edge pixels by up to 13 levels, and a single 2-D pass with no rounding
between (torch's default) by up to 11 on the COCO fixtures and 21 on upscaled noise.

Agreement with the LAVIS/PIL path (:func:`lavis_pixel_values`), in uint8 levels (difference x std x 255),
measured at 224 and 364: the 8 COCO val2017 fixtures differ by at most 1 level, on 0.007-0.114% of the
values per image (0.028% / 0.023% pooled); synthetic images (40x48 upscaled, 1000x60, 37x700, 900x30 noise,
a checkerboard) by at most 2 levels (40x48 -> 364) on at most 0.121%; 200 random shapes cut or scaled from
the fixtures by at most 2 levels on at most 0.69% (an 89x64 image upscaled). PIL sums in 22-bit fixed point,
torch in float, so a value on a rounding edge lands a level apart, and upscaling carries that into a second.

So a run that uses it is NOT the paper's image pipeline: it is opt-in and the run must record
:data:`PIPELINE`, not ``image_preprocessing.PIPELINE``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# in the journal header: journals of the earlier shape-dependent pass order are not resumed as this one's answers
HEADER_NAME = "device/width-then-height"
PIPELINE = ("device: PIL decode, uint8 tensor to the device, torch bicubic antialias resize in two passes "
            "(width then height, each rounded to uint8), /255, (x-mean)/std")


def decode_uint8(image: Image.Image) -> torch.Tensor:
    """Worker side: the RGB image as a uint8 tensor [3, H, W] (no resize). Runs in prefetch threads."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return torch.from_numpy(np.array(rgb, np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def _resize_pass(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """One antialiased bicubic pass on float pixels [1, 3, h, w], rounded and clamped to uint8 values."""
    if tuple(pixels.shape[-2:]) == (height, width):
        return pixels
    resized = F.interpolate(pixels, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return resized.round_().clamp_(0, 255)


def resize_passes(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """float pixels [1, 3, H, W] -> [1, 3, size, size]: the width pass, then the height pass (module docstring)."""
    return _resize_pass(_resize_pass(pixels, pixels.shape[-2], size), size, size)


class DevicePixelValues:
    """Main-thread side: uint8 images of any sizes -> pixel values [n, 3, size, size] float32 on `device`."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], device: torch.device):
        self.size = int(size)
        self.device = torch.device(device)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device).view(-1, 1, 1)

    def _to_device(self, image: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda" and image.device.type == "cpu":  # pin_memory() raises on CPU-only torch
            return image.pin_memory().to(self.device, non_blocking=True)
        return image.to(self.device)

    def _resize(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 [3, H, W] on the device -> uint8-valued float32 [3, size, size]."""
        pixels = image[None].to(torch.float32)
        return resize_passes(pixels, self.size)[0]

    def __call__(self, images: list[torch.Tensor]) -> torch.Tensor:
        """uint8 [3, H, W] tensors, one at a time to the device -> pixel values [n, 3, size, size]."""
        if not images:
            return torch.empty((0, 3, self.size, self.size), dtype=torch.float32, device=self.device)
        resized = torch.stack([self._resize(self._to_device(image)) for image in images])
        return resized.div_(255).sub_(self.mean).div_(self.std)
