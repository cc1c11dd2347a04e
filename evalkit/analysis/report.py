"""`evalkit report`: every finished run below a results folder as one model x task table.

Rows are models, columns each task's headline metrics (captioning BLEU-4 and CIDEr, VQA accuracy,
retrieval txt_r1 / img_r1 / r_mean). Runs are never merged across protocols: each task has a
"protocol" column (split, short protocol fingerprint and the settings that differ from the task
default), and a model that ran a task under two protocols gets one row per protocol. Within one
model x task x split x protocol the latest run is shown (``--run-id`` picks another one,
``--all-runs`` shows them all).

A cell is ``score`` or, where the BLIP-2 paper / LAVIS give a number for the same model, task and
split, ``score (ref R [n], Δ D)`` with D = score - R and [n] the footnote naming the source
(paper values are preferred over LAVIS records in a cell; --json lists all). Marks: ``†`` the run
is not reportable (footnote: why), ``‡`` a reference is shown but the run is not like-for-like with it
(another named protocol, overrides, or another scorer setting such as the VQA accuracy variant; the
footnote names each).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from evalkit.core.errors import EvalkitError
from evalkit.analysis.reference_numbers import Reference, like_for_like_differences, preferred_reference, \
    references_for_run
from evalkit.analysis.results_index import RunInfo, find_runs, select_runs
from evalkit.analysis.environment import environment_differences
from evalkit.analysis.record_check import check_record
from evalkit.core.protocol import overrides_text

MARK_NOT_REPORTABLE = "†"
MARK_PROTOCOL = "‡"
MARK_ENVIRONMENT = "§"


@dataclass
class TaskColumns:
    """A task's columns: its kind and the metrics shown."""

    name: str
    kind: str
    metrics: list[str]


@dataclass
class Cell:
    """One run's numbers in the table (one task of one row)."""

    run: RunInfo
    references: list[Reference]

    def reference(self, metric: str) -> Reference | None:
        """The reference shown for ``metric``: one the run is like-for-like with (paper before LAVIS), else the
        paper's, else LAVIS's."""
        matching = [r for r in self.references if not like_for_like_differences(r, self.run.record)]
        return preferred_reference(matching, metric) or preferred_reference(self.references, metric)

    def differences(self, metric: str) -> list[str]:
        """Why the run is not like-for-like with the reference shown for ``metric`` ([] if it is, or no reference)."""
        ref = self.reference(metric)
        return like_for_like_differences(ref, self.run.record) if ref is not None else []


@dataclass
class Report:
    """The selected runs arranged as rows x tasks, plus footnotes."""

    results_dir: Path
    tasks: list[TaskColumns]
    rows: list[tuple[str, dict[str, Cell]]]  # (model, task -> cell)
    runs: list[RunInfo]
    hidden_runs: int
    source_numbers: dict[str, int] = field(default_factory=dict)  # reference source -> footnote number

    def footnote_number(self, source: str) -> int:
        if source not in self.source_numbers:
            self.source_numbers[source] = len(self.source_numbers) + 1
        return self.source_numbers[source]


def build_report(results_dir: str | Path, *, latest: bool = True, run_ids: Iterable[str] = (),
                 models: Iterable[str] = (), tasks: Iterable[str] = (), all_metrics: bool = False) -> Report:
    """Read the runs below ``results_dir`` and lay out the table (see module docstring)."""
    root = Path(results_dir)
    runs = find_runs(root)
    models, tasks = list(models), list(tasks)
    if models:
        runs = [r for r in runs if r.model in models]
    if tasks:
        runs = [r for r in runs if r.task in tasks]
    if not runs:
        what = " matching --model/--task" if models or tasks else ""
        raise EvalkitError(f"no finished runs (run.json){what} below {root}; run `evalkit run TASK -m MODEL` first")
    chosen, hidden = select_runs(runs, latest=latest, run_ids=run_ids)
    for run in chosen:  # a record that disagrees with itself stops the report (one line, exit 2)
        check_record(run)
    by_task: dict[str, list[RunInfo]] = {}
    for run in chosen:
        by_task.setdefault(run.task, []).append(run)
    columns = []
    for name, members in sorted(by_task.items(), key=lambda kv: (kv[1][0].task_kind.report_order, kv[0])):
        kind = members[0].kind
        present: list[str] = []
        for run in members:
            present += [m for m in run.metrics if m not in present]
        headline = list(members[0].task_kind.headline_metrics)
        if all_metrics:
            metrics = present or headline
        else:
            metrics = [m for m in headline if m in present]
            if not metrics:  # only runs without metrics (then the cells say n/a)
                metrics = [h for h in dict.fromkeys(r.headline for r in members) if h and h in present] \
                    or present[:3] or headline
        columns.append(TaskColumns(name, kind, metrics))
    rows: list[tuple[str, dict[str, Cell]]] = []
    for model in sorted({r.model for r in chosen}):
        slots = {}
        for column in columns:
            mine = [r for r in by_task[column.name] if r.model == model]
            mine.sort(key=lambda r: (bool(r.overrides), r.split, r.created, str(r.path)))
            slots[column.name] = mine
        for i in range(max(len(v) for v in slots.values())):
            row = {task: Cell(runs_[i], references_for_run(runs_[i].record))
                   for task, runs_ in slots.items() if i < len(runs_)}
            rows.append((model, row))
    report = Report(root, columns, rows, chosen, hidden)
    for _, row in rows:  # number the sources in table order
        for column in columns:
            cell = row.get(column.name)
            if cell:
                for metric in column.metrics:
                    ref = cell.reference(metric)
                    if ref is not None and metric in cell.run.metrics:
                        report.footnote_number(ref.source)
    return report


