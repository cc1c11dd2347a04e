"""Images -> pixel values with a checkpoint's own image processor, at the protocol's size."""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image


def processor_image_size(processor) -> int:
    """The square image size the checkpoint's image processor resizes to."""
    size = processor.image_processor.size
    if isinstance(size, dict):
        return int(size.get("height") or size.get("shortest_edge"))
    return int(getattr(size, "height", None) or size)


class ImagePreprocessor:
    """Resizes and normalises like the checkpoint; a size other than the vision tower's interpolates positions."""

    def __init__(self, processor, vision_image_size: int, image_size: int | None = None):
        self.processor = processor
        self.image_size = image_size or processor_image_size(processor)
        self.interpolate = self.image_size != int(vision_image_size)

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Pixel values [n, 3, size, size]."""
        size = {"height": self.image_size, "width": self.image_size}
        return self.processor.image_processor(list(images), size=size, return_tensors="pt")["pixel_values"]
