"""evalkit beside LAVIS's own BLIP-2 model code, run as it is, on the same weights (the bundled tiny models).

scripts/lavis_env.sh makes the side environment (salesforce-lavis 1.0.2, transformers 4.26.1, timm 0.4.12)
when it is missing; tests/lavis_reference/lavis_side.py builds LAVIS's Blip2OPT, Blip2T5 and Blip2ITM at the
tiny models' sizes, loads the state dicts `evalkit convert to-lavis` writes, and calls their generate /
predict_answers / compute_sim_matrix. This file runs evalkit on the bundled shapes test split under the same
protocols and compares: max |Δ| of the ViT, ln_vision, Q-Former and LM logits (fp32), identical captions and
answers out of all samples, and the ITC+ITM score matrices. Every difference has a named cause (CAUSES), each
shown by a counterfactual on evalkit's side; a new difference fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from evalkit.core.registry import get_task
from evalkit.data.data_arg import parse_data_arg
from evalkit.data.lavis_text import blip_question
from evalkit.demo.bundled import MODELS_DIR, SHAPES_DIR
from evalkit.inference.generation_runner import render_prompt
from evalkit.models.catalog import MODELS
from evalkit.models.lavis_convert import hf_folder_to_lavis, save_lavis_checkpoint
from evalkit.models.loading import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
LAVIS_ENV = Path(os.environ.get("EVALKIT_LAVIS_ENV", ROOT / ".lavis-env"))
SIDE = ROOT / "tests/lavis_reference/lavis_side.py"
MODEL = {"opt": "blip2-tiny-opt", "t5": "blip2-tiny-t5", "itm": "blip2-tiny-itm"}
LOGIT_PROMPTS = ["a photo of", "Question: how many shapes are there? Short answer:"]
# captions and VQA answers of the first N images / questions only (0: all, as CI runs it); for a quick local
# check on a loaded machine. The tensors and the retrieval matrices always cover the whole split.
GENERATION_LIMIT = int(os.environ.get("EVALKIT_LAVIS_SAMPLES", "0"))
REPORT: dict = {}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(LAVIS outputs, job, evalkit checkpoints, pixels, evalkit run folders)."""
    subprocess.run(["bash", str(ROOT / "scripts/lavis_env.sh"), str(LAVIS_ENV)], check=True)
    work = tmp_path_factory.mktemp("lavis_reference")
    prepared = write_job(work)
    env = {**os.environ, "PYTHONPATH": "", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cached = LAVIS_ENV / "outputs" / f"{_job_digest(work)}.pt"
    if not cached.is_file():  # the same job (script, weights, pixels, settings) gives the same outputs
        done = subprocess.run([str(LAVIS_ENV / "bin/python"), str(SIDE), str(work)], env=env, capture_output=True,
                              text=True, timeout=3000)
        assert done.returncode == 0, done.stderr[-3000:]
        cached.parent.mkdir(exist_ok=True)
        (work / "lavis_outputs.pt").replace(cached)
    lavis = torch.load(cached, weights_only=False)
    runs = {}
    for family, task in (("opt", "shapes-caption"), ("t5", "shapes-caption"), ("opt", "shapes-vqa"),
                         ("t5", "shapes-vqa"), ("itm", "shapes-retrieval")):
        results = work / f"results-{family}-{task}"
        extra = ["--scores"] if family == "itm" else []
        code = _run([task, "--model", MODEL[family], "--results", str(results), "-q", "--device", "cpu", *extra])
        assert code == 0
        runs[(family, task)] = next(results.rglob("run.json")).parent
    return {**prepared, "lavis": lavis, "runs": runs}


def write_job(work: Path) -> dict:
    """work/job.json and the files it names: converted state dicts, pixels, prompts, decoding settings."""
    caption_task, vqa_task = get_task("shapes-caption"), get_task("shapes-vqa")
    captions = caption_task.load_data(parse_data_arg(str(SHAPES_DIR)), "test", None, caption_task.columns)
    questions = vqa_task.load_data(parse_data_arg(str(SHAPES_DIR)), "test", None, vqa_task.columns)
    images = [s.image for s in captions.samples]
    index = {Path(image).name: i for i, image in enumerate(images)}
    checkpoints = {family: load_checkpoint(MODELS[name], device="cpu") for family, name in MODEL.items()}
    pixels = {}
    job = {"families": {}, "generation_limit": GENERATION_LIMIT}
    for family, checkpoint in checkpoints.items():
        from PIL import Image

        from evalkit.models.image_preprocessing import ImagePreprocessor

        preprocess = ImagePreprocessor(checkpoint.processor, checkpoint.model.config.vision_config.image_size, None)
        pixels[family] = preprocess([Image.open(p).convert("RGB") for p in images])
        torch.save(pixels[family], work / f"{family}_pixels.pt")
        state, config, _ = hf_folder_to_lavis(MODELS_DIR / MODEL[family])
        save_lavis_checkpoint(state, work / f"{family}.pth")
        spec = {"work": str(work), "pth": str(work / f"{family}.pth"), "config": config,
                "pixels": str(work / f"{family}_pixels.pt"), "image_size": config["vision_config"]["image_size"],
                "bert_vocab": _bert_vocab(), "logit_prompts": LOGIT_PROMPTS}
        if family == "itm":
            from evalkit.kinds.retrieval import retrieval_texts

            protocol = get_task("shapes-retrieval").protocol_for("itm")
            texts, _, _ = retrieval_texts(captions, protocol)
            spec.update(texts=texts, k_test=protocol.rerank_k)
        else:
            tokenizer = checkpoint.processor.tokenizer
            spec.update(tokenizer_file=str(MODELS_DIR / MODEL[family] / "tokenizer.json"),
                        special_tokens={k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)})
            cap = caption_task.protocol_for(family)
            vqa = vqa_task.protocol_for(family)
            # evalkit's shapes caption protocol asks for >= 1 new token (min_new_tokens 1, min_length 0); in
            # transformers 4.26's min_length, counted over the decoder input: BOS + prompt (OPT), start token (T5)
            prompt_tokens = len(tokenizer(cap.prompt)["input_ids"]) if family == "opt" else 1
            spec["caption_prompt"] = cap.prompt
            spec["caption_generate"] = {"num_beams": cap.num_beams, "max_length": cap.max_new_tokens,
                                        "min_length": prompt_tokens + cap.min_new_tokens,
                                        "length_penalty": cap.length_penalty,
                                        "repetition_penalty": cap.repetition_penalty}
            spec["vqa"] = [{"id": s.id, "image": index[Path(s.image).name], "question": blip_question(s.question),
                            "prompt": render_prompt(vqa, s.question)} for s in questions.samples]
            spec["vqa_prompt"] = vqa.prompt.replace("{question}", "{}")
            spec["vqa_generate"] = {"num_beams": vqa.num_beams, "max_length": vqa.max_new_tokens,
                                    "min_length": vqa.min_length, "length_penalty": vqa.length_penalty,
                                    "repetition_penalty": vqa.repetition_penalty}
            spec["vqa_predict"] = {"num_beams": vqa.num_beams, "max_len": vqa.max_new_tokens,
                                   "min_len": vqa.min_length, "length_penalty": vqa.length_penalty}
        job["families"][family] = spec
    (work / "job.json").write_text(json.dumps(job))
    return {"job": job, "checkpoints": checkpoints, "pixels": pixels, "captions": captions, "questions": questions}


