"""Protocol fingerprints and overrides."""

import pytest

from evalkit.core.errors import EvalkitError
from evalkit.core.protocol import GenerationProtocol
from evalkit.core.registry import get_task


def test_fingerprint_changes_with_any_knob():
    base = GenerationProtocol(prompt="a photo of", num_beams=5)
    assert base.fingerprint() == GenerationProtocol(prompt="a photo of", num_beams=5).fingerprint()
    assert base.fingerprint() != base.with_overrides({"num_beams": 4}).fingerprint()
    assert base.fingerprint() != base.with_overrides({"prompt": "a picture of"}).fingerprint()


def test_unknown_override_is_an_error():
    with pytest.raises(EvalkitError, match="unknown generation protocol setting .beams."):
        GenerationProtocol().with_overrides({"beams": 3})


def test_paper_protocols_are_the_documented_ones():
    """The values of docs/PROTOCOL_PARITY.md (LAVIS configs and the paper's sec. 4.1 / 4.2)."""
    caption = get_task("coco-caption").protocol_for("opt")
    assert (caption.prompt, caption.num_beams, caption.max_new_tokens, caption.min_length, caption.min_new_tokens) == \
        ("a photo of", 5, 30, 8, 0)
    assert caption.stop_at_newline and not get_task("coco-caption").protocol_for("t5").stop_at_newline
    vqa_opt, vqa_t5 = get_task("vqav2").protocol_for("opt"), get_task("vqav2").protocol_for("t5")
    assert vqa_opt.prompt == "Question: {question} Answer:" and vqa_opt.length_penalty == -1
    assert vqa_t5.prompt == "Question: {question} Short answer:" and vqa_t5.length_penalty == -1
    assert vqa_opt.stop_at_newline and vqa_opt.image_size == 224 and vqa_opt.name == vqa_t5.name == "paper"
    assert (vqa_opt.num_beams, vqa_opt.max_new_tokens, vqa_opt.min_length, vqa_opt.min_new_tokens) == (5, 10, 1, 0)
    assert get_task("vqav2").prompt_for_variant("answer") == "Question: {question} Answer:"
    retrieval = get_task("retrieval-flickr30k")
    assert retrieval.default_model == "blip2-itm-vit-g-coco" and retrieval.protocol_for("itm").image_size == 364
    assert retrieval.protocol_for("itm").rerank_k == 128


def test_a_default_protocol_change_bumps_the_task_version():
    """The defaults changed for LAVIS parity (question preprocessing, min_length, the paper's OPT prompt):
    version 2, so a version-1 run is never compared or resumed as if it were the same protocol."""
    assert {name: get_task(name).version for name in ("vqav2", "vqav2-chat", "coco-caption", "shapes-vqa",
                                                       "shapes-chat", "shapes-caption")} == dict.fromkeys(
        ("vqav2", "vqav2-chat", "coco-caption", "shapes-vqa", "shapes-chat", "shapes-caption"), "2")


def test_generation_and_retrieval_protocols_hold_only_their_own_settings():
    caption = get_task("coco-caption").protocol_for("opt").to_dict()
    retrieval = get_task("retrieval-coco").protocol_for("itm").to_dict()
    assert "rerank_k" not in caption and "max_text_tokens" not in caption and "num_beams" in caption
    assert "num_beams" not in retrieval and "prompt" not in retrieval and retrieval["rerank_k"] == 128
    # a retrieval default cannot re-fingerprint a caption run: the caption record does not hold it
    from evalkit.core.protocol import RetrievalProtocol

    assert RetrievalProtocol().with_overrides({"rerank_k": 64}).fingerprint() != RetrievalProtocol().fingerprint()
    assert set(caption) == set(GenerationProtocol().to_dict())


def test_shapes_tasks_reuse_the_paper_tasks_protocols_per_family():
    """shapes-* differ from vqav2's `lavis` protocol (the prompt the tiny models were trained on) only where the
    tiny models need it (stated in tasks/shapes.py)."""
    for family in ("opt", "t5"):
        lavis, shapes = get_task("vqav2").protocol_for(family, "lavis"), get_task("shapes-vqa").protocol_for(family)
        assert shapes == lavis.with_overrides({"image_size": None})
        chat_paper, chat_shapes = get_task("vqav2-chat").protocol_for(family), get_task("shapes-chat").protocol_for(family)
        assert chat_shapes == chat_paper.with_overrides({"image_size": None}) and chat_shapes.chat
    caption, shapes_caption = get_task("coco-caption").protocol_for("opt"), get_task("shapes-caption").protocol_for("opt")
    assert shapes_caption == caption.with_overrides({"min_length": 0, "min_new_tokens": 1, "name": "shapes"})
    assert get_task("vqav2").protocol_for("opt", "lavis").length_penalty == 0.0
    assert not get_task("vqav2").protocol_for("t5").stop_at_newline


def test_a_setting_of_the_other_protocol_kind_is_refused_before_the_model_loads(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "evalkit", "run", "shapes-caption", "--k", "5", "--results",
                           str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "unknown generation protocol setting 'rerank_k'" in proc.stderr
    assert "Traceback" not in proc.stderr and not any(tmp_path.iterdir())


@pytest.mark.parametrize("flags, message", [
    (["--min-new-tokens", "12"], "min_new_tokens 12 is more than max_new_tokens 10"),
    (["--min-length", "-1"], "--min-length must be 0 or more"),
    (["--num-beams", "0"], "--num-beams must be positive"),
    (["--protocol", "lavsi"], "no protocol named 'lavsi'"),
])
def test_bad_protocol_flags_are_one_line_errors_before_the_model_loads(flags, message, tmp_path, capsys):
    from conftest import run_cli

    code, _, err = run_cli(["run", "shapes-vqa", "-q", "--results", str(tmp_path), *flags], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())
