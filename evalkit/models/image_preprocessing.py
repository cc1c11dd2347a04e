"""Images -> pixel values the way LAVIS's BLIP-2 evaluations made them, at the protocol's size.

LAVIS's ``blip_image_eval`` processor (lavis/processors/blip_processors.py) is torchvision's
``Resize((s, s), BICUBIC)`` on the PIL image, ``ToTensor`` and ``Normalize(mean, std)``. transformers'
``BlipImageProcessor`` switches to a torchvision tensor backend with antialiasing when torchvision is
installed (transformers >= 5), which moves pixels; so the pipeline is restated here with PIL and torch
(torchvision's Resize on a PIL image calls PIL's resize; ToTensor divides the uint8 array by 255 in
float32; Normalize subtracts and divides in float32), giving the same pixels whatever is installed.

The resize is two explicit PIL passes, width then height, as PIL up to 12 did in one ``resize`` call (the
Pillow LAVIS's numbers were computed with). Pillow 13 picks the pass order by the image's shape, and since
each pass rounds to uint8 the order moves edge pixels: on 159 COCO val2017 images, Pillow 13's one call
differs from Pillow 9.5-12.3's on 68 of 318 resizes (2.2% of values at 224 px, 5.9% at 364 px, up to 12
levels); the two passes equal the old one call bit for bit under Pillow 9.5, 12.3 and 13.0
(tests/test_pillow_reference_pixels.py holds old Pillow's digests).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

PIPELINE = ("lavis-blip-image-eval: PIL bicubic resize to size x size (width pass, then height pass, as "
            "Pillow <= 12), uint8 / 255 (float32), (x - mean) / std")
# in every journal header: runs journaled before the resize had its fixed pass order (under Pillow 13 their
# pixels could differ) get other run ids, so they are never resumed or reused as this pipeline's answers
HEADER_NAME = "lavis/pil-width-then-height"


def processor_image_size(processor) -> int:
    """The square image size the checkpoint's image processor resizes to."""
    size = processor.image_processor.size
    if isinstance(size, dict):
        return int(size.get("height") or size.get("shortest_edge"))
    return int(getattr(size, "height", None) or size)


def lavis_resize(image: Image.Image, size: int) -> Image.Image:
    """PIL's bicubic resize to ``size x size`` as Pillow <= 12 made it: the width pass, then the height pass."""
    width, height = image.size
    if width != size:
        image = image.resize((size, height), Image.BICUBIC)
    if height != size:
        image = image.resize((size, size), Image.BICUBIC)
    return image


def lavis_pixel_values(images: Sequence[Image.Image], size: int, mean: Sequence[float],
                       std: Sequence[float]) -> torch.Tensor:
    """Pixel values [n, 3, size, size] exactly as LAVIS's ``blip_image_eval`` makes them (see module docstring)."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
    out = []
    for image in images:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        resized = lavis_resize(rgb, size)
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


IMAGE_PIPELINES = ("lavis", "device")  # --image-pipeline: the paper's (default), or resize + normalise on the device


def to_device(tensors: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The tensors stacked and sent to ``device``; to a GPU through pinned memory, without blocking the host."""
    if device.type != "cuda":
        return torch.stack(list(tensors)).to(device)
    first = tensors[0]
    pinned = torch.empty((len(tensors), *first.shape), dtype=first.dtype, pin_memory=True)
    torch.stack(list(tensors), out=pinned)
    return pinned.to(device, non_blocking=True)


class ImagePipeline:
    """How a runner turns images into the vision tower's input: ``worker`` runs per image in the prefetch
    threads, ``batch`` turns a batch of their outputs into pixel values on the model's device."""

    def __init__(self, name: str, description: str, worker: Callable[[Image.Image], torch.Tensor],
                 batch: Callable[[Sequence[torch.Tensor]], torch.Tensor]):
        self.name, self.description, self.worker, self.batch = name, description, worker, batch


def image_pipeline(name: str, preprocessor: ImagePreprocessor, device: torch.device) -> ImagePipeline:
    """``lavis``: LAVIS's pixels made per image on the CPU (the paper's); ``device``: the CPU only decodes, and
    resize + normalise run on the model's device (pixels within a level or two of LAVIS's, so not the paper's)."""
    if name == "lavis":
        return ImagePipeline("lavis", PIPELINE, lambda image: preprocessor([image])[0],
                             lambda tensors: to_device(tensors, device))
    if name == "device":
        from evalkit.models import device_image_pipeline as on_device

        resize = on_device.DevicePixelValues(preprocessor.image_size, preprocessor.mean, preprocessor.std, device)
        return ImagePipeline("device", on_device.PIPELINE, on_device.decode_uint8, resize)
    from evalkit.core.errors import EvalkitError

    raise EvalkitError(f"unknown image pipeline {name!r}; use one of {', '.join(IMAGE_PIPELINES)}")