def _job_digest(work: Path) -> str:
    """sha256 of what the LAVIS side reads: its script, the job's settings and every file the job names."""
    import hashlib

    digest = hashlib.sha256(SIDE.read_bytes())
    job = (work / "job.json").read_text()
    digest.update(job.replace(str(work), "WORK").encode())
    for file in sorted(work.iterdir()):
        if file.suffix in (".pt", ".pth"):
            digest.update(file.name.encode() + hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()[:24]


def _run(args: list[str]) -> int:
    from evalkit.cli.main import main

    old = sys.argv
    sys.argv = ["evalkit", "run", *args]
    try:
        main()
    except SystemExit as exit_:
        return exit_.code or 0
    finally:
        sys.argv = old
    return 0


def _bert_vocab() -> list[str]:
    vocab = json.loads((MODELS_DIR / "blip2-tiny-itm/tokenizer.json").read_text())["model"]["vocab"]
    return [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]



def _predictions(run_dir: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines() if line.strip()]
    return {row["id"]: row["prediction"] for row in rows}


@torch.no_grad()
def _evalkit_tensors(model, pixels: torch.Tensor, family: str, prompts: list[str], tokenizer) -> dict:
    """The calls evalkit's Blip2Generator / Blip2Retriever make: ViT, Q-Former, projection + LM over a prompt."""
    vision = model.vision_model(pixels, output_hidden_states=True, return_dict=True)
    embeds = vision.last_hidden_state
    mask = torch.ones(embeds.shape[:-1], dtype=torch.long)
    queries = model.query_tokens.expand(embeds.shape[0], -1, -1)
    query = model.qformer(query_embeds=queries, encoder_hidden_states=embeds, encoder_attention_mask=mask,
                          return_dict=True).last_hidden_state
    out = {"vision_blocks": vision.hidden_states[-1], "vision": embeds, "qformer": query, "lm_logits": []}
    if family == "itm":
        return out
    projected = model.language_projection(query)
    lm = model.language_model
    for prompt in prompts:
        ids = tokenizer([prompt] * pixels.shape[0], return_tensors="pt")
        inputs = torch.cat([projected, lm.get_input_embeddings()(ids["input_ids"])], dim=1)
        attention = torch.cat([torch.ones(projected.shape[:-1], dtype=torch.long), ids["attention_mask"]], dim=1)
        extra = {} if family == "opt" else {
            "decoder_input_ids": torch.full((pixels.shape[0], 1), lm.config.decoder_start_token_id)}
        out["lm_logits"].append(lm(inputs_embeds=inputs, attention_mask=attention, **extra).logits)
    return out


def _max_delta(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.float() - b.float()).abs().max())


