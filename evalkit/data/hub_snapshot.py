"""Is a cached hub snapshot what was pinned? Every file of the split there, nothing stray, each blob's bytes
matching its name.

The hub cache as huggingface_hub writes it (docs: huggingface.co/docs/huggingface_hub/guides/manage-cache)::

    datasets--ORG--NAME/blobs/<etag>                      the file's bytes
    datasets--ORG--NAME/snapshots/<commit>/<repo path>    a link to ../../blobs/<etag>
    datasets--ORG--NAME/refs/<branch>                     the commit the branch pointed at when downloaded
    datasets--ORG--NAME/trees/<commit>.json               the repository's file listing at that commit

A blob's etag is the sha256 of its bytes for an LFS file (every parquet file), the git blob sha1 for a small
file. ``trees/<commit>.json`` is written by ``snapshot_download`` (huggingface_hub >= 2.x, module
``huggingface_hub._tree_cache``) when it lists the repository: ``{"format_version": 1, "files": {path: {"size",
"blob_id", "lfs_sha256", "lfs_size", ...}}}``; it is read here directly because the public
``get_cached_repo_tree`` drops the LFS sha256.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Callable, Sequence

from evalkit.core.cache_folder import evalkit_cache_folder
from evalkit.core.errors import EvalkitError

# data/validation-00000-of-00002.parquet; NoCaps adds the upload hash:
# data/validation-00000-of-00003-55b5edbf01d47b39.parquet
SHARD_NAME = re.compile(r"^(?P<series>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})(?:-[0-9a-f]+)?\.parquet$")
TREE_FORMAT_VERSION = 1


def matching_files(root: Path, patterns: Sequence[str]) -> list[str]:
    """The snapshot's files (links whose blob is gone included) that match one of the globs, sorted."""
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root).as_posix()
        if (path.is_file() or path.is_symlink()) and any(fnmatch.fnmatch(relative, g) for g in patterns):
            found.append(relative)
    return sorted(found)


def tree_listing(snapshot: Path) -> dict[str, dict] | None:
    """The cached file listing of the snapshot's commit (path -> {size, blob_id, lfs_sha256, ...}), None when there
    is none or it is in a format this code does not know."""
    listing = snapshot.parent.parent / "trees" / f"{snapshot.name}.json"
    try:
        content = json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(content, dict) or content.get("format_version") != TREE_FORMAT_VERSION \
            or not isinstance(content.get("files"), dict):
        return None
    return content["files"]


def check_complete(what: str, snapshot: Path, relative: Sequence[str], patterns: Sequence[str],
                   download_hint: str) -> None:
    """A one-line error when a file of the split is missing, a link's blob is gone, or a file is stray.

    With a tree listing, the split is exactly the listed files that match the globs; without one, parquet shards
    named ``NAME-00000-of-00003[-hash].parquet`` must form one complete series.
    """
    listing = tree_listing(snapshot)
    if listing is not None:
        expected = sorted(p for p in listing if any(fnmatch.fnmatch(p, g) for g in patterns))
        missing = [p for p in expected if not (snapshot / p).exists()]
        if missing:
            raise EvalkitError(f"{what}: the cached snapshot {snapshot} is incomplete: {missing[0]} is missing "
                               f"({len(missing)} of the {len(expected)} files the revision lists for "
                               f"{', '.join(patterns)}); {download_hint}")
        stray = [p for p in relative if p not in listing]
        if stray:
            raise EvalkitError(f"{what}: {snapshot / stray[0]} is not a file of revision {snapshot.name} (its tree "
                               f"listing has no such path) but matches {', '.join(patterns)}; remove it")
        for rel in relative:
            _check_listed_blob(snapshot / rel, listing[rel], snapshot.name)
        return
    gone = [p for p in relative if not (snapshot / p).exists()]
    if gone:
        raise EvalkitError(f"{what}: {snapshot / gone[0]} links to a blob that is not in the cache "
                           f"({os.readlink(snapshot / gone[0])}): the snapshot is incomplete; {download_hint}")
    _check_shard_series(what, snapshot, relative, download_hint)


