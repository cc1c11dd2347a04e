"""The images a user names: files, folders, glob patterns, http(s) URLs, or PIL images in Python.

Everything is checked before a model is loaded: a missing file, an empty folder, a glob that matches
nothing, a URL that cannot be fetched or a file that is not an image is a one-line
:class:`~evalkit.core.errors.EvalkitError`. Inside a folder, files whose name does not end like an image
are skipped with a notice. Fetched URLs and PIL images are kept in memory; files are decoded again by
the runner when their batch comes (so a folder of thousands of images is never held in memory).
"""

from __future__ import annotations

import glob
import io
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from PIL import Image, UnidentifiedImageError

from evalkit.core.errors import EvalkitError
from evalkit.data.images import BadImageError, ImageSource, decode_rgb, to_rgb

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
URL_PREFIXES = ("http://", "https://")
DEFAULT_URL_TIMEOUT_S = 30.0
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
Notice = Callable[[str], None]


@dataclass
class MemoryImageSource(ImageSource):
    """An ImageSource that also holds decoded images by key (fetched URLs, PIL images from Python)."""

    in_memory: dict[str, Image.Image] = field(default_factory=dict)

    def open(self, key: str) -> Image.Image:
        """The image as RGB: from memory when held there, else from the file ``key``."""
        if key in self.in_memory:
            return self.in_memory[key]
        return super().open(key)

    def missing_files(self, keys: list[str]) -> list[str]:
        """File keys that do not exist (keys held in memory are never missing)."""
        return super().missing_files([k for k in keys if k not in self.in_memory])


@dataclass
class ImageInputs:
    """Resolved images: one key per image in the order given, and the source that opens them."""

    keys: list[str]
    source: MemoryImageSource


def resolve_images(items: Any, notice: Notice | None = None,
                   url_timeout_s: float = DEFAULT_URL_TIMEOUT_S) -> ImageInputs:
    """Expand files, folders (their image files, sorted by name), glob patterns, URLs and PIL images.

    ``items`` is one item or a list of them. ``notice`` receives one line per skipped file.
    """
    source = MemoryImageSource()
    keys: list[str] = []
    for item in _as_list(items):
        keys += _expand(item, source, notice or (lambda _: None), url_timeout_s)
    if not keys:
        raise EvalkitError("no images given")
    return ImageInputs(keys, source)


def resolve_each(items: Any, url_timeout_s: float = DEFAULT_URL_TIMEOUT_S) -> ImageInputs:
    """Exactly one image per item (files, URLs, PIL images; no folders or patterns), keys in item order.

    An item named twice is opened (or fetched) once.
    """
    source = MemoryImageSource()
    resolved: dict[str, str] = {}
    keys = []
    for item in _as_list(items):
        name = str(item) if isinstance(item, (str, Path)) else None
        if name is None or name not in resolved:
            key = resolve_image(item, source, url_timeout_s)
            if name is not None:
                resolved[name] = key
        keys.append(key if name is None else resolved[name])
    if not keys:
        raise EvalkitError("no images given")
    return ImageInputs(keys, source)


def resolve_image(item: Any, source: MemoryImageSource, url_timeout_s: float = DEFAULT_URL_TIMEOUT_S) -> str:
    """Exactly one image (a file, URL or PIL image; not a folder or pattern), registered in ``source``."""
    if isinstance(item, (str, Path)) and not str(item).startswith(URL_PREFIXES):
        path = Path(item)
        if path.is_dir():
            raise EvalkitError(f"{item} is a folder; one image is needed here")
    keys = _expand(item, source, lambda _: None, url_timeout_s, allow_patterns=False)
    return keys[0]


def _as_list(items: Any) -> list:
    if isinstance(items, (str, Path, Image.Image)):
        return [items]
    if isinstance(items, Iterable):
        return list(items)
    raise EvalkitError(f"images must be paths, URLs or PIL images, got {type(items).__name__}")


def _expand(item: Any, source: MemoryImageSource, notice: Notice, url_timeout_s: float,
            allow_patterns: bool = True) -> list[str]:
    if isinstance(item, Image.Image):
        key = f"<image {len(source.in_memory)}>"
        source.in_memory[key] = to_rgb(key, item)
        return [key]
    if not isinstance(item, (str, Path)):
        raise EvalkitError(f"images must be paths, URLs or PIL images, got {type(item).__name__}")
    text = str(item)
    if text.startswith(URL_PREFIXES):
        if text not in source.in_memory:
            source.in_memory[text] = fetch_image(text, url_timeout_s)
        return [text]
    path = Path(text).expanduser()
    if path.is_dir():
        return _folder_images(path, notice)
    if path.is_file():
        check_image_file(text)
        return [text]
    if allow_patterns and glob.has_magic(text):
        matches = sorted(glob.glob(str(path), recursive=True))
        if not matches:
            raise EvalkitError(f"no file matches {text}")
        files = [m for m in matches if Path(m).is_file()]
        for name in files:
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                notice(f"skipped {name}: not an image file")
        keys = [m for m in files if Path(m).suffix.lower() in IMAGE_SUFFIXES]
        if not keys:
            raise EvalkitError(f"no image file matches {text}")
        for key in keys:
            check_image_file(key)
        return keys
    raise BadImageError(text, "file not found")


def _folder_images(folder: Path, notice: Notice) -> list[str]:
    keys = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if entry.suffix.lower() not in IMAGE_SUFFIXES:
            notice(f"skipped {entry}: not an image file")
            continue
        check_image_file(str(entry))
        keys.append(str(entry))
    if not keys:
        raise EvalkitError(f"folder {folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return keys


def check_image_file(path: str) -> None:
    """Read the image header (cheap): a file that is not an image fails before any model loads."""
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - parsing the header is the check
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise BadImageError(path, f"cannot decode ({type(err).__name__})") from None


def fetch_image(url: str, timeout_s: float = DEFAULT_URL_TIMEOUT_S) -> Image.Image:
    """Download an http(s) image with a time limit on the whole transfer, and decode it."""
    from evalkit import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"evalkit/{__version__}"})
    deadline = time.monotonic() + timeout_s
    chunks, size = [], 0
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError
                chunk = response.read(1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise EvalkitError(f"cannot fetch {url}: larger than {MAX_DOWNLOAD_BYTES >> 20} MiB")
                chunks.append(chunk)
    except urllib.error.HTTPError as err:
        raise EvalkitError(f"cannot fetch {url}: HTTP {err.code} {err.reason}") from None
    except (TimeoutError, socket.timeout):
        raise EvalkitError(f"cannot fetch {url}: no answer within {timeout_s:g} s") from None
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise EvalkitError(f"cannot fetch {url}: no answer within {timeout_s:g} s") from None
        raise EvalkitError(f"cannot fetch {url}: {reason}") from None
    except (OSError, ValueError) as err:
        raise EvalkitError(f"cannot fetch {url}: {type(err).__name__}: {err}") from None
    return decode_rgb(url, io.BytesIO(b"".join(chunks)))
