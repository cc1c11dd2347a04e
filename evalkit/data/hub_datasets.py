"""Datasets pinned to a Hugging Face hub revision: resolve the snapshot, read its parquet files lazily.

A task's ``default_data`` (and ``--data``) may name a pinned hub source::

    hf:ORG/NAME@REVISION?SPLIT=GLOB&SPLIT.ROLE=GLOB&column.ROLE=NAME

e.g. ``hf:lmms-lab-encoder/VQAv2@65fe1e1...?val=data/validation-*.parquet``. The files of the requested split
are fetched with ``huggingface_hub.snapshot_download(repo_type="dataset", revision=..., allow_patterns=...)``,
which is the same call online and offline (``HF_HUB_OFFLINE=1`` resolves the snapshot from the local hub
cache). ``datasets.load_dataset("ORG/NAME")`` is not used: it does not read the hub cache offline, and its
Arrow copy would double the disk for image datasets. The parquet files are read with pyarrow: text columns
in record batches (never the whole split in memory), images one row group at a time when a sample asks for
one (:class:`HubImageSource`).

An image is keyed ``hub-row:TAG:ROW``: TAG names its parquet file (the start of the blob's etag), so a key means
the same row in every run. The sha256 of each row's image bytes is kept as they are read, and :func:`row_record`
gives the run's image ledger (``images.jsonl``) a line per row, as for image files.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from PIL import Image

from evalkit.core.errors import EvalkitError
from evalkit.core.progress import progress_bar
from evalkit.core.sample_set import file_sha256
from evalkit.data.hub_snapshot import check_complete, matching_files, unverified_blobs, verify_blobs
from evalkit.data.images import HUB_ROW_PREFIX, BadImageError, decode_rgb, register_row_identity

ETAG_TIMEOUT_S = 10  # the reachability probe and metadata requests give up after this
# File downloads time out after huggingface_hub's HF_HUB_DOWNLOAD_TIMEOUT (10 s without data by default).
_SHOW_PROGRESS = threading.local()
_SOURCES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # file tag -> a HubImageSource reading it


@contextmanager
def progress_enabled(enabled: bool) -> Iterator[None]:
    """Show (or silence, for --quiet) the download and preparation progress bars inside the block."""
    previous = getattr(_SHOW_PROGRESS, "value", True)
    _SHOW_PROGRESS.value = enabled
    try:
        yield
    finally:
        _SHOW_PROGRESS.value = previous


def _show_progress() -> bool:
    return getattr(_SHOW_PROGRESS, "value", True)


@dataclass(frozen=True)
class HubSource:
    """A hub dataset at a pinned revision, with the repository files (globs) of each split.

    ``files`` keys are evalkit split names (``val``), or ``split.role`` for a second file set a loader joins
    (GQA's ``testdev.images``). ``revision`` should be a commit sha; a branch name is resolved and the sha
    the branch pointed at is recorded.
    """

    repo_id: str
    revision: str
    files: tuple[tuple[str, str], ...]
    columns: tuple[tuple[str, str], ...] = ()  # this dataset's column names where they differ from the task's

    def column_map(self, requested: Mapping[str, str], present: Sequence[str]) -> dict[str, str]:
        """Column per role: the requested (task / --column) name when the files have it, else this source's."""
        mapped = dict(requested)
        for role, column in self.columns:
            if mapped.get(role) not in present:
                mapped[role] = column
        return mapped

    def patterns(self, split: str, role: str = "") -> list[str]:
        """The globs for a split (and role); an error naming the splits the source has."""
        key = f"{split}.{role}" if role else split
        found = [glob for name, glob in self.files if name == key]
        if not found:
            known = sorted({name.split(".")[0] for name, _ in self.files})
            raise EvalkitError(f"hub dataset {self.repo_id}@{self.revision} has no files for split {split!r}"
                               f"{' (' + role + ')' if role else ''} (splits: {', '.join(known) or 'none'})")
        return found

    def to_arg(self) -> str:
        """The ``hf:ID@REV?split=glob`` string (TaskSpec.default_data, --data)."""
        query = "&".join([f"{name}={glob}" for name, glob in self.files] +
                         [f"column.{role}={column}" for role, column in self.columns])
        return f"hf:{self.repo_id}@{self.revision}" + (f"?{query}" if query else "")


def parse_hub_source(spec: str) -> HubSource:
    """``ORG/NAME@REV?split=glob&...`` (without the ``hf:`` prefix) -> HubSource."""
    head, _, query = spec.partition("?")
    repo_id, _, revision = head.partition("@")
    repo_id, revision = repo_id.strip(), revision.strip()
    if repo_id.count("/") != 1 or not revision:
        raise EvalkitError(f"hub source {spec!r}: expected ORG/NAME@REVISION[?split=glob&...]")
    files, columns = [], []
    for part in filter(None, query.split("&")):
        name, sep, glob = part.partition("=")
        if not sep or not name or not glob:
            raise EvalkitError(f"hub source {spec!r}: {part!r} is not split=glob or column.ROLE=NAME")
        if name.startswith("column."):
            columns.append((name[len("column."):].strip(), glob.strip()))
        else:
            files.append((name.strip(), glob.strip()))
    return HubSource(repo_id, revision, tuple(files), tuple(columns))


def not_cached_message(repo_id: str, revision: str, reason: str = "") -> str:
    """The one line printed when a pinned dataset is neither in the hub cache nor downloadable."""
    why = f" ({reason})" if reason else ""
    return (f"dataset {repo_id} at revision {revision} is not in the Hugging Face cache and could not be "
            f"downloaded{why}: the run needs --data PATH, or download it once with "
            f"`hf download --repo-type dataset {repo_id} --revision {revision}` (`huggingface-cli download` before "
            "huggingface_hub 1.0) and run with HF_HUB_OFFLINE=1")


@dataclass(frozen=True)
class HubFiles:
    """The resolved files of one split: where they are, the commit sha, and each file's etag / sha256."""

    repo_id: str
    revision: str
    resolved_revision: str
    paths: tuple[Path, ...]
    relative: tuple[str, ...]
    etags: tuple[str, ...]

    def identity(self) -> dict:
        """What run.json's "data" records about the files."""
        return {"dataset_id": self.repo_id, "revision": self.revision, "resolved_revision": self.resolved_revision,
                "files": {rel: etag for rel, etag in zip(self.relative, self.etags)}}


def resolve_files(source: HubSource, split: str, role: str = "") -> HubFiles:
    """Download (or find in the cache) the split's files at the pinned revision; one-line error otherwise, and when
    the cached snapshot lacks a file of the split or holds a stray one (evalkit.data.hub_snapshot)."""
    patterns = source.patterns(split, role)
    import huggingface_hub
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not _show_progress():
        disable_progress_bars()
    local_only = hub_offline() or not _hub_reachable()  # no retry-with-backoff against an unreachable hub
    try:
        snapshot = huggingface_hub.snapshot_download(source.repo_id, repo_type="dataset", revision=source.revision,
                                                     allow_patterns=patterns, etag_timeout=ETAG_TIMEOUT_S,
                                                     cache_dir=hub_cache_dir(), local_files_only=local_only)
    except Exception as err:  # noqa: BLE001 - offline, unreachable, unknown repo/revision: all one line
        if type(err).__name__ != "IncompleteSnapshotError" or not getattr(err, "snapshot_path", None):
            raise EvalkitError(not_cached_message(source.repo_id, source.revision, _reason(err))) from None
        snapshot = err.snapshot_path  # the listing names what is missing: check_complete says which, below
    finally:
        if not was_disabled and not _show_progress():
            enable_progress_bars()
    root = Path(snapshot)
    what = f"dataset {source.repo_id}@{source.revision}"
    relative = matching_files(root, patterns)
    if not relative:
        raise EvalkitError(f"{what} has no files matching {', '.join(patterns)} (split {split!r}); "
                           f"the snapshot is {root}")
    check_complete(what, root, relative, patterns, download_hint(source))
    paths = tuple(root / rel for rel in relative)
    return HubFiles(source.repo_id, source.revision, root.name, paths, tuple(relative),
                    tuple(_etag(p) for p in paths))


def download_hint(source: HubSource) -> str:
    """How to complete a partial snapshot."""
    return (f"download it again with `hf download --repo-type dataset {source.repo_id} --revision "
            f"{source.revision}`")


def open_split(source: HubSource, split: str, role: str = "") -> tuple[HubFiles, "ParquetTable"]:
    """The split's files, checked (complete, readable parquet, blobs matching their etags), and their rows; an
    error naming dataset and split when it has none."""
    files = resolve_files(source, split, role)
    table = ParquetTable(files.paths)
    pending = unverified_blobs(files.paths)
    if pending:  # hashed once; the stamp spares later runs the read (evalkit.data.hub_snapshot)
        with progress_bar(f"verifying {source.repo_id} {split}{' ' + role if role else ''} (bytes)",
                          sum(os.path.getsize(p) for p in pending), enabled=_show_progress()) as advance:
            verify_blobs(pending, advance)
    if table.num_rows == 0:
        raise EvalkitError(f"dataset {source.repo_id}@{source.revision} split {split!r}"
                           f"{' (' + role + ')' if role else ''} has no rows (hub split "
                           f"{hub_split_name(files.relative)!r}, files {', '.join(files.relative)})")
    return files, table


def _hub_reachable() -> bool:
    """One request with a short timeout: does the hub endpoint answer at all (any HTTP status)?"""
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=ETAG_TIMEOUT_S)
        return True
    except Exception:  # noqa: BLE001 - DNS, refused, timeout, proxy: all mean "use the cache only"
        return False


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", os.environ.get("TRANSFORMERS_OFFLINE", "")).strip().upper() in \
        ("1", "ON", "YES", "TRUE")


