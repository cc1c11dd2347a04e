"""`evalkit run TASK,TASK --model M,M`: the task x model matrix, one resumable run per cell, then one table.

Each cell is exactly the run `evalkit run TASK --model M` does (same options, same run folder). Every task and
model name is checked before the first cell runs; a cell that fails (a bad pairing, missing data, ...) is
reported and the others go on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from evalkit.cli.name_table import print_name_table
from evalkit.core.errors import EvalkitError
from evalkit.core.run_options import RunOptions


@dataclass(frozen=True)
class SweepCell:
    """One (task, model) run of a sweep: its record when it succeeded, its one-line reason when not."""

    task: str
    model: str  # the model's registry (or folder) name, as in the table
    headline: tuple[str, ...] = ()  # the task kind's headline metrics
    run_dir: Path | None = None
    record: dict | None = None
    error: str = ""
    exit_code: int = 0  # 0 = succeeded; the error's exit code otherwise (2 for bad input, 1 internal)


def split_names(value: str, option: str) -> list[str]:
    """'a,b,a' -> ['a', 'b'] (order kept, repeats dropped); an empty name is a one-line error."""
    names = [name.strip() for name in value.split(",")]
    if any(not name for name in names):
        raise EvalkitError(f"{option} {value!r} has an empty name (separate names with single commas)")
    return list(dict.fromkeys(names))


def plan_sweep(tasks: list[str], models: list[str], include_paths: list[str]) -> list[tuple[str, str, SweepCell]]:
    """The cells (task, model argument, empty cell) in run order; every name is checked before any cell runs."""
    from evalkit.core.registry import get_task
    from evalkit.models.catalog import resolve_model

    specs = [get_task(task, include_paths) for task in tasks]
    entries = {model: resolve_model(model) for model in models}
    cells = []
    for spec in specs:
        task_models = models or ([spec.default_model] if spec.default_model else [])
        if not task_models:
            raise EvalkitError(f"task {spec.name} needs --model")
        for model in task_models:
            entry = entries.get(model) or resolve_model(model)
            cells.append((spec.name, model, SweepCell(spec.name, entry.name, headline=spec.kind.headline_metrics)))
    return cells


def run_sweep(cells: list[tuple[str, str, SweepCell]], options: RunOptions, after_cell=None) -> list[SweepCell]:
    """Run every cell with ``options`` (task and model replaced); a failing cell is recorded, not raised.
    ``after_cell(run_dir)``, when given, runs after each successful cell and returns its record as it is then."""
    from evalkit.engine.evaluate import run_task

    console = Console(stderr=True)  # progress; stdout keeps the table (or --json)
    results = []
    for n, (task, model, planned) in enumerate(cells, 1):
        try:
            outcome = run_task(replace(options, task=task, model=model))
        except EvalkitError as err:
            cell = replace(planned, error=_one_line(str(err)), exit_code=err.exit_code)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # noqa: BLE001 - one broken cell must not stop the sweep
            if os.environ.get("EVALKIT_DEBUG"):
                raise
            cell = replace(planned, error=_one_line(f"internal error: {type(err).__name__}: {err}"), exit_code=1)
        else:
            record = after_cell(outcome.run_dir) if after_cell else outcome.record
            cell = replace(planned, run_dir=outcome.run_dir, record=record)
        status = f"[red]failed[/red]: {escape(cell.error)}" if cell.exit_code else f"ok · {escape(str(cell.run_dir))}"
        console.print(rf"\[{n}/{len(cells)}] {task} · {escape(cell.model)}: {status}", highlight=False, soft_wrap=True)
        results.append(cell)
    return results


def sweep_table(cells: list[SweepCell]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): rows = models, columns = each task's headline metrics; a failed cell reads 'failed'."""
    tasks = list(dict.fromkeys(cell.task for cell in cells))
    columns = []
    for task in tasks:
        headline = next(c.headline for c in cells if c.task == task)
        present = {metric for c in cells if c.task == task and c.record for metric in c.record["metrics"]}
        columns += [(task, metric) for metric in ([m for m in headline if m in present] or headline)]
    rows = []
    for model in dict.fromkeys(cell.model for cell in cells):
        row = [model]
        for task, metric in columns:
            found = [c for c in cells if c.model == model and c.task == task]
            if not found:
                row.append("—")
            elif found[0].exit_code:
                row.append("failed")
            else:
                value = found[0].record["metrics"].get(metric)
                row.append(f"{value['value']:.1f}" if value else "—")
        rows.append(row)
    return ["model", *(f"{task} {metric}" for task, metric in columns)], rows


def print_sweep(cells: list[SweepCell]) -> int:
    """The table, then the failed cells with their reasons; returns the exit code of the sweep."""
    console = Console()
    headers, rows = sweep_table(cells)
    tasks, models = len({c.task for c in cells}), len(rows)
    print_name_table(console, headers, rows, title=f"evalkit run · {tasks} task(s) x {models} model(s) · scores 0-100",
                     numeric=tuple(range(1, len(headers))))
    failed = [c for c in cells if c.exit_code]
    done = len(cells) - len(failed)
    console.print(f"{done} of {len(cells)} cells succeeded", highlight=False)
    if failed:
        console.print(f"failed cells ({len(failed)}):", highlight=False)
        for cell in failed:
            console.print(escape(f"  {cell.task} · {cell.model}: {cell.error}"), highlight=False, soft_wrap=True)
    return sweep_exit_code(cells)


def sweep_exit_code(cells: list[SweepCell]) -> int:
    """0 when every cell succeeded; the first bad-input error's code (2); 1 when only internal errors failed."""
    codes = [c.exit_code for c in cells if c.exit_code]
    return next((code for code in codes if code != 1), codes[0] if codes else 0)


def sweep_json(cells: list[SweepCell]) -> list[dict]:
    """One entry per cell: task, model, status, and the run record or the reason."""
    return [{"task": c.task, "model": c.model, "status": "failed" if c.exit_code else "ok",
             **({"error": c.error, "exit_code": c.exit_code} if c.exit_code else
                {"run_dir": str(c.run_dir), "record": c.record})} for c in cells]


def _one_line(text: str) -> str:
    return " ".join(text.split())
