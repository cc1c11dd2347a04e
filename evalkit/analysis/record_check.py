"""Refuse a run record that disagrees with itself before compare or report shows a number from it.

run.json is a file anyone can edit. What can be re-computed is re-computed and must agree:

* every metric value is a finite number (a NaN or a null is named, never shown as "nan" or dropped);
* ``protocol_fingerprint`` is the sha256 of the recorded ``protocol`` (an edited decoding setting under an
  unchanged fingerprint is caught), and the journal header carries the same fingerprint;
* the metrics that are means of per-sample scores (the kind's ``recomputable_metrics``: VQA accuracy, CIDEr,
  ROUGE-L, the retrieval recalls, ...) equal the mean of sample_scores.jsonl.

A disagreement is one line naming the file and the field (exit 2). Corpus metrics that need the references
(BLEU, METEOR) are re-scored by ``evalkit compare`` from predictions.jsonl (see ``PairedStatistics.rescored``).
"""

from __future__ import annotations

import math

from evalkit.core.errors import EvalkitError
from evalkit.core.protocol import sha256_of
from evalkit.analysis.results_index import RUN_FILE, SAMPLE_SCORES_FILE, RunInfo

# VQA accuracy is recorded rounded to 2 decimals (as the official script reports it)
TOLERANCE = 0.006


class RecordMismatchError(EvalkitError):
    """A run record whose fields disagree with each other or with its per-sample scores."""


def check_record(run: RunInfo) -> None:
    """Raise :class:`RecordMismatchError` naming the file and field of the first disagreement."""
    record, run_file = run.record, run.path / RUN_FILE
    metrics = record.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise RecordMismatchError(f"{run_file}: field metrics is not an object")
    for name, entry in metrics.items():
        value = entry.get("value") if isinstance(entry, dict) else entry
        field = f"metrics.{name}.value" if isinstance(entry, dict) else f"metrics.{name}"
        if value is None:
            raise RecordMismatchError(f"{run_file}: field {field} is null (a metric must be a number)")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecordMismatchError(f"{run_file}: field {field} is {value!r}, not a number")
        if not math.isfinite(value):
            raise RecordMismatchError(f"{run_file}: field {field} is {value} (a metric must be a finite number)")
    _check_fingerprint(run, run_file)
    if metrics:
        _check_recomputed(run, run_file)


def _check_fingerprint(run: RunInfo, run_file) -> None:
    record = run.record
    protocol = record.get("protocol")
    recorded = record.get("protocol_fingerprint")
    if not isinstance(protocol, dict) or not recorded:
        raise RecordMismatchError(f"{run_file}: fields protocol and protocol_fingerprint are required")
    recomputed = sha256_of(protocol)
    if recomputed != recorded:
        raise RecordMismatchError(
            f"{run_file}: field protocol does not match protocol_fingerprint (sha256 of the recorded protocol is "
            f"{recomputed[:12]}…, the record says {str(recorded)[:12]}…): the protocol or its fingerprint was edited")
    header = (record.get("journal_header") or {}).get("protocol_fingerprint")
    if header is not None and header != recorded:
        raise RecordMismatchError(f"{run_file}: field journal_header.protocol_fingerprint ({str(header)[:12]}…) "
                                  f"differs from protocol_fingerprint ({str(recorded)[:12]}…)")


def _check_recomputed(run: RunInfo, run_file) -> None:
    if not (run.path / SAMPLE_SCORES_FILE).is_file():
        raise RecordMismatchError(f"{run.path / SAMPLE_SCORES_FILE} is missing: the metrics in {run_file} "
                                  "cannot be checked")
    recomputed = run.task_kind.recomputed_metrics(run.sample_scores())
    for name, value in run.metrics.items():
        if name in recomputed and abs(recomputed[name] - value) > TOLERANCE:
            raise RecordMismatchError(
                f"{run_file}: field metrics.{name}.value is {value:.4f} but the mean of the per-sample scores "
                f"in {SAMPLE_SCORES_FILE} is {recomputed[name]:.4f}: the record was edited or is damaged")


def check_rescored(run: RunInfo, metric: str, rescored: float) -> None:
    """A metric re-scored from predictions.jsonl (compare) must equal the recorded one."""
    value = run.metrics.get(metric)
    if value is not None and abs(rescored - value) > TOLERANCE + 1e-9 * abs(value):
        raise RecordMismatchError(
            f"{run.path / RUN_FILE}: field metrics.{metric}.value is {value:.4f} but re-scoring predictions.jsonl "
            f"gives {rescored:.4f}: the record was edited or is damaged")
