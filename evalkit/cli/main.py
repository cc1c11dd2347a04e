"""The `evalkit` command: one thin subcommand per stage over the library functions."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from evalkit.core.errors import EvalkitError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Paper-grade, batched, resumable evaluation of BLIP-2 vision-language models.")
list_app = typer.Typer(no_args_is_help=True, help="List registered models or tasks.")
score_app = typer.Typer(no_args_is_help=True, help="Score a predictions file alone, without a model.")
app.add_typer(list_app, name="list")
app.add_typer(score_app, name="score")
out = Console()
err_console = Console(stderr=True)


def main() -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit, never a traceback."""
    try:
        code = app(standalone_mode=False)  # typer.Exit(code) comes back as a return value in this mode
        if isinstance(code, int) and code:
            sys.exit(code)
    except EvalkitError as err:
        err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted; run the same command again to resume where it stopped")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as err:  # noqa: BLE001
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(1)
        if os.environ.get("EVALKIT_DEBUG"):
            raise
        err_console.print(f"[red]internal error:[/red] {type(err).__name__}: {err} "
                          "(set EVALKIT_DEBUG=1 for the traceback)", highlight=False, soft_wrap=True)
        sys.exit(1)


def _parse_columns(pairs: list[str]) -> dict[str, str]:
    columns = {}
    for pair in pairs:
        if "=" not in pair:
            raise EvalkitError(f"--column takes NAME=COLUMN, got {pair!r}")
        name, column = pair.split("=", 1)
        columns[name.strip()] = column.strip()
    return columns


