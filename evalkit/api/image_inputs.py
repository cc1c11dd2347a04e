"""The images a user names: files, folders, glob patterns, http(s) URLs, or PIL images in Python.

Everything is checked before a model is loaded: a missing file, an empty folder, a glob that matches
nothing, a URL that cannot be fetched or a file that is not an image is a one-line
:class:`~evalkit.core.errors.EvalkitError` (with ``skip_bad_images``, an image that does not decode is recorded
as a failed answer instead). Inside a folder, files whose name does not end like an image
are skipped with a notice. Fetched URLs and PIL images are kept in memory; files are decoded again by
the runner when their batch comes (so a folder of thousands of images is never held in memory).
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import io
import socket
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
    skip_bad: bool = False  # --skip-bad-images: an undecodable image is kept in ``bad``, not an error here
    bad: dict[str, BadImageError] = field(default_factory=dict)  # kept with --skip-bad-images: fail when opened

    def open(self, key: str) -> Image.Image:
        """The image as RGB: from memory when held there, else from the file ``key``."""
        if key in self.bad:
            raise self.bad[key]
        if key in self.in_memory:
            return self.in_memory[key]
        return super().open(key)

    def missing_files(self, keys: list[str]) -> list[str]:
        """File keys that do not exist (keys held in memory are never missing)."""
        return super().missing_files([k for k in keys if k not in self.in_memory and k not in self.bad])


@dataclass
class ImageInputs:
    """Resolved images: one key per image in the order given, and the source that opens them."""

    keys: list[str]
    source: MemoryImageSource


def resolve_images(items: Any, notice: Notice | None = None,
                   url_timeout_s: float = DEFAULT_URL_TIMEOUT_S, skip_bad_images: bool = False) -> ImageInputs:
    """Expand files, folders (their image files, sorted by name), glob patterns, URLs and PIL images.

    ``items`` is one item or a list of them. ``notice`` receives one line per skipped file. With
    ``skip_bad_images`` an image that does not decode is kept and fails when the runner opens it (recorded as a
    failed answer) instead of stopping here.
    """
    source = MemoryImageSource(skip_bad=skip_bad_images)
    keys: list[str] = []
    for item in _as_list(items):
        keys += _expand(item, source, notice or (lambda _: None), url_timeout_s)
    if not keys:
        raise EvalkitError("no images given")
    return ImageInputs(keys, source)


def resolve_each(items: Any, url_timeout_s: float = DEFAULT_URL_TIMEOUT_S,
                 skip_bad_images: bool = False) -> ImageInputs:
    """Exactly one image per item (files, URLs, PIL images; no folders or patterns), keys in item order.

    An item named twice is opened (or fetched) once; ``skip_bad_images`` as in :func:`resolve_images`.
    """
    source = MemoryImageSource(skip_bad=skip_bad_images)
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
        key = f"<image {len(source.in_memory) + len(source.bad)}>"
        _admit(source, key, lambda: source.in_memory.__setitem__(key, to_rgb(key, item)))
        return [key]
    if not isinstance(item, (str, Path)):
        raise EvalkitError(f"images must be paths, URLs or PIL images, got {type(item).__name__}")
    text = str(item)
    if text.startswith(URL_PREFIXES):
        if text not in source.in_memory and text not in source.bad:
            _admit(source, text, lambda: source.in_memory.__setitem__(text, fetch_image(text, url_timeout_s)))
        return [text]
    path = Path(text).expanduser()
    if path.is_dir():
        return _folder_images(path, notice, source)
    if path.is_file():
        _admit(source, text, lambda: check_image_file(text))
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
            _admit(source, key, lambda: check_image_file(key))  # noqa: B023 - called at once
        return keys
    raise BadImageError(text, "file not found")


def _folder_images(folder: Path, notice: Notice, source: MemoryImageSource) -> list[str]:
    keys = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if entry.suffix.lower() not in IMAGE_SUFFIXES:
            notice(f"skipped {entry}: not an image file")
            continue
        _admit(source, str(entry), lambda: check_image_file(str(entry)))  # noqa: B023 - called at once
        keys.append(str(entry))
    if not keys:
        raise EvalkitError(f"folder {folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return keys


def _admit(source: MemoryImageSource, key: str, check: Callable[[], None]) -> None:
    """Run ``check`` on an image; a BadImageError stops here, or with ``source.skip_bad`` is kept for the runner to
    record as a failed answer (a network failure of a URL is never skipped: it is not a bad image)."""
    try:
        check()
    except BadImageError as err:
        if not source.skip_bad:
            raise
        source.bad[key] = err


def check_image_file(path: str) -> None:
    """Read the image header (cheap): a file that is not an image fails before any model loads."""
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - parsing the header is the check
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise BadImageError(path, f"cannot decode ({type(err).__name__})") from None


def fetch_image(url: str, timeout_s: float = DEFAULT_URL_TIMEOUT_S) -> Image.Image:
    """Download an http(s) image and decode it. ``timeout_s`` bounds the whole fetch (name lookup, connect,
    headers, body), not each read: a server that drips a byte a second is cut off at the deadline. A body over
    MAX_DOWNLOAD_BYTES (by its Content-Length, or as it arrives) is refused."""
    import threading

    fetched: dict[str, Any] = {}
    worker = threading.Thread(target=_download, args=(url, timeout_s, fetched), daemon=True)
    worker.start()
    # urllib's timeout is per socket operation (it restarts with every byte), so the deadline is kept here: the
    # download runs in a daemon thread, and past the deadline its connection is closed and it is left behind
    worker.join(timeout_s)
    if worker.is_alive():
        fetched["cancelled"] = True
        response = fetched.get("response")
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()
        raise EvalkitError(f"cannot fetch {url}: {_no_answer(timeout_s)}")
    if "error" in fetched:
        raise fetched["error"]
    return decode_rgb(url, io.BytesIO(fetched["body"]))


def _download(url: str, timeout_s: float, fetched: dict[str, Any]) -> None:
    """The body of ``url`` into ``fetched["body"]``, or a one-line EvalkitError into ``fetched["error"]``."""
    from evalkit import __version__

    limit = MAX_DOWNLOAD_BYTES
    too_large = f"cannot fetch {url}: larger than {limit:,} bytes, the most evalkit downloads for one image"
    request = urllib.request.Request(url, headers={"User-Agent": f"evalkit/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            fetched["response"] = response
            stated = response.headers.get("Content-Length")
            if stated is not None and stated.strip().isdigit() and int(stated) > limit:
                raise EvalkitError(f"{too_large} (Content-Length {int(stated):,})")
            chunks, size = [], 0
            while not fetched.get("cancelled"):
                chunk = response.read1(1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise EvalkitError(too_large)
                chunks.append(chunk)
            fetched["body"] = b"".join(chunks)
    except EvalkitError as err:
        fetched["error"] = err
    except urllib.error.HTTPError as err:
        fetched["error"] = EvalkitError(f"cannot fetch {url}: HTTP {err.code} {err.reason}")
    except (TimeoutError, socket.timeout):
        fetched["error"] = EvalkitError(f"cannot fetch {url}: {_no_answer(timeout_s)}")
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            fetched["error"] = EvalkitError(f"cannot fetch {url}: {_no_answer(timeout_s)}")
        else:
            fetched["error"] = EvalkitError(f"cannot fetch {url}: {reason}")
    except (OSError, ValueError, http.client.HTTPException) as err:
        fetched["error"] = EvalkitError(f"cannot fetch {url}: {type(err).__name__}: {err}")


def _no_answer(timeout_s: float) -> str:
    return f"no answer within {timeout_s:g} s (the whole download, headers and body, is held to the URL timeout)"