def _deltas(ours: dict, theirs: dict) -> dict[str, float]:
    deltas = {name: _max_delta(ours[name], theirs[name]) for name in ("vision_blocks", "vision", "qformer")}
    for prompt, a, b in zip(LOGIT_PROMPTS, ours["lm_logits"], theirs.get("lm_logits", [])):
        deltas[f"lm_logits[{prompt[:12]}]"] = _max_delta(a, b)
    return deltas


class lavis_constants:
    """LAVIS's architecture constants applied to an evalkit model in place (a counterfactual that names a
    cause): ln_vision's eps 1e-5 (torch's default; transformers uses vision_config.layer_norm_eps 1e-6 for
    post_layernorm) and, for T5, the exact gelu LAVIS's blip2_t5.py sets (the tiny T5 was trained with gelu_new)."""

    def __init__(self, model, family: str, opt_stop_token: int | None = None):
        self.model, self.family, self.saved, self.stop = model, family, [], opt_stop_token

    def __enter__(self):
        from transformers.activations import ACT2FN

        norm = self.model.vision_model.post_layernorm
        self.saved.append((norm, "eps", norm.eps))
        norm.eps = 1e-5
        if self.family == "t5":
            for module in self.model.language_model.modules():
                if hasattr(module, "wi_0") and hasattr(module, "act"):
                    self.saved.append((module, "act", module.act))
                    module.act = ACT2FN["gelu"]
        if self.family == "opt" and self.stop is not None:  # LAVIS 1.0.2 stops OPT at the newline only
            config = self.model.language_model.generation_config
            self.saved.append((config, "eos_token_id", config.eos_token_id))
            config.eos_token_id = self.stop
        return self.model

    def __exit__(self, *exc):
        for owner, name, value in reversed(self.saved):
            setattr(owner, name, value)
        self.saved.clear()


def _generator_answers(checkpoint, pixels, prompts: list[str], protocol, images: list[int]) -> list[str]:
    """evalkit's Blip2Generator on the given (image index, prompt) pairs, one at a time."""
    from evalkit.models.blip2_generation import Blip2Generator

    generator = Blip2Generator(checkpoint, None)
    answers = []
    for image, prompt in zip(images, prompts):
        query = generator.encode_images(pixels[image:image + 1])
        answers += generator.generate(query, [prompt], protocol)
    return answers


