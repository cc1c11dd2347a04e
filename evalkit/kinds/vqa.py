"""Visual question answering: a short answer per question, scored with the VQA accuracy (official rules)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from evalkit.core.atomic_files import write_json_atomic
from evalkit.core.errors import EvalkitError
from evalkit.core.sample_set import file_sha256
from evalkit.core.scores import ScoreResult
from evalkit.core.task_kind import PairedStatistics, RunJob, RunOutput, ScoreHistogram
from evalkit.kinds.generation import GenerationKind
from evalkit.kinds.paired_samples import aligned_ids, run_clusters, score_column
from evalkit.metrics.bootstrap import cluster_index, ratio_diff


class VqaKind(GenerationKind):
    """VQAv2-style open-ended answers against ten human answers (single-turn or chat)."""

    name = "vqa"
    headline_metrics = ("accuracy",)
    hub_task_type = "visual-question-answering"
    report_order = 1
    sample_score = "accuracy"
    sample_mean_metrics = ("accuracy",)  # round(mean of the per-question accuracies, 2)
    histogram = ScoreHistogram("{task}: per-question accuracy", "% of questions",
                               (("0", -1, 0.01), ("30", 0.01, 31), ("60", 31, 61), ("90", 61, 91), ("100", 91, 101)))
    references_label = "answers"
    shows_prompt = True
    breakdown_label = "answer type"

    def score(self, job: RunJob, output: RunOutput) -> ScoreResult:
        """Accuracy overall and per answer type, with the variant chosen by --vqa-metric."""
        from evalkit.metrics.vqa_accuracy import score_vqa

        variant = job.options.vqa_metric
        by_id = job.sample_set.annotations  # question_id (int) -> official annotation entry
        samples = job.sample_set.samples
        annotations = [by_id[int(s.id)] for s in samples]
        answers = {int(s.id): output.predictions[s.id].prediction for s in samples}
        scores = score_vqa(annotations, answers, variant=variant)
        metrics = {"accuracy": scores.overall}
        metrics.update({f"accuracy/{t}": v for t, v in sorted(scores.per_answer_type.items())})
        per_sample = {str(q): {"accuracy": v} for q, v in scores.per_question.items()}
        details = {"perAnswerType": scores.per_answer_type, "perQuestionType": scores.per_question_type,
                   "vqa_metric": variant}
        return ScoreResult(metrics, per_sample, "accuracy", details,
                           std_errors=_answer_type_standard_errors(samples, per_sample, metrics))

    def write_official_file(self, run_dir: Path, sample_set, predictions) -> Path:
        """vqa_<split>_results.json: ``[{"question_id": 1, "answer": "..."}]`` (the file EvalAI takes)."""
        rows = [{"question_id": int(s.id), "answer": predictions[s.id].prediction} for s in sample_set.samples]
        path = Path(run_dir) / f"vqa_{sample_set.identity.get('split', 'split')}_results.json"
        write_json_atomic(path, rows)
        return path

    def scorer_settings(self, record: dict) -> dict:
        """The VQA accuracy variant (official, lavis, lmms): numbers under two variants do not compare."""
        return {"details.vqa_metric": (record.get("details") or {}).get("vqa_metric")}

    def paired_statistics(self, base, cand, metrics: list[str]) -> PairedStatistics:
        """Questions are the unit; per-answer-type accuracy is a ratio over the questions of that type."""
        return question_statistics(base, cand, metrics, "mean of per-question VQA accuracy", by_answer_type=True)

    def references_text(self, references: list[str]) -> str:
        counts = Counter(r.strip() for r in references)
        return ", ".join(f"{a} ×{n}" if n > 1 else a for a, n in counts.most_common())

    def breakdown(self, record: dict) -> dict[str, float] | None:
        """Accuracy overall and per answer type (yes/no, number, other)."""
        metrics = {k: (v.get("value") if isinstance(v, dict) else v) for k, v in (record.get("metrics") or {}).items()}
        types = {k.split("/", 1)[1]: float(v) for k, v in metrics.items() if k.startswith("accuracy/") and v is not None}
        if not types:
            types = {k: float(v) for k, v in ((record.get("details") or {}).get("perAnswerType") or {}).items()}
        if metrics.get("accuracy") is not None:
            types = {"overall": float(metrics["accuracy"]), **types}
        return types or None


def _answer_type_standard_errors(samples, per_sample: dict, metrics: dict) -> dict[str, dict]:
    """``accuracy/<type>``: the clustered standard error of the mean over that answer type's questions."""
    from evalkit.metrics.standard_error import mean_standard_error

    out = {}
    for name in metrics:
        if not name.startswith("accuracy/"):
            continue
        wanted = name.split("/", 1)[1]
        members = [s for s in samples if str(s.meta_dict().get("answer_type", "")) == wanted]
        if not members:
            continue
        se, g = mean_standard_error([per_sample[s.id]["accuracy"] for s in members], [s.image for s in members])
        out[name] = {"std_error": se, "std_error_method": f"cluster-robust SE of the mean over the {len(members)} "
                                                          f"{wanted!r} questions, clustered by image ({g} images)"}
    return out


