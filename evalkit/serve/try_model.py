"""What the "Try a model" tab does with an image: caption it, answer a question, or chat, through evalkit's API.

Each answer is that of `evalkit caption` / `ask` / `chat` with the same model, image and settings: the page's
controls become the same protocol overrides, and the calls are :meth:`evalkit.api.Model.caption`, ``ask`` and
``chat`` (the chat's earlier turns are carried in the page and handed back to a
:class:`~evalkit.api.conversation.Conversation`, which keeps the ≤512-token rule of `evalkit chat`).
"""

from __future__ import annotations

from dataclasses import dataclass

from evalkit.api.conversation import dropped_notice
from evalkit.core.errors import EvalkitError
from evalkit.serve.model_pool import ModelPool


@dataclass(frozen=True)
class Reply:
    """One answer and what to show under it."""

    text: str
    prompt: str
    fingerprint: str
    notice: str = ""
    dropped_turns: int = 0

    def footer(self, model: str, task: str) -> str:
        return f"{model} · protocol {task} {self.fingerprint[:12]}"


def caption(pool: ModelPool, model: str, image: str, prompt: str | None, overrides: dict, announce=print) -> Reply:
    """The caption of ``image`` (continuing ``prompt`` when one is given)."""
    record = pool.get(model, announce).caption(image, prompt or None, **overrides)[0]
    if record.status != "ok":
        raise EvalkitError(record.error)
    return Reply(record.caption, record.prompt, record.protocol_fingerprint)


def ask(pool: ModelPool, model: str, image: str, question: str, overrides: dict, announce=print) -> Reply:
    """The answer to one question about ``image`` (the `vqav2` prompt of the model's family)."""
    if not question or not question.strip():
        raise EvalkitError("type a question first")
    record = pool.get(model, announce).ask(image, question, **overrides)[0]
    if record.status != "ok":
        raise EvalkitError(record.error)
    return Reply(record.answer, record.prompt, record.protocol_fingerprint)


def chat(pool: ModelPool, model: str, image: str, history: list[tuple[str, str]], dropped: int, question: str,
         overrides: dict, announce=print) -> Reply:
    """The next turn of a conversation whose earlier (question, answer) turns are ``history``; the notice says
    when more of the oldest turns had to leave the prompt than before (``dropped``)."""
    conversation = pool.get(model, announce).chat(image, **overrides)
    conversation.resume(history)
    turn = conversation.ask(question)
    return Reply(turn.answer, turn.prompt, turn.protocol_fingerprint, dropped_notice(turn, dropped) or "",
                 turn.dropped_turns)


def task_name(pool: ModelPool, model: str, use: str) -> str:
    """The task whose protocol a use takes for the model (shapes tasks for the bundled tiny models)."""
    from evalkit.api.model import task_for
    from evalkit.models.catalog import resolve_model

    return task_for(use, resolve_model(model)).name
