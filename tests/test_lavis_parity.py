"""Protocol parity with the code behind the published BLIP-2 numbers (LAVIS), on real data.

Expected values come from LAVIS's own processors (tests/fixtures/lavis_parity/expected.json, written by
make_expected.py beside it from the salesforce-lavis wheel and torchvision), not from evalkit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from evalkit.core.protocol import GenerationProtocol
from evalkit.core.registry import get_task
from evalkit.data.lavis_text import blip_caption, blip_question
from evalkit.inference.generation_runner import render_prompt
from evalkit.models.image_preprocessing import lavis_pixel_values

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "lavis_parity/expected.json").read_text())
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def test_questions_are_preprocessed_as_lavis_blip_question():
    rows = EXPECTED["questions"]
    real = json.loads((FIXTURES / "vqav2_53q/v2_OpenEnded_mscoco_val2014_questions_53.json").read_text())
    assert [r["question"] for r in rows[:53]] == [q["question"] for q in real["questions"]]
    assert [blip_question(r["question"]) for r in rows] == [r["lavis"] for r in rows]
    assert sum(r["question"] != r["lavis"] for r in rows[:53]) == 53  # every real question changes (capitals)


@pytest.mark.parametrize("task", ["vqav2", "vqav2-chat"])
@pytest.mark.parametrize("family", ["opt", "t5"])
def test_vqa_prompts_hold_the_lavis_question(task, family):
    protocol = get_task(task).protocol_for(family)
    for row in EXPECTED["questions"][:53]:
        assert render_prompt(protocol, row["question"]) == protocol.prompt.replace("{question}", row["lavis"])


def test_retrieval_captions_are_cleaned_as_lavis_blip_caption():
    rows = EXPECTED["captions"]
    assert [blip_caption(r["caption"]) for r in rows] == [r["lavis"] for r in rows]


@pytest.mark.parametrize("row", EXPECTED["images"], ids=lambda r: f"{r['file']}-{r['size']}")
def test_pixels_equal_lavis_blip_image_eval(row):
    """Bit-for-bit the tensor LAVIS's torchvision pipeline gives for a real COCO image, under the Pillow of
    LAVIS's time (expected.json was made with Pillow 12.3; under Pillow 13 the same LAVIS code moves the tall
    images' pixels, and evalkit, which resizes as the old Pillow did, matches the old Pillow whatever is installed)."""
    assert int(EXPECTED["pillow"].split(".")[0]) <= 12
    image = Image.open(FIXTURES / "coco_val2017/val2017" / row["file"]).convert("RGB")
    pixels = lavis_pixel_values([image], row["size"], CLIP_MEAN, CLIP_STD)[0]
    assert list(pixels.shape) == row["shape"] and str(pixels.dtype) == row["dtype"]
    assert [float(v) for v in pixels[:, 0, 0]] == row["first"]
    assert hashlib.sha256(pixels.contiguous().numpy().tobytes()).hexdigest() == row["sha256"]


def test_pixels_do_not_depend_on_the_checkpoint_processor_backend(tiny_opt):
    """The generator's preprocessing is the LAVIS pipeline with the checkpoint's mean/std, not the HF processor's."""
    from transformers import AutoProcessor

    from evalkit.models.image_preprocessing import ImagePreprocessor

    processor = AutoProcessor.from_pretrained(tiny_opt)

    def broken(*args, **kwargs):
        raise AssertionError("the HF image processor must not be called")

    processor.image_processor.__call__ = broken
    image = Image.open(next((FIXTURES / "coco_val2017/val2017").glob("*.jpg"))).convert("RGB")
    ours = ImagePreprocessor(processor, 64, 224)([image])
    expected = lavis_pixel_values([image], 224, processor.image_processor.image_mean, processor.image_processor.image_std)
    assert torch.equal(ours, expected)


class _Generator:
    """The part of Blip2Generator that turns LAVIS's min_length into new tokens, on a stand-in model."""

    def __init__(self, decoder_only: bool):
        self.decoder_only = decoder_only

    from evalkit.models.blip2_generation import Blip2Generator
    min_new_tokens = Blip2Generator.min_new_tokens


def test_lavis_min_length_counts_the_prompt_for_opt_and_the_start_token_for_t5():
    """transformers 4.26 (LAVIS) checked ``input_ids.shape[-1] < min_length``: for OPT input_ids is BOS + prompt
    (LAVIS's 8 with "a photo of", 4 tokens with BOS, means 4 new tokens); for T5 the decoder start token."""
    caption = get_task("coco-caption").protocol_for("opt")
    assert (caption.min_length, caption.min_new_tokens, caption.max_new_tokens) == (8, 0, 30)
    assert _Generator(True).min_new_tokens(caption, [4, 4]) == 4
    assert _Generator(False).min_new_tokens(caption, [6, 3]) == 7
    vqa = get_task("vqav2").protocol_for("opt")
    assert _Generator(True).min_new_tokens(vqa, [9, 14]) == 0 and _Generator(False).min_new_tokens(vqa, [9]) == 0
    plain = GenerationProtocol(min_new_tokens=2)
    assert _Generator(True).min_new_tokens(plain, [3, 9]) == 2
    from evalkit.core.errors import EvalkitError

    with pytest.raises(EvalkitError, match="prompts of different token lengths"):
        _Generator(True).min_new_tokens(caption, [4, 5])


