"""`evalkit demo`: every shapes task with every bundled model, offline, then one comparison table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from rich.console import Console
from rich.table import Table

from evalkit.core.errors import EvalkitError
from evalkit.engine.evaluate import run_task
from evalkit.core.run_options import RunOptions

DEMO_RUNS = [  # (task, model)
    ("shapes-caption", "blip2-tiny-opt"), ("shapes-caption", "blip2-tiny-t5"),
    ("shapes-vqa", "blip2-tiny-opt"), ("shapes-vqa", "blip2-tiny-t5"),
    ("shapes-retrieval", "blip2-tiny-itm"),
]
CHAT_RUNS = [("shapes-chat", "blip2-tiny-opt"), ("shapes-chat", "blip2-tiny-t5")]
DEMO_BATCH_SIZE = 32  # tiny models: big CPU batches amortise the per-step Python overhead of generate
COLUMNS = [("shapes-caption", "BLEU-4"), ("shapes-caption", "CIDEr"), ("shapes-vqa", "accuracy"),
           ("shapes-chat", "accuracy"), ("shapes-retrieval", "txt_r1"), ("shapes-retrieval", "img_r1")]


def run_demo(results_dir: Path, batch_size: int | None, device: str, show_progress: bool,
             chat: bool = False, models_dir: Path | None = None) -> tuple[Table, list[dict]]:
    """Run the demo grid (resuming what is already done) and build the model x task table.

    ``models_dir`` replaces the bundled models with same-named checkpoint folders in it (e.g. the
    output of scripts/train_demo_models.py), to check a retrain against the shipped weights.
    """
    runs = DEMO_RUNS + (CHAT_RUNS if chat else [])
    if models_dir is not None:
        missing = sorted({m for _, m in runs if not (models_dir / m / "config.json").is_file()})
        if missing:
            raise EvalkitError(f"--models-dir {models_dir}: no checkpoint folder {', '.join(missing)} "
                               "(expected the layout written by scripts/train_demo_models.py)")
        runs = [(task, str(models_dir / model)) for task, model in runs]
    records = []
    for task, model in runs:
        options = RunOptions(task=task, model=model, results_dir=results_dir, batch_size=batch_size or DEMO_BATCH_SIZE,
                             device=device, show_progress=show_progress)
        records.append(run_task(options).record)
    return demo_table(records), records


def demo_table(records: list[dict]) -> Table:
    """Rows = models, columns = task headline metrics (0-100)."""
    table = Table(title="evalkit demo · shapes test split · scores 0-100")
    table.add_column("model", no_wrap=True)
    columns = [c for c in COLUMNS if any(r["task"]["name"] == c[0] for r in records)]
    for task, metric in columns:
        table.add_column(f"{task.removeprefix('shapes-')} {metric}", justify="right")
    models = list(dict.fromkeys(r["model"]["name"] for r in records))
    for model in models:
        cells = []
        for task, metric in columns:
            found = [r for r in records if r["model"]["name"] == model and r["task"]["name"] == task]
            cells.append(f"{found[0]['metrics'][metric]['value']:.1f}" if found else "—")
        table.add_row(model, *cells)
    return table


def print_demo(table: Table, records: list[dict], results_dir: Path) -> None:
    """The table, then where the records are."""
    console = Console()
    console.print(table)
    seconds = sum(r["runtime"]["wall_seconds"] for r in records)
    console.print(f"{len(records)} runs in {seconds:.0f} s · records under {results_dir}/ · "
                  "`evalkit report` for the leaderboard")


def demo(
    results: Path = typer.Option(Path("results"), "--results", help="results folder"),
    batch_size: Optional[int] = typer.Option(None, help="samples per batch"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    chat: bool = typer.Option(False, "--chat", help="also run shapes-chat (multi-turn) with both generators"),
    models_dir: Optional[Path] = typer.Option(None, "--models-dir",
                                              help="use the blip2-tiny-* folders here instead of the bundled ones"),
) -> None:
    """Run the shapes tasks with the bundled tiny models (offline, CPU, about two minutes)."""
    table, records = run_demo(results, batch_size, device, show_progress=not quiet and sys.stderr.isatty(), chat=chat,
                              models_dir=models_dir)
    print_demo(table, records, results)


def register(app: typer.Typer) -> None:
    """Add `demo` to the evalkit app."""
    app.command()(demo)