def hub_cache_dir() -> str:
    """The hub cache as HF_HUB_CACHE / HF_HOME say now (huggingface_hub reads them once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _reason(err: Exception) -> str:
    if hub_offline():
        return "HF_HUB_OFFLINE is set"
    if type(err).__name__ in ("LocalEntryNotFoundError", "IncompleteSnapshotError"):
        return "the hub cannot be reached"
    text = str(err).strip().splitlines()[0][:120] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _etag(path: Path) -> str:
    """The hub cache names a blob by its etag (the sha256 of an LFS file); a plain file is hashed."""
    real = Path(os.path.realpath(path))
    if path.is_symlink() and real.parent.name == "blobs":
        return real.name
    return file_sha256(real)


class ParquetTable:
    """Rows of a split stored in one or more parquet files, read lazily."""

    def __init__(self, paths: Sequence[Path]):
        import pyarrow.parquet as pq

        self.paths = list(paths)
        self.files = [_open_parquet(p) for p in self.paths]
        self.column_names = list(self.files[0].schema_arrow.names) if self.files else []
        self.num_rows = sum(f.metadata.num_rows for f in self.files)

    def check_columns(self, wanted: Sequence[str], what: str) -> None:
        """A one-line error listing the columns when one is missing."""
        missing = [c for c in wanted if c not in self.column_names]
        if missing:
            raise EvalkitError(f"{what} has no column {missing[0]!r} (columns: {', '.join(self.column_names)}); "
                               "set the column mapping with --column NAME=COLUMN")

    def iter_rows(self, columns: Sequence[str], description: str) -> Iterator[tuple[str, dict]]:
        """``(row key, {column: value})`` for each row, text columns only, with a progress bar."""
        with progress_bar(description, self.num_rows, enabled=_show_progress()) as advance:
            for path, parquet in zip(self.paths, self.files):
                row, tag = 0, file_tag(path)
                for batch in parquet.iter_batches(columns=list(columns), batch_size=8192):
                    for record in batch.to_pylist():
                        yield f"{HUB_ROW_PREFIX}{tag}:{row}", record
                        row += 1
                    advance(batch.num_rows)


def _open_parquet(path: Path):
    """A pyarrow ParquetFile; a one-line error naming the file when it is truncated, empty or not parquet."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as err:  # noqa: BLE001 - ArrowInvalid, OSError: the file is not readable parquet
        text = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        real = os.path.realpath(path)
        where = f" (blob {real})" if real != str(path) else ""
        raise EvalkitError(f"{path}{where}: not a readable parquet file ({type(err).__name__}: {text}); delete it "
                           "and download it again") from None


