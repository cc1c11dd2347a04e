"""Images -> pixel values the way LAVIS's BLIP-2 evaluations made them, at the protocol's size.

LAVIS's ``blip_image_eval`` processor (lavis/processors/blip_processors.py) is torchvision's
``Resize((s, s), BICUBIC)`` on the PIL image, ``ToTensor`` and ``Normalize(mean, std)``. transformers'
``BlipImageProcessor`` switches to a torchvision tensor backend with antialiasing when torchvision is
installed (transformers >= 5), which moves pixels; so the pipeline is restated here with PIL and torch
(torchvision's Resize on a PIL image calls PIL's resize; ToTensor divides the uint8 array by 255 in
float32; Normalize subtracts and divides in float32), giving the same pixels whatever is installed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

PIPELINE = "lavis-blip-image-eval: PIL bicubic resize to size x size, uint8 / 255 (float32), (x - mean) / std"


def processor_image_size(processor) -> int:
    """The square image size the checkpoint's image processor resizes to."""
    size = processor.image_processor.size
    if isinstance(size, dict):
        return int(size.get("height") or size.get("shortest_edge"))
    return int(getattr(size, "height", None) or size)


def lavis_pixel_values(images: Sequence[Image.Image], size: int, mean: Sequence[float],
                       std: Sequence[float]) -> torch.Tensor:
    """Pixel values [n, 3, size, size] exactly as LAVIS's ``blip_image_eval`` makes them (see module docstring)."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
    out = []
    for image in images:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        resized = rgb.resize((size, size), Image.BICUBIC)
        pixels = torch.from_numpy(np.array(resized, np.uint8, copy=True)).permute(2, 0, 1).contiguous()
        out.append(pixels.to(torch.float32).div(255).sub_(mean_t).div_(std_t))
    return torch.stack(out)


class ImagePreprocessor:
    """LAVIS's eval pipeline with the checkpoint's mean and std; a size other than the vision tower's
    interpolates the position embeddings."""

    def __init__(self, processor, vision_image_size: int, image_size: int | None = None):
        self.processor = processor
        self.image_size = image_size or processor_image_size(processor)
        self.interpolate = self.image_size != int(vision_image_size)
        self.mean = list(processor.image_processor.image_mean)
        self.std = list(processor.image_processor.image_std)

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Pixel values [n, 3, size, size]."""
        return lavis_pixel_values(images, self.image_size, self.mean, self.std)
