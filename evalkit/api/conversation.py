"""A conversation about one image: earlier turns stay in the prompt, the oldest leave when it is full.

The prompt is built by the chat runner's own :func:`~evalkit.inference.chat_runner.chat_prompt` with the
budget `run_chat` uses, so a conversation here answers exactly as a `vqav2-chat` / `shapes-chat` run asks
the same questions of the same image.
"""

from __future__ import annotations

import torch

from evalkit.api.records import ChatTurn
from evalkit.core.errors import EvalkitError
from evalkit.core.protocol import GenerationProtocol
from evalkit.inference.chat_runner import chat_prompt
from evalkit.models.blip2_generation import Blip2Generator


class Conversation:
    """Ask questions one after another with :meth:`ask`; :meth:`reset` forgets the earlier turns."""

    def __init__(self, generator: Blip2Generator, protocol: GenerationProtocol, image: str,
                 query_embeds: torch.Tensor, model: str):
        self.generator = generator
        self.protocol = protocol
        self.image = image
        self.model = model
        self.query_embeds = query_embeds  # the image is encoded once, for every turn
        self.fingerprint = protocol.fingerprint()
        # as run_chat: min(the protocol's context, the LM's positions) less the query tokens and the answer
        self.context_tokens = min(protocol.max_context_tokens, generator.max_positions or protocol.max_context_tokens)
        self.budget = self.context_tokens - generator.num_query_tokens - protocol.max_new_tokens
        self.history: list[tuple[str, str]] = []
        self.turns: list[ChatTurn] = []

    def ask(self, question: str) -> ChatTurn:
        """The model's answer, with every earlier turn that fits kept in the prompt (oldest dropped first)."""
        question = question.strip()
        if not question:
            raise EvalkitError("empty question")
        prompt, kept = chat_prompt(self.protocol, self.history, question, self.generator.prompt_token_count,
                                   self.budget)
        tokens = self.generator.prompt_token_count(prompt)
        if tokens > self.budget:
            raise EvalkitError(f"question too long: its prompt takes {tokens} tokens, and {self.model}'s "
                               f"{self.context_tokens}-token context leaves {self.budget} after the "
                               f"{self.generator.num_query_tokens} image tokens and {self.protocol.max_new_tokens} "
                               "answer tokens")
        answer = self.generator.generate(self.query_embeds.unsqueeze(0), [prompt], self.protocol)[0]
        turn = ChatTurn(image=self.image, turn=len(self.history), question=question, prompt=prompt, answer=answer,
                        kept_turns=kept, dropped_turns=len(self.history) - kept, model=self.model,
                        protocol_fingerprint=self.fingerprint)
        self.history.append((question, answer))
        self.turns.append(turn)
        return turn

    def resume(self, history: list[tuple[str, str]]) -> None:
        """Carry on a conversation held elsewhere (a web page's): its earlier (question, answer) turns."""
        self.history[:] = [(str(q), str(a)) for q, a in history]
        self.turns.clear()

    def reset(self) -> None:
        """Start again: no earlier turns in the next prompt."""
        self.history.clear()
        self.turns.clear()


def dropped_notice(turn: ChatTurn, dropped_before: int) -> str | None:
    """The line that says more of the oldest turns left the prompt than before this turn, or None."""
    if turn.dropped_turns <= dropped_before:
        return None
    oldest = "the oldest turn is" if turn.dropped_turns == 1 else f"the oldest {turn.dropped_turns} turns are"
    return f"(the context is full: {oldest} left out of the prompt, {turn.kept_turns} kept)"
