"""`evalkit chat`: a conversation about one image in the terminal (the `vqav2-chat` protocol).

Each question is asked with the earlier questions and the model's answers in the prompt; when they no
longer fit the context (min(512, the LM's positions) less the query tokens and the answer budget), the
oldest turns are left out and a notice says so. `/reset` starts again, `/quit` (or Ctrl-D) ends.
`--script TURNS.txt` reads the turns from a file instead; piped stdin works the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable, Iterator, Optional

import typer

from evalkit.cli.caption_command import write_jsonl
from evalkit.cli.model_options import (DEVICE, DTYPE, IMAGE_SIZE, JSONL, LENGTH_PENALTY, MAX_NEW_TOKENS,
                                        MIN_NEW_TOKENS, MODEL, NUM_BEAMS, PROMPT_VARIANT, REPETITION_PENALTY,
                                        SAMPLE, SEED, TEMPERATURE, TOP_P, URL_TIMEOUT, load_model,
                                        protocol_overrides)
from evalkit.core.errors import EvalkitError

COMMANDS = {"/reset": "forget the conversation so far", "/quit": "leave"}


def chat(
    image: str = typer.Argument(..., help="an image file or http(s) URL"),
    model: Optional[str] = MODEL,
    script: Optional[Path] = typer.Option(None, help="read the turns from this file, one per line (/reset, /quit too)"),
    prompt: Optional[str] = typer.Option(None, help="prompt template of the current turn; {question} is the question"),
    prompt_variant: Optional[str] = PROMPT_VARIANT,
    num_beams: Optional[int] = NUM_BEAMS,
    max_new_tokens: Optional[int] = MAX_NEW_TOKENS,
    min_new_tokens: Optional[int] = MIN_NEW_TOKENS,
    length_penalty: Optional[float] = LENGTH_PENALTY,
    repetition_penalty: Optional[float] = REPETITION_PENALTY,
    sample: bool = SAMPLE,
    temperature: Optional[float] = TEMPERATURE,
    top_p: Optional[float] = TOP_P,
    seed: Optional[int] = SEED,
    image_size: Optional[int] = IMAGE_SIZE,
    dtype: Optional[str] = DTYPE,
    device: str = DEVICE,
    jsonl: Optional[Path] = JSONL,
    url_timeout: float = URL_TIMEOUT,
) -> None:
    """Chat about an image: earlier turns stay in the prompt; /reset starts again, /quit ends."""
    flags = protocol_overrides(num_beams=num_beams, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                      length_penalty=length_penalty, repetition_penalty=repetition_penalty, image_size=image_size,
                      do_sample=sample, temperature=temperature, top_p=top_p, seed=seed)
    turns = _script_lines(script) if script is not None else None
    conversation = _start_conversation(image, model, device, dtype, url_timeout,
                                       prompt=prompt, prompt_variant=prompt_variant, **flags)
    interactive = turns is None and sys.stdin.isatty()
    lines = turns if turns is not None else _typed_lines(interactive)
    records = []
    try:
        _converse(conversation, lines, interactive, records)
    except KeyboardInterrupt:
        _say("")
    finally:
        write_jsonl(jsonl, records)


def _start_conversation(image: str, model: Optional[str], device: str, dtype: Optional[str], url_timeout: float,
                        **chat_options):
    """The conversation about the image, announced with its model, protocol and context budget."""
    from evalkit.api.image_inputs import resolve_each
    from evalkit.api.model import task_for

    inputs = resolve_each([image], url_timeout)  # bad input fails before the model loads
    loaded = load_model(model, "chat", device, dtype, None)
    conversation = loaded.chat(inputs, url_timeout_s=url_timeout, **chat_options)
    task = task_for("chat", loaded.entry).name
    _say(f"chat with {loaded.name} about {conversation.image}\n"
         f"protocol {task} {conversation.fingerprint[:12]} · context {conversation.context_tokens} tokens "
         f"({conversation.generator.num_query_tokens} for the image, "
         f"{conversation.protocol.max_new_tokens} for the answer) · /reset starts again, /quit ends")
    return conversation


def _converse(conversation, lines: Iterable[str], interactive: bool, records: list) -> None:
    """Each line a question or a command, until /quit or the last line; answered turns go into ``records``."""
    dropped = 0
    for line in lines:
        text = line.strip()
        if not text:
            continue
        if not interactive:
            _say(f"you> {text}")
        if text == "/quit":
            break
        if text == "/reset":
            conversation.reset()
            dropped = 0
            _say("(conversation reset)")
            continue
        if text.startswith("/"):
            _say("commands: " + ", ".join(f"{name} ({what})" for name, what in COMMANDS.items()))
            continue
        turn = _ask(conversation, text, dropped)
        if turn is not None:
            dropped = turn.dropped_turns
            records.append(turn)
            _say(f"model> {turn.answer}")


def _ask(conversation, text: str, dropped: int):
    """The turn answering ``text``, with a notice when more old turns no longer fit; None after an error."""
    from evalkit.api.conversation import dropped_notice

    try:
        turn = conversation.ask(text)
    except EvalkitError as error:  # a too-long question ends the turn, not the conversation
        _say(f"error: {error}")
        return None
    notice = dropped_notice(turn, dropped)
    if notice:
        _say(notice)
    return turn


def _say(text: str) -> None:
    print(text, flush=True)


def _script_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise EvalkitError(f"script {path} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise EvalkitError(f"cannot read script {path}: {type(error).__name__}") from None


def _typed_lines(interactive: bool) -> Iterator[str]:
    """Lines typed at the terminal (with line editing where readline exists), or piped stdin."""
    if not interactive:
        yield from sys.stdin
        return
    try:
        import readline  # noqa: F401 - importing it gives input() line editing and history
    except ImportError:
        pass
    while True:
        try:
            yield input("you> ")
        except EOFError:
            _say("")
            return


def register(app: typer.Typer) -> None:
    """Add `chat` to the evalkit app."""
    app.command()(chat)
