"""PredictionJournal: predictions appended as batches finish, so a killed run resumes exactly.

Layout of a run directory: ``journal.json`` (what the predictions depend on),
``predictions.jsonl`` (one line per sample, appended, flushed and fsynced per batch),
``images.jsonl`` (the sha256, size and mtime of each image file the predictions were made on, or the sha256
of a hub parquet row's image bytes with its file's size and mtime, written before the predictions that used it) and ``.lock`` (held by the one process working in the folder).
A line cut short by a crash (kill -9 mid-write) is dropped when the journal is reopened.

A resumed run re-checks the images of its journaled answers: an unchanged size and mtime is enough, otherwise
the file (or the hub row) is hashed again, and an image whose bytes changed is refused by name (``--overwrite`` starts again).
Failed samples are exempt: they are answered again on the next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

from evalkit.core.atomic_files import write_json_atomic
from evalkit.core.errors import EvalkitError
from evalkit.core.samples import Prediction
from evalkit.data.images import HF_ROW_PREFIX, image_record, record_unchanged

HEADER_FILE = "journal.json"
PREDICTIONS_FILE = "predictions.jsonl"
IMAGES_FILE = "images.jsonl"
LOCK_FILE = ".lock"
NOT_FILE_PREFIXES = ("hf-row:", "hub-row:")  # image keys that are dataset rows, not files


class PredictionJournal:
    """Append-only predictions of one run, guarded by a header of everything they depend on."""

    def __init__(self, run_dir: Path, suffix: str = ""):
        """``suffix`` names one rank's journal of a data-parallel run (``predictions.rank0-of-2.jsonl``)."""
        self.run_dir = Path(run_dir)
        self.header_path = self.run_dir / HEADER_FILE
        self.predictions_path = self.run_dir / PREDICTIONS_FILE.replace(".jsonl", f"{suffix}.jsonl")
        self.images_path = self.run_dir / IMAGES_FILE.replace(".jsonl", f"{suffix}.jsonl")
        self._images: dict[str, dict[str, Any]] | None = None  # the image ledger, read lazily
        self._checked: set[str] = set()  # image keys hashed or verified by this process

    @contextlib.contextmanager
    def locked(self, wait: bool = False) -> Iterator[None]:
        """Hold the folder's exclusive lock; another holder is a one-line error, or is waited for with ``wait``."""
        import fcntl

        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / LOCK_FILE, "a+b") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise EvalkitError(f"{self.run_dir} is in use by another evalkit run; pass --wait to wait for it, "
                                   "or another --run-id") from None
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def open(self, header: dict[str, Any], overwrite: bool = False) -> dict[str, Prediction]:
        """Create the journal, or reopen it after checking ``header`` matches; returns finished predictions."""
        if overwrite and self.run_dir.exists():
            for child in self.run_dir.iterdir():  # all but the lock, which this process may hold
                if child.name != LOCK_FILE:
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        self._images, self._checked = None, set()
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
        """Append a finished batch and make it durable before returning (its images' hashes first)."""
        predictions = list(predictions)
        lines = "".join(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in predictions)
        if not lines:
            return
        self._record_images(p.image for p in predictions)
        with open(self.predictions_path, "a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def merge_images(self, entries: Iterable[dict[str, Any]]) -> None:
        """Add other journals' image ledger lines (a data-parallel run's ranks) that this ledger lacks."""
        ledger = self.images()
        self._write_image_entries([e for e in entries if ledger.get(e["image"]) != e])

    def images(self) -> dict[str, dict[str, Any]]:
        """The image ledger: image key -> {sha256, size, mtime_ns} (a later line for a key wins)."""
        if self._images is None:
            self._images = {}
            if self.images_path.exists():
                raw = self.images_path.read_bytes()
                good_end = raw.rfind(b"\n") + 1
                if good_end < len(raw):  # a write cut short by a crash: drop the partial line
                    with open(self.images_path, "r+b") as handle:
                        handle.truncate(good_end)
                for number, line in enumerate(raw[:good_end].splitlines(), 1):
                    try:
                        entry = json.loads(line) if line.strip() else None
                        if entry:
                            self._images[entry["image"]] = entry
                    except (json.JSONDecodeError, KeyError, TypeError) as err:
                        raise EvalkitError(f"{self.images_path}:{number}: corrupt image ledger line ({err}); "
                                           "pass --overwrite to start again") from None
        return self._images

    def check_images(self, samples: Iterable[Any], done: dict[str, Prediction]) -> None:
        """Refuse to resume when an image of a journaled answer changed since it was answered.

        Failed samples are not checked (they are answered again). A journal written before the ledger existed
        has nothing to check against and is trusted; its images are recorded from now on.
        """
        ledger = self.images()
        if not ledger:
            return
        for sample in samples:
            previous = done.get(sample.id)
            if previous is None or previous.status != "ok":
                continue
            key = sample.image
            recorded = ledger.get(previous.image or key)
            if recorded is None or key.startswith(HF_ROW_PREFIX) or key in self._checked:
                continue
            if record_unchanged(key, recorded):
                self._checked.add(key)
                continue
            entry = image_record(key)
            if entry is None:
                raise EvalkitError(f"{self.run_dir}: image {key} of the journaled sample {sample.id} is missing; "
                                   "pass --overwrite to start again, or another --run-id")
            if entry["sha256"] != recorded["sha256"]:
                raise EvalkitError(
                    f"{self.run_dir}: image {key} changed since sample {sample.id} was answered (sha256 "
                    f"{recorded['sha256'][:12]} -> {entry['sha256'][:12]}); pass --overwrite to start again, "
                    "or another --run-id")
            self._write_image_entries([entry])  # same bytes, new path or mtime: the cheap check works next time

    def image_identity(self, samples: Iterable[Any]) -> dict[str, Any]:
        """The images the run's answers were made on: count and one sha256 over their hashes in sample order."""
        ledger, hashes, unhashed, seen = self.images(), [], 0, set()
        for sample in samples:
            if sample.image in seen:
                continue
            seen.add(sample.image)
            entry = ledger.get(sample.image)
            if entry is None:
                unhashed += 1
            else:
                hashes.append(entry["sha256"])
        digest = hashlib.sha256("\n".join(hashes).encode()).hexdigest()
        return {"count": len(hashes), "sha256": digest, "not_hashed": unhashed}

    def _record_images(self, keys: Iterable[str]) -> None:
        ledger, entries = self.images(), []
        for key in dict.fromkeys(keys):
            if not key or key in self._checked or key.startswith(HF_ROW_PREFIX):
                continue
            entry = image_record(key)  # None: a missing file (a failed sample) or an unknown row
            if entry is None:
                continue
            self._checked.add(key)
            if ledger.get(key) != entry:
                entries.append(entry)
        self._write_image_entries(entries)

    def _write_image_entries(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        with open(self.images_path, "a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
            handle.flush()
            os.fsync(handle.fileno())
        for entry in entries:
            self.images()[entry["image"]] = entry
            self._checked.add(entry["image"])


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."
