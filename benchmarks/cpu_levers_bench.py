"""The generation levers on a compute-bound device (this CPU), at a size where they can show: an OPT-125m-sized
language model (768 hidden, 12 layers) on the tiny shipped vision tower, random weights, through evalkit's own runner.

Measures samples/s for sdpa + dynamic cache (the reference), eager attention, a static KV cache, and length sorting,
interleaved over the repeats; prints the medians and each one's ratio to the reference as JSON.

    python benchmarks/cpu_levers_bench.py --task greedy30 -n 64 --batch-size 16 --repeats 2
    python benchmarks/cpu_levers_bench.py --task vqav2 -n 80 --batch-size 16 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

import evalkit.bench.random_model as random_model
from evalkit.bench.throughput import run_bench

VARIANTS = {  # name: (attention, KV cache, length sorting)
    "sdpa+dynamic": ("sdpa", "dynamic", False), "eager+dynamic": ("eager", "dynamic", False),
    "sdpa+static": ("sdpa", "static", False), "sdpa+dynamic+sorted": ("sdpa", "dynamic", True),
}


def small_opt_checkpoint():
    """The tiny shipped OPT config with an OPT-125m-sized language model, random weights, on CPU."""
    spec = json.loads((random_model.CONFIGS_DIR / "tiny-opt.json").read_text())
    spec["config"]["text_config"].update(hidden_size=768, ffn_dim=3072, num_hidden_layers=12, num_attention_heads=12,
                                         word_embed_proj_dim=768)
    folder = Path(tempfile.mkdtemp())
    (folder / "small-opt.json").write_text(json.dumps(spec))
    shipped, random_model.CONFIGS_DIR = random_model.CONFIGS_DIR, folder
    try:
        return random_model.random_checkpoint("small-opt", "cpu")
    finally:
        random_model.CONFIGS_DIR = shipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="greedy30", choices=["greedy30", "vqav2", "coco-caption"])
    parser.add_argument("-n", "--num-samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    checkpoint = small_opt_checkpoint()
    runs: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats):
        order = list(VARIANTS) if repeat % 2 == 0 else list(VARIANTS)[::-1]
        for name in order:
            attention, cache, sort = VARIANTS[name]
            checkpoint.model.set_attn_implementation(attention)
            result = run_bench(checkpoint, args.task, args.num_samples, args.batch_size, 2, None, 1,
                               kv_cache=cache, sort_by_length=sort)
            runs[name].append(result["samples_per_s"])
    medians = {name: statistics.median(values) for name, values in runs.items()}
    print(json.dumps({"task": args.task, "samples": args.num_samples, "batch_size": args.batch_size, "runs": runs,
                      "median_samples_per_s": medians,
                      "ratio_to_sdpa_dynamic": {k: round(v / medians["sdpa+dynamic"], 3) for k, v in medians.items()}},
                     indent=1))


if __name__ == "__main__":
    main()
