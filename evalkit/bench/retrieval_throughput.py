"""The retrieval bench: synthetic COCO-sized images and captions -> the real loader and retrieval runner (ITC
shortlist, ITM re-rank of the top k both ways) -> recall@K, timed per stage.

Retrieval has no per-image loop to compare with (every caption is ranked against every image), so the JSON gives
the seconds per stage and the projection to COCO's 5k test (5,000 images, 25,000 captions): image and text
embedding and the ITM pairs (k per query, both ways) grow linearly with the set, ITC similarity quadratically.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from evalkit.bench.synthetic_data import write_caption_set
from evalkit.core.protocol import RetrievalProtocol
from evalkit.data.caption_datasets import load_caption_set
from evalkit.data.data_arg import parse_data_arg
from evalkit.inference.retrieval_runner import rank_images_and_texts
from evalkit.kinds.retrieval import retrieval_texts
from evalkit.metrics.retrieval_recall import retrieval_recall
from evalkit.models.blip2_retrieval import Blip2Retriever
from evalkit.models.loading import LoadedCheckpoint

COCO_5K_IMAGES = 5000


def run_retrieval_bench(checkpoint: LoadedCheckpoint, num_images: int = 64, captions_per_image: int = 5,
                        k: int = 128, batch_size: int | None = None, image_size: int | None = None,
                        work_dir: Path | None = None) -> dict:
    """Measure one retrieval run on a synthetic set of ``num_images`` images; a JSON dict."""
    device = checkpoint.device
    batch = batch_size or (64 if device.type == "cuda" else 8)
    retriever = Blip2Retriever(checkpoint, image_size, max_text_tokens=35)
    protocol = RetrievalProtocol(name="paper", rerank_k=k)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        data = write_caption_set(Path(tmp), num_images, captions_per_image)
        sample_set = load_caption_set(parse_data_arg(str(data)), "test")
        texts, txt2img, img2txt = retrieval_texts(sample_set, protocol)
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times: dict[str, float] = {}
        started = time.perf_counter()
        i2t, t2i, _ = rank_images_and_texts(retriever, sample_set, texts, protocol, run_dir, batch, False, False, times)
        seconds = time.perf_counter() - started
        scoring = time.perf_counter()
        recall = retrieval_recall(i2t.numpy(), t2i.numpy(), img2txt, txt2img)
        times["scoring"] = time.perf_counter() - scoring
    pairs = num_images * min(k, len(texts)) + len(texts) * min(k, num_images)
    coco_pairs = COCO_5K_IMAGES * k + COCO_5K_IMAGES * captions_per_image * k
    scale = COCO_5K_IMAGES / num_images
    projected = (times["images"] + times["texts"] + times["scoring"]) * scale + times["itc"] * scale ** 2 \
        + times["itm_rerank"] * coco_pairs / max(1, pairs)
    return {
        "model": checkpoint.entry.name, "task": "retrieval", "device": _device_name(device),
        "dtype": str(checkpoint.dtype).replace("torch.", ""), "image_size": retriever.pixel_values.image_size,
        "num_images": num_images, "num_texts": len(texts), "k": k, "batch_size": batch,
        "itm_pairs": pairs, "itm_pairs_per_s": round(pairs / max(times["itm_rerank"], 1e-9), 1),
        "seconds": round(seconds, 3), "images_per_s": round(num_images / times["images"], 2),
        "stages_s": {name: round(value, 4) for name, value in times.items()},
        "host_wait_fraction": round(times.get("host_wait", 0.0) / seconds, 4),
        "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if device.type == "cuda" else None,
        "projected_coco_5k_s": round(projected, 1),
        "baseline_per_image_loop": None,  # retrieval ranks all pairs: there is no per-image loop
        "score_r_mean": recall.get("r_mean"),
    }


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
