"""`evalkit bench`: samples/s of the real loader and runner on synthetic COCO-sized JPEGs, as JSON."""

from __future__ import annotations

import itertools
import json
from typing import Optional

import typer

from evalkit.core.errors import EvalkitError

TINY_MODELS = {"opt": "blip2-tiny-opt", "t5": "blip2-tiny-t5", "itm": "blip2-tiny-itm"}


def bench(
    model: str = typer.Option("blip2-opt-2.7b", "--model", "-m",
                              help="with --random-weights: a shipped architecture (blip2-opt-2.7b, blip2-opt-6.7b, "
                                   "blip2-flan-t5-xl, blip2-flan-t5-xxl, tiny-opt, tiny-t5); else a checkpoint"),
    random_weights: bool = typer.Option(False, "--random-weights", help="build the architecture from evalkit's "
                                        "shipped config with random weights (nothing downloaded)"),
    tiny: bool = typer.Option(False, "--tiny", help="the bundled trained tiny model of the model's family "
                              "(runs on CPU in seconds)"),
    task: str = typer.Option("vqav2", help="vqav2 (5 beams, 10 tokens), coco-caption (5 beams, 30), greedy30; "
                                           "TASK,TASK,... measures each with the model loaded once; retrieval "
                                           "(an ITM model: ITC + ITM re-rank, projected to COCO 5k)"),
    num_samples: int = typer.Option(64, "--num-samples", "-n", min=1, help="samples (retrieval: images, 5 "
                                                                           "captions each)"),
    k: int = typer.Option(128, "--k", min=1, help="retrieval: ITC shortlist re-ranked by ITM"),
    batch_size: str = typer.Option("auto", help="a number, or auto (the largest that fits on a GPU, found by a "
                                                "probe; 8 on CPU)"),
    kv_cache: str = typer.Option("auto", help="auto (as `evalkit run`: static on CPU, dynamic on a GPU), dynamic, "
                                               "static, or dynamic,static to measure both"),
    image_pipeline: str = typer.Option("lavis", help="lavis, device, or lavis,device to measure both"),
    attn_implementation: str = typer.Option("sdpa", help="sdpa, eager, or sdpa,eager to measure both"),
    length_sort: str = typer.Option("off", help="prompts sorted by length in each window (off in `evalkit run`): "
                                                "off, on, or off,on to measure both"),
    workers: Optional[int] = typer.Option(None, help="decode + preprocess threads (default: the cores, at most 8)",
                                          min=1),
    image_size: Optional[int] = typer.Option(None, help="image size (default: the model's)"),
    max_new_tokens: Optional[int] = typer.Option(None, help="fixed generation length (default: the task's)"),
    baseline_samples: int = typer.Option(8, help="samples for the per-image-loop baseline", min=1),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
    dtype: Optional[str] = typer.Option(None, help="float32, float16 or bfloat16 (default: the family's)"),
) -> None:
    """Throughput through evalkit's loader and runner, stage times and the same-run per-image-loop ratio.

    Comma-separated tasks and lever values measure every combination with the model loaded once; the JSON is
    then a list."""
    from evalkit.bench.throughput import TASKS, run_bench
    from evalkit.models.blip2_generation import KV_CACHES
    from evalkit.models.image_preprocessing import IMAGE_PIPELINES
    from evalkit.models.loading import ATTN_IMPLEMENTATIONS

    _check_positive(max_new_tokens=max_new_tokens, image_size=image_size)
    if task == "retrieval":
        return _bench_retrieval(model, random_weights, tiny, device, dtype, image_size, num_samples, k, batch_size)
    tasks = _choices("bench task", task, tuple(TASKS))
    caches = _choices("--kv-cache value", kv_cache, KV_CACHES)
    pipelines = _choices("--image-pipeline value", image_pipeline, IMAGE_PIPELINES)
    kernels = _choices("--attn-implementation value", attn_implementation, ATTN_IMPLEMENTATIONS)
    sorting = [choice == "on" for choice in _choices("--length-sort value", length_sort, ("on", "off"))]
    size = _batch_size(batch_size)
    checkpoint = _checkpoint(model, random_weights, tiny, device, dtype, image_size)
    _check_patch(checkpoint, image_size)
    results = []
    for kernel in kernels:
        checkpoint.model.set_attn_implementation(kernel)
        for name, cache, pipeline, sort in itertools.product(tasks, caches, pipelines, sorting):
            results.append(run_bench(checkpoint, name, num_samples, size,
                                     workers, image_size, baseline_samples, max_new_tokens=max_new_tokens,
                                     kv_cache=cache, image_pipeline=pipeline, sort_by_length=sort))
            typer.echo(json.dumps(results[-1]), err=True)  # each as it lands, in case a later one fails
    typer.echo(json.dumps(results[0] if len(results) == 1 else results, indent=1))


