"""`evalkit run`: one task with one model, batched and resumable, scored and recorded."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from evalkit.cli.model_options import (DEVICE, DTYPE, IMAGE_SIZE, LENGTH_PENALTY, MAX_NEW_TOKENS, MIN_NEW_TOKENS,
                                       NUM_BEAMS, QUIET, REPETITION_PENALTY, protocol_overrides)
from evalkit.core.errors import EvalkitError

out = Console()
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's named device maps


def _parse_columns(pairs: list[str]) -> dict[str, str]:
    columns = {}
    for pair in pairs:
        if "=" not in pair:
            raise EvalkitError(f"--column takes NAME=COLUMN, got {pair!r}")
        name, column = pair.split("=", 1)
        columns[name.strip()] = column.strip()
    return columns



def run(
    task: str = typer.Argument(..., help="task name (see `evalkit list tasks`); TASK,TASK,... runs a sweep"),
    model: str = typer.Option(None, "--model", "-m", help="registry name, hub id or local checkpoint folder; "
                                                          "M,M,... runs a sweep (every task with every model)"),
    data: Optional[str] = typer.Option(None, help="data file or folder, or hf:DATASET_ID"),
    split: Optional[str] = typer.Option(None, help="split (default: the task's, e.g. Karpathy test)"),
    images: Optional[Path] = typer.Option(None, help="image folder, when not beside the annotation file"),
    column: List[str] = typer.Option([], help="HF dataset column mapping NAME=COLUMN (repeatable)"),
    limit: Optional[int] = typer.Option(None, help="first N samples only (the result is marked non-reportable)"),
    batch_size: Optional[str] = typer.Option(None, help="samples per batch, or auto: the largest that fits "
                                                       "(default: auto on a GPU, 8 on CPU)"),
    device: str = DEVICE,
    dtype: Optional[str] = DTYPE,
    prompt: Optional[str] = typer.Option(None, help="prompt template; {question} is the question; '' = none"),
    protocol: Optional[str] = typer.Option(None, "--protocol",
                                           help="a named protocol of the task (paper, lavis, ...: `evalkit list tasks`)"),
    prompt_variant: Optional[str] = typer.Option(None, help="a named prompt of the task"),
    num_beams: Optional[int] = NUM_BEAMS,
    max_new_tokens: Optional[int] = MAX_NEW_TOKENS,
    min_new_tokens: Optional[int] = MIN_NEW_TOKENS,
    min_length: Optional[int] = typer.Option(None, help="LAVIS min_length: fewest decoder tokens, BOS + prompt "
                                                        "counted for OPT, the start token for T5 (0 = off)"),
    length_penalty: Optional[float] = LENGTH_PENALTY,
    repetition_penalty: Optional[float] = REPETITION_PENALTY,
    image_size: Optional[int] = IMAGE_SIZE,
    chat: Optional[bool] = typer.Option(None, "--chat/--single-turn", help="VQA: one conversation per image"),
    vqa_metric: str = typer.Option("official", help="VQA accuracy: official, lavis or lmms"),
    k: Optional[int] = typer.Option(None, "--k", help="retrieval: ITC shortlist size re-ranked by ITM"),
    no_rerank: bool = typer.Option(False, "--no-rerank", help="retrieval: ITC similarity only"),
    scores: bool = typer.Option(False, "--scores", help="retrieval: also save the image x text score matrix"),
    results: Path = typer.Option(Path("results"), "--results", help="results folder"),
    run_id: Optional[str] = typer.Option(None, help="run folder name (default: derived from the inputs)"),
    overwrite: bool = typer.Option(False, help="discard an existing journal for this run and start again"),
    rescore: bool = typer.Option(False, "--rescore", help="score a complete run again from its journal (nothing "
                                                          "generated) instead of returning its recorded result"),
    wait: bool = typer.Option(False, "--wait", help="wait for a run holding the run folder instead of refusing"),
    device_map: Optional[str] = typer.Option(None, "--device-map",
                                             help="auto: spread a model too large for one device (accelerate)"),
    attn_implementation: Optional[str] = typer.Option(None, help="eager, sdpa or flash_attention_2 "
                                                                 "(default: transformers', sdpa)"),
    kv_cache: str = typer.Option("auto", help="auto (static on CPU, dynamic on a GPU), dynamic, or static "
                                               "(fixed-size; compiled decoding on a GPU)"),
    image_pipeline: str = typer.Option("lavis", help="lavis (the paper's pixels), or device: resize and normalise "
                                                     "on the GPU (pixels within 1-2 levels; not reportable)"),
    skip_bad_images: bool = typer.Option(False, help="record missing/undecodable images as failed and go on"),
    include_path: List[str] = typer.Option([], help="folder of extra task files (repeatable)"),
    log_to: List[str] = typer.Option([], "--log-to", help="also log the finished run to mlflow or wandb "
                                                         "(repeatable; needs the extra of that name)"),
    quiet: bool = QUIET,
    json_out: bool = typer.Option(False, "--json", help="print run.json instead of a table"),
) -> None:
    """Run a task with a model: batched, resumable, scored with the official metric.

    With several tasks or models (comma-separated), run every task with every model, each cell its own
    resumable run, and end with a model x task table and the cells that failed."""
    options, cells = checked_run_options(dict(locals()))
    trackers = checked_trackers(log_to)
    if cells:
        raise typer.Exit(run_and_print_sweep(cells, options, json_out, trackers))
    run_and_print_task(options, json_out, trackers)


def checked_trackers(names: list[str]) -> list[str]:
    """--log-to: known trackers whose package is installed, checked before anything runs."""
    if not names:
        return []
    from evalkit.tracking.log_runs import check_trackers

    return check_trackers(names)


def log_finished_run(run_dir: Path, trackers: list[str]) -> dict:
    """Log a finished run to its trackers; a tracker's failure is a warning line (and in run.json), never the
    run's. Returns the record as it is now on disk (with its ``tracking`` section)."""
    from evalkit.tracking.log_runs import failure_lines, log_run

    log_run(run_dir, trackers)
    record = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
    for line in failure_lines(Path(run_dir), record.get("tracking") or {}):
        print(f"warning: {line}", file=sys.stderr)
    return record


