"""Windows of whole images (length-sorted batches inside when asked): every sample once, fewer pad tokens when
sorted, and the same predictions.jsonl (byte for byte) whatever the batch size."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli
from evalkit.core.protocol import GenerationProtocol
from evalkit.core.samples import Sample
from evalkit.data.images import ImageSource
from evalkit.demo.bundled import MODELS_DIR
from evalkit.core.samples import order_by_image
from evalkit.inference.batch_plan import padding_tokens, plan_windows
from evalkit.inference.generation_runner import run_single_turn
from evalkit.models.blip2_generation import Blip2Generator
from evalkit.models.catalog import resolve_model
from evalkit.models.loading import load_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"
COCO_IMAGES = FIXTURES / "coco_val2017" / "val2017"


def _vqav2_samples() -> list[Sample]:
    """The 53 real VQAv2 val questions (their images stand in as keys): real question lengths."""
    questions = json.loads((FIXTURES / "vqav2_53q" / "v2_OpenEnded_mscoco_val2014_questions_53.json").read_text())["questions"]
    return [Sample(str(q["question_id"]), str(q["image_id"]), q["question"]) for q in questions]


def _words(sample: Sample) -> int:
    return len(sample.question.split())


def test_windows_hold_whole_images_and_every_sample_once():
    samples = _vqav2_samples()
    windows = plan_windows(samples, batch_size=4, prompt_length=_words, window_batches=2)
    assert len(windows) > 3
    assert [s.id for w in windows for s in w.samples] == [s.id for s in order_by_image(samples)]  # journal order
    for window in windows:
        assert sorted(s.id for b in window.batches for s in b) == sorted(s.id for s in window.samples)
        assert all(len(b) <= 4 for b in window.batches)
        lengths = [_words(s) for b in window.batches for s in b]
        assert lengths == sorted(lengths)  # shortest prompts first
    seen = [key for w in windows for key in w.image_keys]
    assert len(seen) == len(set(seen))  # an image's questions never straddle two windows


def test_sorting_saves_pad_tokens_on_real_questions():
    samples = order_by_image(_vqav2_samples())
    unsorted = [samples[i:i + 8] for i in range(0, len(samples), 8)]
    sorted_batches = [b for w in plan_windows(samples, 8, _words, window_batches=4) for b in w.batches]
    pads_before, tokens = padding_tokens(unsorted, _words)
    pads_after, same_tokens = padding_tokens(sorted_batches, _words)
    assert same_tokens == tokens and pads_before > 0
    assert pads_after < pads_before / 2, (pads_after, pads_before)


def test_the_runner_batches_length_sorted_prompts_and_journals_in_image_order(monkeypatch):
    generator = Blip2Generator(load_checkpoint(resolve_model(str(MODELS_DIR / "blip2-tiny-opt")), "cpu"))
    questions = ["what?", "how many people are there in this picture right now?", "is it red?",
                 "what is the man on the left holding in his hand?"]
    files = sorted(COCO_IMAGES.glob("*.jpg"))
    samples = [Sample(f"{f.stem}-{q}", str(f), questions[(i + q) % 4]) for i, f in enumerate(files) for q in range(2)]
    protocol = GenerationProtocol(prompt="Question: {question} Short answer:", max_new_tokens=3)
    seen: list[list[int]] = []
    generate = Blip2Generator.generate

    def recording(self, queries, prompts, proto):
        seen.append(self.prompt_token_counts(prompts))
        return generate(self, queries, prompts, proto)

    monkeypatch.setattr(Blip2Generator, "generate", recording)
    journaled: list = []
    run_single_turn(generator, samples, ImageSource(), protocol, journaled.extend, 4, decode_workers=2,
                    sort_by_length=True)
    assert [p.id for p in journaled] == [s.id for s in samples]  # image order, not batch order
    flat = [n for batch in seen for n in batch]
    assert flat == sorted(flat) and len(seen) == 4  # one window of 16: four batches, shortest first
    assert any(len(set(batch)) == 1 for batch in seen)  # equal lengths share a batch: no pads there


def test_predictions_file_is_byte_identical_across_batch_sizes(tmp_path, capsys):
    files = {}
    for batch_size in (1, 3, 16):
        results = tmp_path / f"b{batch_size}"
        code, _, err = run_cli(["run", "shapes-vqa", "-m", "blip2-tiny-opt", "--limit", "24", "--batch-size",
                                str(batch_size), "--results", str(results), "-q"], capsys)
        assert code == 0, err
        (run_json,) = results.glob("*/shapes-vqa/*/run.json")
        files[batch_size] = (run_json.parent / "predictions.jsonl").read_bytes()
    assert files[1] == files[3] == files[16]
    assert len({json.loads(line)["prediction"] for line in files[1].splitlines()}) > 1


def test_sorting_on_and_off_give_the_same_answers_in_the_same_order():
    generator = Blip2Generator(load_checkpoint(resolve_model(str(MODELS_DIR / "blip2-tiny-opt")), "cpu"))
    questions = ["what?", "how many people are there in this picture right now?", "is it red?"]
    files = sorted(COCO_IMAGES.glob("*.jpg"))
    samples = [Sample(f"{f.stem}-{q}", str(f), questions[(i + q) % 3]) for i, f in enumerate(files) for q in range(2)]
    protocol = GenerationProtocol(prompt="Question: {question} Short answer:", max_new_tokens=3)
    outputs = {}
    for sort in (True, False):
        journaled: list = []
        run_single_turn(generator, samples, ImageSource(), protocol, journaled.extend, 4, decode_workers=2,
                        sort_by_length=sort)
        outputs[sort] = [(p.id, p.prediction) for p in journaled]
    assert outputs[True] == outputs[False] and len(outputs[True]) == len(samples)
    assert len({answer for _, answer in outputs[True]}) > 1, outputs[True]  # the answers differ
