"""Read the records of an offline W&B run file (``run-ID.wandb``) with W&B's own record schema.

wandb >= 0.2x no longer ships a Python reader for these files (its Go core writes and syncs them), so this reads the
container by hand: W&B's 7-byte header (``:W&B``, magic, version) then LevelDB's log format (32 KiB blocks of
records, each a 7-byte header of crc32, length and type FULL/FIRST/MIDDLE/LAST), exactly as wandb's former
``wandb/sdk/internal/datastore.py`` read it; each assembled record is parsed with ``wandb.proto.wandb_internal_pb2``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    """Every protobuf Record of the file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file: {data[:7]!r}"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a record header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def run_contents(path: Path) -> dict:
    """What the run file holds: run id and project, config, summary, history rows, artifacts, tags."""
    out = {"run_id": None, "project": None, "config": {}, "summary": {}, "history": [], "artifacts": [], "tags": []}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run_id"], out["project"], out["tags"] = record.run.run_id, record.run.project, list(record.run.tags)
            _update(out["config"], record.run.config.update)
        elif kind == "config":
            _update(out["config"], record.config.update)
        elif kind == "summary":
            _update(out["summary"], record.summary.update)
        elif kind == "history":
            row = {}
            _update(row, record.history.item)
            out["history"].append(row)
        elif kind == "artifact":
            out["artifacts"].append({"type": record.artifact.type, "name": record.artifact.name,
                                     "files": [e.path for e in record.artifact.manifest.contents]})
    return out


def _update(target: dict, items) -> None:
    for item in items:
        key = item.key or "/".join(item.nested_key)
        target[key] = json.loads(item.value_json)
