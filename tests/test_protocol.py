"""Protocol fingerprints and overrides."""

import pytest

from evalkit.errors import EvalkitError
from evalkit.protocol import Protocol
from evalkit.task_registry import get_task


def test_fingerprint_changes_with_any_knob():
    base = Protocol(prompt="a photo of", num_beams=5)
    assert base.fingerprint() == Protocol(prompt="a photo of", num_beams=5).fingerprint()
    assert base.fingerprint() != base.with_overrides({"num_beams": 4}).fingerprint()
    assert base.fingerprint() != base.with_overrides({"prompt": "a picture of"}).fingerprint()


def test_unknown_override_is_an_error():
    with pytest.raises(EvalkitError, match="unknown protocol setting"):
        Protocol().with_overrides({"beams": 3})


def test_paper_protocols_are_the_documented_ones():
    caption = get_task("coco-caption").protocol_for("opt")
    assert (caption.prompt, caption.num_beams, caption.max_new_tokens, caption.min_new_tokens) == ("a photo of", 5, 30, 8)
    vqa_opt, vqa_t5 = get_task("vqav2").protocol_for("opt"), get_task("vqav2").protocol_for("t5")
    assert vqa_opt.prompt == "Question: {question} Short answer:" and vqa_opt.length_penalty == 0
    assert vqa_t5.length_penalty == -1 and vqa_opt.stop_at_newline and vqa_opt.image_size == 224
    assert (vqa_opt.num_beams, vqa_opt.max_new_tokens, vqa_opt.min_new_tokens) == (5, 10, 1)
    assert get_task("vqav2").prompt_for_variant("answer") == "Question: {question} Answer:"
    retrieval = get_task("retrieval-flickr30k")
    assert retrieval.default_model == "blip2-itm-vit-g-coco" and retrieval.protocol_for("itm").image_size == 364
    assert retrieval.protocol_for("itm").rerank_k == 128
