"""Where a dataset's images come from: files on disk or a Hugging Face dataset column."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from evalkit.core.errors import EvalkitError

HF_ROW_PREFIX = "hf-row:"


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
        if not path.is_file():
            raise BadImageError(key, "file not found")
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            raise BadImageError(key, f"cannot decode ({type(err).__name__})") from None

    def _open_hf(self, row: int) -> Image.Image:
        try:
            value = self.hf_dataset[row][self.hf_image_column]
        except Exception as err:  # noqa: BLE001 - any datasets failure is a bad image row
            raise BadImageError(f"{HF_ROW_PREFIX}{row}", f"cannot read ({type(err).__name__})") from None
        if isinstance(value, Image.Image):
            return value.convert("RGB")
        if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
            import io

            try:
                source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
                with Image.open(source) as image:
                    return image.convert("RGB")
            except (UnidentifiedImageError, OSError, ValueError) as err:
                raise BadImageError(f"{HF_ROW_PREFIX}{row}", f"cannot decode ({type(err).__name__})") from None
        raise BadImageError(f"{HF_ROW_PREFIX}{row}", f"column {self.hf_image_column!r} holds no image")

    def missing_files(self, keys: list[str]) -> list[str]:
        """The file keys that do not exist (cheap check before a long run)."""
        return [k for k in keys if not k.startswith(HF_ROW_PREFIX) and not Path(k).is_file()]