def test_opt_prompt_token_count_with_the_tokenizer(tiny_opt):
    """The count LAVIS's min_length subtracts is the tokenizer's BOS + prompt ids (the tiny tokenizer here)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_opt)
    ids = tokenizer("a photo of")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    caption = get_task("coco-caption").protocol_for("opt")
    assert _Generator(True).min_new_tokens(caption, [len(ids)]) == max(0, 8 - len(ids))


def test_named_protocols_of_vqav2():
    task = get_task("vqav2")
    paper_opt, lavis_opt = task.protocol_for("opt"), task.protocol_for("opt", "lavis")
    assert (paper_opt.name, paper_opt.prompt, paper_opt.length_penalty) == ("paper", "Question: {question} Answer:", -1.0)
    assert (lavis_opt.name, lavis_opt.prompt, lavis_opt.length_penalty, lavis_opt.max_prompt_tokens) == \
        ("lavis", "Question: {question} Short answer:", 0.0, 32)
    paper_t5, lavis_t5 = task.protocol_for("t5"), task.protocol_for("t5", "lavis")
    assert paper_t5.prompt == lavis_t5.prompt == "Question: {question} Short answer:"
    assert paper_t5.length_penalty == lavis_t5.length_penalty == -1.0
    for protocol in (paper_opt, lavis_opt, paper_t5, lavis_t5):
        assert (protocol.num_beams, protocol.max_new_tokens, protocol.min_length, protocol.image_size) == (5, 10, 1, 224)
        assert protocol.question_preprocess == "lavis-blip-question"
    assert paper_opt.stop_at_newline and lavis_opt.stop_at_newline and not paper_t5.stop_at_newline
    assert get_task("coco-caption").protocol_for("opt").stop_at_newline
    assert paper_opt.fingerprint() != lavis_opt.fingerprint() and paper_t5.fingerprint() != lavis_t5.fingerprint()
    from evalkit.core.errors import EvalkitError

    with pytest.raises(EvalkitError, match="no protocol named 'lavsi'.*paper, lavis"):
        task.protocol_for("opt", "lavsi")


@pytest.mark.parametrize("eos_token_id", [None, 15])
def test_installed_transformers_divides_beam_scores_by_the_generated_length(eos_token_id):
    """Which denominator the pinned transformers uses (recorded in run.json as runtime.beam_length_normalisation):
    generated tokens with the EOS, not prompt + generated (transformers < 4.36, LAVIS). Checked by re-scoring the
    returned beam with a forward pass of the bundled tiny OPT."""
    from transformers import AutoProcessor, Blip2ForConditionalGeneration

    from evalkit.demo.bundled import MODELS_DIR
    from evalkit.models.generation_semantics import beam_length_normalisation

    model = Blip2ForConditionalGeneration.from_pretrained(MODELS_DIR / "blip2-tiny-opt").eval()
    tokenizer = AutoProcessor.from_pretrained(MODELS_DIR / "blip2-tiny-opt").tokenizer
    lm, ids = model.language_model, tokenizer(["a photo of"], return_tensors="pt")
    with torch.no_grad():
        out = lm.generate(**ids, num_beams=3, max_new_tokens=30, length_penalty=1.0, do_sample=False,
                          return_dict_in_generate=True, output_scores=True, pad_token_id=tokenizer.pad_token_id,
                          **({"eos_token_id": eos_token_id} if eos_token_id else {}))
        prompt, generated = ids["input_ids"].shape[1], out.sequences[0, ids["input_ids"].shape[1]:].tolist()
        n = generated.index(eos_token_id) + 1 if eos_token_id in generated else len(generated)
        assert (eos_token_id is None) == (n == 30)  # one case ends at max length, the other at its EOS
        logits = lm(out.sequences[:, :prompt + n]).logits[0, prompt - 1:prompt + n - 1].log_softmax(-1)
        total = logits.gather(-1, torch.tensor(generated[:n])[:, None]).sum().item()
    hypothesis_without_eos = prompt + n - (1 if eos_token_id in generated else 0)
    assert out.sequences_scores[0].item() == pytest.approx(total / n, rel=1e-4)
    assert out.sequences_scores[0].item() != pytest.approx(total / hypothesis_without_eos, rel=1e-3)
    assert beam_length_normalisation() == "generated tokens, EOS included (transformers >= 4.36)"
    assert beam_length_normalisation("4.26.1").startswith("prompt+generated tokens")


def test_component_precision_follows_lavis_and_dtype_overrides_every_component(tiny_t5):
    """GPU plan (LAVIS baad2d7): ViT fp16, Q-Former + query tokens fp32, Flan-T5 bf16; retrieval fp32. Set on a
    CPU model (only dtypes change), then run its image side to show the mixed precisions chain."""
    from transformers import AutoProcessor, Blip2ForConditionalGeneration

    from evalkit.models.loading import component_dtypes, pick_dtype, pick_vision_dtype, set_component_precision

    cuda = torch.device("cuda")  # a device object only: nothing is moved
    assert (pick_dtype("t5", cuda, None), pick_dtype("opt", cuda, None)) == (torch.bfloat16, torch.float16)
    assert pick_dtype("itm", cuda, None) == pick_vision_dtype("itm", cuda, None) == torch.float32
    assert pick_dtype("t5", torch.device("cpu"), None) == pick_vision_dtype("t5", torch.device("cpu"), None) \
        == torch.float32
    model = Blip2ForConditionalGeneration.from_pretrained(tiny_t5, dtype=torch.bfloat16)
    set_component_precision(model, "t5", cuda, None)
    assert component_dtypes(model) == {"vision": "float16", "qformer": "float32", "language_model": "bfloat16",
                                       "projection": "bfloat16"}
    assert model.query_tokens.dtype == torch.float32
    from evalkit.models.blip2_generation import Blip2Generator

    checkpoint = type("Checkpoint", (), {"model": model, "processor": AutoProcessor.from_pretrained(tiny_t5),
                                         "device": torch.device("cpu"), "dtype": torch.bfloat16})()
    generator = Blip2Generator(checkpoint)
    from PIL import Image

    embeds = generator.encode_images(generator.pixel_values([Image.new("RGB", (32, 32), "red")]))
    assert embeds.dtype == torch.bfloat16 and torch.isfinite(embeds.float()).all()
    set_component_precision(model, "t5", cuda, "bfloat16")
    assert set(component_dtypes(model).values()) == {"bfloat16"}


def _vqa_record(protocol_name: str, vqa_metric: str, overrides: dict | None = None) -> dict:
    return {"task": {"name": "vqav2", "kind": "vqa"}, "data": {"split": "val"},
            "model": {"name": "blip2-opt-2.7b", "source": "Salesforce/blip2-opt-2.7b"},
            "protocol": {"name": protocol_name}, "overrides": overrides or {}, "details": {"vqa_metric": vqa_metric}}


def test_a_run_is_like_for_like_with_a_reference_only_when_protocol_and_metric_variant_match():
    from evalkit.analysis.reference_numbers import like_for_like_differences, references_for_run

    def by_source(record):
        return {r.source: r for r in references_for_run(record) if r.metric == "accuracy"}

    paper, lavis = by_source(_vqa_record("paper", "lavis"))["paper-table2"], \
        by_source(_vqa_record("paper", "lavis"))["lavis-vqav2-zeroshot-opt"]
    assert (paper.value, paper.protocol_name, dict(paper.scorer)) == (53.5, "paper", {"details.vqa_metric": "lavis"})
    assert (lavis.value, lavis.protocol_name) == (51.88, "lavis")
    assert like_for_like_differences(paper, _vqa_record("paper", "lavis")) == []
    assert like_for_like_differences(lavis, _vqa_record("lavis", "lavis")) == []
    assert like_for_like_differences(paper, _vqa_record("paper", "official")) == \
        ["vqa_metric 'official', the reference's 'lavis'"]
    assert like_for_like_differences(paper, _vqa_record("lavis", "lavis")) == \
        ["protocol 'lavis', the reference's 'paper'"]
    assert like_for_like_differences(lavis, _vqa_record("paper", "lavis", {"num_beams": 3})) == \
        ["protocol 'paper', the reference's 'lavis'", "overrides (num_beams=3)"]


@pytest.mark.usefixtures("real_runs")
def test_the_report_shows_the_reference_a_run_reproduces_and_marks_the_others(tmp_path):
    """A `--protocol lavis` run scored with LAVIS's metric sits beside LAVIS's 51.88 unmarked; a paper-protocol
    run scored with the official metric sits beside the paper's 53.5 with ‡ and a footnote naming the variant."""
    from make_runs import answers_with_accuracy, vqa_run, vqa_set

    from evalkit.analysis.report import build_report, cell_text, footnotes

    gold, _, _ = vqa_set()
    vqa_run(tmp_path, "blip2-opt-2.7b", answers_with_accuracy(gold, 5), gold, run_id="lavis", protocol_name="lavis",
            vqa_metric="lavis")
    vqa_run(tmp_path, "blip2-opt-2.7b", answers_with_accuracy(gold, 5), gold, run_id="paper",
            created="2025-01-02T00:00:00+00:00")
    report = build_report(tmp_path)
    cells = {row["vqav2"].run.run_id: row["vqav2"] for _, row in report.rows}
    lavis, paper = cell_text(report, cells["lavis"], "accuracy"), cell_text(report, cells["paper"], "accuracy")
    assert "(ref 51.88" in lavis and not lavis.endswith("‡")
    assert "(ref 53.50" in paper and paper.endswith("‡")
    assert any("(run paper): not like-for-like with the reference: vqa_metric 'official', the reference's 'lavis'"
               in note for note in footnotes(report))
