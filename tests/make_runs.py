"""Synthetic run folders (run.json, predictions.jsonl, sample_scores.jsonl) for report/compare tests.

The folders have the layout and fields `evalkit run` writes (evalkit.engine.run_record), with metrics that
are consistent with the per-sample scores (corpus BLEU/CIDEr/ROUGE-L from pycocoevalcap on
captions that are already lower-case and free of punctuation, so PTB tokenisation leaves them
as they are), unless a test overrides them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

DEFAULT_PROTOCOLS = {
    "caption": {"prompt": "a photo of", "num_beams": 5, "max_new_tokens": 30, "min_new_tokens": 8,
                "prompt_variant": "paper"},
    "vqa": {"prompt": "Question: {question} Short answer:", "num_beams": 5, "max_new_tokens": 10,
            "min_new_tokens": 1, "prompt_variant": "short-answer"},
    "retrieval": {"rerank_k": 128, "rerank": True, "max_text_tokens": 35},
}
KIND_OF_TASK = {"coco-caption": "caption", "vqav2": "vqa", "retrieval-coco": "retrieval",
                "retrieval-flickr30k": "retrieval", "shapes-caption": "caption", "shapes-vqa": "vqa",
                "shapes-retrieval": "retrieval", "nocaps": "caption"}
HEADLINE = {"caption": "CIDEr", "vqa": "accuracy", "retrieval": "r_mean"}
COLORS = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 200, 40), (150, 60, 180), (30, 180, 190)]


def sha(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def write_images(directory: Path, ids: Sequence[str], size: int = 48) -> dict[str, str]:
    """A small distinct PNG per id; returns id -> absolute path."""
    from PIL import Image, ImageDraw

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for n, sample_id in enumerate(ids):
        path = directory / f"img_{sample_id}.png"
        if not path.exists():
            img = Image.new("RGB", (size, size), (245, 245, 245))
            ImageDraw.Draw(img).rectangle([8, 8, size - 8, size - 8], fill=COLORS[n % len(COLORS)])
            img.save(path)
        out[sample_id] = str(path.resolve())
    return out


def write_run(results: Path, model: str, task: str, *, predictions: list[dict], sample_scores: dict[str, dict],
              metrics: dict[str, float], run_id: str, created: str = "2025-01-01T00:00:00+00:00",
              split: str = "test", overrides: dict | None = None, reportable: bool = True,
              reasons: Sequence[str] = (), data: str = "data-v1", source: str | None = None,
              details: dict | None = None, kind: str | None = None, sample_ids: Sequence[str] | None = None,
              vqa_metric: str = "official", weights: str | None = None) -> Path:
    """Write one run folder below ``results`` and return it."""
    kind = kind or KIND_OF_TASK[task]
    weights = weights or sha(["weights", model])
    overrides = dict(overrides or {})
    protocol = {**DEFAULT_PROTOCOLS[kind], **overrides}
    fingerprint = sha(protocol)
    run_dir = Path(results) / model.replace("/", "--") / task / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    ids = list(sample_ids) if sample_ids is not None else [p["id"] for p in predictions]
    details = dict(details or {})
    if kind == "vqa":
        details.setdefault("vqa_metric", vqa_metric)
    record = {
        "schema_version": 1, "run_id": run_id, "created": created,
        "task": {"name": task, "version": "1", "kind": kind, "protocol_source": "synthetic"},
        "model": {"name": model, "source": source if source is not None else f"Salesforce/{model}",
                  "family": "itm" if kind == "retrieval" else "opt", "revision": "main",
                  "weights_sha256": weights, "num_parameters": 1},
        "protocol": protocol, "protocol_fingerprint": fingerprint, "overrides": overrides,
        "data": {"format": "synthetic", "source": "synthetic", "split": split, "n_total": len(ids),
                 "n_samples": len(ids), "identity": data},
        "metrics": {name: {"value": float(value), "n": len(ids)} for name, value in metrics.items()},
        "headline_metric": HEADLINE[kind], "scale": "0-100", "details": details,
        "reportable": reportable, "not_reportable_reasons": list(reasons),
        "counts": {"samples": len(ids), "empty_predictions": 0, "failed": 0, "resumed_from_journal": 0,
                   "generated_this_invocation": len(ids)},
        "runtime": {"device": "cpu", "device_name": "cpu", "dtype": "float32", "image_size": 224, "batch_size": 8,
                    "wall_seconds": 1.0, "samples_per_second": 1.0},
        "journal_header": {"task": task, "task_version": "1", "model": model, "weights_sha256": weights,
                           "protocol_fingerprint": fingerprint, "dtype": "float32", "data": sha(data),
                           "sample_ids": sha(ids)},
        "provenance": {"evalkit_version": "test"},
        "official_predictions_file": "results.json",
    }
    with open(run_dir / "predictions.jsonl", "w", encoding="utf-8") as handle:
        for line in predictions:
            handle.write(json.dumps(line) + "\n")
    with open(run_dir / "sample_scores.jsonl", "w", encoding="utf-8") as handle:
        for sample_id, scores in sample_scores.items():
            handle.write(json.dumps({"id": sample_id, "scores": scores}) + "\n")
    (run_dir / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return run_dir


# --------------------------------------------------------------------------------------------
# per kind
# --------------------------------------------------------------------------------------------


def caption_scores(references: dict[str, list[str]], captions: dict[str, str]) -> tuple[dict, dict]:
    """(corpus metrics, per-image scores) with pycocoevalcap's BLEU, ROUGE-L and CIDEr (no Java)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: list(references[i]) for i in references}
    res = {i: [captions[i]] for i in references}
    bleu, bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_per = Rouge().compute_score(gts, res)
    cider, cider_per = Cider().compute_score(gts, res)
    ids = list(gts)  # the scorers iterate over gts keys in this order
    corpus = {f"BLEU-{k + 1}": 100.0 * bleu[k] for k in range(4)}
    corpus.update({"ROUGE-L": 100.0 * float(rouge), "CIDEr": 100.0 * float(cider)})
    per = {}
    for n, i in enumerate(ids):
        per[i] = {f"BLEU-{k + 1}": 100.0 * bleu_per[k][n] for k in range(4)}
        per[i].update({"ROUGE-L": 100.0 * float(rouge_per[n]), "CIDEr": 100.0 * float(cider_per[n])})
    return corpus, per


