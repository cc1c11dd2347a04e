"""Captioning: generate a caption per image, score with the COCO caption metrics (pycocoevalcap)."""

from __future__ import annotations

from pathlib import Path

from evalkit.core.errors import EvalkitError
from evalkit.core.scores import ScoreResult
from evalkit.core.task_kind import PairedStatistics, RunJob, RunOutput, ScoreHistogram
from evalkit.core.atomic_files import write_json_atomic
from evalkit.kinds.generation import GenerationKind
from evalkit.kinds.paired_samples import aligned_ids, run_clusters, score_column
from evalkit.metrics.bootstrap import BleuCorpus, CiderCorpus, cluster_index, ratio_diff

CORPUS_BLEU = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")


class CaptionKind(GenerationKind):
    """Plain or prompted captioning (COCO, NoCaps-style): BLEU, METEOR, ROUGE-L, CIDEr, SPICE."""

    name = "caption"
    headline_metrics = ("BLEU-4", "CIDEr")
    hub_task_type = "image-to-text"
    report_order = 0
    sample_score = "CIDEr"
    # pycocoevalcap's corpus ROUGE-L, CIDEr and SPICE are the mean of the per-image scores
    sample_mean_metrics = ("ROUGE-L", "CIDEr", "SPICE")
    histogram = ScoreHistogram("{task}: per-image CIDEr", "% of images",
                               (("0-25", -1, 25), ("25-50", 25, 50), ("50-100", 50, 100), ("100-200", 100, 200),
                                ("200+", 200, float("inf"))))

    def score(self, job: RunJob, output: RunOutput) -> ScoreResult:
        """Corpus metrics with PTB tokenisation done once; a failed sample keeps an empty caption (it scores 0)."""
        from evalkit.metrics.caption_metrics import score_captions

        samples = job.sample_set.samples
        references = {s.id: list(s.references) for s in samples}
        answers = {s.id: output.predictions[s.id].prediction for s in samples}
        scores = score_captions(references, answers)
        per_sample = {str(k): v for k, v in scores.per_image.items()}
        return ScoreResult(dict(scores.corpus), per_sample, "CIDEr", {"skipped_metrics": dict(scores.skipped)},
                           scores.scale, bleu_standard_errors(scores))

    def no_standard_error(self, metric: str) -> str:
        if metric == "METEOR":
            return "METEOR's corpus score pools statistics over images; not a mean of per-image scores"
        return super().no_standard_error(metric)

    def write_official_file(self, run_dir: Path, sample_set, predictions) -> Path:
        """captions_results.json: ``[{"image_id": 391895, "caption": "..."}]`` (COCO result format)."""
        rows = [{"image_id": _int_or_str(s.id), "caption": predictions[s.id].prediction} for s in sample_set.samples]
        path = Path(run_dir) / "captions_results.json"
        write_json_atomic(path, rows)
        return path

    def paired_statistics(self, base, cand, metrics: list[str]) -> PairedStatistics:
        """Images are the unit; corpus CIDEr and BLEU are re-scored on each resample, the rest are per-image means."""
        ids = aligned_ids(base, cand)
        stats = PairedStatistics(unit_sizes={"images": len(ids)})
        labels = run_clusters(base, ids)
        if len(set(labels)) < len(labels):  # the same image captioned twice: resample it as one
            stats.clusters["images"] = ("image files", cluster_index(labels))
        wants_corpus = [m for m in metrics if m == "CIDEr" or m in CORPUS_BLEU]
        tokens, why_not = _caption_tokens(base, cand, ids) if wants_corpus else (None, "")
        cider = bleu = None
        if tokens is not None:
            tok_refs, tok_preds = tokens
            cider = CiderCorpus(ids, tok_refs, tok_preds) if "CIDEr" in metrics else None
            bleu = BleuCorpus(ids, tok_refs, tok_preds) if any(m in CORPUS_BLEU for m in metrics) else None
            if cider is not None:
                full = cider.scores()
                stats.rescored["CIDEr"] = (full["b"], full["c"])
            if bleu is not None:
                full = bleu.scores()
                stats.rescored.update({m: (full["b"][m], full["c"][m]) for m in CORPUS_BLEU if m in metrics})
        for name in metrics:
            stats.unit[name] = "images"
            if name == "CIDEr" and cider is not None:
                stats.functions[name] = _cider_diff(cider)
                stats.method[name] = "corpus CIDEr re-scored on each resample (idf of the resample)"
            elif name in CORPUS_BLEU and bleu is not None:
                stats.functions[name] = _bleu_diff(bleu, name)
                stats.method[name] = "corpus BLEU re-scored on each resample"
            else:
                _per_image_mean(stats, base, cand, ids, name, why_not if name in wants_corpus else "")
        return stats


