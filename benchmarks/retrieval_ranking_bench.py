"""Synthetic COCO-5k-size retrieval scoring benchmark on CPU.

5,000 images x 25,000 captions (5 per image), 32 query embeddings x 256 d per image, random
L2-normalised features with a weak image-caption signal, a cheap stand-in ITM head (dot
product of fixed random projections), k = 128. Times ``itc_similarity``, ``rerank_with_itm``
and ``retrieval_recall`` separately and reports peak RSS.

    python benchmarks/retrieval_ranking_bench.py [--n-img 5000] [--caps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time

import numpy as np
import torch

from evalkit.metrics.retrieval_recall import retrieval_recall
from evalkit.inference.itm_rerank import itc_similarity, rerank_with_itm


def peak_rss_mib() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / (1024 * 1024) if sys.platform == "darwin" else ru / 1024  # bytes vs KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-img", type=int, default=5000)
    ap.add_argument("--caps", type=int, default=5, help="captions per image")
    ap.add_argument("--queries", type=int, default=32)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--k", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-dedupe", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    n_img, n_txt = args.n_img, args.n_img * args.caps
    txt2img = np.arange(n_txt) // args.caps
    img2txt = [list(range(i * args.caps, (i + 1) * args.caps)) for i in range(n_img)]

    norm = torch.nn.functional.normalize
    image_feats = norm(torch.randn(n_img, args.queries, args.dim, generator=g), dim=-1)
    # A caption = its image's mean query plus a lot of noise, so recall is well above chance.
    anchor = norm(image_feats.mean(dim=1), dim=-1)[torch.from_numpy(txt2img)]
    text_feats = norm(anchor + 0.12 * torch.randn(n_txt, args.dim, generator=g), dim=-1)

    proj = 64
    w_img = torch.randn(args.dim, proj, generator=g) / args.dim**0.5
    w_txt = torch.randn(args.dim, proj, generator=g) / args.dim**0.5
    img_code = image_feats.mean(dim=1) @ w_img  # [n_img, 64]
    txt_code = text_feats @ w_txt  # [n_txt, 64]
    calls = {"pairs": 0, "batches": 0}

    def itm_stand_in(img_idx: torch.Tensor, txt_idx: torch.Tensor) -> torch.Tensor:
        calls["pairs"] += int(img_idx.numel())
        calls["batches"] += 1
        return (img_code[img_idx] * txt_code[txt_idx]).sum(dim=1)

    rss_inputs = peak_rss_mib()
    t0 = time.perf_counter()
    sim = itc_similarity(image_feats, text_feats)
    t_itc = time.perf_counter() - t0
    rss_itc = peak_rss_mib()

    t0 = time.perf_counter()
    i2t, t2i = rerank_with_itm(
        sim, itm_stand_in, k=args.k, batch_size=args.batch_size, dedupe=not args.no_dedupe
    )
    t_rerank = time.perf_counter() - t0
    rss_rerank = peak_rss_mib()
    del sim

    t0 = time.perf_counter()
    metrics = retrieval_recall(i2t.numpy(), t2i.numpy(), img2txt, txt2img)
    t_recall = time.perf_counter() - t0

    lavis_pairs = n_img * min(args.k, n_txt) + n_txt * min(args.k, n_img)
    report = {
        "n_img": n_img,
        "n_txt": n_txt,
        "queries": args.queries,
        "dim": args.dim,
        "k": args.k,
        "threads": args.threads,
        "dedupe": not args.no_dedupe,
        "itc_similarity_s": round(t_itc, 2),
        "rerank_with_itm_s": round(t_rerank, 2),
        "retrieval_recall_s": round(t_recall, 2),
        "itm_pairs_scored": calls["pairs"],
        "itm_pairs_lavis_would_score": lavis_pairs,
        "itm_batches": calls["batches"],
        "peak_rss_mib_after_inputs": round(rss_inputs),
        "peak_rss_mib_after_itc": round(rss_itc),
        "peak_rss_mib_after_rerank": round(rss_rerank),
        "peak_rss_mib_total": round(peak_rss_mib()),
        "metrics": {k: round(v, 3) for k, v in metrics.items()},
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
