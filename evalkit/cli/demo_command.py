"""`evalkit demo`: every shapes task with every bundled model, offline, then one comparison table."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from evalkit.cli.name_table import print_name_table
from evalkit.core.errors import EvalkitError
from evalkit.core.run_options import RunOptions

DEMO_RUNS = [  # (task, model)
    ("shapes-caption", "blip2-tiny-opt"), ("shapes-caption", "blip2-tiny-t5"),
    ("shapes-vqa", "blip2-tiny-opt"), ("shapes-vqa", "blip2-tiny-t5"),
    ("shapes-retrieval", "blip2-tiny-itm"),
]
CHAT_RUNS = [("shapes-chat", "blip2-tiny-opt"), ("shapes-chat", "blip2-tiny-t5")]
DEMO_BATCH_SIZE = 32  # tiny models: big CPU batches amortise the per-step Python overhead of generate
TABLE_TITLE = "evalkit demo · shapes test split · scores 0-100"
COLUMNS = [("shapes-caption", "BLEU-4"), ("shapes-caption", "CIDEr"), ("shapes-vqa", "accuracy"),
           ("shapes-chat", "accuracy"), ("shapes-retrieval", "txt_r1"), ("shapes-retrieval", "img_r1")]


def run_demo(results_dir: Path, batch_size: int | None, device: str, show_progress: bool,
             chat: bool = False, models_dir: Path | None = None, rescore: bool = False) -> list:
    """Run the demo grid (resuming what is already done, returning the recorded result of what is complete); the
    RunOutcome of each run.

    ``models_dir`` replaces the bundled models with same-named checkpoint folders in it (e.g. the
    output of scripts/train_demo_models.py), to check a retrain against the shipped weights.
    """
    from evalkit.engine.evaluate import run_task  # torch and transformers: only when the demo runs

    runs = DEMO_RUNS + (CHAT_RUNS if chat else [])
    if models_dir is not None:
        missing = sorted({m for _, m in runs if not (models_dir / m / "config.json").is_file()})
        if missing:
            raise EvalkitError(f"--models-dir {models_dir}: no checkpoint folder {', '.join(missing)} "
                               "(expected the layout written by scripts/train_demo_models.py)")
        runs = [(task, str(models_dir / model)) for task, model in runs]
    outcomes = []
    for task, model in runs:
        options = RunOptions(task=task, model=model, results_dir=results_dir, batch_size=batch_size or DEMO_BATCH_SIZE,
                             device=device, show_progress=show_progress, rescore=rescore)
        outcomes.append(run_task(options))
    return outcomes


def demo_table(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): rows = models, columns = task headline metrics (0-100)."""
    columns = [c for c in COLUMNS if any(r["task"]["name"] == c[0] for r in records)]
    headers = ["model"] + [f"{task.removeprefix('shapes-')} {metric}" for task, metric in columns]
    rows = []
    for model in dict.fromkeys(r["model"]["name"] for r in records):
        cells = []
        for task, metric in columns:
            found = [r for r in records if r["model"]["name"] == model and r["task"]["name"] == task]
            cells.append(f"{found[0]['metrics'][metric]['value']:.1f}" if found else "—")
        rows.append([model, *cells])
    return headers, rows


def print_demo(outcomes: list, results_dir: Path, seconds: float) -> None:
    """The table, then what ran (or was already complete) and where the records are."""
    console = Console()
    headers, rows = demo_table([o.record for o in outcomes])
    print_name_table(console, headers, rows, title=TABLE_TITLE, numeric=tuple(range(1, len(headers))))
    reused = sum(1 for o in outcomes if o.reused)
    ran = len(outcomes) - reused
    done = (f"{ran} runs in {seconds:.0f} s" if not reused else
            f"{reused} of {len(outcomes)} runs already complete (their recorded results; `--rescore` re-scores them)"
            + (f", {ran} run" if ran else "") + f", {seconds:.1f} s")
    Console(stderr=True).print(f"{done} · records under {results_dir}/ · `evalkit report` for the leaderboard",
                               highlight=False, soft_wrap=True)


def demo(
    results: Path = typer.Option(Path("results"), "--results", help="results folder"),
    batch_size: Optional[int] = typer.Option(None, help="samples per batch"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    chat: bool = typer.Option(False, "--chat", help="also run shapes-chat (multi-turn) with both generators"),
    models_dir: Optional[Path] = typer.Option(None, "--models-dir",
                                              help="use the blip2-tiny-* folders here instead of the bundled ones"),
    rescore: bool = typer.Option(False, "--rescore", help="score complete runs again (nothing generated)"),
) -> None:
    """Run the shapes tasks with the bundled tiny models (offline, CPU, about 30 s)."""
    started = time.perf_counter()
    outcomes = run_demo(results, batch_size, device, show_progress=not quiet and sys.stderr.isatty(), chat=chat,
                        models_dir=models_dir, rescore=rescore)
    print_demo(outcomes, results, time.perf_counter() - started)


def register(app: typer.Typer) -> None:
    """Add `demo` to the evalkit app."""
    app.command()(demo)
