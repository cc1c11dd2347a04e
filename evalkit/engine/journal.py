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

from evalkit.core.atomic_files import write_json_atomic, writing
from evalkit.core.errors import EvalkitError
from evalkit.core.samples import Prediction, order_by_image
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

        with writing(self.run_dir / LOCK_FILE):
            self.run_dir.mkdir(parents=True, exist_ok=True)
            handle = open(self.run_dir / LOCK_FILE, "a+b")
        with handle:
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
            old = self._read_header()
            differing = [k for k in sorted(set(old) | set(header)) if old.get(k) != header.get(k)]
            if differing:
                field = differing[0]
                raise EvalkitError(
                    f"{self.run_dir} holds a run with a different {field} ({_short(old.get(field))} vs "
                    f"{_short(header.get(field))}); pass --overwrite to start again, or another --run-id")
            return self.completed()
        write_json_atomic(self.header_path, header)
        with writing(self.predictions_path):
            self.predictions_path.touch()
        return {}

    def _read_header(self) -> dict[str, Any]:
        try:
            old = json.loads(self.header_path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise EvalkitError(f"{self.header_path} is corrupt ({type(err).__name__}: {err}); pass --overwrite to "
                               "start again, or another --run-id") from None
        if not isinstance(old, dict):
            raise EvalkitError(f"{self.header_path} is corrupt (a JSON {type(old).__name__}, not a journal header); "
                               "pass --overwrite to start again, or another --run-id")
        return old

    def check_writable(self) -> None:
        """Before the model loads: the run folder (or the nearest folder above it that exists) takes a probe file,
        and the journal files a resume appends to open for appending; else one line naming the path.

        A probe write, not ``os.access``: root passes ``os.access`` on a read-only folder and a read-only mount."""
        import tempfile

        existing = self.run_dir
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as err:
            raise EvalkitError(f"cannot write in {existing} ({err.strerror or type(err).__name__}), needed for the "
                               f"run folder {self.run_dir}") from None
        for path in (self.predictions_path, self.images_path, self.run_dir / LOCK_FILE):
            if path.exists():
                try:
                    open(path, "ab").close()
                except OSError as err:
                    raise EvalkitError(f"cannot write {path} ({err.strerror or type(err).__name__})") from None

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
        with writing(self.predictions_path), open(self.predictions_path, "a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def put_in_order(self, samples: Iterable[Any]) -> None:
        """Rewrite ``predictions.jsonl`` in a one-process run's order (by image, first appearance; one line per
        sample; lines of ids not in the run kept after them) when it is not: a one-process resume of a data-parallel
        run appends its answers after the folded ranks' answers. Atomic (temp file + rename); a no-op when in order."""
        done = self.completed()
        if not done:
            return
        ids = [json.loads(line)["id"] for line in self.predictions_path.read_bytes().splitlines() if line.strip()]
        ordered = [s.id for s in order_by_image(list(samples)) if s.id in done]
        in_run = set(ordered)
        ordered += [i for i in dict.fromkeys(ids) if i not in in_run]
        if ids == ordered:
            return
        tmp = self.predictions_path.with_name(f".{self.predictions_path.name}.tmp")
        with writing(self.predictions_path, tmp):
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write("".join(json.dumps(done[i].to_json(), ensure_ascii=False) + "\n" for i in ordered))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.predictions_path)

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

    def check_images(self, samples: Iterable[Any], done: dict[str, Prediction]) -> dict[str, Prediction]:
        """The journaled answers that may be resumed: refuse to resume when an image of a journaled answer changed
        since it was answered, and leave out (to be answered again) those whose image is not in the ledger.

        Failed samples are not checked (they are answered again). An answer whose image the ledger lacks (the
        ledger deleted or cut short, or a journal written before the ledger existed) cannot be checked, so it is
        never trusted: its sample is answered again, and its image recorded with the new answer, which rebuilds
        the ledger. ``hf-row:`` images are identified by the dataset fingerprint in the header instead.
        """
        samples = list(samples)
        done = self.in_ledger(samples, done)
        ledger = self.images()
        for sample in samples:
            previous = done.get(sample.id)
            if previous is None or previous.status != "ok" or sample.image.startswith(HF_ROW_PREFIX):
                continue
            key = sample.image
            recorded = ledger[previous.image or key]
            if key in self._checked:
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
        return done

    def in_ledger(self, samples: Iterable[Any], done: dict[str, Prediction]) -> dict[str, Prediction]:
        """``done`` less the answers of ``samples`` whose image the ledger lacks (failed answers and ``hf-row:``
        images stay): the half of :meth:`check_images` that hashes nothing."""
        ledger = self.images()
        unverified = {s.id for s in samples if (p := done.get(s.id)) is not None and p.status == "ok"
                      and not s.image.startswith(HF_ROW_PREFIX) and (p.image or s.image) not in ledger}
        return {k: p for k, p in done.items() if k not in unverified} if unverified else done

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
        with writing(self.images_path), open(self.images_path, "a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
            handle.flush()
            os.fsync(handle.fileno())
        for entry in entries:
            self.images()[entry["image"]] = entry
            self._checked.add(entry["image"])


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."