def checked_run_options(flags: dict) -> tuple:
    """(RunOptions, sweep cells) from `evalkit run`'s flags, each checked before anything loads (a one-line error,
    exit 2); with a sweep, the options are those of its first cell."""
    from evalkit.core.run_options import RunOptions

    flag = SimpleNamespace(**flags)
    task, model, cells = resolve_task_and_model(flag.task, flag.model, flag.include_path)
    batch_size = parse_batch_size(flag.batch_size)
    check_run_options(limit=flag.limit, batch_size=batch_size, results=flag.results, run_id=flag.run_id)
    check_runtime_choices(device_map=flag.device_map, attn_implementation=flag.attn_implementation,
                          kv_cache=flag.kv_cache, image_pipeline=flag.image_pipeline)
    overrides = flag_overrides(flag)
    options = RunOptions(task=task, model=model, data=flag.data, split=flag.split, images=flag.images,
                         columns=_parse_columns(flag.column), limit=flag.limit, batch_size=batch_size,
                         device=flag.device, overrides=overrides, prompt_variant=flag.prompt_variant,
                         protocol_name=flag.protocol, vqa_metric=flag.vqa_metric, results_dir=flag.results,
                         run_id=flag.run_id, overwrite=flag.overwrite, rescore=flag.rescore, wait=flag.wait, device_map=flag.device_map,
                         skip_bad_images=flag.skip_bad_images, attn_implementation=flag.attn_implementation,
                         kv_cache=flag.kv_cache, image_pipeline=flag.image_pipeline,
                         include_paths=tuple(flag.include_path), export_scores=flag.scores,
                         show_progress=not flag.quiet and sys.stderr.isatty())
    return options, cells


def flag_overrides(flag: SimpleNamespace) -> dict:
    """The protocol fields `evalkit run`'s flags set, checked for sign."""
    return protocol_overrides(prompt=flag.prompt, num_beams=flag.num_beams, max_new_tokens=flag.max_new_tokens,
                              min_new_tokens=flag.min_new_tokens, min_length=flag.min_length,
                              length_penalty=flag.length_penalty, repetition_penalty=flag.repetition_penalty,
                              image_size=flag.image_size, dtype=flag.dtype, chat=flag.chat, rerank_k=flag.k,
                              rerank=False if flag.no_rerank else None)


def run_and_print_task(options, json_out: bool, trackers: list[str] = ()) -> None:
    """Run one task with one model, log it to ``trackers``, and print its run.json (--json) or a table of its
    metrics."""
    from evalkit.engine.evaluate import run_task

    outcome = run_task(options)
    if outcome.reused:
        print_reused(outcome.run_dir)
    record = log_finished_run(outcome.run_dir, list(trackers)) if trackers else outcome.record
    if json_out:
        print(json.dumps(record, indent=2))
        return
    print_run_summary(record, outcome.run_dir)


