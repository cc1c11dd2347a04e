"""An image from the browser, checked as evalkit checks every image before a model sees it.

Too large a file, a file that is not an image and a decompression bomb are each a one-line
:class:`~evalkit.core.errors.EvalkitError` that the page shows; the server goes on serving.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from evalkit.core.errors import EvalkitError
from evalkit.data.images import decode_rgb

MAX_UPLOAD_MB = 20


def check_image(path: str | None, max_mb: float = MAX_UPLOAD_MB) -> str:
    """``path`` when it holds an image evalkit can decode (decompression bombs refused), else an error."""
    if not path:
        raise EvalkitError("give an image first: upload, paste, a URL, or an example")
    file = Path(path)
    try:
        size = file.stat().st_size
    except OSError:
        raise EvalkitError("the image is gone from the server; upload it again") from None
    if size > max_mb * 1024 * 1024:
        raise EvalkitError(f"{file.name} is {size / 2**20:.1f} MiB; images up to {max_mb:g} MiB are accepted")
    decode_rgb(file.name, str(file))  # BadImageError (an EvalkitError) names the file and the reason
    return str(file)


def fetched_copy(url: str, folder: Path, timeout_s: float = 30.0) -> str:
    """An http(s) image fetched (size-limited, as `evalkit caption URL`) and saved as a PNG the page can show."""
    from evalkit.api.image_inputs import URL_PREFIXES, fetch_image

    url = (url or "").strip()
    if not url.startswith(URL_PREFIXES):
        raise EvalkitError(f"not an http(s) URL: {url[:80]!r}")
    image = fetch_image(url, timeout_s)
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(suffix=".png", dir=folder)
    with open(handle, "wb") as out:
        image.save(out, format="PNG")
    return name


def served_copy(path: Path, folder: Path) -> str:
    """A copy of a file in a folder the web server may hand out (a run's sample image, an example)."""
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(suffix=path.suffix or ".png", dir=folder)
    with open(handle, "wb") as out, open(path, "rb") as source:
        shutil.copyfileobj(source, out)
    return name