@app.command()
def run(
    task: str = typer.Argument(..., help="task name (see `evalkit list tasks`)"),
    model: str = typer.Option(None, "--model", "-m", help="registry name, hub id or local checkpoint folder"),
    data: Optional[str] = typer.Option(None, help="data file or folder, or hf:DATASET_ID"),
    split: Optional[str] = typer.Option(None, help="split (default: the task's, e.g. Karpathy test)"),
    images: Optional[Path] = typer.Option(None, help="image folder, when not beside the annotation file"),
    column: List[str] = typer.Option([], help="HF dataset column mapping NAME=COLUMN (repeatable)"),
    limit: Optional[int] = typer.Option(None, help="first N samples only (the result is marked non-reportable)"),
    batch_size: Optional[int] = typer.Option(None, help="samples per batch (default: 8 on CPU, 32 on GPU)"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps"),
    dtype: Optional[str] = typer.Option(None, help="float32, float16 or bfloat16 (default: per model family)"),
    prompt: Optional[str] = typer.Option(None, help="prompt template; {question} is the question; '' = none"),
    prompt_variant: Optional[str] = typer.Option(None, help="a named prompt of the task"),
    num_beams: Optional[int] = typer.Option(None, help="beam count"),
    max_new_tokens: Optional[int] = typer.Option(None, help="most new tokens"),
    min_new_tokens: Optional[int] = typer.Option(None, help="fewest new tokens"),
    length_penalty: Optional[float] = typer.Option(None, help="beam length penalty"),
    repetition_penalty: Optional[float] = typer.Option(None, help="repetition penalty"),
    image_size: Optional[int] = typer.Option(None, help="image size in px (default: the checkpoint's processor)"),
    chat: Optional[bool] = typer.Option(None, "--chat/--single-turn", help="VQA: one conversation per image"),
    vqa_metric: str = typer.Option("official", help="VQA accuracy: official, lavis or lmms"),
    k: Optional[int] = typer.Option(None, "--k", help="retrieval: ITC shortlist size re-ranked by ITM"),
    no_rerank: bool = typer.Option(False, "--no-rerank", help="retrieval: ITC similarity only"),
    scores: bool = typer.Option(False, "--scores", help="retrieval: also save the image x text score matrix"),
    results: Path = typer.Option(Path("results"), "--results", help="results folder"),
    run_id: Optional[str] = typer.Option(None, help="run folder name (default: derived from the inputs)"),
    overwrite: bool = typer.Option(False, help="discard an existing journal for this run and start again"),
    skip_bad_images: bool = typer.Option(False, help="record missing/undecodable images as failed and go on"),
    include_path: List[str] = typer.Option([], help="folder of extra task files (repeatable)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    json_out: bool = typer.Option(False, "--json", help="print run.json instead of a table"),
) -> None:
    """Run a task with a model: batched, resumable, scored with the official metric."""
    from evalkit.engine.evaluate import run_task
    from evalkit.core.run_options import RunOptions
    from evalkit.core.registry import get_task

    spec = get_task(task, include_path)
    model = model or spec.default_model
    if not model:
        raise EvalkitError(f"task {task} needs --model")
    candidates = {"prompt": prompt, "num_beams": num_beams, "max_new_tokens": max_new_tokens,
                  "min_new_tokens": min_new_tokens, "length_penalty": length_penalty,
                  "repetition_penalty": repetition_penalty, "image_size": image_size, "dtype": dtype,
                  "chat": chat, "rerank_k": k}
    overrides = {key: value for key, value in candidates.items() if value is not None}
    if no_rerank:
        overrides["rerank"] = False
    for key in ("num_beams", "max_new_tokens", "image_size", "rerank_k"):
        if key in overrides and overrides[key] < (0 if key == "rerank_k" else 1):
            raise EvalkitError(f"--{key.replace('_', '-')} must be positive (got {overrides[key]})")
    options = RunOptions(task=task, model=model, data=data, split=split, images=images,
                         columns=_parse_columns(column), limit=limit, batch_size=batch_size, device=device,
                         overrides=overrides, prompt_variant=prompt_variant, vqa_metric=vqa_metric,
                         results_dir=results, run_id=run_id, overwrite=overwrite, skip_bad_images=skip_bad_images,
                         include_paths=tuple(include_path), export_scores=scores,
                         show_progress=not quiet and sys.stderr.isatty())
    outcome = run_task(options)
    if json_out:
        print(json.dumps(outcome.record, indent=2))
        return
    print_run_summary(outcome.record, outcome.run_dir)


def print_run_summary(record: dict, run_dir: Path) -> None:
    """A pasteable table of one run's metrics, and where its files are."""
    table = Table(title=f"{record['task']['name']} · {record['model']['name']}")
    table.add_column("metric")
    table.add_column(f"value ({record['scale']})", justify="right")
    for name, metric in record["metrics"].items():
        table.add_row(name, f"{metric['value']:.2f}")
    out.print(table)
    counts = record["counts"]
    out.print(f"samples {counts['samples']}  empty {counts['empty_predictions']}  failed {counts['failed']}  "
              f"resumed {counts['resumed_from_journal']}  protocol {record['protocol_fingerprint'][:12]}")
    if not record["reportable"]:
        out.print(f"[yellow]not reportable:[/yellow] {'; '.join(record['not_reportable_reasons'])}")
    out.print(f"run record: {Path(run_dir) / 'run.json'}")


@app.command()
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
    from evalkit.cli.demo_command import print_demo, run_demo

    table, records = run_demo(results, batch_size, device, show_progress=not quiet and sys.stderr.isatty(), chat=chat,
                              models_dir=models_dir)
    print_demo(table, records, results)


@list_app.command("models")
def list_models() -> None:
    """Registered checkpoints (any hub id or local folder works too)."""
    from evalkit.models.catalog import MODELS

    table = Table()
    for name in ("name", "source", "family", "image size", "what"):
        table.add_column(name)
    for entry in MODELS.values():
        source = f"evalkit:{entry.name} (bundled)" if entry.builtin else entry.source
        table.add_row(entry.name, source, entry.family, str(entry.image_size), entry.description)
    out.print(table)


@list_app.command("tasks")
def list_tasks(include_path: List[str] = typer.Option([], help="folder of extra task files")) -> None:
    """Registered tasks with their kind and default data."""
    from evalkit.core.registry import all_tasks

    table = Table()
    for name in ("task", "kind", "version", "default split", "what"):
        table.add_column(name)
    for spec in all_tasks(include_path).values():
        table.add_row(spec.name, spec.kind, spec.version, spec.default_split, spec.description)
    out.print(table)


@score_app.command("coco-caption")
def score_coco_caption(
    annotations: Path = typer.Option(..., help="COCO-format caption annotations (captions_*.json)"),
    predictions: Path = typer.Option(..., help='official result format: [{"image_id":..,"caption":..}]'),
    json_out: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Score a captions file with pycocoevalcap (BLEU, METEOR, ROUGE-L, CIDEr; SPICE when offline-capable)."""
    from evalkit.data.coco_caption_files import score_caption_files

    scores = score_caption_files(annotations, predictions)
    if json_out:
        print(json.dumps({"scale": scores.scale, "n_images": scores.n_images, "metrics": scores.corpus,
                          "skipped": scores.skipped}, indent=2))
        return
    table = Table(title=f"coco-caption · {predictions.name} · {scores.n_images} images")
    table.add_column("metric")
    table.add_column("value (0-100)", justify="right")
    for name, value in scores.corpus.items():
        table.add_row(name, f"{value:.2f}")
    for name, reason in scores.skipped.items():
        table.add_row(name, f"skipped: {reason}")
    out.print(table)


@score_app.command("vqav2")
def score_vqav2(
    questions: Path = typer.Option(..., help="v2_OpenEnded_mscoco_*_questions.json"),
    annotations: Path = typer.Option(..., help="v2_mscoco_*_annotations.json"),
    predictions: Path = typer.Option(..., help='official result format: [{"question_id":..,"answer":..}]'),
    vqa_metric: str = typer.Option("official", help="official, lavis or lmms"),
    json_out: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Score VQA answers with the official VQA accuracy (vqaEval.py rules, quirks included)."""
    from evalkit.data.vqav2_files import score_vqa_files

    scores = score_vqa_files(questions, annotations, predictions, variant=vqa_metric)
    if json_out:
        print(json.dumps(scores.to_json(), indent=2))
        return
    table = Table(title=f"vqav2 · {predictions.name} · {scores.n} questions · {vqa_metric}")
    table.add_column("answer type")
    table.add_column("accuracy (0-100)", justify="right")
    table.add_row("overall", f"{scores.overall:.2f}")
    for name, value in sorted(scores.per_answer_type.items()):
        table.add_row(name, f"{value:.2f}")
    out.print(table)


def _register_report_commands() -> None:
    from evalkit.cli.report_commands import register

    register(app)


_register_report_commands()

if __name__ == "__main__":
    main()
