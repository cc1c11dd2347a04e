"""`evalkit ask`: questions about your own images, with the VQA task's prompt for the model's family."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from evalkit.cli.caption_command import answer_cell, notice, out, print_summary, show_progress, write_jsonl
from evalkit.cli.model_options import (BATCH_SIZE, DEVICE, DTYPE, IMAGE_SIZE, JSONL, LENGTH_PENALTY,
                                        MAX_NEW_TOKENS, MIN_NEW_TOKENS, MODEL, NUM_BEAMS, PROMPT_VARIANT, QUIET,
                                        REPETITION_PENALTY, SKIP_BAD_IMAGES, URL_TIMEOUT, load_model,
                                        protocol_overrides)
from evalkit.core.errors import EvalkitError


def ask(
    image: Optional[str] = typer.Argument(None, help="an image file, folder, glob pattern or http(s) URL"),
    questions: Optional[List[str]] = typer.Argument(None, help="one or more questions, asked of every image"),
    questions_file: Optional[Path] = typer.Option(
        None, "--questions", help='JSONL, one {"image": ..., "question": ...} per line (instead of IMAGE QUESTION)'),
    model: Optional[str] = MODEL,
    prompt: Optional[str] = typer.Option(None, help="prompt template; {question} is the question"),
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
    """Answer questions about images with the `vqav2` protocol (prompt and question preprocessing per family)."""
    flags = protocol_overrides(num_beams=num_beams, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                      length_penalty=length_penalty, repetition_penalty=repetition_penalty, image_size=image_size)
    common = dict(prompt=prompt, prompt_variant=prompt_variant, skip_bad_images=skip_bad_images,
                  progress=show_progress(quiet), **flags)
    inputs, asked, one_each = _inputs_and_questions(image, questions, questions_file, url_timeout,
                                                     skip_bad_images)
    loaded = load_model(model, "ask", device, dtype, batch_size)
    records = (loaded.ask_each if one_each else loaded.ask)(inputs, asked, **common)
    write_jsonl(jsonl, records)
    _print_answers(loaded.name, records)
    print_summary(records, "question", jsonl)


def _inputs_and_questions(image: Optional[str], questions: Optional[List[str]], questions_file: Optional[Path],
                          url_timeout: float, skip_bad_images: bool = False) -> tuple:
    """The resolved images, the questions, and whether each question goes with its own image (--questions)
    rather than every question with every image; bad input fails here, before the model loads."""
    from evalkit.api.image_inputs import resolve_each, resolve_images
    from evalkit.api.questions_file import read_questions_file

    if questions_file is not None:
        if image is not None:
            raise EvalkitError("give IMAGE QUESTION... or --questions FILE.jsonl, not both")
        pairs = read_questions_file(questions_file)
        return resolve_each([image for image, _ in pairs], url_timeout, skip_bad_images), [question for _, question in pairs], True
    if image is None or not questions:
        raise EvalkitError('give an image and at least one question (evalkit ask photo.jpg "what is this?"), '
                           "or --questions FILE.jsonl")
    return resolve_images(image, notice, url_timeout, skip_bad_images), questions, False


def _print_answers(model_name: str, records: list) -> None:
    """A table of the images, questions and answers (titled with the prompt when there is one question)."""
    table = Table(title=f"{model_name} · prompt {records[0].prompt!r}" if len(records) == 1 else model_name)
    table.add_column("image", overflow="fold")
    table.add_column("question")
    table.add_column("answer")
    for record in records:
        table.add_row(record.image, record.question, answer_cell(record.answer, record.status, record.error))
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add `ask` to the evalkit app."""
    app.command()(ask)
