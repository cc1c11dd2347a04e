"""Retrieval inference: embed every image and text once (features cached in the run folder), take the
ITC shortlist, re-rank it with ITM; returns the image x text score matrices.

The cached image features carry the identity of the images they were computed from (each one's
``images.jsonl``-style record); a later run reuses them only when every image is unchanged, and refuses by name
an image whose bytes changed, as a resumed generation run does.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from evalkit.core.errors import EvalkitError
from evalkit.core.progress import progress_bar
from evalkit.core.scores import RunStats
from evalkit.data.images import image_record, record_unchanged
from evalkit.inference.image_prefetch import ImagePrefetcher, StageTimes, default_workers
from evalkit.inference.itm_rerank import itc_similarity, rerank_with_itm
from evalkit.models.image_preprocessing import to_device

IMAGE_FEATS_FILE = "image_feats.pt"
TEXT_FEATS_FILE = "text_feats.pt"


def rank_images_and_texts(retriever, sample_set, texts: list[str], protocol, run_dir: Path, batch_size: int,
                          show_progress: bool, skip_bad_images: bool,
                          times: dict[str, float] | None = None) -> tuple[torch.Tensor, torch.Tensor, RunStats]:
    """(image x text scores, text x image scores, stats): ITC similarity, the top-k re-ranked by ITM.
    ``times`` collects seconds per stage (images, texts, itc, itm_rerank) and the host wait for images."""
    stats = RunStats(batch_size=batch_size)
    times = times if times is not None else {}
    started = time.perf_counter()
    image_file, text_file = Path(run_dir) / IMAGE_FEATS_FILE, Path(run_dir) / TEXT_FEATS_FILE
    vision = None
    # ITM re-ranking needs the vision embeddings, which are too large to cache on disk
    image_feats = None if protocol.rerank else cached_image_feats(image_file, sample_set.samples)
    if image_feats is None:
        vision, image_feats, records = _embed_images(retriever, sample_set, batch_size, show_progress,
                                                     skip_bad_images, stats, times)
        _save(image_file, {"image_feats": image_feats, "images": records})
        stats.images_encoded = len(sample_set.samples)
    times["images"] = time.perf_counter() - started
    if text_file.exists():
        text_feats = torch.load(text_file)
    else:
        text_feats = _embed_texts(retriever, texts, batch_size * 4, show_progress)
        _save(text_file, text_feats)
    times["texts"] = time.perf_counter() - started - times["images"]
    similarity = itc_similarity(image_feats, text_feats)
    times["itc"] = time.perf_counter() - started - times["images"] - times["texts"]
    tokens = retriever.tokenize(texts)

    def itm_score(image_idx: torch.Tensor, text_idx: torch.Tensor) -> torch.Tensor:
        embeds = vision[image_idx].to(retriever.device)
        ids, mask = tokens["input_ids"][text_idx], tokens["attention_mask"][text_idx]
        return retriever.itm_logits(embeds, ids, mask).cpu()

    k = protocol.rerank_k if protocol.rerank else 0
    with progress_bar("ITM re-rank (pairs)", total=None, enabled=show_progress and k > 0) as advance:
        done_so_far = [0]

        def report(done: int, total: int) -> None:
            advance(done - done_so_far[0], total)
            done_so_far[0] = done

        reranking = time.perf_counter()
        i2t, t2i = rerank_with_itm(similarity, itm_score, k=k, batch_size=max(256, batch_size * 4), progress=report,
                                   rerank=k > 0)
    times["itm_rerank"] = time.perf_counter() - reranking
    stats.generation_seconds = time.perf_counter() - started
    stats.generated = len(sample_set.samples)
    return i2t, t2i, stats


def cached_image_feats(path: Path, samples) -> torch.Tensor | None:
    """The features cached at ``path`` if computed from these samples' images as they are now; None when there
    are none (or they do not record their images); a one-line EvalkitError naming an image that changed."""
    if not path.exists():
        return None
    cached = torch.load(path)
    records = cached.get("images") if isinstance(cached, dict) else None
    if records is None or len(records) != len(samples):
        return None
    for sample, recorded in zip(samples, records):
        key = sample.image
        if recorded.get("sha256") is None or record_unchanged(key, recorded):
            continue  # an hf-row: image is identified by the dataset fingerprint in the run's header
        now = image_record(key)
        if now is None:
            raise EvalkitError(f"{path}: image {key} the cached features were computed from is missing; "
                               "pass --overwrite to start again, or another --run-id")
        if now["sha256"] != recorded["sha256"]:
            raise EvalkitError(f"{path}: image {key} changed since its features were cached (sha256 "
                               f"{recorded['sha256'][:12]} -> {now['sha256'][:12]}); pass --overwrite to start "
                               "again, or another --run-id")
    return cached["image_feats"]


def _embed_images(retriever, sample_set, batch_size: int, show: bool, skip_bad: bool, stats: RunStats,
                  times: dict[str, float]):
    """(vision embeddings, query features, the record of each image read) in sample order; the images are
    decoded and preprocessed by a thread pool ahead of the model (see image_prefetch)."""
    vision, feats, records = [], [], []
    keys = [s.image for s in sample_set.samples]
    batches = [keys[start:start + batch_size] for start in range(0, len(keys), batch_size)]
    worker = lambda image: retriever.pixel_values([image])[0]  # per image: the same bits as a batch
    prefetch_times = StageTimes()
    stats.decode_workers = default_workers()
    store = None
    with progress_bar("images", total=len(keys), enabled=show) as advance, \
            ImagePrefetcher(sample_set.images, batches, worker, stats.decode_workers, skip_bad,
                            prefetch_times) as prefetch:
        for index, batch in enumerate(batches):
            loaded, bad = prefetch.take(index)
            if bad:
                raise EvalkitError(f"retrieval needs every image; {len(bad)} bad (first: {next(iter(bad))})")
            records.extend(image_record(k) or {"image": k} for k in batch)
            embeds, queries = retriever.encode_images(to_device([loaded[k] for k in batch], retriever.device))
            if store is None:
                store = vision_store(embeds, len(keys))
            vision.append(embeds.to(store))
            feats.append(queries.float().cpu())
            advance(len(batch))
    times["host_wait"] = prefetch_times.host_wait
    return torch.cat(vision), torch.cat(feats), records


def vision_store(embeds: torch.Tensor, num_images: int) -> torch.device:
    """Where the ITM re-rank's vision embeddings live: on the GPU when all of them take at most half its free
    memory (re-ranking then indexes them there instead of copying ~4 GB per batch of pairs over PCIe), else in
    host memory. Either way the values are the same."""
    if embeds.device.type != "cuda":
        return torch.device("cpu")
    free, _ = torch.cuda.mem_get_info(embeds.device)
    needed = embeds[0].numel() * embeds.element_size() * num_images
    return embeds.device if needed <= free // 2 else torch.device("cpu")


def _embed_texts(retriever, texts: list[str], batch_size: int, show: bool) -> torch.Tensor:
    feats = []
    with progress_bar("texts", total=len(texts), enabled=show) as advance:
        for start in range(0, len(texts), batch_size):
            feats.append(retriever.encode_texts(texts[start:start + batch_size]).float().cpu())
            advance(min(batch_size, len(texts) - start))
    return torch.cat(feats)


def _save(path: Path, value) -> None:
    from evalkit.core.atomic_files import writing

    tmp = path.with_name(f".{path.name}.tmp")
    with writing(path, tmp):
        torch.save(value, tmp)
        tmp.replace(path)
