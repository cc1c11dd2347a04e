"""Protocol fingerprints and overrides; the task protocols pinned to the LAVIS configs behind the paper numbers.

The literal values below come from the LAVIS configs, not from evalkit's own objects (file paths are in the
salesforce-lavis 1.0.2 wheel, `pip download salesforce-lavis==1.0.2 --no-deps`, unless a commit is named; the
OPT VQA code came later, salesforce/LAVIS @8491f1d, see docs/PROTOCOL_PARITY.md).
"""

import dataclasses
import json
from pathlib import Path

import pytest

from evalkit.core.errors import EvalkitError
from evalkit.core.protocol import QUESTION_PREPROCESSING, GenerationProtocol, RetrievalProtocol
from evalkit.core.registry import all_tasks, get_task

TASK_VERSIONS = Path(__file__).parent / "fixtures" / "task_versions.json"
# constrained fields: the other allowed value (a free string gets a suffix, a number +1, a flag flips, None a value)
OTHER_VALUE = {"question_preprocess": lambda value: next(q for q in QUESTION_PREPROCESSING if q != value),
               "top_p": lambda value: 0.5 if value != 0.5 else 0.9}  # top_p lives in (0, 1]
# temperature, top_p and seed exist only while sampling (a beam-search protocol refuses them): each is changed
# from a sampling protocol
SAMPLING_ONLY = ("temperature", "top_p", "seed")


def _other_value(field: dataclasses.Field, value):
    if field.name in OTHER_VALUE:
        return OTHER_VALUE[field.name](value)
    if value is None:
        return "float16" if "str" in str(field.type) else 224
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + " changed"
    raise AssertionError(f"{field.name}: no changed value for a {type(value).__name__}; add one to OTHER_VALUE")


@pytest.mark.parametrize("protocol", [GenerationProtocol(prompt="a photo of", num_beams=5), RetrievalProtocol()],
                         ids=["generation", "retrieval"])
def test_fingerprint_changes_with_every_field(protocol):
    """Every field of the protocol class (a new field is covered without editing this test) moves the
    fingerprint, and only a change moves it."""
    fields = dataclasses.fields(protocol)
    assert len(fields) >= 7
    assert protocol.fingerprint() == dataclasses.replace(protocol).fingerprint()
    fingerprints = {protocol.fingerprint()}
    for field in fields:
        base = protocol.with_overrides({"do_sample": True}) if field.name in SAMPLING_ONLY else protocol
        changed = base.with_overrides({field.name: _other_value(field, getattr(base, field.name))})
        assert changed != base, field.name
        assert changed.fingerprint() != base.fingerprint(), f"{field.name} does not move the fingerprint"
        fingerprints.add(changed.fingerprint())
    assert len(fingerprints) == len(fields) + 1


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


def _protocol_fingerprints(task) -> dict[str, str]:
    return {f"{family}/{name}": task.protocol_for(family, name).fingerprint()
            for family in task.families for name in task.protocol_names}


def test_a_protocol_change_without_a_version_bump_fails():
    """tests/fixtures/task_versions.json pins each task's version and the fingerprint of every protocol it runs
    (family/protocol name). A changed protocol with the old version fails: a version-1 run must never be compared
    or resumed as if it were the same protocol. After a deliberate change, bump the task's version and paste the
    entry this test prints into the file."""
    golden = json.loads(TASK_VERSIONS.read_text())
    tasks = all_tasks()
    assert sorted(tasks) == sorted(golden), f"tasks added or removed: {sorted(set(tasks) ^ set(golden))}; " \
                                            f"update {TASK_VERSIONS.name}"
    for name, task in tasks.items():
        current = {"version": task.version, "fingerprints": _protocol_fingerprints(task)}
        pinned = golden[name]
        if current["fingerprints"] != pinned["fingerprints"]:
            moved = sorted(k for k in current["fingerprints"].keys() | pinned["fingerprints"].keys()
                           if current["fingerprints"].get(k) != pinned["fingerprints"].get(k))
            assert task.version != pinned["version"], \
                f"task {name}: protocol {', '.join(moved)} changed but its version is still {task.version}: bump it"
        assert current == pinned, f"task {name} changed: set its entry in {TASK_VERSIONS.name} to " \
                                  f"{json.dumps(current, sort_keys=True)}"


def test_generation_and_retrieval_protocols_hold_only_their_own_settings():
    caption = get_task("coco-caption").protocol_for("opt").to_dict()
    retrieval = get_task("retrieval-coco").protocol_for("itm").to_dict()
    assert "rerank_k" not in caption and "max_text_tokens" not in caption and "num_beams" in caption
    assert "num_beams" not in retrieval and "prompt" not in retrieval and retrieval["rerank_k"] == 128
    # a retrieval default cannot re-fingerprint a caption run: the caption record does not hold it
    from evalkit.core.protocol import RetrievalProtocol

    assert RetrievalProtocol().with_overrides({"rerank_k": 64}).fingerprint() != RetrievalProtocol().fingerprint()
    assert set(caption) == set(GenerationProtocol().to_dict())


