"""What the installed transformers does with settings whose meaning changed across versions (recorded in runs)."""

from __future__ import annotations

from importlib.metadata import version


def _version_tuple(text: str) -> tuple[int, int]:
    major, minor = (int("".join(c for c in part if c.isdigit()) or 0) for part in text.split(".")[:2])
    return major, minor


def beam_length_normalisation(transformers_version: str | None = None) -> str:
    """The denominator beam search divides a hypothesis' summed log-probability by (to the length penalty).

    transformers < 4.36 (what LAVIS ran: 4.25/4.26, later 4.33): the whole decoder input, prompt included and the
    EOS excluded (``hyp.shape[-1]``). transformers >= 4.36 (PR #27351): only the generated tokens, the EOS included.
    For T5 the two are equal (start token + n); for OPT they differ by the prompt length minus one.
    """
    if _version_tuple(transformers_version or version("transformers")) < (4, 36):
        return "prompt+generated tokens, EOS excluded (transformers < 4.36, as LAVIS)"
    return "generated tokens, EOS included (transformers >= 4.36)"
