"""PredictionJournal: predictions appended as batches finish, so a killed run resumes exactly.

Layout of a run directory: ``journal.json`` (what the predictions depend on) and
``predictions.jsonl`` (one line per sample, appended, flushed and fsynced per batch).
A line cut short by a crash (kill -9 mid-write) is dropped when the journal is reopened.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

from evalkit.core.atomic_files import write_json_atomic
from evalkit.core.errors import EvalkitError
from evalkit.core.samples import Prediction

HEADER_FILE = "journal.json"
PREDICTIONS_FILE = "predictions.jsonl"


class PredictionJournal:
    """Append-only predictions of one run, guarded by a header of everything they depend on."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.header_path = self.run_dir / HEADER_FILE
        self.predictions_path = self.run_dir / PREDICTIONS_FILE

    def open(self, header: dict[str, Any], overwrite: bool = False) -> dict[str, Prediction]:
        """Create the journal, or reopen it after checking ``header`` matches; returns finished predictions."""
        if overwrite and self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        if self.header_path.exists():
            old = json.loads(self.header_path.read_text(encoding="utf-8"))
            differing = [k for k in sorted(set(old) | set(header)) if old.get(k) != header.get(k)]
            if differing:
                field = differing[0]
                raise EvalkitError(
                    f"{self.run_dir} holds a run with a different {field} ({_short(old.get(field))} vs "
                    f"{_short(header.get(field))}); pass --overwrite to start again, or another --run-id")
            return self.completed()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.header_path, header)
        self.predictions_path.touch()
        return {}

    def completed(self) -> dict[str, Prediction]:
        """The predictions on disk by sample id; a torn last line is cut off the file."""
        if not self.predictions_path.exists():
            return {}
        raw = self.predictions_path.read_bytes()
        good_end = raw.rfind(b"\n") + 1
        if good_end < len(raw):  # the last write was interrupted: drop the partial line
            with open(self.predictions_path, "r+b") as handle:
                handle.truncate(good_end)
        done: dict[str, Prediction] = {}
        for number, line in enumerate(raw[:good_end].splitlines(), 1):
            if not line.strip():
                continue
            try:
                prediction = Prediction.from_json(json.loads(line))
            except (json.JSONDecodeError, KeyError) as err:
                raise EvalkitError(f"{self.predictions_path}:{number}: corrupt journal line ({err})") from None
            done[prediction.id] = prediction  # a later line for the same id wins (never written twice)
        return done

    def append(self, predictions: Iterable[Prediction]) -> None:
        """Append a finished batch and make it durable before returning."""
        lines = "".join(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in predictions)
        if not lines:
            return
        with open(self.predictions_path, "a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."
