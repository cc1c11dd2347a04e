"""Where a dataset's images come from (files on disk or a Hugging Face dataset column), and how the bytes
read for one are identified (:func:`image_record`, the lines of a run's ``images.jsonl``)."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from evalkit.core.errors import EvalkitError

HF_ROW_PREFIX = "hf-row:"
HUB_ROW_PREFIX = "hub-row:"  # evalkit.data.hub_datasets's parquet rows

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# What PIL raises for a file it cannot open or decode, and for a decompression bomb: an image over
# 2 x Image.MAX_IMAGE_PIXELS (DecompressionBombError), or over MAX_IMAGE_PIXELS where warnings are errors.
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, MemoryError,
                 Image.DecompressionBombError, Image.DecompressionBombWarning)


class BadImageError(EvalkitError):
    """An image that is missing or cannot be decoded."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"image {key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass
class ImageSource:
    """Opens images by key: a file path, or ``hf-row:N`` for row N of a Hugging Face dataset."""

    hf_dataset: Any = None
    hf_image_column: str = "image"

    def open(self, key: str) -> Image.Image:
        """The image as RGB; BadImageError names the key when it is missing or undecodable."""
        if key.startswith(HF_ROW_PREFIX):
            return self._open_hf(int(key[len(HF_ROW_PREFIX):]))
        path = Path(key)
        try:
            stat = path.stat()
            data = path.read_bytes()
        except OSError:
            raise BadImageError(key, "file not found") from None
        # the bytes decoded are the bytes identified: image_record reuses this digest while the file is unchanged,
        # so the run's image ledger costs no second read (and the hashing runs in the prefetch workers)
        _READ_RECORDS[key] = {"image": key, "sha256": hashlib.sha256(data).hexdigest(), "size": stat.st_size,
                              "mtime_ns": stat.st_mtime_ns}
        return decode_rgb(key, io.BytesIO(data))

    def _open_hf(self, row: int) -> Image.Image:
        try:
            value = self.hf_dataset[row][self.hf_image_column]
        except Exception as err:  # noqa: BLE001 - any datasets failure is a bad image row
            raise BadImageError(f"{HF_ROW_PREFIX}{row}", f"cannot read ({type(err).__name__})") from None
        if isinstance(value, Image.Image):
            return to_rgb(f"{HF_ROW_PREFIX}{row}", value)
        if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
            source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
            return decode_rgb(f"{HF_ROW_PREFIX}{row}", source)
        raise BadImageError(f"{HF_ROW_PREFIX}{row}", f"column {self.hf_image_column!r} holds no image")

    def missing_files(self, keys: list[str]) -> list[str]:
        """The file keys that do not exist (cheap check before a long run)."""
        return [k for k in keys if not k.startswith(HF_ROW_PREFIX) and not Path(k).is_file()]


_READ_RECORDS: dict[str, dict[str, Any]] = {}  # file key -> the record of the bytes ImageSource.open last decoded

# prefix -> (key -> record, key -> (file size, mtime)) for images inside data files; registered by the loader
# that makes such keys (evalkit.data.hub_datasets for hub-row:), so this module imports no loader
_ROW_IDENTITY: dict[str, tuple[Callable[[str], dict | None], Callable[[str], tuple | None]]] = {}


def register_row_identity(prefix: str, record: Callable[[str], dict | None],
                          file_stat: Callable[[str], tuple | None]) -> None:
    """How ``image_record`` and ``record_unchanged`` identify the images whose keys start with ``prefix``."""
    _ROW_IDENTITY[prefix] = (record, file_stat)


def image_record(key: str) -> dict[str, Any] | None:
    """What identifies an image's bytes now: a file's sha256 (with the size and mtime that let a later check skip
    re-hashing it), or a hub row's bytes' sha256 (with its parquet file's size and mtime); None for ``hf-row:``
    keys (identified by the dataset fingerprint) and for an unreadable image."""
    if key.startswith(HF_ROW_PREFIX):
        return None
    if key.startswith(HUB_ROW_PREFIX):
        record, _ = _ROW_IDENTITY.get(HUB_ROW_PREFIX, (lambda _: None, None))
        return record(key)
    from evalkit.core.sample_set import file_sha256

    try:
        stat = os.stat(key)
        read = _READ_RECORDS.get(key)
        if read is not None and (read["size"], read["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
            return dict(read)
        return {"image": key, "sha256": file_sha256(key), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    except OSError:
        return None


def record_unchanged(key: str, record: dict[str, Any]) -> bool:
    """The cheap check: ``key`` is the recorded image and its file's size and mtime are as recorded."""
    if key != record.get("image") or key.startswith(HF_ROW_PREFIX):
        return False
    if key.startswith(HUB_ROW_PREFIX):
        _, file_stat = _ROW_IDENTITY.get(HUB_ROW_PREFIX, (None, lambda _: None))
        return file_stat(key) == (record.get("file_size"), record.get("file_mtime_ns"))
    try:
        stat = os.stat(key)
    except OSError:
        return False
    return stat.st_size == record.get("size") and stat.st_mtime_ns == record.get("mtime_ns")


def decode_rgb(key: str, source) -> Image.Image:
    """Open ``source`` (a path or a binary file object) and convert it with :func:`to_rgb`; any decoding failure,
    a decompression bomb included, is a BadImageError naming ``key``."""
    try:
        with Image.open(source) as image:
            return to_rgb(key, image)
    except BadImageError:
        raise
    except DECODE_ERRORS as err:
        raise BadImageError(key, _decode_reason(err)) from None


def to_rgb(key: str, image: Image.Image) -> Image.Image:
    """The image as 8-bit RGB, the rule for every mode (``key`` names the image in a BadImageError):

    - RGB, L, 1, CMYK, YCbCr: PIL's ``convert("RGB")``, as LAVIS (CMYK without an ICC profile, by PIL's formula).
    - RGBA, LA, PA, P with transparency: the alpha channel is dropped, not composited, as LAVIS's
      ``convert("RGB")`` does (fully transparent pixels keep their stored colour).
    - 16-bit greyscale (I;16, I;16B, I;16L, I;16N) and I (how PIL opens 16-bit greyscale in some formats):
      the high byte, ``value >> 8``, so 65535 -> 255 (PIL's own conversion clips at 255 and turns the image
      white). An ``I`` image with values outside 0..65535 is refused.
    - F (32-bit float) has no defined 8-bit scale and is refused, as is any mode PIL cannot convert.
    """
    try:
        image.load()  # decoding happens here: a truncated or corrupt file fails as "cannot decode"
    except DECODE_ERRORS as err:
        raise BadImageError(key, _decode_reason(err)) from None
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise BadImageError(key, f"mode {mode} holds values outside 0..65535 "
                                     f"({values.min()}..{values.max()}); convert it to 8-bit first")
        return Image.fromarray((values >> 8).astype(np.uint8)).convert("RGB")  # uint8 2-D: mode L
    if mode == "F":
        raise BadImageError(key, "mode F (32-bit float) has no defined 8-bit scale; convert it to 8-bit first")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # the same colours as convert("RGB"), without PIL's transparency warning
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as err:
        raise BadImageError(key, f"cannot convert mode {mode} to RGB ({type(err).__name__})") from None


def _decode_reason(err: Exception) -> str:
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"decompression bomb refused ({str(err).split('.')[0].strip()})"
    return f"cannot decode ({type(err).__name__})"