def caption_run(results: Path, model: str, captions: dict[str, str], references: dict[str, list[str]], *,
                task: str = "coco-caption", images: dict[str, str] | None = None,
                metrics_override: dict[str, float] | None = None, **kwargs) -> Path:
    corpus, per = caption_scores(references, captions)
    corpus.update(metrics_override or {})
    preds = [{"id": i, "prompt": "a photo of", "prediction": captions[i], "references": references[i],
              "status": "ok", "image": (images or {}).get(i, f"missing/{i}.jpg")} for i in references]
    return write_run(results, model, task, predictions=preds, sample_scores=per, metrics=corpus, **kwargs)


def vqa_accuracy(answer: str, gold: Sequence[str]) -> float:
    """Simplified VQA accuracy (0-100): min(1, matches/3)."""
    return 100.0 * min(1.0, sum(1 for g in gold if g == answer) / 3.0)


def vqa_run(results: Path, model: str, answers: dict[str, str], gold: dict[str, list[str]], *,
            answer_types: dict[str, str] | None = None, task: str = "vqav2", split: str = "val",
            images: dict[str, str] | None = None, questions: dict[str, str] | None = None,
            metrics_override: dict[str, float] | None = None, record_answer_types: bool = True, **kwargs) -> Path:
    per = {i: {"accuracy": vqa_accuracy(answers[i], gold[i])} for i in gold}
    metrics = {"accuracy": sum(s["accuracy"] for s in per.values()) / len(per)}
    types = answer_types or {}
    for t in sorted(set(types.values())):
        members = [i for i in gold if types.get(i) == t]
        metrics[f"accuracy/{t}"] = sum(per[i]["accuracy"] for i in members) / len(members)
    metrics.update(metrics_override or {})
    preds = []
    for i in gold:
        line = {"id": i, "prompt": f"Question: {(questions or {}).get(i, 'what is it?')} Short answer:",
                "prediction": answers[i], "references": gold[i], "status": "ok",
                "image": (images or {}).get(i, f"missing/{i}.jpg")}
        if record_answer_types and i in types:
            line["extra"] = {"answer_type": types[i]}
        preds.append(line)
    details = {"perAnswerType": {t: metrics[f"accuracy/{t}"] for t in sorted(set(types.values()))}}
    return write_run(results, model, task, predictions=preds, sample_scores=per, metrics=metrics, split=split,
                     details=details, **kwargs)