BLEU_SE_RESAMPLES = 200


def bleu_standard_errors(scores) -> dict[str, dict]:
    """Corpus BLEU-1..4's standard errors: the sd of corpus BLEU over 200 seeded bootstrap resamples of the images
    (corpus BLEU is not a mean of per-image scores, so there is no closed form)."""
    if scores.tokenized is None or not scores.per_image:
        return {}
    import numpy as np

    tok_refs, tok_preds = scores.tokenized
    ids = list(scores.per_image)
    corpus = BleuCorpus(ids, tok_refs, {"run": tok_preds})
    rng = np.random.default_rng(0)
    reps = {m: [] for m in CORPUS_BLEU}
    for _ in range(BLEU_SE_RESAMPLES):
        weights = np.bincount(rng.integers(0, len(ids), size=len(ids)), minlength=len(ids)).astype(np.float64)
        for m, v in corpus.scores(weights)["run"].items():
            reps[m].append(v)
    how = f"sd of corpus BLEU over {BLEU_SE_RESAMPLES} bootstrap resamples of the images (seed 0)"
    return {m: {"std_error": float(np.std(v, ddof=1)) if len(ids) > 1 else None, "std_error_method": how}
            for m, v in reps.items() if m in scores.corpus}


def _per_image_mean(stats: PairedStatistics, base, cand, ids: list[str], name: str, why_not_corpus: str) -> None:
    b, c = score_column(base, ids, name), score_column(cand, ids, name)
    if b is None or c is None:
        stats.no_interval[name] = "no per-image scores for this metric"
        return
    stats.functions[name] = ratio_diff("images", b, c)
    stats.method[name] = "mean of per-image scores"
    if why_not_corpus:
        stats.method[name] += f" (not re-scored as a corpus metric: {why_not_corpus})"


def _caption_tokens(base, cand, ids: list[str]):
    """(PTB-tokenised references, {"b": baseline captions, "c": candidate captions}), one JVM; or
    (None, why) when they cannot be re-scored (no Java, no references in predictions.jsonl)."""
    from evalkit.metrics.caption_metrics import tokenize_captions

    preds_b, preds_c = base.predictions(), cand.predictions()
    missing = [i for i in ids if i not in preds_b or i not in preds_c]
    if missing:
        raise EvalkitError(f"{len(missing)} scored images have no line in predictions.jsonl (first: {missing[0]})")
    if any(not preds_b[i].get("references") for i in ids):
        return None, "predictions.jsonl lacks the references"
    refs = {f"{side}:{i}": list(preds_b[i]["references"]) for side in "bc" for i in ids}
    captions = {f"b:{i}": str(preds_b[i].get("prediction", "")) for i in ids}
    captions.update({f"c:{i}": str(preds_c[i].get("prediction", "")) for i in ids})
    try:
        tok_refs, tok_preds = tokenize_captions(refs, captions)
    except EvalkitError as err:
        if "java" in str(err).lower():
            return None, "Java not found for the PTB tokenizer"
        raise
    refs_out = {i: tok_refs[f"b:{i}"] for i in ids}
    return (refs_out, {"b": {i: tok_preds[f"b:{i}"] for i in ids}, "c": {i: tok_preds[f"c:{i}"] for i in ids}}), ""


def _cider_diff(corpus: CiderCorpus):
    def diff(weights) -> float:
        scores = corpus.scores(weights["images"])
        return scores["c"] - scores["b"]

    return diff


def _bleu_diff(corpus: BleuCorpus, metric: str):
    def diff(weights) -> float:
        scores = corpus.scores(weights["images"])
        return scores["c"][metric] - scores["b"][metric]

    return diff


def _int_or_str(value: str):
    return int(value) if value.isdigit() else value


CAPTION = CaptionKind()