VQA_SETTINGS = ("prompt", "question_preprocess", "max_prompt_tokens", "num_beams", "max_new_tokens", "min_length",
                "min_new_tokens", "length_penalty", "image_size", "stop_at_newline")
# LAVIS's zero-shot VQA settings, literal: lavis/projects/blip2/eval/vqav2_zeroshot_flant5xl_eval.yaml,
# okvqa_zeroshot_flant5xl_eval.yaml, gqa_zeroshot_flant5xl_eval.yaml (blip_image_eval image_size 224,
# blip_question, max_len 10 -> max_new_tokens, min_len 1 -> min_length, num_beams 5, prompt "Question: {} Short
# answer:"); Flan-T5 length penalty -1: lavis/models/blip2_models/blip2_t5.py predict_answers default
# (length_penalty=-1), no prompt truncation there. OPT: salesforce/LAVIS @8491f1d
# lavis/projects/blip2/eval/vqav2_zeroshot_opt_eval.yaml (the same run settings) and blip2_opt.py predict_answers
# (length_penalty=0, truncation to max_txt_len 32, eos_token_id = the newline token).
LAVIS_VQA = {
    "t5": ("Question: {question} Short answer:", "lavis-blip-question", 0, 5, 10, 1, 0, -1.0, 224, False),
    "opt": ("Question: {question} Short answer:", "lavis-blip-question", 32, 5, 10, 1, 0, 0.0, 224, True),
}
# the paper's OPT protocol (BLIP-2 paper sec. 4.1: "Question: {} Answer:", length penalty -1); no truncation, as
# no published code truncates
PAPER_VQA_OPT = ("Question: {question} Answer:", "lavis-blip-question", 0, 5, 10, 1, 0, -1.0, 224, True)


def _settings(protocol, names=VQA_SETTINGS) -> tuple:
    return tuple(getattr(protocol, name) for name in names)


@pytest.mark.parametrize("task", ["vqav2", "okvqa", "gqa"])
def test_zero_shot_vqa_protocols_are_lavis_configs_literals(task):
    spec = get_task(task)
    for family, expected in LAVIS_VQA.items():
        assert _settings(spec.protocol_for(family, "lavis")) == expected, family
    assert _settings(spec.protocol_for("t5")) == LAVIS_VQA["t5"]  # `paper` = LAVIS for Flan-T5
    assert _settings(spec.protocol_for("opt")) == PAPER_VQA_OPT


def test_shapes_tasks_are_the_lavis_protocols_with_the_documented_changes():
    """shapes-* run LAVIS's VQA settings (the prompt the tiny models were trained on) except the image size (the
    tiny models' own 64 px processors: None), and LAVIS's caption settings except the minimum length (short
    captions: min_length 0, one new token at least). Literal values as above; captions:
    lavis/projects/blip2/eval/caption_coco_opt2.7b_eval.yaml (max_len 30, min_len 8, num_beams 5) and
    lavis/configs/models/blip2/blip2_caption_opt2.7b.yaml (prompt "a photo of")."""
    for family, lavis in LAVIS_VQA.items():
        shapes = get_task("shapes-vqa").protocol_for(family)
        assert _settings(shapes) == (*lavis[:-2], None, lavis[-1]) and not shapes.chat
        chat = get_task("shapes-chat").protocol_for(family)
        # chat: the BLIP-2 model docs' chat prompt, "Question: q1 Answer: a1. Question: q2 Answer:"
        assert chat.chat and chat.prompt == "Question: {question} Answer:" and chat.image_size is None
        assert chat.chat_turn == "Question: {question} Answer: {answer}." and chat.max_context_tokens == 512
        assert (chat.num_beams, chat.max_new_tokens, chat.min_length) == (5, 10, 1)
        assert (chat.length_penalty, chat.stop_at_newline) == {"opt": (0.0, True), "t5": (-1.0, False)}[family]
    caption_settings = ("prompt", "num_beams", "max_new_tokens", "min_length", "min_new_tokens", "image_size",
                        "stop_at_newline", "length_penalty", "repetition_penalty")
    for family, newline in (("opt", True), ("t5", False)):
        assert _settings(get_task("coco-caption").protocol_for(family), caption_settings) == \
            ("a photo of", 5, 30, 8, 0, None, newline, 1.0, 1.0)
        assert _settings(get_task("shapes-caption").protocol_for(family), caption_settings) == \
            ("a photo of", 5, 30, 0, 1, None, newline, 1.0, 1.0)


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
