"""Is a pinned dataset revision, or a model checkpoint, in the local Hugging Face hub cache, and complete?

Read from the cache's documented layout (``{datasets,models}--ORG--NAME/{refs,snapshots,blobs}``,
huggingface.co/docs/huggingface_hub/guides/manage-cache) without touching the network: huggingface_hub's
``snapshot_download(local_files_only=True)`` only says whether a snapshot folder exists, not whether the
files a split needs are all there or a download was cut short (``blobs/*.incomplete``, dangling links).
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path

WEIGHT_GLOBS = ("*.safetensors", "*.bin")


@dataclass(frozen=True)
class CacheStatus:
    """``state``: complete, incomplete or missing; ``detail``: the snapshot folder or what is wrong."""

    state: str
    detail: str


def repo_folder(cache: Path, repo_type: str, repo_id: str) -> Path:
    return Path(cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def snapshot_folder(repo: Path, revision: str) -> Path | None:
    """The snapshot of a revision: a commit sha directly, a branch or ref through ``refs/``."""
    if re.fullmatch(r"[0-9a-f]{40}", revision) and (repo / "snapshots" / revision).is_dir():
        return repo / "snapshots" / revision
    ref = repo / "refs" / revision
    if ref.is_file():
        sha = ref.read_text().strip()
        if (repo / "snapshots" / sha).is_dir():
            return repo / "snapshots" / sha
    return None


def _problems(repo: Path, snapshot: Path, needed: list[str]) -> list[str]:
    files = [p for p in snapshot.rglob("*") if p.is_symlink() or p.is_file()]
    relative = [str(p.relative_to(snapshot)) for p in files]
    problems = [f"{rel} is a dangling link" for p, rel in zip(files, relative) if not p.exists()]
    problems += [f"no file matches {glob}" for glob in needed if not any(fnmatch.fnmatch(r, glob) for r in relative)]
    partial = sorted((repo / "blobs").glob("*.incomplete")) if (repo / "blobs").is_dir() else []
    if partial:
        problems.append(f"{len(partial)} download{'s' if len(partial) > 1 else ''} cut short (blobs/*.incomplete)")
    return problems


def dataset_status(cache: Path, repo_id: str, revision: str, patterns: list[str]) -> CacheStatus:
    """A dataset at its pinned revision, with at least one file for every split glob the task reads."""
    repo = repo_folder(cache, "dataset", repo_id)
    if not repo.is_dir():
        return CacheStatus("missing", f"{repo_id} is not in the cache")
    snapshot = snapshot_folder(repo, revision)
    if snapshot is None:
        return CacheStatus("missing", f"{repo_id} is cached, but not at revision {revision}")
    problems = _problems(repo, snapshot, patterns)
    if not problems:  # the check a run makes before it starts (tree listing or shard numbering), blob hashes aside
        from evalkit.core.errors import EvalkitError
        from evalkit.data.hub_snapshot import check_complete, matching_files

        try:
            check_complete(repo_id, snapshot, matching_files(snapshot, patterns), patterns, "download it again")
        except EvalkitError as err:
            problems.append(str(err))
    return CacheStatus("incomplete", "; ".join(problems)) if problems else CacheStatus("complete", str(snapshot))


def model_status(cache: Path, repo_id: str, revision: str = "main") -> CacheStatus:
    """A checkpoint: config.json, its weights (every shard an index names) and nothing cut short."""
    repo = repo_folder(cache, "model", repo_id)
    if not repo.is_dir():
        return CacheStatus("missing", f"{repo_id} is not in the cache")
    snapshot = snapshot_folder(repo, revision)
    if snapshot is None:
        snapshots = sorted((repo / "snapshots").glob("*")) if (repo / "snapshots").is_dir() else []
        if not snapshots:
            return CacheStatus("missing", f"{repo_id} has no snapshot in the cache")
        snapshot = snapshots[-1]
    problems = _problems(repo, snapshot, ["config.json"])
    weights = [p for glob in WEIGHT_GLOBS for p in snapshot.glob(glob)]
    if not weights:
        problems.append("no weight file (*.safetensors, *.bin)")
    for index in snapshot.glob("*.index.json"):
        try:
            shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError):
            problems.append(f"{index.name} is unreadable")
            continue
        problems += [f"shard {name} missing" for name in sorted(shards) if not (snapshot / name).exists()]
    return CacheStatus("incomplete", "; ".join(problems)) if problems else CacheStatus("complete", str(snapshot))
