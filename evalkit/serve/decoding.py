"""The page's decoding controls as protocol overrides, and their defaults: the task protocol of the model's family.

Values come back from the browser as floats; each is cast to the type of the protocol field it sets, so
equal settings give an equal protocol (and fingerprint) to `evalkit caption/ask/chat` with the same flags.
"""

from __future__ import annotations

from dataclasses import dataclass

from evalkit.core.protocol import GenerationProtocol

BEAM, SAMPLING = "beam search", "nucleus sampling"
USE_BY_MODE = {"caption": "caption", "prompted caption": "caption", "ask": "ask", "chat": "chat"}
MODES = tuple(USE_BY_MODE)
DEFAULT_CAPTION_PROMPT = "a photo of"
SAMPLING_TOP_P = 0.9  # shown for nucleus sampling while beam search is chosen (the BLIP-2 demo's default)


@dataclass(frozen=True)
class Controls:
    """What the "Advanced settings" accordion holds."""

    method: str
    num_beams: int
    max_new_tokens: int
    min_new_tokens: int
    length_penalty: float
    repetition_penalty: float
    temperature: float
    top_p: float
    seed: int

    @classmethod
    def of(cls, protocol: GenerationProtocol) -> "Controls":
        """The controls showing a protocol (a task's default for the model's family)."""
        return cls(SAMPLING if protocol.do_sample else BEAM, protocol.num_beams, protocol.max_new_tokens,
                   protocol.min_new_tokens, protocol.length_penalty, protocol.repetition_penalty,
                   protocol.temperature, protocol.top_p if protocol.do_sample else SAMPLING_TOP_P, protocol.seed)

    def overrides(self) -> dict:
        """Protocol overrides, typed as the protocol's fields; sampling settings only when sampling."""
        fields = dict(num_beams=int(self.num_beams), max_new_tokens=int(self.max_new_tokens),
                      min_new_tokens=int(self.min_new_tokens), length_penalty=float(self.length_penalty),
                      repetition_penalty=float(self.repetition_penalty))
        if self.method == SAMPLING:
            fields.update(do_sample=True, temperature=float(self.temperature), top_p=float(self.top_p),
                          seed=int(self.seed))
        return fields

    def values(self) -> list:
        """In the order of the page's controls."""
        return [self.method, self.num_beams, self.max_new_tokens, self.min_new_tokens, self.length_penalty,
                self.repetition_penalty, self.temperature, self.top_p, self.seed]
