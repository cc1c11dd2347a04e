"""Everything a user can set for `evalkit run`, as one frozen record."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunOptions:
    """Options of one run; ``overrides`` are protocol fields set on the command line."""

    task: str
    model: str
    data: str | None = None
    split: str | None = None
    images: Path | None = None
    columns: dict[str, str] = field(default_factory=dict)
    limit: int | None = None
    batch_size: int | str | None = None  # a number, "auto" (the largest that fits), or None: auto on a GPU
    device: str = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)
    prompt_variant: str | None = None
    protocol_name: str | None = None  # a named protocol of the task (default: the task's default)
    vqa_metric: str = "official"
    results_dir: Path = Path("results")
    run_id: str | None = None
    overwrite: bool = False
    rescore: bool = False  # score a complete run again (nothing generated) instead of returning its recorded result
    wait: bool = False  # wait for another process holding the run folder instead of refusing
    device_map: str | None = None  # accelerate's device map ("auto"): a model larger than one device
    attn_implementation: str | None = None  # transformers' attention kernels (None: its default, sdpa)
    kv_cache: str = "auto"  # static on CPU, dynamic on a GPU; or "dynamic" / "static" (see blip2_generation)
    image_pipeline: str = "lavis"  # "device": resize + normalise on the model's device (not the paper's pixels)
    skip_bad_images: bool = False
    include_paths: tuple[str, ...] = ()
    export_scores: bool = False
    show_progress: bool = True
