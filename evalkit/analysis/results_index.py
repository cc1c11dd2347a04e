"""Reading finished run folders: run.json, predictions.jsonl, sample_scores.jsonl.

A run folder is ``<results>/<model>/<task>/<run-id>/`` (see evalkit.engine.run_record). A folder with a
journal but no run.json is a run still in progress (or killed) and is not a result yet.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from evalkit.core.errors import EvalkitError
from evalkit.core.protocol import overrides_text

RUN_FILE = "run.json"
PREDICTIONS_FILE = "predictions.jsonl"
SAMPLE_SCORES_FILE = "sample_scores.jsonl"

@dataclass
class RunInfo:
    """One finished run: its folder and run.json, with the fields a report groups by."""

    path: Path
    record: dict
    _predictions: dict | None = field(default=None, repr=False)
    _scores: dict | None = field(default=None, repr=False)

    @property
    def run_id(self) -> str:
        return str(self.record.get("run_id") or self.path.name)

    @property
    def model(self) -> str:
        return str(self.record.get("model", {}).get("name", self.path.parent.parent.name))

    @property
    def task(self) -> str:
        return str(self.record.get("task", {}).get("name", self.path.parent.name))

    @property
    def kind(self) -> str:
        return str(self.record.get("task", {}).get("kind", ""))

    @property
    def task_kind(self):
        """The TaskKind object of this run's task (evalkit.kinds)."""
        from evalkit.kinds import kind_named

        return kind_named(self.kind)

    @property
    def split(self) -> str:
        return str(self.record.get("data", {}).get("split", ""))

    @property
    def created(self) -> str:
        return str(self.record.get("created", ""))

    @property
    def fingerprint(self) -> str:
        return str(self.record.get("protocol_fingerprint", ""))

    @property
    def short_fingerprint(self) -> str:
        return self.fingerprint[:8]

    @property
    def overrides(self) -> dict:
        return dict(self.record.get("overrides") or {})

    @property
    def reportable(self) -> bool:
        return bool(self.record.get("reportable", False))

    @property
    def not_reportable_reasons(self) -> list[str]:
        return [str(r) for r in self.record.get("not_reportable_reasons") or []]

    @property
    def metrics(self) -> dict[str, float]:
        """Metric name -> value (0-100)."""
        out = {}
        for name, metric in (self.record.get("metrics") or {}).items():
            value = metric.get("value") if isinstance(metric, dict) else metric
            if value is not None:
                out[name] = float(value)
        return out

    def std_error(self, metric: str) -> float | None:
        """The metric's standard error recorded in run.json (None for records made before it was recorded)."""
        entry = (self.record.get("metrics") or {}).get(metric)
        value = entry.get("std_error") if isinstance(entry, dict) else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def headline(self) -> str:
        return str(self.record.get("headline_metric") or "")

    def protocol_label(self) -> str:
        """Short fingerprint plus what differs from the task default, e.g. ``3f2a9c1d (prompt_variant=answer)``."""
        label = self.short_fingerprint or "?"
        if self.overrides:
            label += f" ({overrides_text(self.overrides)})"
        return label

    def predictions(self) -> dict[str, dict]:
        """predictions.jsonl by sample id (read once)."""
        if self._predictions is None:
            self._predictions = {str(line["id"]): line for line in read_jsonl(self.path / PREDICTIONS_FILE)}
        return self._predictions

    def sample_scores(self) -> dict[str, dict[str, float]]:
        """sample_scores.jsonl: sample id -> {metric: score} (read once)."""
        if self._scores is None:
            self._scores = {str(line["id"]): dict(line.get("scores") or {})
                            for line in read_jsonl(self.path / SAMPLE_SCORES_FILE)}
        return self._scores


def read_jsonl(path: Path) -> Iterable[dict]:
    """The JSON objects of a .jsonl file, one per non-empty line; a torn last line is ignored."""
    path = Path(path)
    if not path.is_file():
        raise EvalkitError(f"{path} not found")
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):  # the journal's last line cut short by a crash
                break
            raise EvalkitError(f"{path}:{number}: not JSON ({err.msg})") from None
    return out


def load_run(path: str | Path) -> RunInfo:
    """A run folder (or its run.json) -> RunInfo; a one-line error when it is not a finished run."""
    path = Path(path)
    if path.name == RUN_FILE and path.is_file():
        path = path.parent
    run_file = path / RUN_FILE
    if not path.is_dir():
        raise EvalkitError(f"run folder {path} does not exist")
    if not run_file.is_file():
        hint = " (a run still in progress, or killed: run it again to finish it)" if (path / "journal.json").is_file() \
            else ""
        raise EvalkitError(f"{path} has no {RUN_FILE}{hint}")
    try:
        record = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise EvalkitError(f"cannot read {run_file}: {err}") from None
    if not isinstance(record, dict) or "task" not in record or "model" not in record:
        raise EvalkitError(f"{run_file} is not an evalkit run record")
    return RunInfo(path, record)


def find_runs(results_dir: str | Path, warn=None) -> list[RunInfo]:
    """Every finished run below ``results_dir``, oldest first; unreadable run.json files are skipped with a warning."""
    root = Path(results_dir)
    if not root.is_dir():
        raise EvalkitError(f"results folder {root} does not exist")
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    runs = []
    for run_file in sorted(root.rglob(RUN_FILE)):
        try:
            runs.append(load_run(run_file.parent))
        except EvalkitError as err:
            warn(f"skipped {run_file.parent}: {err}")
    runs.sort(key=lambda r: (r.created, str(r.path)))
    return runs


def group_key(run: RunInfo) -> tuple[str, str, str, str]:
    """Runs are only ever merged (latest wins) within one model x task x split x protocol."""
    return (run.model, run.task, run.split, run.fingerprint)


def select_runs(runs: list[RunInfo], latest: bool = True, run_ids: Iterable[str] = ()) -> tuple[list[RunInfo], int]:
    """The runs a report shows, and how many older runs it left out.

    ``latest``: one run per model x task x split x protocol, the most recently created; a run named
    in ``run_ids`` takes its group's place instead. Without ``latest`` every run is kept.
    Unknown ``run_ids`` are an error.
    """
    wanted = [str(r) for r in run_ids]
    unknown = [r for r in wanted if not any(run.run_id == r or run.path.name == r for run in runs)]
    if unknown:
        raise EvalkitError(f"no run with id {unknown[0]!r} in the results folder")
    if not latest:
        return list(runs), 0
    groups: dict[tuple, list[RunInfo]] = {}
    for run in runs:
        groups.setdefault(group_key(run), []).append(run)
    chosen = []
    for members in groups.values():
        named = [r for r in members if r.run_id in wanted or r.path.name in wanted]
        chosen.append(named[-1] if named else max(members, key=lambda r: (r.created, str(r.path))))
    chosen.sort(key=lambda r: (r.created, str(r.path)))
    return chosen, len(runs) - len(chosen)


def latest_run(results_dir: str | Path, model: str, task: str) -> RunInfo:
    """The most recent finished run of ``model`` on ``task`` below ``results_dir``."""
    from evalkit.analysis.reference_numbers import normalise_model_name
    from evalkit.models.catalog import safe_name

    runs = [r for r in find_runs(results_dir) if r.task == task and
            (r.model == model or normalise_model_name(r.model) == normalise_model_name(model)
             or r.model == safe_name(model))]
    if not runs:
        raise EvalkitError(f"no finished run of model {model!r} on task {task!r} in {results_dir}")
    return max(runs, key=lambda r: (r.created, str(r.path)))