def _check_shard_series(what: str, snapshot: Path, relative: Sequence[str], download_hint: str) -> None:
    parsed = {rel: SHARD_NAME.match(Path(rel).name) for rel in relative}
    if not any(parsed.values()):
        return  # no -of-NNNNN names (e.g. the parquet converter's 0000.parquet): nothing to count against
    odd = [rel for rel, match in parsed.items() if match is None]
    if odd:
        raise EvalkitError(f"{what}: {snapshot / odd[0]} is not a NAME-NNNNN-of-NNNNN.parquet shard like the other "
                           "files of the split (a stray file?); remove it")
    series: dict[tuple[str, str, int], dict[int, list[str]]] = {}
    for rel, match in parsed.items():
        key = (str(Path(rel).parent), match["series"], int(match["total"]))
        series.setdefault(key, {}).setdefault(int(match["index"]), []).append(rel)
    if len(series) > 1:
        names = sorted(f"{folder}/{name}-*-of-{total:05d}" for folder, name, total in series)
        raise EvalkitError(f"{what}: the snapshot {snapshot} holds more than one shard series for the split "
                           f"({', '.join(names)}); remove the stray files")
    ((folder, name, total), indices), = series.items()
    doubled = [files for files in indices.values() if len(files) > 1]
    if doubled:
        raise EvalkitError(f"{what}: {snapshot / doubled[0][1]} repeats shard {doubled[0][0]} (a stray file?); "
                           "remove it")
    absent = [i for i in range(total) if i not in indices]
    if absent:
        prefix = "" if folder == "." else f"{folder}/"
        raise EvalkitError(f"{what}: shard {prefix}{name}-{absent[0]:05d}-of-{total:05d}.parquet is missing from "
                           f"the cached snapshot {snapshot} ({len(indices)} of {total} shards there); {download_hint}")
    extra = [i for i in indices if i >= total]
    if extra:
        raise EvalkitError(f"{what}: {snapshot / indices[extra[0]][0]} numbers shard {extra[0]} of {total} "
                           "(a stray file?); remove it")


def _check_listed_blob(path: Path, entry: dict, commit: str) -> None:
    """The link's blob is the one the revision lists for that path."""
    listed = entry.get("lfs_sha256") or entry.get("blob_id") if isinstance(entry, dict) else None
    etag = blob_name(path)
    if listed and etag and etag != listed:
        raise EvalkitError(f"{path}: links to blob {etag[:12]}, but revision {commit} lists {listed[:12]} for it; "
                           "delete the snapshot and download it again")


def blob_name(path: Path) -> str | None:
    """The etag a snapshot link points at (its blob's file name), None for a plain file."""
    real = Path(os.path.realpath(path))
    return real.name if Path(path).is_symlink() and real.parent.name == "blobs" else None


def content_etag(path: Path, etag: str) -> str:
    """The etag the file's bytes have, computed the way ``etag`` was: sha256 (LFS, 64 hex digits) or git blob sha1
    (40 hex digits)."""
    real = os.path.realpath(path)
    if len(etag) == 40:
        digest = hashlib.sha1(f"blob {os.path.getsize(real)}\0".encode())
    else:
        digest = hashlib.sha256()
    with open(real, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def unverified_blobs(paths: Sequence[Path]) -> list[Path]:
    """The snapshot links whose blob was not yet verified with its present size, mtime and inode."""
    stamps = _read_stamps()
    return [p for p in paths if blob_name(p) is not None and stamps.get(os.path.realpath(p)) != _stamp(p)]


def verify_blobs(paths: Sequence[Path], advance: Callable[[int], None] = lambda n: None) -> None:
    """A one-line error naming the file whose blob's bytes no longer hash to the blob's name (the etag); blobs that
    match are stamped in ``verified_blobs.json`` (evalkit's cache folder: $EVALKIT_CACHE, else
    $XDG_CACHE_HOME/evalkit or ~/.cache/evalkit) and not read again until their size, mtime or inode change.
    ``advance`` is told the bytes read."""
    stamps = _read_stamps()
    for path in paths:
        etag = blob_name(path)
        if etag is None or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", etag):
            continue
        stamp = _stamp(path)
        actual = content_etag(path, etag)
        advance(stamp[0])
        if actual != etag:
            raise EvalkitError(f"{path}: its bytes hash to {actual[:12]}, not to {etag[:12]} (the name of its blob, "
                               f"the hub's etag): the cached file is corrupt; delete {os.path.realpath(path)} and "
                               "download it again")
        stamps[os.path.realpath(path)] = stamp
    _write_stamps(stamps)


def _stamp(path: Path) -> list[int]:
    stat = os.stat(os.path.realpath(path))
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


def _stamp_file() -> Path:
    return evalkit_cache_folder() / "verified_blobs.json"


def _read_stamps() -> dict:
    try:
        content = json.loads(_stamp_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def _write_stamps(stamps: dict) -> None:
    """Best effort: a folder that cannot be written means the blobs are hashed again next time."""
    from evalkit.core.atomic_files import write_json_atomic

    kept = {path: stamp for path, stamp in stamps.items() if os.path.exists(path)}
    try:
        _stamp_file().parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(_stamp_file(), kept)
    except OSError:
        pass
