"""`evalkit report` and `evalkit compare`: what to do once the numbers exist.

evalkit/cli/main.py calls :func:`register` to add both commands to the main app.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from evalkit.core.errors import EvalkitError

FORMATS = ("md", "csv", "json")


def report(
    results_dir: Path = typer.Argument(Path("results"), help="results folder (searched recursively for run.json)"),
    format: str = typer.Option("md", "--format", "-f", help="what to print: md (Markdown), csv or json"),
    json_out: bool = typer.Option(False, "--json", help="print JSON (same as --format json)"),
    html: Optional[Path] = typer.Option(None, "--html", help="HTML page path (default: RESULTS_DIR/report.html)"),
    no_html: bool = typer.Option(False, "--no-html", help="do not write the HTML page"),
    write: bool = typer.Option(True, "--write/--no-write",
                               help="write LEADERBOARD.md and LEADERBOARD.csv into RESULTS_DIR"),
    latest: bool = typer.Option(True, "--latest/--all-runs",
                                help="latest run per model/task/split/protocol (default), or every run"),
    run_id: List[str] = typer.Option([], "--run-id", help="show this run instead of its group's latest (repeatable)"),
    model: List[str] = typer.Option([], "--model", "-m", help="only these models (repeatable)"),
    task: List[str] = typer.Option([], "--task", "-t", help="only these tasks (repeatable)"),
    all_metrics: bool = typer.Option(False, "--all-metrics", help="every metric, not just the headline ones"),
    gallery_size: int = typer.Option(30, "--gallery-size", help="HTML: worst samples per run in the gallery"),
    thumb_px: int = typer.Option(96, "--thumb-px", help="HTML: thumbnail size in pixels"),
) -> None:
    """Model x task table of every run (Markdown, CSV, JSON) and a self-contained HTML report."""
    from evalkit.analysis.report import build_report, dumps, to_csv, to_json, to_markdown, write_report_files

    fmt = "json" if json_out else format.lower()
    if fmt not in FORMATS:
        raise EvalkitError(f"--format must be one of {', '.join(FORMATS)} (got {format!r})")
    if gallery_size < 0 or thumb_px < 16:
        raise EvalkitError("--gallery-size must be >= 0 and --thumb-px >= 16")
    built = build_report(results_dir, latest=latest, run_ids=run_id, models=model, tasks=task,
                         all_metrics=all_metrics)
    written = []
    if write:
        written += list(write_report_files(built, results_dir).values())
    if not no_html:
        from evalkit.analysis.report_html import write_html

        written.append(write_html(built, html or Path(results_dir) / "report.html", gallery_size, thumb_px))
    if fmt == "json":
        print(dumps(to_json(built)))
    elif fmt == "csv":
        sys.stdout.write(to_csv(built))
    else:
        sys.stdout.write(to_markdown(built))
    if written:
        print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)


def compare(
    runs: Optional[List[Path]] = typer.Argument(None, metavar="BASELINE CANDIDATE",
                                                help="BASELINE CANDIDATE run folders (or one RUN with --reference)"),
    task: Optional[str] = typer.Option(None, "--task", help="with --models: pick the latest runs of this task"),
    models: Optional[Tuple[str, str]] = typer.Option(None, "--models", help="BASELINE_MODEL CANDIDATE_MODEL"),
    results: Path = typer.Option(Path("results"), "--results", help="results folder for --task/--models"),
    reference: Optional[str] = typer.Option(None, "--reference",
                                            help="compare one run with published numbers: paper, lavis or all"),
    n_boot: int = typer.Option(1000, "--n-boot", help="bootstrap resamples"),
    seed: int = typer.Option(0, "--seed", help="bootstrap seed"),
    tolerance: float = typer.Option(0.0, "--tolerance",
                                    help="points (0-100 scale): regression if CI upper < -tol, "
                                         "improvement if CI lower > +tol"),
    metric: List[str] = typer.Option([], "--metric", help="only these metrics (repeatable); all by default"),
    allow_protocol_change: bool = typer.Option(False, "--allow-protocol-change",
                                               help="compare runs made with different protocols deliberately"),
    strict_env: bool = typer.Option(False, "--strict-env",
                                    help="exit 2 when the runs differ in torch/transformers versions or precision "
                                         "settings (otherwise a warning)"),
    show_changed: int = typer.Option(10, "--show-changed", help="changed samples listed in the table"),
    json_out: bool = typer.Option(False, "--json", help="print JSON (every changed sample included)"),
) -> None:
    """Paired-bootstrap comparison of two runs (exit 0 ok, 1 regression, 2 not comparable), or one run vs the paper."""
    from evalkit.analysis.compare import compare_runs, compare_with_reference, render_comparison, render_reference
    from evalkit.analysis.report import dumps
    from evalkit.analysis.results_index import latest_run, load_run

    paths = list(runs or [])
    if reference is not None:
        if len(paths) != 1 or task or models:
            raise EvalkitError("--reference compares exactly one run folder: evalkit compare RUN --reference paper")
        result = compare_with_reference(load_run(paths[0]), reference)
        print(dumps(result) if json_out else render_reference(result), end="" if not json_out else "\n")
        return
    if models or task:
        if paths or not (models and task):
            raise EvalkitError("use either two run folders or --task TASK --models BASELINE CANDIDATE")
        base, cand = latest_run(results, models[0], task), latest_run(results, models[1], task)
    else:
        if len(paths) != 2:
            raise EvalkitError("compare needs BASELINE and CANDIDATE run folders (or --task T --models A B, "
                               "or RUN --reference paper)")
        base, cand = load_run(paths[0]), load_run(paths[1])
    result = compare_runs(base, cand, n_boot=n_boot, seed=seed, tolerance=tolerance, metrics=metric or None,
                          allow_protocol_change=allow_protocol_change, strict_env=strict_env)
    for warning in result.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    if json_out:
        print(dumps(result))
    else:
        sys.stdout.write(render_comparison(result, show_changed))
    if not result["comparable"]:
        print(f"error: {result['message']}", file=sys.stderr)
    if result["exit_code"]:
        raise typer.Exit(result["exit_code"])


def register(app: typer.Typer) -> None:
    """Add `report` and `compare` to the evalkit app."""
    app.command()(report)
    app.command()(compare)