# --------------------------------------------------------------------------------------------
# cell text
# --------------------------------------------------------------------------------------------


def protocol_text(run: RunInfo) -> str:
    """``val · c97bd5e6`` or ``val · c97bd5e6 (prompt_variant=answer)``."""
    text = f"{run.split} · {run.short_fingerprint}" if run.split else run.short_fingerprint
    if run.overrides:
        text += f" ({overrides_text(run.overrides)})"
    return text


def value_text(run: RunInfo, metric: str) -> str:
    """``52.10 ± 0.45`` (± one standard error from run.json), or ``52.10`` for a record without one."""
    value, se = run.metrics[metric], run.std_error(metric)
    return f"{value:.2f}" if se is None else f"{value:.2f} ± {se:.2f}"


def environment_notes(report: Report) -> list[str]:
    """A footnote per task whose runs in the table were made in different environments (library versions,
    precision settings), naming each difference and the runs on each side."""
    notes = []
    for column in report.tasks:
        runs = [row[column.name].run for _, row in report.rows if column.name in row]
        first = runs[0] if runs else None
        seen: dict[str, dict[str, list[str]]] = {}
        for run in runs[1:]:
            for diff in environment_differences(first.record, run.record):
                sides = seen.setdefault(diff["what"], {})
                sides.setdefault(diff["baseline"], [])
                if f"{first.model} run {first.run_id}" not in sides[diff["baseline"]]:
                    sides[diff["baseline"]].append(f"{first.model} run {first.run_id}")
                sides.setdefault(diff["candidate"], []).append(f"{run.model} run {run.run_id}")
        for what, sides in seen.items():
            listed = "; ".join(f"{value} ({', '.join(names)})" for value, names in sides.items())
            notes.append(f"{MARK_ENVIRONMENT} {column.name}: runs differ in {what}: {listed}; the same weights can "
                         "give different numbers (compare --strict-env refuses such a pair)")
    return notes


def cell_text(report: Report, cell: Cell, metric: str) -> str:
    """``52.10 (ref 53.50 [1], Δ -1.40) †`` etc."""
    value = cell.run.metrics.get(metric)
    if value is None:
        return "n/a"
    text = value_text(cell.run, metric)
    ref = cell.reference(metric)
    if ref is not None:
        text += f" (ref {ref.value:.2f} [{report.footnote_number(ref.source)}], Δ {value - ref.value:+.2f})"
        if cell.differences(metric):
            text += f" {MARK_PROTOCOL}"
    if not cell.run.reportable:
        text += f" {MARK_NOT_REPORTABLE}"
    return text


def footnotes(report: Report) -> list[str]:
    """Reference sources, non-reportable runs, protocol notes, hidden runs."""
    from evalkit.analysis.reference_numbers import load_references

    texts = {r.source: r.source_text for r in load_references()}
    notes = [f"[{n}] {texts.get(source, source)}" for source, n in sorted(report.source_numbers.items(),
                                                                          key=lambda kv: kv[1])]
    for model, row in report.rows:
        for column in report.tasks:
            cell = row.get(column.name)
            if cell and not cell.run.reportable:
                reasons = "; ".join(cell.run.not_reportable_reasons) or "see run.json"
                notes.append(f"{MARK_NOT_REPORTABLE} {model} · {column.name} (run {cell.run.run_id}): not reportable: "
                             f"{reasons}")
    for model, row in report.rows:
        for column in report.tasks:
            cell = row.get(column.name)
            differences = list(dict.fromkeys(d for m in column.metrics for d in cell.differences(m))) if cell else []
            if differences:
                notes.append(f"{MARK_PROTOCOL} {model} · {column.name} (run {cell.run.run_id}): not like-for-like "
                             f"with the reference: {'; '.join(differences)}")
    notes += environment_notes(report)
    no_metrics = [f"{m} · {t}" for m, row in report.rows for t, c in row.items() if not c.run.metrics]
    if no_metrics:
        notes.append("n/a: runs without metrics (a split without answers: submit the official predictions file): "
                     + ", ".join(no_metrics))
    if report.hidden_runs:
        notes.append(f"{report.hidden_runs} older run(s) of the same model, task and protocol not shown "
                     "(--all-runs shows every run, --run-id picks one)")
    return notes


# --------------------------------------------------------------------------------------------
# formats
# --------------------------------------------------------------------------------------------