def resolve_task_and_model(task: str, model: str | None, include_path: list[str]):
    """(task, model, sweep cells): one task and its model (the task's default when none is given), or, when TASK or
    --model lists several names (comma-separated), the checked cells of the sweep and its first cell."""
    from evalkit.core.registry import get_task

    sweep = "," in task or (model is not None and "," in model and not Path(model).expanduser().is_dir())
    if sweep:
        from evalkit.cli.sweep import plan_sweep, split_names

        cells = plan_sweep(split_names(task, "TASK"), split_names(model, "--model") if model else [], include_path)
        return cells[0][0], cells[0][1], cells  # the options are checked with the first cell; each cell replaces it
    model = model or get_task(task, include_path).default_model
    if not model:
        raise EvalkitError(f"task {task} needs --model")
    return task, model, []


def run_and_print_sweep(cells, options, json_out: bool, trackers: list[str] = ()) -> int:
    """Run every cell (each logged to ``trackers`` when it succeeds), print the table (or JSON), and return the
    sweep's exit code."""
    from evalkit.cli.sweep import print_sweep, run_sweep, sweep_exit_code, sweep_json

    after_cell = (lambda run_dir: log_finished_run(run_dir, list(trackers))) if trackers else None
    swept = run_sweep(cells, options, after_cell)
    if json_out:
        print(json.dumps(sweep_json(swept), indent=2))
        return sweep_exit_code(swept)
    return print_sweep(swept)


def parse_batch_size(value: str | int | None) -> int | str | None:
    """--batch-size: a whole number, or auto; a one-line error otherwise."""
    if value is None or isinstance(value, int) or value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise EvalkitError(f"--batch-size must be a whole number or auto (got {value!r})") from None


def check_runtime_choices(**chosen: str | None) -> None:
    """--device-map, --attn-implementation, --kv-cache, --image-pipeline: each one of its choices, before loading."""
    from evalkit.models.blip2_generation import KV_CACHES
    from evalkit.models.image_preprocessing import IMAGE_PIPELINES
    from evalkit.models.loading import ATTN_IMPLEMENTATIONS

    choices = {"device_map": DEVICE_MAPS, "attn_implementation": ATTN_IMPLEMENTATIONS, "kv_cache": KV_CACHES,
               "image_pipeline": IMAGE_PIPELINES}
    for name, value in chosen.items():
        if value is not None and value not in choices[name]:
            raise EvalkitError(f"--{name.replace('_', '-')} {value!r} is not one of {', '.join(choices[name])}")


def check_run_options(limit: int | None, batch_size: int | str | None, results: Path, run_id: str | None) -> None:
    """The run options that need no task or model, checked before anything loads (a one-line error, exit 2)."""
    if limit is not None and limit < 1:
        raise EvalkitError(f"--limit must be at least 1 (got {limit})")
    if isinstance(batch_size, int) and batch_size < 1:
        raise EvalkitError(f"--batch-size must be at least 1 (got {batch_size}); leave it out for the default")
    if run_id is not None and (not run_id.strip() or run_id in (".", "..") or any(c in run_id for c in "/\\")):
        raise EvalkitError(f"--run-id must be a plain folder name (got {run_id!r})")
    check_results_folder(Path(results))


def check_results_folder(results: Path) -> None:
    """--results must be a folder (or not exist yet) that this process can write into: the folder itself, or the
    nearest existing folder above it, gets a probe file that is removed at once."""
    import tempfile

    existing = results
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == results else f" ({existing} above it is a file)"
        raise EvalkitError(f"--results {results} is not a folder{where}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise EvalkitError(f"--results {results}: cannot write in {existing} ({err.strerror or type(err).__name__})") \
            from None


def print_reused(run_dir: Path) -> None:
    """The one line saying a complete run was not run again (on stderr, so --json stays clean)."""
    Console(stderr=True).print(f"{run_dir}: already complete with these inputs; its recorded result (nothing "
                               "generated or scored again; --rescore re-scores, --overwrite runs again)",
                               highlight=False, soft_wrap=True)


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


def register(app: typer.Typer) -> None:
    """Add `run` to the evalkit app."""
    app.command()(run)
