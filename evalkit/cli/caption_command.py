"""`evalkit caption`: caption your own images (files, folders, glob patterns, URLs) with any BLIP-2 model.

The model, device and protocol flags defined here are shared by `evalkit ask` and `evalkit chat`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from evalkit.core.errors import EvalkitError

out = Console()
err = Console(stderr=True)

MODEL = typer.Option(None, "--model", "-m",
                     help="registry name, hub id or local checkpoint folder (default: the task's model)")
DEVICE = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps")
DTYPE = typer.Option(None, help="float32, float16 or bfloat16 (default: per model family)")
BATCH_SIZE = typer.Option(None, help="images (or questions) per batch (default: 8 on CPU, 32 on GPU)")
PROMPT_VARIANT = typer.Option(None, help="a named prompt of the task (captions: paper, none; questions: "
                                                "short-answer, answer)")
NUM_BEAMS = typer.Option(None, help="beam count")
MAX_NEW_TOKENS = typer.Option(None, help="most new tokens")
MIN_NEW_TOKENS = typer.Option(None, help="fewest new tokens")
LENGTH_PENALTY = typer.Option(None, help="beam length penalty")
REPETITION_PENALTY = typer.Option(None, help="repetition penalty")
IMAGE_SIZE = typer.Option(None, help="image size in px (default: the checkpoint's processor)")
JSONL = typer.Option(None, "--jsonl", help="also write one JSON record per answer to this file")
SKIP_BAD_IMAGES = typer.Option(False, help="record an undecodable image as failed and go on")
URL_TIMEOUT = typer.Option(30.0, help="seconds to fetch each http(s) image")
QUIET = typer.Option(False, "--quiet", "-q", help="no progress bar")


def default_model(model: Optional[str], use: str) -> str:
    """The model asked for, or the default model of the task this use takes its protocol from."""
    from evalkit.api.model import TASKS_BY_USE
    from evalkit.core.registry import get_task

    return model or get_task(TASKS_BY_USE[use][0]).default_model


def load_model(model: Optional[str], use: str, device: str, dtype: Optional[str], batch_size: Optional[int]):
    """The loaded model, with a positive batch size checked before the (slow) load."""
    from evalkit.api.model import load

    if batch_size is not None and batch_size < 1:
        raise EvalkitError(f"--batch-size must be positive (got {batch_size})")
    return load(default_model(model, use), device=device, dtype=dtype, batch_size=batch_size)


def overrides(**flags) -> dict:
    """Protocol fields set on the command line, checked as `evalkit run` checks them."""
    from evalkit.cli.run_command import protocol_overrides

    return protocol_overrides(**flags)


def notice(line: str) -> None:
    """A skipped input file, on stderr."""
    err.print(f"[yellow]{line}[/yellow]", highlight=False, soft_wrap=True)


def write_jsonl(path: Optional[Path], records: Iterable) -> None:
    """One JSON object per record; nothing when no path was given."""
    if path is None:
        return
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")


def show_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def answer_cell(text: str, status: str, error: str) -> str:
    return text if status == "ok" else f"[red]failed: {error}[/red]"


def caption(
    images: List[str] = typer.Argument(..., help="image files, folders, glob patterns or http(s) URLs"),
    model: Optional[str] = MODEL,
    prompt: Optional[str] = typer.Option(None, help='text the caption continues, e.g. "a photo of" (default: none)'),
    prompt_variant: Optional[str] = PROMPT_VARIANT,
    num_beams: Optional[int] = NUM_BEAMS,
    max_new_tokens: Optional[int] = MAX_NEW_TOKENS,
    min_new_tokens: Optional[int] = MIN_NEW_TOKENS,
    length_penalty: Optional[float] = LENGTH_PENALTY,
    repetition_penalty: Optional[float] = REPETITION_PENALTY,
    image_size: Optional[int] = IMAGE_SIZE,
    dtype: Optional[str] = DTYPE,
    device: str = DEVICE,
    batch_size: Optional[int] = BATCH_SIZE,
    jsonl: Optional[Path] = JSONL,
    skip_bad_images: bool = SKIP_BAD_IMAGES,
    url_timeout: float = URL_TIMEOUT,
    quiet: bool = QUIET,
) -> None:
    """Caption images with the `coco-caption` protocol (unprompted unless --prompt), batched."""
    from evalkit.api.image_inputs import resolve_images

    flags = overrides(num_beams=num_beams, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                      length_penalty=length_penalty, repetition_penalty=repetition_penalty, image_size=image_size)
    inputs = resolve_images(images, notice, url_timeout)  # bad input fails before the model loads
    loaded = load_model(model, "caption", device, dtype, batch_size)
    records = loaded.caption(inputs, prompt, prompt_variant=prompt_variant, skip_bad_images=skip_bad_images,
                             progress=show_progress(quiet), **flags)
    write_jsonl(jsonl, records)
    table = Table(title=f"{loaded.name} · {'prompt ' + repr(records[0].prompt) if records[0].prompt else 'no prompt'}")
    table.add_column("image", overflow="fold")
    table.add_column("caption")
    for record in records:
        table.add_row(record.image, answer_cell(record.caption, record.status, record.error))
    out.print(table)
    count = f"{len(records)} image{'s' if len(records) != 1 else ''}"
    saved = f" · records: {jsonl}" if jsonl else ""
    out.print(f"{count} · protocol {records[0].protocol_fingerprint[:12]}{saved}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `caption` to the evalkit app."""
    app.command()(caption)