def _answer_table(reference, family: str) -> list[dict]:
    """One row per caption / VQA sample: evalkit's journalled answer, LAVIS's, and evalkit's under LAVIS's
    constants (only computed where the first two differ)."""
    captions, questions = reference["captions"], reference["questions"]
    lavis = reference["lavis"][family]
    checkpoint = reference["checkpoints"][family]
    pixels = reference["pixels"][family]
    rows = []
    caption_run = _predictions(reference["runs"][(family, "shapes-caption")])
    for index, sample in enumerate(captions.samples[:len(lavis["captions"])]):
        rows.append({"task": "caption", "id": sample.id, "image": index, "evalkit": caption_run[sample.id],
                     "lavis": lavis["captions"][index].strip(), "prompt": get_task("shapes-caption").protocol_for(family).prompt})
    vqa_run = _predictions(reference["runs"][(family, "shapes-vqa")])
    items = reference["job"]["families"][family]["vqa"]
    for item, sample, answer in zip(items, questions.samples, lavis["answers"]):
        rows.append({"task": "vqa", "id": sample.id, "image": item["image"], "evalkit": vqa_run[sample.id],
                     "lavis": answer.strip(), "prompt": item["prompt"]})
    differing = [r for r in rows if r["evalkit"] != r["lavis"]]
    assert len(rows) == len(lavis["captions"]) + len(lavis["answers"])
    with lavis_constants(checkpoint.model, family, lavis.get("eos_token_id")):
        for task_name, task in (("caption", "shapes-caption"), ("vqa", "shapes-vqa")):
            chosen = [r for r in differing if r["task"] == task_name]
            answers = _generator_answers(checkpoint, pixels, [r["prompt"] for r in chosen],
                                         get_task(task).protocol_for(family), [r["image"] for r in chosen])
            for row, answer in zip(chosen, answers):
                row["evalkit_with_lavis_constants"] = answer
    return rows



def _tensor_rows(reference) -> dict[str, dict]:
    rows = {}
    for family in MODEL:
        checkpoint = reference["checkpoints"][family]
        tokenizer = checkpoint.processor.tokenizer
        pixels = reference["pixels"][family]
        raw = _deltas(_evalkit_tensors(checkpoint.model, pixels, family, LOGIT_PROMPTS, tokenizer),
                      reference["lavis"][family])
        with lavis_constants(checkpoint.model, family):
            fixed = _deltas(_evalkit_tensors(checkpoint.model, pixels, family, LOGIT_PROMPTS, tokenizer),
                            reference["lavis"][family])
        rows[family] = {"raw": raw, "lavis_constants": fixed}
    return rows


def test_stubs_and_versions_are_reported(reference):
    lavis = reference["lavis"]
    print("\nLAVIS side:", lavis["versions"])
    for stub in lavis["stubs"] + lavis["sizes"]:
        print("  stub/size:", stub)
    assert lavis["versions"]["salesforce-lavis"] == "1.0.2" and lavis["versions"]["transformers"].startswith("4.26.")
    assert lavis["versions"]["timm"] == "0.4.12"
    # every converted key landed in LAVIS's modules; only the ITM's training-only keys kept LAVIS's init
    assert not lavis["opt"]["load"]["missing_allowed"] and not lavis["t5"]["load"]["missing_allowed"]
    assert {k.split(".")[0] for k in lavis["itm"]["load"]["missing_allowed"]} == {"Qformer", "temp"}
    assert lavis["t5"]["load"]["t5_dense_act_fn"] == "gelu"  # LAVIS's blip2_t5.py set it, not the harness


def test_vision_qformer_and_lm_outputs_match_lavis(reference):
    """fp32 max |Δ| per family; the two named causes (ln_vision eps, T5 gelu) shown by applying LAVIS's
    constants to evalkit's model: what is left is rounding."""
    rows = _tensor_rows(reference)
    print()
    for family, row in rows.items():
        for kind, deltas in row.items():
            print(f"{family:4} {kind:16} " + "  ".join(f"{k} {v:.2e}" for k, v in deltas.items()))
    for family, row in rows.items():
        raw, fixed = row["raw"], row["lavis_constants"]
        assert raw["vision_blocks"] < 1e-5, family  # EVA blocks: rounding only
        # cause 1: ln_vision eps 1e-5 (LAVIS) vs 1e-6 (transformers' post_layernorm): 10x above rounding
        assert raw["vision"] > 10 * fixed["vision"] and fixed["vision"] < 1e-5, (family, raw, fixed)
        assert fixed["qformer"] < 1e-5, (family, fixed)
        assert all(v < 1e-4 for k, v in fixed.items() if k.startswith("lm_logits")), (family, fixed)
    # cause 2: LAVIS's exact gelu in the T5 FFN (the tiny T5 has gelu_new) moves the T5 logits beyond rounding
    assert rows["t5"]["raw"]["lm_logits[a photo of]"] > 10 * rows["t5"]["lavis_constants"]["lm_logits[a photo of]"]


