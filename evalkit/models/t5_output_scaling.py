"""Whether a T5 language model scales its decoder output by ``d_model ** -0.5`` before the LM head, read the same
way under every transformers version.

transformers 4.x (and LAVIS's copy of its ``modeling_t5.py``, the code behind the published numbers) couple two
things to one flag: ``tie_word_embeddings`` true means the LM head shares the input embeddings *and* the decoder
output is multiplied by ``d_model ** -0.5`` (``T5ForConditionalGeneration.forward``: "Rescale output before
projecting on vocab"); false (T5 v1.1, Flan-T5) means neither. transformers 5 splits them: ``T5Config`` stores
``scale_decoder_outputs`` (from the ``tie_word_embeddings`` it is given) and then sets ``tie_word_embeddings``
to true whatever was asked, so a T5 built or saved under 5.x with ``tie_word_embeddings=False`` writes
``"tie_word_embeddings": true, "scale_decoder_outputs": false``. transformers 4.x ignores the new key and reads
the old one: it scales a model that was trained unscaled, and every answer changes.

The scaling a checkpoint means is the one its config states in its writer's terms: ``scale_decoder_outputs``
when present (written by transformers >= 5), else ``tie_word_embeddings`` (4.x, LAVIS; absent means true).
Real Flan-T5 checkpoints (``tie_word_embeddings: false``, a separate ``lm_head.weight``) are read alike by every
version, unscaled, and are not changed here.
"""

from __future__ import annotations

import json
from pathlib import Path

from evalkit.core.errors import EvalkitError

SCALE_KEY = "scale_decoder_outputs"  # transformers >= 5's T5Config field


def intended_scaling(text_config: dict) -> tuple[bool, str]:
    """(scaled or not, which config key says so) for a checkpoint's ``text_config`` as written in config.json."""
    if SCALE_KEY in text_config:
        return bool(text_config[SCALE_KEY]), SCALE_KEY
    return bool(text_config.get("tie_word_embeddings", True)), "tie_word_embeddings"


def installed_scaling(language_model) -> tuple[bool, str]:
    """(scaled or not, the attribute the installed T5 code reads) for a loaded T5ForConditionalGeneration."""
    config = language_model.config
    if _reads_scale_key():
        return bool(getattr(config, SCALE_KEY)), SCALE_KEY
    return bool(config.tie_word_embeddings), "tie_word_embeddings"


def align_t5_output_scaling(model, directory: Path, source: str) -> dict | None:
    """Make the loaded T5 scale (or not) as its config.json means; None for a model that is not T5.

    Returns what run.json records: the scaling used, the key it came from, and whether the installed transformers
    read it otherwise (then evalkit set the attribute that version's code reads). A checkpoint whose meaning the
    installed version cannot give (a separate LM head that it tied to the embeddings) is refused.
    """
    language_model = getattr(model, "language_model", None)
    if getattr(getattr(language_model, "config", None), "model_type", None) != "t5":
        return None
    try:
        text_config = json.loads((directory / "config.json").read_text()).get("text_config") or {}
    except (OSError, ValueError):
        text_config = {}
    wanted, wanted_key = intended_scaling(text_config)
    used, used_key = installed_scaling(language_model)
    record = {"scaled": wanted, "from_config_key": wanted_key, "installed_transformers_read": used,
              "corrected": used != wanted}
    if used == wanted:
        return record
    if used_key == "tie_word_embeddings" and _tied(language_model) and _separate_head_on_disk(directory):
        raise EvalkitError(
            f"checkpoint {source} was saved by transformers >= 5 with an LM head of its own, which this "
            "transformers (< 5) ties to the embeddings on load; its answers would differ. Install transformers>=5, "
            "or re-save the checkpoint with `tie_word_embeddings: false` in text_config")
    setattr(language_model.config, used_key, wanted)
    return record


def _reads_scale_key() -> bool:
    """True when the installed T5 code reads ``scale_decoder_outputs`` (transformers >= 5)."""
    from transformers import T5Config

    # a loaded config keeps unknown keys as attributes under 4.x too, so ask a fresh one
    return hasattr(T5Config(), SCALE_KEY)


def _tied(language_model) -> bool:
    head, embeddings = language_model.lm_head.weight, language_model.shared.weight
    return head.data_ptr() == embeddings.data_ptr()


def _separate_head_on_disk(directory: Path) -> bool:
    """True when a weight file holds an LM head different from the shared embeddings."""
    from safetensors import safe_open

    for file in sorted(directory.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            keys = set(handle.keys())
            head = next((k for k in keys if k.endswith("language_model.lm_head.weight")), None)
            shared = next((k for k in keys if k.endswith("language_model.shared.weight")), None)
            if head and shared:
                import torch

                return not torch.equal(handle.get_tensor(head), handle.get_tensor(shared))
            if head:
                return True
    return False
