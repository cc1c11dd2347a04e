"""A T5 language model scales its decoder output (by d_model ** -0.5) as its config.json means, whatever the
installed transformers: ``scale_decoder_outputs`` when transformers >= 5 wrote it, else ``tie_word_embeddings``
(transformers 4.26 / LAVIS modeling_t5.py: ``if self.config.tie_word_embeddings: sequence_output *
(self.model_dim**-0.5)``)."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from evalkit.core.errors import EvalkitError
from evalkit.demo.bundled import MODELS_DIR
from evalkit.models import t5_output_scaling as scaling


@pytest.mark.parametrize("text_config, expected", [
    ({"tie_word_embeddings": True, "scale_decoder_outputs": False}, (False, "scale_decoder_outputs")),  # 5.x wrote
    ({"tie_word_embeddings": True, "scale_decoder_outputs": True}, (True, "scale_decoder_outputs")),
    ({"tie_word_embeddings": False}, (False, "tie_word_embeddings")),  # Flan-T5 (4.x wrote): never scaled
    ({"tie_word_embeddings": True}, (True, "tie_word_embeddings")),    # original T5
    ({}, (True, "tie_word_embeddings")),                               # 4.26's T5Config default is tied
])
def test_intended_scaling(text_config, expected):
    assert scaling.intended_scaling(text_config) == expected


def test_bundled_t5_config_says_unscaled_in_both_dialects():
    """The tiny T5 was trained unscaled under transformers 5 (its T5Config got tie_word_embeddings=False), which wrote
    the 4.x key as true: read by 4.x's rule alone it would be scaled (the 85.0 VQA accuracy of issue 21)."""
    text = json.loads((MODELS_DIR / "blip2-tiny-t5" / "config.json").read_text())["text_config"]
    assert text["tie_word_embeddings"] is True and text["scale_decoder_outputs"] is False
    assert scaling.intended_scaling(text) == (False, "scale_decoder_outputs")


def _language_model(tied: bool, tie_word_embeddings: bool):
    shared = torch.nn.Parameter(torch.randn(8, 4))
    head = shared if tied else torch.nn.Parameter(shared.detach().clone())
    config = SimpleNamespace(model_type="t5", tie_word_embeddings=tie_word_embeddings)
    return SimpleNamespace(config=config, lm_head=SimpleNamespace(weight=head), shared=SimpleNamespace(weight=shared))


def _checkpoint(tmp_path, text_config: dict, head_differs: bool | None):
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"model_type": "t5", **text_config}}))
    shared = torch.ones(8, 4)
    tensors = {"language_model.shared.weight": shared}
    if head_differs is not None:
        tensors["language_model.lm_head.weight"] = shared * (2.0 if head_differs else 1.0)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    return tmp_path


def test_transformers_4_reading_a_5_config_is_corrected(tmp_path, monkeypatch):
    """Under 4.x's rule (tie_word_embeddings decides), a 5.x config meaning 'unscaled' gets the 4.x attribute set
    to false; the weights stay tied as the file stores them (one shared matrix)."""
    monkeypatch.setattr(scaling, "_reads_scale_key", lambda: False)
    model = SimpleNamespace(language_model=_language_model(tied=True, tie_word_embeddings=True))
    directory = _checkpoint(tmp_path, {"tie_word_embeddings": True, "scale_decoder_outputs": False}, None)
    record = scaling.align_t5_output_scaling(model, directory, "tiny")
    assert record == {"scaled": False, "from_config_key": "scale_decoder_outputs",
                      "installed_transformers_read": True, "corrected": True}
    assert model.language_model.config.tie_word_embeddings is False


def test_transformers_4_cannot_untie_a_separate_head_it_tied(tmp_path, monkeypatch):
    monkeypatch.setattr(scaling, "_reads_scale_key", lambda: False)
    model = SimpleNamespace(language_model=_language_model(tied=True, tie_word_embeddings=True))
    directory = _checkpoint(tmp_path, {"tie_word_embeddings": True, "scale_decoder_outputs": False}, True)
    with pytest.raises(EvalkitError, match="saved by transformers >= 5 with an LM head of its own"):
        scaling.align_t5_output_scaling(model, directory, "finetuned")


def test_flan_t5_is_left_alone(tmp_path, monkeypatch):
    """tie_word_embeddings false and a head of its own: every version reads it unscaled; nothing is changed."""
    for reads_scale_key, attribute in ((False, "tie_word_embeddings"), (True, "scale_decoder_outputs")):
        monkeypatch.setattr(scaling, "_reads_scale_key", lambda value=reads_scale_key: value)
        language_model = _language_model(tied=False, tie_word_embeddings=False)
        language_model.config.scale_decoder_outputs = False
        model = SimpleNamespace(language_model=language_model)
        directory = _checkpoint(tmp_path, {"tie_word_embeddings": False}, True)
        record = scaling.align_t5_output_scaling(model, directory, "flan")
        assert record["corrected"] is False and record["scaled"] is False
        assert getattr(language_model.config, attribute) is False


def test_loaded_tiny_t5_logits_are_unscaled(tmp_path):
    """The loaded bundled T5's logits equal lm_head(decoder output), not lm_head(decoder output * d_model**-0.5):
    computed here from the module's parts, independently of the config flags."""
    from evalkit.models.catalog import resolve_model
    from evalkit.models.loading import load_checkpoint

    checkpoint = load_checkpoint(resolve_model("blip2-tiny-t5"), device="cpu")
    assert checkpoint.t5_output_scaling["scaled"] is False
    lm = checkpoint.model.language_model
    ids = torch.tensor([[5, 6, 7, 1]])
    start = torch.tensor([[lm.config.decoder_start_token_id, 5]])
    with torch.no_grad():
        logits = lm(input_ids=ids, decoder_input_ids=start).logits
        hidden = lm.decoder(input_ids=start, encoder_hidden_states=lm.encoder(input_ids=ids)[0])[0]
        unscaled = lm.lm_head(hidden)
        scaled = lm.lm_head(hidden * lm.config.d_model ** -0.5)
    assert torch.allclose(logits, unscaled, atol=1e-5)
    assert not torch.allclose(logits, scaled, atol=1e-2)


def test_run_record_holds_the_scaling(tmp_path):
    from evalkit.core.run_options import RunOptions
    from evalkit.engine.evaluate import run_task

    record = run_task(RunOptions(task="shapes-vqa", model="blip2-tiny-t5", results_dir=tmp_path, limit=2,
                                 device="cpu", show_progress=False)).record
    assert record["runtime"]["t5_output_scaling"] == {"scaled": False, "from_config_key": "scale_decoder_outputs",
                                                      "installed_transformers_read": False, "corrected": False}
    shutil.rmtree(tmp_path, ignore_errors=True)
