"""Image-text retrieval runs: embed once (cached in the run folder), ITC shortlist, ITM re-rank, recall@K."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from evalkit.data.sample_set import SampleSet
from evalkit.errors import EvalkitError
from evalkit.journal import PredictionJournal
from evalkit.progress import progress_bar
from evalkit.samples import Prediction
from evalkit.scoring import ScoreResult

IMAGE_FEATS_FILE = "image_feats.pt"
TEXT_FEATS_FILE = "text_feats.pt"
SCORES_FILE = "scores_i2t.npy"


def retrieval_texts(sample_set: SampleSet, protocol) -> tuple[list[str], list[int], list[list[int]]]:
    """All captions in order, each text's image index, and each image's text indices."""
    from evalkit.models.blip2_retrieval import lavis_pre_caption

    texts, txt2img, img2txt = [], [], []
    for index, sample in enumerate(sample_set.samples):
        if not sample.references:
            raise EvalkitError(f"image {sample.id} has no captions")
        img2txt.append(list(range(len(texts), len(texts) + len(sample.references))))
        for caption in sample.references:
            texts.append(lavis_pre_caption(caption) if protocol.text_preprocess == "lavis-blip-caption" else caption)
            txt2img.append(index)
    return texts, txt2img, img2txt


def _embed_images(retriever, sample_set: SampleSet, batch_size: int, show: bool, skip_bad: bool):
    from evalkit.runner import load_images

    vision, feats = [], []
    keys = [s.image for s in sample_set.samples]
    with progress_bar("images", total=len(keys), enabled=show) as advance:
        for start in range(0, len(keys), batch_size):
            batch = keys[start:start + batch_size]
            loaded, bad = load_images(sample_set.images, batch, skip_bad)
            if bad:
                raise EvalkitError(f"retrieval needs every image; {len(bad)} bad (first: {next(iter(bad))})")
            embeds, queries = retriever.encode_images(retriever.pixel_values([loaded[k] for k in batch]))
            vision.append(embeds.cpu())
            feats.append(queries.float().cpu())
            advance(len(batch))
    return torch.cat(vision), torch.cat(feats)


def _embed_texts(retriever, texts: list[str], batch_size: int, show: bool) -> torch.Tensor:
    feats = []
    with progress_bar("texts", total=len(texts), enabled=show) as advance:
        for start in range(0, len(texts), batch_size):
            feats.append(retriever.encode_texts(texts[start:start + batch_size]).float().cpu())
            advance(min(batch_size, len(texts) - start))
    return torch.cat(feats)


def _save(path: Path, tensor: torch.Tensor) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(tensor, tmp)
    tmp.replace(path)


def run_retrieval(task, entry, protocol, overrides, sample_set: SampleSet, options, run_dir: Path, header: dict,
                  started: float):
    """Embed, rank, score and record a retrieval run (see module docstring)."""
    from evalkit.evaluate import RunOutcome
    from evalkit.metrics.retrieval_recall import per_query_ranks, retrieval_recall
    from evalkit.models.blip2_retrieval import Blip2Retriever
    from evalkit.models.loading import load_checkpoint
    from evalkit.retrieval_rerank import itc_similarity, rerank_with_itm
    from evalkit.run_record import build_record, write_record
    from evalkit.runner import RunStats

    texts, txt2img, img2txt = retrieval_texts(sample_set, protocol)
    checkpoint = load_checkpoint(entry, options.device, protocol.dtype, known_weights_sha256=header["weights_sha256"])
    retriever = Blip2Retriever(checkpoint, protocol.image_size, protocol.max_text_tokens)
    batch_size = options.batch_size or (64 if checkpoint.device.type == "cuda" else 16)
    stats = RunStats(batch_size=batch_size)
    show = options.show_progress
    generation_started = time.perf_counter()
    image_file, text_file = run_dir / IMAGE_FEATS_FILE, run_dir / TEXT_FEATS_FILE
    vision = None
    resumed = 0
    if image_file.exists() and not protocol.rerank:
        image_feats = torch.load(image_file)
        resumed += len(sample_set.samples)
    else:  # ITM re-ranking needs the vision embeddings, which are too large to cache on disk
        vision, image_feats = _embed_images(retriever, sample_set, batch_size, show, options.skip_bad_images)
        _save(image_file, image_feats)
        stats.images_encoded = len(sample_set.samples)
    if text_file.exists():
        text_feats = torch.load(text_file)
    else:
        text_feats = _embed_texts(retriever, texts, batch_size * 4, show)
        _save(text_file, text_feats)
    similarity = itc_similarity(image_feats, text_feats)
    tokens = retriever.tokenize(texts)

    def itm_score(image_idx: torch.Tensor, text_idx: torch.Tensor) -> torch.Tensor:
        embeds = vision[image_idx].to(retriever.device)
        ids, mask = tokens["input_ids"][text_idx], tokens["attention_mask"][text_idx]
        return retriever.itm_logits(embeds, ids, mask).cpu()

    k = protocol.rerank_k if protocol.rerank else 0
    with progress_bar("ITM re-rank (pairs)", total=None, enabled=show and k > 0) as advance:
        done_so_far = [0]

        def report(done: int, total: int) -> None:
            advance(done - done_so_far[0], total)
            done_so_far[0] = done

        i2t, t2i = rerank_with_itm(similarity, itm_score, k=k, batch_size=max(256, batch_size * 4), progress=report,
                                   rerank=k > 0)
    stats.generation_seconds = time.perf_counter() - generation_started
    stats.generated = len(sample_set.samples)
    i2t_np, t2i_np = i2t.numpy(), t2i.numpy()
    metrics = retrieval_recall(i2t_np, t2i_np, img2txt, txt2img)
    ranks = per_query_ranks(i2t_np, t2i_np, img2txt, txt2img)
    if options.export_scores:
        np.save(run_dir / SCORES_FILE, i2t_np)
        np.save(run_dir / "scores_t2i.npy", t2i_np)
    predictions = {}
    top = np.argsort(-i2t_np, axis=1, kind="stable")[:, :5]
    for index, sample in enumerate(sample_set.samples):
        predictions[sample.id] = Prediction(sample.id, "", texts[top[index, 0]], sample.references,
                                            extra={"top5_texts": [int(t) for t in top[index]],
                                                   "best_caption_rank": int(ranks.txt_ranks[index])},
                                            image=sample.image)
    journal = PredictionJournal(run_dir)
    if not journal.completed():
        journal.append(predictions.values())
    per_sample = {f"image:{s.id}": {"text_rank": float(ranks.txt_ranks[i]),
                                    "txt_r1": float(ranks.txt_ranks[i] < 1), "txt_r5": float(ranks.txt_ranks[i] < 5),
                                    "txt_r10": float(ranks.txt_ranks[i] < 10)}
                  for i, s in enumerate(sample_set.samples)}
    per_sample.update({f"text:{j}": {"image_rank": float(ranks.img_ranks[j]), "img_r1": float(ranks.img_ranks[j] < 1),
                                     "img_r5": float(ranks.img_ranks[j] < 5), "img_r10": float(ranks.img_ranks[j] < 10)}
                       for j in range(len(texts))})
    scores = ScoreResult(metrics, per_sample, "r_mean",
                         {"n_images": len(sample_set.samples), "n_texts": len(texts), "k": k,
                          "scores_file": SCORES_FILE if options.export_scores else None})
    record = build_record(task=task, entry=entry, protocol=protocol, overrides=overrides, sample_set=sample_set,
                          predictions=predictions, scores=scores, stats=stats, resumed=resumed,
                          device=checkpoint.device, dtype=checkpoint.dtype, weights=checkpoint.weights_sha256,
                          directory=Path(checkpoint.checkpoint_dir), checkpoint=checkpoint,
                          run_id=run_dir.name, header=header, options=options, wall_seconds=time.time() - started)
    write_record(run_dir, record, scores)
    return RunOutcome(run_dir, record)