def test_a_converted_lavis_checkpoint_runs_as_lavis(reference, tmp_path):
    """`evalkit convert lavis` of the tiny OPT's LAVIS state dict, loaded by evalkit: its vision output is LAVIS's
    (the loader sets ln_vision's eps), where the bundled model's differs."""
    from evalkit.models.catalog import resolve_model
    from evalkit.models.lavis_convert import convert_lavis_checkpoint

    out = tmp_path / "converted"
    convert_lavis_checkpoint(Path(reference["job"]["families"]["opt"]["pth"]), "opt", "blip2-tiny-opt", out)
    converted = load_checkpoint(resolve_model(str(out)), device="cpu")
    pixels = reference["pixels"]["opt"]
    with torch.no_grad():
        ours = converted.model.vision_model(pixels).last_hidden_state
        bundled = reference["checkpoints"]["opt"].model.vision_model(pixels).last_hidden_state
    lavis = reference["lavis"]["opt"]["vision"]
    print(f"\nvision max |Δ| vs LAVIS: converted {_max_delta(ours, lavis):.2e}, bundled {_max_delta(bundled, lavis):.2e}")
    assert _max_delta(ours, lavis) < 1e-5 < _max_delta(bundled, lavis)


def test_retrieval_scores_match_lavis(reference):
    """LAVIS's compute_sim_matrix (ITC shortlist + ITM re-rank, -100 elsewhere) against evalkit's matrices."""
    import numpy as np

    run = reference["runs"][("itm", "shapes-retrieval")]
    ours = {"i2t": np.load(run / "scores_i2t.npy"), "t2i": np.load(run / "scores_t2i.npy")}
    print()
    for name in ("i2t", "t2i"):
        theirs = reference["lavis"]["itm"][name].numpy()
        assert ours[name].shape == theirs.shape
        same_shortlist = ((ours[name] == -100) == (theirs == -100)).all(axis=1)
        delta = float(np.abs(ours[name] - theirs).max())
        top1 = float((ours[name].argmax(1) == theirs.argmax(1)).mean())
        print(f"{name}: shortlists equal {same_shortlist.sum()}/{len(same_shortlist)}, max |Δ| {delta:.2e}, "
              f"top-1 equal {top1:.3f}")
        REPORT[name] = (int(same_shortlist.sum()), len(same_shortlist), delta)



# The named causes of every caption / answer that differs from LAVIS's, by (family, task). Each is checked by
# the counterfactual: evalkit's generator with LAVIS's constants and stop token gives LAVIS's answer exactly.
CAUSES = {
    ("opt", "caption"): "LAVIS 1.0.2's Blip2OPT stops only at the newline (eos_token_id = tokenizer('\\n')); "
                        "the tiny OPT ends captions with </s>, so LAVIS decodes on to 30 tokens and beam search "
                        "keeps other beams (evalkit stops at the checkpoint's EOS and the newline; the hub OPT "
                        "checkpoints' EOS is the newline, 50118, so there they agree)",
}
CONSTANTS = "ln_vision eps 1e-5 and, for T5, LAVIS's exact gelu (the tiny models: 1e-6 and gelu_new)"


@pytest.mark.parametrize("family", ["opt", "t5"])
def test_answers_match_lavis_or_differ_by_a_named_cause(reference, family):
    rows = _answer_table(reference, family)
    print()
    for task in ("caption", "vqa"):
        chosen = [r for r in rows if r["task"] == task]
        same = sum(r["evalkit"] == r["lavis"] for r in chosen)
        explained = sum(r.get("evalkit_with_lavis_constants") == r["lavis"] for r in chosen if r["evalkit"] != r["lavis"])
        print(f"{family} {task}: identical {same}/{len(chosen)}; differing {len(chosen) - same}, of which "
              f"{explained} equal LAVIS under LAVIS's constants and stop token")
        REPORT[(family, task)] = (same, len(chosen))
        differing = [r for r in chosen if r["evalkit"] != r["lavis"]]
        unexplained = [r for r in differing if r.get("evalkit_with_lavis_constants") != r["lavis"]]
        assert not unexplained, unexplained[:3]
        if differing and (family, task) not in CAUSES:  # only the constants may explain it, and must
            assert all(r["evalkit_with_lavis_constants"] == r["lavis"] for r in differing)
            print(f"  cause: {CONSTANTS}")
        elif differing:
            print(f"  cause: {CAUSES[(family, task)]}")
    opt_captions = [r for r in rows if r["task"] == "caption"]
    if family == "opt":  # the pinned cause is real: most OPT captions differ, and LAVIS's run on past </s>
        assert sum(r["evalkit"] != r["lavis"] for r in opt_captions) > len(opt_captions) // 2
        assert sum(len(r["lavis"]) > len(r["evalkit"]) for r in opt_captions) > len(opt_captions) // 2