def file_tag(path: Path) -> str:
    """The TAG of a file's ``hub-row:TAG:ROW`` keys: the start of its hub-cache blob name (its etag), else of the
    sha256 of its real path."""
    real = Path(os.path.realpath(path))
    name = real.name if Path(path).is_symlink() and real.parent.name == "blobs" else \
        hashlib.sha256(str(real).encode()).hexdigest()
    return name[:16]


def row_record(key: str) -> dict | None:
    """The image ledger line of a hub row: the sha256 and size of its image bytes, and its parquet file's size
    and mtime (an unchanged file is not read again); None when no loaded dataset has the row or it cannot be read."""
    source = _SOURCES.get(_split_key(key)[0])
    return source.record(key) if source is not None else None


def row_file_stat(key: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of the parquet file holding a hub row, None when unknown or missing."""
    source = _SOURCES.get(_split_key(key)[0])
    return source.file_stat(key) if source is not None else None


register_row_identity(HUB_ROW_PREFIX, row_record, row_file_stat)


def _split_key(key: str) -> tuple[str, int]:
    tag, _, row = key[len(HUB_ROW_PREFIX):].rpartition(":")
    return tag, int(row)


def _image_bytes(value) -> bytes | None:
    if isinstance(value, dict) and value.get("bytes"):
        return value["bytes"]
    if isinstance(value, dict) and value.get("path"):
        with open(value["path"], "rb") as handle:
            return handle.read()
    return bytes(value) if isinstance(value, (bytes, bytearray)) else None


class HubImageSource:
    """Opens ``hub-row:TAG:ROW`` keys by reading the image column of that row's row group.

    Loaders give every question of an image the key of the image's first row, so an image is decoded once
    however many rows repeat its bytes (VQAv2). One row group's image bytes and a few decoded images are kept;
    the split is never held in memory.
    """

    def __init__(self, paths: Sequence[Path], image_column: str, decoded_capacity: int = 16):
        self.paths = list(paths)
        self.image_column = image_column
        self._index = {file_tag(p): i for i, p in enumerate(self.paths)}
        self._digests: dict[str, tuple[str, int]] = {}  # key -> (sha256, size) of the image bytes read
        self._files: dict[int, object] = {}
        self._group: tuple[int, int, list] | None = None  # (file, row group, image values)
        self._decoded: OrderedDict[str, Image.Image] = OrderedDict()
        self._capacity = decoded_capacity
        self._lock = threading.Lock()
        for tag in self._index:
            _SOURCES[tag] = self

    def open(self, key: str) -> Image.Image:
        """The image as RGB; BadImageError names the key when it cannot be read or decoded."""
        if not key.startswith(HUB_ROW_PREFIX):
            from evalkit.data.images import ImageSource

            return ImageSource().open(key)
        with self._lock:  # the row-group read and the caches are shared; decoding runs outside the lock
            if key in self._decoded:
                self._decoded.move_to_end(key)
                return self._decoded[key]
            value = self._value(key)
        image = _decode(key, value)
        with self._lock:
            self._decoded[key] = image
            while len(self._decoded) > self._capacity:
                self._decoded.popitem(last=False)
        return image

    def missing_files(self, keys: list[str]) -> list[str]:
        """Hub rows are checked when opened; plain file keys here."""
        return [k for k in keys if not k.startswith(HUB_ROW_PREFIX) and not Path(k).is_file()]

    def record(self, key: str) -> dict | None:
        """The ledger line of a row (see :func:`row_record`): the digest of the bytes this source read for it."""
        stat = self.file_stat(key)
        if stat is None:
            return None
        with self._lock:
            if key not in self._digests:
                try:
                    self._value(key)
                except BadImageError:
                    return None
            digest = self._digests.get(key)
        if digest is None:
            return None
        return {"image": key, "sha256": digest[0], "size": digest[1], "file_size": stat[0], "file_mtime_ns": stat[1]}

    def file_stat(self, key: str) -> tuple[int, int] | None:
        """(size, mtime_ns) of the parquet file holding ``key``, None when it is not this source's or is missing."""
        index = self._index.get(_split_key(key)[0])
        try:
            stat = os.stat(self.paths[index]) if index is not None else None
        except OSError:
            return None
        return (stat.st_size, stat.st_mtime_ns) if stat else None

    def _value(self, key: str):
        try:
            tag, row = _split_key(key)
            file_index = self._index[tag]
            parquet = self._file(file_index)
            group, offset = _row_group_of(parquet, row)
            if self._group is None or self._group[:2] != (file_index, group):
                table = parquet.read_row_group(group, columns=[self.image_column])
                self._group = (file_index, group, table.column(0).to_pylist())
            value = self._group[2][offset]
            if key not in self._digests:
                data = _image_bytes(value)
                if data is not None:
                    self._digests[key] = (hashlib.sha256(data).hexdigest(), len(data))
            return value
        except BadImageError:
            raise
        except Exception as err:  # noqa: BLE001 - any parquet failure is a bad image row
            raise BadImageError(key, f"cannot read ({type(err).__name__})") from None

    def _file(self, index: int):
        if index not in self._files:
            import pyarrow.parquet as pq

            self._files[index] = pq.ParquetFile(self.paths[index])
        return self._files[index]


def _row_group_of(parquet, row: int) -> tuple[int, int]:
    start = 0
    for group in range(parquet.metadata.num_row_groups):
        n = parquet.metadata.row_group(group).num_rows
        if row < start + n:
            return group, row - start
        start += n
    raise IndexError(row)


def _decode(key: str, value) -> Image.Image:
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
    elif isinstance(value, (bytes, bytearray)):
        source = io.BytesIO(value)
    else:
        raise BadImageError(key, "the image column holds no image")
    return decode_rgb(key, source)


def hub_identity(files: HubFiles, split: str, hub_split: str, config: str, n: int, **extra) -> dict:
    """SampleSet.identity for a hub split: dataset id, config, split, revision sha, file etags, counts."""
    return {"format": "hf-hub", "source": files.repo_id, **files.identity(), "config": config, "split": split,
            "hub_split": hub_split, "n_total": n, "n_samples": n, **extra}


def describe_config(relative: Sequence[str]) -> str:
    """The hub config a set of files belongs to: their first folder unless that is ``data`` (the default)."""
    first = Path(relative[0]).parts[0] if relative and len(Path(relative[0]).parts) > 1 else ""
    return "default" if first in ("", "data") else first


def hub_split_name(relative: Sequence[str]) -> str:
    """The hub split of a file: the folder in the parquet converter's ``CONFIG/SPLIT/0000.parquet``, else the
    start of a name such as ``data/validation-00000-of-00002.parquet``."""
    parts = Path(relative[0]).parts if relative else ()
    if len(parts) == 3 and Path(parts[2]).stem.isdigit():
        return parts[1]
    name = parts[-1] if parts else ""
    return name.split("-")[0] if "-" in name else Path(name).stem
