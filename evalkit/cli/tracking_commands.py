"""`evalkit log` (runs to MLflow / W&B) and `evalkit export model-index` (the hub model card's results)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from evalkit.core.errors import EvalkitError

export_app = typer.Typer(no_args_is_help=True, help="Write run results in other tools' formats.")


def log(
    run_dirs: List[Path] = typer.Argument(..., metavar="RUN_DIR...", help="finished run folders (with run.json)"),
    to: List[str] = typer.Option(..., "--to", help="mlflow or wandb (repeatable)"),
) -> None:
    """Log finished runs to an experiment tracker (again: the same tracker run is updated, never duplicated)."""
    from evalkit.tracking.log_runs import check_trackers, failure_lines, log_run

    trackers = check_trackers(to)
    for run_dir in run_dirs:
        if not (run_dir / "run.json").is_file():
            raise EvalkitError(f"{run_dir}: no run.json (not a finished run folder)")
    failed = 0
    for run_dir in run_dirs:
        outcomes = log_run(run_dir, trackers)
        for line in failure_lines(run_dir, outcomes):
            print(f"warning: {line}", file=sys.stderr)
            failed += 1
        for tracker, outcome in outcomes.items():
            if outcome.get("status") == "ok":
                print(f"{run_dir}: logged to {tracker} (run {outcome.get('run_id')})")
    if failed:
        raise typer.Exit(1)


def model_index(
    run_dirs: List[Path] = typer.Argument(..., metavar="RUN_DIR...", help="finished run folders of one model"),
    out: Optional[Path] = typer.Option(None, "--out", help="model card (README.md) to write, merged when it exists"),
    allow_non_reportable: bool = typer.Option(False, "--allow-non-reportable",
                                              help="export non-reportable runs too, marked as such"),
) -> None:
    """The model card's `model-index` block for these runs (printed, or merged into --out)."""
    from evalkit.tracking.model_index import export_model_index

    card = export_model_index(run_dirs, out, allow_non_reportable)
    if out is None:
        sys.stdout.write(card if card.endswith("\n") else card + "\n")
    else:
        print(f"wrote {out}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Add `log` and `export model-index` to the evalkit app."""
    app.command()(log)
    export_app.command("model-index")(model_index)
    app.add_typer(export_app, name="export")
