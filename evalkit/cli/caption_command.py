"""`evalkit caption`: caption your own images (files, folders, glob patterns, URLs) with any BLIP-2 model.

The output helpers defined here (table cells, summary line, JSONL records) are shared by `evalkit ask` and
`evalkit chat`; the flags they share are in :mod:`evalkit.cli.model_options`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from evalkit.cli.model_options import (BATCH_SIZE, DEVICE, DTYPE, IMAGE_SIZE, JSONL, LENGTH_PENALTY,
                                        MAX_NEW_TOKENS, MIN_NEW_TOKENS, MODEL, NUM_BEAMS, PROMPT_VARIANT, QUIET,
                                        REPETITION_PENALTY, SKIP_BAD_IMAGES, URL_TIMEOUT, load_model,
                                        protocol_overrides)

out = Console()
err = Console(stderr=True)


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
    """A progress bar unless --quiet or stderr is not a terminal."""
    return not quiet and sys.stderr.isatty()


def answer_cell(text: str, status: str, error: str) -> str:
    """The answer, or why it failed in red."""
    return text if status == "ok" else f"[red]failed: {error}[/red]"


def print_summary(records: list, noun: str, jsonl: Optional[Path]) -> None:
    """The line under the table: how many records, the protocol fingerprint, and where the records went."""
    count = f"{len(records)} {noun}{'s' if len(records) != 1 else ''}"
    saved = f" · records: {jsonl}" if jsonl else ""
    out.print(f"{count} · protocol {records[0].protocol_fingerprint[:12]}{saved}", highlight=False)


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

    flags = protocol_overrides(num_beams=num_beams, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                      length_penalty=length_penalty, repetition_penalty=repetition_penalty, image_size=image_size)
    inputs = resolve_images(images, notice, url_timeout, skip_bad_images)  # bad input fails before the model loads
    loaded = load_model(model, "caption", device, dtype, batch_size)
    records = loaded.caption(inputs, prompt, prompt_variant=prompt_variant, skip_bad_images=skip_bad_images,
                             progress=show_progress(quiet), **flags)
    write_jsonl(jsonl, records)
    _print_captions(loaded.name, records)
    print_summary(records, "image", jsonl)


def _print_captions(model_name: str, records: list) -> None:
    """A table of the images and their captions, titled with the model and the prompt."""
    table = Table(title=f"{model_name} · {'prompt ' + repr(records[0].prompt) if records[0].prompt else 'no prompt'}")
    table.add_column("image", overflow="fold")
    table.add_column("caption")
    for record in records:
        table.add_row(record.image, answer_cell(record.caption, record.status, record.error))
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add `caption` to the evalkit app."""
    app.command()(caption)