def retrieval_run(results: Path, model: str, text_ranks: Sequence[int], image_ranks: Sequence[int], *,
                  captions_per_image: int = 1, task: str = "retrieval-coco", images: dict[str, str] | None = None,
                  metrics_override: dict[str, float] | None = None, **kwargs) -> Path:
    """``text_ranks[i]``: 0-based rank of image i's first right caption; ``image_ranks[j]``: text j's image."""
    n_img = len(text_ranks)
    ids = [str(i) for i in range(n_img)]
    per = {}
    for i, r in zip(ids, text_ranks):
        per[f"image:{i}"] = {"text_rank": float(r), "txt_r1": float(r < 1), "txt_r5": float(r < 5),
                             "txt_r10": float(r < 10)}
    for j, r in enumerate(image_ranks):
        per[f"text:{j}"] = {"image_rank": float(r), "img_r1": float(r < 1), "img_r5": float(r < 5),
                            "img_r10": float(r < 10)}
    metrics = {}
    for k in (1, 5, 10):
        metrics[f"txt_r{k}"] = 100.0 * sum(r < k for r in text_ranks) / n_img
    for k in (1, 5, 10):
        metrics[f"img_r{k}"] = 100.0 * sum(r < k for r in image_ranks) / len(image_ranks)
    metrics["txt_r_mean"] = (metrics["txt_r1"] + metrics["txt_r5"] + metrics["txt_r10"]) / 3
    metrics["img_r_mean"] = (metrics["img_r1"] + metrics["img_r5"] + metrics["img_r10"]) / 3
    metrics["r_mean"] = (metrics["txt_r_mean"] + metrics["img_r_mean"]) / 2
    metrics.update(metrics_override or {})
    preds = [{"id": i, "prompt": "", "prediction": f"caption ranked first for image {i} (rank {r})",
              "references": [f"caption of image {i} number {c}" for c in range(captions_per_image)], "status": "ok",
              "image": (images or {}).get(i, f"missing/{i}.jpg"),
              "extra": {"best_caption_rank": int(r)}} for i, r in zip(ids, text_ranks)]
    return write_run(results, model, task, predictions=preds, sample_scores=per, metrics=metrics, **kwargs)


# --------------------------------------------------------------------------------------------
# a standard results folder: two models x three tasks (+ a second protocol, a non-reportable run)
# --------------------------------------------------------------------------------------------

WORDS = ["red", "blue", "green", "circle", "square", "triangle", "small", "large", "left", "right"]


def caption_set(n: int = 12) -> tuple[dict[str, list[str]], dict[str, str], dict[str, str]]:
    """(references, good captions, bad captions) for ``n`` images, lower case, no punctuation."""
    refs, good, bad = {}, {}, {}
    for k in range(n):
        a, b, c = WORDS[k % 3], WORDS[3 + k % 3], WORDS[6 + k % 2]
        i = str(100 + k)
        refs[i] = [f"a {c} {a} {b} on the {WORDS[8 + k % 2]}", f"a {a} {b} in the picture",
                   f"there is a {c} {a} {b}"]
        good[i] = f"a {c} {a} {b} in the picture"
        bad[i] = f"a {WORDS[(k + 1) % 3]} {WORDS[3 + (k + 2) % 3]}"
    return refs, good, bad


def vqa_set(n: int = 20) -> tuple[dict[str, list[str]], dict[str, str], dict[str, str]]:
    """(gold answers, answer types, question text) for ``n`` questions."""
    gold, types, questions = {}, {}, {}
    for k in range(n):
        i = str(1000 + k)
        if k % 3 == 0:
            gold[i], types[i], questions[i] = ["yes"] * 10, "yes/no", f"is there a {WORDS[k % 3]} shape?"
        elif k % 3 == 1:
            gold[i], types[i], questions[i] = [str(k % 4)] * 10, "number", "how many shapes are there?"
        else:
            gold[i], types[i], questions[i] = [WORDS[k % 3]] * 10, "other", "what color is the square?"
    return gold, types, questions


def answers_with_accuracy(gold: dict[str, list[str]], n_correct: int) -> dict[str, str]:
    """The first ``n_correct`` questions answered right, the rest wrong."""
    return {i: (g[0] if k < n_correct else "wrong") for k, (i, g) in enumerate(gold.items())}


