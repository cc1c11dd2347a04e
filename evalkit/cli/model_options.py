"""The model, device and protocol flags shared by `evalkit caption`, `evalkit ask` and `evalkit chat`, and the
model load they lead to."""

from __future__ import annotations

from typing import Optional

import typer

from evalkit.core.errors import EvalkitError

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
SAMPLE = typer.Option(False, "--sample", help="nucleus sampling instead of beam search (with --temperature, --top-p, "
                                              "--seed)")
TEMPERATURE = typer.Option(None, help="sampling temperature (with --sample; default 1)")
TOP_P = typer.Option(None, help="nucleus sampling top-p (with --sample; default 1)")
SEED = typer.Option(None, help="sampling seed (with --sample; default 0): the same seed draws the same answer")
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


def protocol_overrides(**flags) -> dict:
    """The protocol fields set on the command line (None = not set), checked for sign; ``do_sample`` False is
    the protocol's default (beam search), so it is left out."""
    overrides = {key: value for key, value in flags.items() if value is not None}
    if overrides.get("do_sample") is False:
        del overrides["do_sample"]
    sampling_only = [key for key in ("temperature", "top_p", "seed") if key in overrides]
    if sampling_only and not overrides.get("do_sample"):
        raise EvalkitError(f"--{sampling_only[0].replace('_', '-')} applies to sampling only: add --sample")
    for key in ("num_beams", "max_new_tokens", "image_size"):
        if key in overrides and overrides[key] < 1:
            raise EvalkitError(f"--{key.replace('_', '-')} must be positive (got {overrides[key]})")
    for key in ("rerank_k", "min_new_tokens", "min_length"):
        if key in overrides and overrides[key] < 0:
            raise EvalkitError(f"--{key.replace('_', '-').replace('rerank-k', 'k')} must be 0 or more "
                               f"(got {overrides[key]})")
    return overrides

