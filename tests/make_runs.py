"""Synthetic run folders (run.json, predictions.jsonl, sample_scores.jsonl, official file) for report/compare
tests that need precisely controlled per-sample scores.

Every synthetic record is derived from a real one: the `real_runs` fixture (tests/conftest.py) runs
`evalkit run` on the bundled tiny models once per session and hands its run folders to use_real_runs();
write_run() copies the real run.json of the same task kind and replaces only fields the real record has
(a field it lacks is an error, so a schema change of evalkit breaks these tests rather than letting them
test a stale layout). Metrics are consistent with the per-sample scores (corpus BLEU/CIDEr/ROUGE-L from
pycocoevalcap on captions that are already lower-case and free of punctuation, so PTB tokenisation leaves
them as they are), unless a test overrides them.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Sequence

KIND_OF_TASK = {"coco-caption": "caption", "vqav2": "vqa", "retrieval-coco": "retrieval",
                "retrieval-flickr30k": "retrieval", "shapes-caption": "caption", "shapes-vqa": "vqa",
                "shapes-retrieval": "retrieval", "nocaps": "caption"}
OFFICIAL_ROW = {"caption": lambda p: {"image_id": int(p["id"]), "caption": p.get("prediction", "")},
                "vqa": lambda p: {"question_id": int(p["id"]), "answer": p.get("prediction", "")}}
COLORS = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 200, 40), (150, 60, 180), (30, 180, 190)]
_REAL_RUNS: dict[str, Path] = {}


def use_real_runs(runs: dict[str, Path]) -> None:
    """kind -> a run folder written by `evalkit run` in this session (the template of that kind's records)."""
    _REAL_RUNS.update({kind: Path(folder) for kind, folder in runs.items()})


def sha(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def real_template(kind: str) -> tuple[dict, Path]:
    """(run.json, run folder) of this session's real run of ``kind``."""
    if kind not in _REAL_RUNS:
        raise RuntimeError(f"make_runs has no real {kind} run to derive from: the test must use the real_runs "
                           "fixture (pytestmark = pytest.mark.usefixtures('real_runs'))")
    folder = _REAL_RUNS[kind]
    record = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    assert record["task"]["kind"] == kind, (folder, record["task"])
    return record, folder


def _put(record: dict, path: str, value) -> None:
    """Set a field the real record has; a field it lacks means evalkit's schema moved away from make_runs."""
    *parents, last = path.split(".")
    node = record
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict) or last not in node:
        raise KeyError(f"a real run.json has no field {path!r}: tests/make_runs.py is out of date with evalkit's "
                       "run record")
    node[last] = value


def _only_known(what: str, names, known) -> None:
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise KeyError(f"{what} {unknown} do not occur in the real run ({sorted(known)}): tests/make_runs.py is out "
                       "of date with evalkit's output")


METRIC_FIELDS = {"value", "n", "std_error", "std_error_method", "higher_is_better"}


def _metric_entries(template: dict, metrics: dict[str, float], n: int, kind: str, sample_scores: dict,
                    predictions: list[dict]) -> dict[str, dict]:
    """Entries shaped like the real ones (value, n, and the kind's standard error and direction, clustered by
    each prediction's image); any other real field must be taught to make_runs."""
    from evalkit.kinds import kind_named

    entry_keys = {key for entry in template["metrics"].values() for key in entry}
    _only_known("metric names", metrics, template["metrics"])
    if entry_keys != METRIC_FIELDS:
        raise KeyError(f"real metric entries have the fields {sorted(entry_keys)}; make_runs writes "
                       f"{sorted(METRIC_FIELDS)}")
    task_kind = kind_named(kind)
    clusters = {task_kind.sample_score_prefix + p["id"]: p.get("image") or p["id"] for p in predictions}
    errors = task_kind.standard_errors(metrics, sample_scores, clusters)
    return {name: {"value": float(value), "n": n, **errors[name], "higher_is_better": task_kind.higher_is_better(name)}
            for name, value in metrics.items()}


def write_run(results: Path, model: str, task: str, *, predictions: list[dict], sample_scores: dict[str, dict],
              metrics: dict[str, float], run_id: str, created: str = "2025-01-01T00:00:00+00:00",
              split: str = "test", overrides: dict | None = None, reportable: bool = True,
              reasons: Sequence[str] = (), data: str = "data-v1", source: str | None = None,
              details: dict | None = None, kind: str | None = None, sample_ids: Sequence[str] | None = None,
              vqa_metric: str = "official", weights: str | None = None, protocol_name: str | None = None) -> Path:
    """Write one run folder below ``results`` (a copy of the real run of the same kind with these fields
    replaced) and return it."""
    kind = kind or KIND_OF_TASK[task]
    template, real_dir = real_template(kind)
    record = copy.deepcopy(template)
    weights = weights or sha(["weights", model])
    overrides = dict(overrides or {})
    family = "itm" if kind == "retrieval" else "t5" if "t5" in model else "opt"
    task_record, protocol, fingerprint = _task_and_protocol(task, family, overrides, template, protocol_name)
    ids = list(sample_ids) if sample_ids is not None else [p["id"] for p in predictions]
    details = dict(details or {})
    if kind == "vqa":
        details.setdefault("vqa_metric", vqa_metric)
    _only_known("details", details, template["details"])
    fields = {
        "run_id": run_id, "created": created, "task": task_record,
        "model.name": model, "model.source": source if source is not None else f"Salesforce/{model}",
        "model.family": family, "model.revision": "main", "model.weights_sha256": weights,
        "protocol": protocol, "protocol_fingerprint": fingerprint, "overrides": overrides,
        "data.format": "synthetic", "data.source": "synthetic", "data.split": split, "data.n_total": len(ids),
        "data.n_samples": len(ids), "data.annotations_sha256": sha(data),
        "metrics": _metric_entries(template, metrics, len(ids), kind, sample_scores, predictions), "details": details,
        "reportable": reportable, "not_reportable_reasons": list(reasons),
        "counts.samples": len(ids), "counts.empty_predictions": 0, "counts.failed": 0,
        "counts.resumed_from_journal": 0, "counts.generated_this_invocation": len(ids),
        "journal_header.task": task, "journal_header.task_version": task_record["version"],
        "journal_header.model": model, "journal_header.weights_sha256": weights,
        "journal_header.protocol_fingerprint": fingerprint, "journal_header.data": sha(data),
        "journal_header.sample_ids": sha(ids),
    }
    for path, value in fields.items():
        _put(record, path, value)
    _check_lines(real_dir, predictions, sample_scores)

    run_dir = Path(results) / model.replace("/", "--") / task / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "predictions.jsonl", "w", encoding="utf-8") as handle:
        for line in predictions:
            handle.write(json.dumps(line) + "\n")
    with open(run_dir / "sample_scores.jsonl", "w", encoding="utf-8") as handle:
        for sample_id, scores in sample_scores.items():
            handle.write(json.dumps({"id": sample_id, "scores": scores}) + "\n")
    official = template.get("official_predictions_file")
    if official:  # the official file, in the real one's row shape
        rows = [OFFICIAL_ROW[kind](p) for p in predictions]
        real_rows = json.loads((real_dir / official).read_text(encoding="utf-8"))
        assert all(set(row) == set(real_rows[0]) for row in rows), (official, real_rows[0])
        (run_dir / official).write_text(json.dumps(rows), encoding="utf-8")
    (run_dir / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return run_dir


def _task_and_protocol(task: str, family: str, overrides: dict, template: dict,
                       protocol_name: str | None = None) -> tuple[dict, dict, str]:
    """(task record, protocol, fingerprint) as `evalkit run` records them: the registered task's own, its
    protocol (``protocol_name`` or the default) for ``family`` with ``overrides``. A task evalkit does not register (nocaps, which only the
    reference numbers know) gets the real run's task record renamed and its protocol with the overrides."""
    from evalkit.core.errors import EvalkitError
    from evalkit.core.registry import get_task

    try:
        spec = get_task(task)
    except EvalkitError:
        from evalkit.core.protocol import sha256_of

        _only_known("protocol overrides", overrides, template["protocol"])
        protocol = {**template["protocol"], **overrides}
        return {**template["task"], "name": task}, protocol, sha256_of(protocol)  # as evalkit fingerprints
    task_record = spec.to_record()
    assert task_record["kind"] == template["task"]["kind"] and set(task_record) == set(template["task"]), task_record
    chosen = spec.protocol_for(family, protocol_name).with_overrides(overrides)
    protocol = chosen.to_dict()
    assert set(protocol) == set(template["protocol"]), (sorted(protocol), sorted(template["protocol"]))
    return task_record, protocol, chosen.fingerprint()


def _check_lines(real_dir: Path, predictions: list[dict], sample_scores: dict[str, dict]) -> None:
    """predictions.jsonl / sample_scores.jsonl lines use only the fields and score names the real ones use."""
    real_predictions = _jsonl(real_dir / "predictions.jsonl")
    real_scores = _jsonl(real_dir / "sample_scores.jsonl")
    _only_known("predictions.jsonl fields", {key for p in predictions for key in p},
                {key for p in real_predictions for key in p} | {"error"})  # "error": failed samples only
    _only_known("predictions.jsonl extra fields", {key for p in predictions for key in p.get("extra") or {}},
                {key for p in real_predictions for key in p.get("extra") or {}})
    assert all(set(line) == {"id", "scores"} for line in real_scores), real_scores[0]
    _only_known("sample score names", {name for scores in sample_scores.values() for name in scores},
                {name for line in real_scores for name in line["scores"]})


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
    for name, value in (metrics_override or {}).items():
        if name in ("CIDEr", "ROUGE-L"):  # these are the mean of the per-image scores: keep the record consistent
            for scores in per.values():
                scores[name] += value - corpus[name]
        corpus[name] = value
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
    kwargs.setdefault("details", {"n_images": n_img, "n_texts": len(image_ranks)})
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
    retrieval run is not reportable (--limit). The VQA runs are scored with LAVIS's accuracy, as the paper's
    val numbers were, so a default-protocol run is like-for-like with them. Returns name -> run folder.
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
                                  vqa_metric="lavis", created="2025-01-01T00:00:00+00:00")
    runs["opt-vqa"] = vqa_run(results, "blip2-opt-2.7b-coco", answers_with_accuracy(gold, 9), gold,
                              answer_types=types, questions=questions, images=imgs, run_id="vqa-opt",
                              vqa_metric="lavis", created="2025-01-03T00:00:00+00:00")
    runs["t5-vqa"] = vqa_run(results, "blip2-flan-t5-xl", answers_with_accuracy(gold, 13), gold,
                             answer_types=types, questions=questions, images=imgs, run_id="vqa-t5",
                             vqa_metric="lavis", created="2025-01-03T00:00:00+00:00")
    runs["t5-vqa-answer"] = vqa_run(results, "blip2-flan-t5-xl", answers_with_accuracy(gold, 11), gold,
                                    answer_types=types, questions=questions, images=imgs, run_id="vqa-t5-answer",
                                    vqa_metric="lavis", created="2025-01-04T00:00:00+00:00",
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
    """Run `evalkit ARGS` in-process through the real entry point, evalkit.cli.main:main (the console script's
    target), so its error -> exit code mapping is the one tested: (exit code, stdout, stderr)."""
    from conftest import evalkit_cli

    return evalkit_cli([str(a) for a in args])