def question_statistics(base, cand, metrics: list[str], method: str,
                        by_answer_type: bool = False) -> PairedStatistics:
    """The paired bootstrap with questions as the unit: ``accuracy`` is the mean of the per-question
    ``accuracy`` scores (``method`` says what they are); ``accuracy/<type>`` is that mean over one answer type
    when ``by_answer_type``; other metrics get no interval."""
    ids = aligned_ids(base, cand)
    stats = PairedStatistics(unit_sizes={"questions": len(ids)})
    labels = run_clusters(base, ids)
    if len(set(labels)) < len(labels):  # several questions about one image: resample images
        stats.clusters["questions"] = (base.task_kind.cluster_label, cluster_index(labels))
    b, c = score_column(base, ids, "accuracy"), score_column(cand, ids, "accuracy")
    if b is None or c is None:
        raise EvalkitError("sample_scores.jsonl lacks per-question 'accuracy'")
    types = None
    for name in metrics:
        stats.unit[name] = "questions"
        if name == "accuracy":
            stats.functions[name] = ratio_diff("questions", b, c)
            stats.method[name] = method
        elif by_answer_type and name.startswith("accuracy/"):
            if types is None:
                types = _answer_types(base, ids) or []
            _per_answer_type(stats, name, types, b, c)
        else:
            stats.no_interval[name] = "no per-question scores for this metric"
    return stats


def _per_answer_type(stats: PairedStatistics, name: str, types: list[str], b: np.ndarray, c: np.ndarray) -> None:
    wanted = name.split("/", 1)[1]
    if not types:
        stats.no_interval[name] = "per-question answer types not recorded (no extra.answer_type, no annotation file)"
        return
    mask = np.asarray([t == wanted for t in types], dtype=np.float64)
    if not mask.any():
        stats.no_interval[name] = f"no question of answer type {wanted!r}"
        return
    stats.functions[name] = ratio_diff("questions", b, c, den=mask)
    stats.method[name] = f"mean per-question accuracy over answer type {wanted!r}"


def _answer_types(run, ids: list[str]) -> list[str] | None:
    """Each question's answer type: from predictions.jsonl ``extra.answer_type``, else from the VQAv2
    annotation file beside the questions file named in run.json (only if its sha256 matches)."""
    preds = run.predictions()
    types = [((preds.get(i) or {}).get("extra") or {}).get("answer_type") for i in ids]
    if all(types):
        return [str(t) for t in types]
    data = run.record.get("data") or {}
    source, wanted = data.get("source"), data.get("annotations_sha256")
    if data.get("format") != "vqav2" or not source or not wanted:
        return None
    for path in _annotation_candidates(Path(source), str(data.get("data_subtype") or data.get("split") or "")):
        if path.is_file() and path != Path(source) and file_sha256(path) == wanted:
            return _types_from_annotations(path, ids)
    return None


def _annotation_candidates(questions: Path, subtype: str) -> list[Path]:
    candidates = [questions.with_name(questions.name.replace("OpenEnded_", "").replace("questions", "annotations"))]
    if questions.parent.is_dir():
        candidates += sorted(questions.parent.glob(f"*{subtype}*annotations.json"))
    return candidates


def _types_from_annotations(path: Path, ids: list[str]) -> list[str] | None:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    entries = content.get("annotations", []) if isinstance(content, dict) else content
    by_id = {str(a.get("question_id")): a.get("answer_type") for a in entries}
    found = [by_id.get(i) for i in ids]
    return [str(t) for t in found] if all(found) else None


VQA = VqaKind()