def make_standard_results(root: Path, images: bool = True) -> dict[str, Path]:
    """Two models (blip2-opt-2.7b-coco, blip2-flan-t5-xl) on coco-caption, vqav2 and retrieval-coco.

    Extras: blip2-flan-t5-xl also ran vqav2 with prompt_variant=answer (a second protocol; 11/20
    right), an older vqav2 run of blip2-opt-2.7b-coco (hidden by --latest), and blip2-opt-2.7b-coco's
    retrieval run is not reportable (--limit). Returns name -> run folder.
    """
    root = Path(root)
    results = root / "results"
    refs, good, bad = caption_set()
    gold, types, questions = vqa_set()
    imgs = write_images(root / "images", list(refs) + list(gold) + [str(i) for i in range(10)]) if images else {}
    runs = {}
    runs["opt-caption"] = caption_run(results, "blip2-opt-2.7b-coco", good, refs, images=imgs, run_id="cap-opt",
                                      created="2025-01-02T00:00:00+00:00",
                                      metrics_override={"BLEU-4": 44.0, "CIDEr": 140.0})
    runs["t5-caption"] = caption_run(results, "blip2-flan-t5-xl", bad, refs, images=imgs, run_id="cap-t5",
                                     created="2025-01-02T00:00:00+00:00")
    runs["opt-vqa-old"] = vqa_run(results, "blip2-opt-2.7b-coco", answers_with_accuracy(gold, 5), gold,
                                  answer_types=types, questions=questions, images=imgs, run_id="vqa-opt-old",
                                  created="2025-01-01T00:00:00+00:00")
    runs["opt-vqa"] = vqa_run(results, "blip2-opt-2.7b-coco", answers_with_accuracy(gold, 9), gold,
                              answer_types=types, questions=questions, images=imgs, run_id="vqa-opt",
                              created="2025-01-03T00:00:00+00:00")
    runs["t5-vqa"] = vqa_run(results, "blip2-flan-t5-xl", answers_with_accuracy(gold, 13), gold,
                             answer_types=types, questions=questions, images=imgs, run_id="vqa-t5",
                             created="2025-01-03T00:00:00+00:00")
    runs["t5-vqa-answer"] = vqa_run(results, "blip2-flan-t5-xl", answers_with_accuracy(gold, 11), gold,
                                    answer_types=types, questions=questions, images=imgs, run_id="vqa-t5-answer",
                                    created="2025-01-04T00:00:00+00:00",
                                    overrides={"prompt": "Question: {question} Answer:", "prompt_variant": "answer"})
    runs["opt-retrieval"] = retrieval_run(results, "blip2-opt-2.7b-coco", [0, 0, 1, 3, 0, 7, 12, 0, 0, 2],
                                          [0, 1, 0, 0, 4, 0, 9, 0, 20, 0], images=imgs, run_id="ret-opt",
                                          reportable=False, reasons=["--limit 10: a subset"],
                                          created="2025-01-02T00:00:00+00:00")
    runs["t5-retrieval"] = retrieval_run(results, "blip2-flan-t5-xl", [0, 0, 0, 3, 0, 0, 2, 0, 0, 0],
                                         [0, 0, 0, 0, 1, 0, 3, 0, 0, 0], images=imgs, run_id="ret-t5",
                                         created="2025-01-02T00:00:00+00:00")
    return runs


def cli(args: Sequence[str]) -> tuple[int, str, str]:
    """Run `evalkit report|compare ARGS` in-process the way evalkit.cli.main.main does: (exit code, stdout, stderr).

    Builds its own Typer app with evalkit.cli.report_commands.register, so it works whether or not
    evalkit/cli.py has wired the commands in yet.
    """
    import contextlib
    import io

    import typer

    from evalkit.cli.report_commands import register
    from evalkit.core.errors import EvalkitError

    app = typer.Typer(add_completion=False)
    register(app)

    @app.callback()
    def _root() -> None:  # keeps `report`/`compare` as subcommands
        pass

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            returned = app([str(a) for a in args], standalone_mode=False)
            code = returned if isinstance(returned, int) else 0
        except EvalkitError as error:
            print(f"error: {error}", file=err)
            code = error.exit_code
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 0
    return code, out.getvalue(), err.getvalue()
