"""Image-text retrieval: rank every caption for every image (and back), scored by recall@K (LAVIS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evalkit.core.errors import EvalkitError
from evalkit.core.protocol import RetrievalProtocol
from evalkit.core.samples import Prediction
from evalkit.core.scores import ScoreResult
from evalkit.core.task_kind import PairedStatistics, RunJob, RunOutput, ScoreHistogram, TaskKind
from evalkit.data.lavis_text import blip_caption
from evalkit.kinds.paired_samples import aligned_ids, score_column
from evalkit.metrics.bootstrap import ratio_diff

SCORES_FILE = "scores_i2t.npy"
TEXT_RECALLS = ("txt_r1", "txt_r5", "txt_r10")  # image queries: is a right caption in the top K
IMAGE_RECALLS = ("img_r1", "img_r5", "img_r10")  # text queries: is the right image in the top K
MEANS = {"txt_r_mean": TEXT_RECALLS, "img_r_mean": IMAGE_RECALLS, "r_mean": TEXT_RECALLS + IMAGE_RECALLS}


class RetrievalKind(TaskKind):
    """BLIP-2 ITC shortlist + ITM re-rank; TR/IR R@1/5/10 and their means."""

    name = "retrieval"
    model_kind = "retrieval"
    model_families = ("itm",)
    protocol_type = RetrievalProtocol
    headline_metrics = ("txt_r1", "img_r1", "r_mean")
    hub_task_type = "image-text-retrieval"
    report_order = 2
    sample_score = "text_rank"
    sample_score_prefix = "image:"
    histogram = ScoreHistogram("{task}: rank of the first right caption (image queries)", "% of images",
                               (("1", 0, 1), ("2-5", 1, 5), ("6-10", 5, 10), ("11-50", 10, 50),
                                (">50", 50, float("inf"))))
    references_label = "captions"
    prediction_label = "top-1 caption"
    sample_mean_metrics = TEXT_RECALLS + IMAGE_RECALLS  # 100 x the mean of the per-query hits (0/1)
    sample_mean_scale = 100.0

    def recomputable_metrics(self) -> tuple[str, ...]:
        return self.sample_mean_metrics + tuple(MEANS)

    def mean_parts(self, metric: str, scores, clusters) -> list | None:
        """A recall is a mean over its queries; ``txt_r_mean``, ``img_r_mean`` and ``r_mean`` average recalls."""
        if metric not in MEANS:
            return super().mean_parts(metric, scores, clusters)
        parts = []
        for name in MEANS[metric]:
            found = super().mean_parts(name, scores, clusters)
            if not found:
                return None
            parts += [type(p)(p.weight / len(MEANS[metric]), p.values, p.clusters) for p in found]
        return parts

    def sample_clusters(self, samples) -> dict[str, str]:
        """An image query is its image's cluster; each caption (text query) belongs to its image's cluster."""
        out, j = {}, 0
        for sample in samples:
            out[f"image:{sample.id}"] = sample.image
            for _ in sample.references:
                out[f"text:{j}"] = sample.image
                j += 1
        return out

    def run(self, job: RunJob) -> RunOutput:
        """Embed, rank and journal the top captions of each image; the score matrices go to the scorer."""
        from evalkit.core.scores import RunStats
        from evalkit.inference.cpu_threads import torch_threads_for
        from evalkit.inference.retrieval_runner import cached_scores, rank_images_and_texts
        from evalkit.metrics.retrieval_recall import per_query_ranks

        texts, txt2img, img2txt = retrieval_texts(job.sample_set, job.protocol)
        options = job.options
        cached = cached_scores(job.run_dir, job.sample_set.samples, texts)
        if cached is not None:  # resumed or re-scored: the ranking this folder already made, no model loaded
            (i2t, t2i), checkpoint, stats = cached, None, RunStats()
        else:
            from evalkit.models.blip2_retrieval import Blip2Retriever

            checkpoint = job.load_checkpoint()
            retriever = Blip2Retriever(checkpoint, job.protocol.image_size, job.protocol.max_text_tokens)
            fixed = options.batch_size if isinstance(options.batch_size, int) else None  # auto: the default size
            batch_size = fixed or (64 if checkpoint.device.type == "cuda" else 16)
            with torch_threads_for(checkpoint.device):
                i2t, t2i, stats = rank_images_and_texts(retriever, job.sample_set, texts, job.protocol, job.run_dir,
                                                        batch_size, options.show_progress, options.skip_bad_images)
        i2t_np, t2i_np = i2t.numpy(), t2i.numpy()
        if options.export_scores:
            np.save(Path(job.run_dir) / SCORES_FILE, i2t_np)
            np.save(Path(job.run_dir) / "scores_t2i.npy", t2i_np)
        ranks = per_query_ranks(i2t_np, t2i_np, img2txt, txt2img).txt_ranks
        predictions = _top_captions(job.sample_set, texts, i2t_np, ranks)
        if not job.done:
            job.append(list(predictions.values()))
        resumed = 0 if stats.images_encoded else len(job.sample_set.samples)
        return RunOutput(predictions, stats, checkpoint, resumed, {"i2t": i2t_np, "t2i": t2i_np})

    def score(self, job: RunJob, output: RunOutput) -> ScoreResult:
        """Recall@1/5/10 both ways (LAVIS's ``_report_metrics``) and each query's rank."""
        from evalkit.metrics.retrieval_recall import per_query_ranks, retrieval_recall

        texts, txt2img, img2txt = retrieval_texts(job.sample_set, job.protocol)
        i2t, t2i = output.artifacts["i2t"], output.artifacts["t2i"]
        metrics = retrieval_recall(i2t, t2i, img2txt, txt2img)
        ranks = per_query_ranks(i2t, t2i, img2txt, txt2img)
        per_sample = {f"image:{s.id}": _hits("txt", "text_rank", ranks.txt_ranks[i])
                      for i, s in enumerate(job.sample_set.samples)}
        per_sample.update({f"text:{j}": _hits("img", "image_rank", ranks.img_ranks[j]) for j in range(len(texts))})
        details = {"n_images": len(job.sample_set.samples), "n_texts": len(texts),
                   "k": job.protocol.rerank_k if job.protocol.rerank else 0,
                   "scores_file": SCORES_FILE if job.options.export_scores else None}
        return ScoreResult(metrics, per_sample, "r_mean", details)

    def write_official_file(self, run_dir: Path, sample_set, predictions) -> None:
        """Retrieval has no official result file (``--scores`` saves the score matrices)."""
        return None

    def paired_statistics(self, base, cand, metrics: list[str]) -> PairedStatistics:
        """Image queries and text queries are resampled independently; means average their recalls."""
        img_ids, txt_ids = aligned_ids(base, cand, "image:"), aligned_ids(base, cand, "text:")
        stats = PairedStatistics(unit_sizes={"image queries": len(img_ids), "text queries": len(txt_ids)})
        parts = {}
        for names, ids, unit in ((TEXT_RECALLS, img_ids, "image queries"), (IMAGE_RECALLS, txt_ids, "text queries")):
            for name in names:
                b, c = score_column(base, ids, name), score_column(cand, ids, name)
                if b is not None and c is not None:
                    parts[name] = (ratio_diff(unit, 100.0 * b, 100.0 * c), unit)
        for name in metrics:
            if name in parts:
                stats.functions[name], stats.unit[name] = parts[name]
                stats.method[name] = "recall over queries"
            elif name in MEANS and all(n in parts for n in MEANS[name]):
                stats.functions[name] = _mean_of([parts[n][0] for n in MEANS[name]])
                stats.unit[name] = {"txt_r_mean": "image queries", "img_r_mean": "text queries"}.get(
                    name, "image + text queries")
                stats.method[name] = "mean of the recalls, each over its queries"
            else:
                stats.no_interval[name] = "no per-query hits for this metric"
        return stats

    def sample_value(self, sample_id: str, scores) -> float | None:
        """Minus the rank of the first right caption (so higher is better, as for the other kinds)."""
        rank = (scores.get(f"image:{sample_id}") or {}).get("text_rank")
        return None if rank is None else -float(rank)

    def sample_label(self, value: float | None) -> str:
        return "no score" if value is None else f"rank of first right caption: {int(-value) + 1}"


def retrieval_texts(sample_set, protocol: RetrievalProtocol) -> tuple[list[str], list[int], list[list[int]]]:
    """All captions in order (cleaned as the protocol says), each text's image index, each image's text indices."""
    texts, txt2img, img2txt = [], [], []
    for index, sample in enumerate(sample_set.samples):
        if not sample.references:
            raise EvalkitError(f"image {sample.id} has no captions")
        img2txt.append(list(range(len(texts), len(texts) + len(sample.references))))
        for caption in sample.references:
            texts.append(blip_caption(caption) if protocol.text_preprocess == "lavis-blip-caption" else caption)
            txt2img.append(index)
    return texts, txt2img, img2txt


def _top_captions(sample_set, texts: list[str], i2t: np.ndarray, ranks: np.ndarray) -> dict[str, Prediction]:
    """Each image's best caption, its top-5 text indices and the rank of its first right caption."""
    top = np.argsort(-i2t, axis=1, kind="stable")[:, :5]
    return {s.id: Prediction(s.id, "", texts[top[i, 0]], s.references, image=s.image,
                             extra={"top5_texts": [int(t) for t in top[i]], "best_caption_rank": int(ranks[i])})
            for i, s in enumerate(sample_set.samples)}


def _hits(side: str, rank_name: str, rank) -> dict[str, float]:
    return {rank_name: float(rank), f"{side}_r1": float(rank < 1), f"{side}_r5": float(rank < 5),
            f"{side}_r10": float(rank < 10)}


def _mean_of(functions):
    return lambda weights: float(np.mean([fn(weights) for fn in functions]))


RETRIEVAL = RetrievalKind()