def display_frame(report: Report) -> pd.DataFrame:
    """The table as shown (strings): model, then per task its protocol and metric columns."""
    records = []
    for model, row in report.rows:
        record = {"model": model}
        for column in report.tasks:
            cell = row.get(column.name)
            record[f"{column.name} protocol"] = protocol_text(cell.run) if cell else ""
            for metric in column.metrics:
                record[f"{column.name} {metric}"] = cell_text(report, cell, metric) if cell else ""
        records.append(record)
    return pd.DataFrame.from_records(records)


def numeric_frame(report: Report) -> pd.DataFrame:
    """The table for machines (CSV): numbers in their own columns (value, ref, ref source, diff)."""
    records = []
    for model, row in report.rows:
        record: dict = {"model": model}
        for column in report.tasks:
            cell = row.get(column.name)
            prefix = column.name
            run = cell.run if cell else None
            record[f"{prefix}:split"] = run.split if run else None
            record[f"{prefix}:protocol"] = run.fingerprint if run else None
            record[f"{prefix}:overrides"] = overrides_text(run.overrides) if run and run.overrides else None
            record[f"{prefix}:run_id"] = run.run_id if run else None
            record[f"{prefix}:reportable"] = run.reportable if run else None
            for metric in column.metrics:
                value = run.metrics.get(metric) if run else None
                ref = cell.reference(metric) if cell else None
                record[f"{prefix}:{metric}"] = value
                record[f"{prefix}:{metric}:std_error"] = run.std_error(metric) if run else None
                record[f"{prefix}:{metric}:ref"] = ref.value if ref else None
                record[f"{prefix}:{metric}:ref_source"] = ref.source if ref else None
                record[f"{prefix}:{metric}:diff"] = (value - ref.value) if ref and value is not None else None
        records.append(record)
    return pd.DataFrame.from_records(records)


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(report: Report) -> str:
    """A pasteable Markdown table with its footnotes."""
    frame = display_frame(report)
    header = list(frame.columns)
    lines = [f"# evalkit leaderboard ({len(report.runs)} runs below {report.results_dir})", "",
             "| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "|".join(":---" if h == "model" or h.endswith(" protocol") else "---:" for h in header) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_md_cell(v) for v in row.tolist()) + " |")
    notes = footnotes(report)
    lines += ["", "Scores on the 0-100 scale, ± one standard error (clustered by image where a task asks several "
              "questions per image; see run.json). Δ = this run − reference. Protocol: split · first 8 hex digits "
              "of the protocol fingerprint (+ settings that differ from the task default)."]
    if notes:
        lines.append("")
        lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def to_csv(report: Report) -> str:
    """The numeric table as CSV."""
    buffer = io.StringIO()
    numeric_frame(report).to_csv(buffer, index=False)
    return buffer.getvalue()


def to_json(report: Report) -> dict:
    """Everything in the table as plain data: one entry per (row, task, metric), plus footnotes."""
    cells = []
    for index, (model, row) in enumerate(report.rows):
        for column in report.tasks:
            cell = row.get(column.name)
            if not cell:
                continue
            run = cell.run
            for metric in column.metrics:
                value = run.metrics.get(metric)
                ref = cell.reference(metric)
                cells.append({
                    "row": index, "model": model, "task": column.name, "kind": column.kind, "split": run.split,
                    "metric": metric, "value": value, "std_error": run.std_error(metric),
                    "reference": ref.value if ref else None, "reference_kind": ref.kind if ref else None,
                    "reference_source": ref.source_text if ref else None,
                    "difference": (value - ref.value) if ref and value is not None else None,
                    "other_references": [r.to_json() for r in cell.references if r.metric == metric and r is not ref],
                    "run_id": run.run_id, "run_dir": str(run.path), "created": run.created,
                    "protocol_fingerprint": run.fingerprint, "overrides": run.overrides,
                    "protocol_differs_from_default": bool(run.overrides),
                    "like_for_like": cell.reference(metric) is not None and not cell.differences(metric),
                    "differences_from_reference": cell.differences(metric),
                    "reportable": run.reportable, "not_reportable_reasons": run.not_reportable_reasons,
                })
    return {"results_dir": str(report.results_dir), "scale": "0-100",
            "tasks": [{"name": t.name, "kind": t.kind, "metrics": t.metrics} for t in report.tasks],
            "rows": [{"row": i, "model": m, "runs": {t: c.run.run_id for t, c in row.items()}}
                     for i, (m, row) in enumerate(report.rows)],
            "cells": cells, "footnotes": footnotes(report), "hidden_runs": report.hidden_runs}


def write_report_files(report: Report, directory: Path) -> dict[str, Path]:
    """LEADERBOARD.md and LEADERBOARD.csv in ``directory``."""
    directory = Path(directory)
    paths = {"markdown": directory / "LEADERBOARD.md", "csv": directory / "LEADERBOARD.csv"}
    paths["markdown"].write_text(to_markdown(report), encoding="utf-8")
    paths["csv"].write_text(to_csv(report), encoding="utf-8")
    return paths


def dumps(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)