def _bench_retrieval(model: str, random_weights: bool, tiny: bool, device: str, dtype: Optional[str],
                     image_size: Optional[int], num_images: int, k: int, batch_size: str) -> None:
    """`evalkit bench --task retrieval`: one retrieval run's stages and its projection to COCO 5k."""
    from evalkit.bench.retrieval_throughput import run_retrieval_bench

    size = _batch_size(batch_size)
    checkpoint = _checkpoint(model, random_weights, tiny, device, dtype, image_size, family="itm")
    _check_patch(checkpoint, image_size)
    if checkpoint.entry.family != "itm":
        raise EvalkitError(f"--task retrieval needs an ITM model (e.g. blip2-itm-vit-g), not {checkpoint.entry.name}")
    result = run_retrieval_bench(checkpoint, num_images, k=k, image_size=image_size, batch_size=size)
    typer.echo(json.dumps(result, indent=1))


def _check_positive(**values: Optional[int]) -> None:
    """--max-new-tokens and --image-size, when given, are at least 1 (0 is not "the default"): a one-line error."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise EvalkitError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")


def _check_patch(checkpoint, image_size: Optional[int]) -> None:
    """An --image-size smaller than one ViT patch has nothing to embed: refused as `evalkit run` refuses it."""
    patch = getattr(getattr(checkpoint.model.config, "vision_config", None), "patch_size", None)
    if image_size is not None and patch and image_size < patch:
        raise EvalkitError(f"--image-size {image_size} is smaller than one vision patch of {checkpoint.entry.name} "
                           f"({patch} px)")


def _batch_size(value: str) -> Optional[int]:
    """--batch-size: a number, or None for auto; a one-line error otherwise."""
    if value != "auto" and not value.isdigit():
        raise EvalkitError(f"--batch-size must be a number or auto, not {value!r}")
    return None if value == "auto" else int(value)


def _choices(what: str, value: str, known: tuple[str, ...]) -> list[str]:
    """``a,b`` -> [a, b], each one of ``known``; a one-line error otherwise."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    for name in names or [value]:
        if name not in known:
            raise EvalkitError(f"unknown {what} {name!r}; use one of {', '.join(known)}")
    return names


def _checkpoint(model: str, random_weights: bool, tiny: bool, device: str, dtype: Optional[str],
                image_size: Optional[int], family: str | None = None):
    """The model to measure; ``--tiny`` takes the family from the model name (or ``family``)."""
    from evalkit.models.catalog import resolve_model
    from evalkit.models.loading import load_checkpoint

    family = family or ("t5" if "t5" in model else "opt")
    if tiny and random_weights:
        from evalkit.bench.random_model import random_checkpoint

        return random_checkpoint(f"tiny-{family}", device, dtype, image_size)
    if tiny:
        from evalkit.demo.bundled import MODELS_DIR

        return load_checkpoint(resolve_model(str(MODELS_DIR / TINY_MODELS[family])), device, dtype)
    if random_weights:
        from evalkit.bench.random_model import random_checkpoint

        return random_checkpoint(model, device, dtype, image_size)
    return load_checkpoint(resolve_model(model), device, dtype)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
