"""Load a BLIP-2 checkpoint (hub id or local directory) with transformers, and identify its weights."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from evalkit.core.errors import EvalkitError
from evalkit.core.sample_set import file_sha256
from evalkit.models.catalog import GPU_DTYPE_BY_FAMILY, GPU_VISION_DTYPE_BY_FAMILY, ModelEntry

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model with its processor and the identity of the exact weights that were loaded."""

    model: torch.nn.Module
    processor: object
    entry: ModelEntry
    device: torch.device
    dtype: torch.dtype
    revision: str
    weights_sha256: str
    num_parameters: int
    checkpoint_dir: str


def pick_device(requested: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; anything else is passed to torch."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise EvalkitError(f"unknown device {requested!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvalkitError(f"device {requested!r} asked for, but torch sees no CUDA GPU")
    return device


def pick_dtype(family: str, device: torch.device, requested: str | None) -> torch.dtype:
    """The protocol's dtype if given, else fp32 on CPU and the family's GPU dtype elsewhere."""
    if requested:
        if requested not in DTYPES:
            raise EvalkitError(f"unknown dtype {requested!r}; use one of float32, float16, bfloat16")
        return DTYPES[requested]
    if device.type == "cpu":
        return torch.float32
    return DTYPES[GPU_DTYPE_BY_FAMILY[family]]


def pick_vision_dtype(family: str, device: torch.device, requested: str | None) -> torch.dtype:
    """The vision tower's dtype: the requested one, else fp32 on CPU and the family's GPU vision dtype."""
    if requested or device.type == "cpu":
        return pick_dtype(family, device, requested)
    return DTYPES[GPU_VISION_DTYPE_BY_FAMILY[family]]


def set_component_precision(model: torch.nn.Module, family: str, device: torch.device, requested: str | None) -> None:
    """The ViT in its dtype (see GPU_VISION_DTYPE_BY_FAMILY) and the Q-Former with its query tokens in fp32, as
    LAVIS; a requested dtype (``--dtype``) puts every component in it. The language model keeps the load dtype."""
    model.vision_model.to(pick_vision_dtype(family, device, requested))
    qformer_dtype = DTYPES[requested] if requested else torch.float32
    model.qformer.to(qformer_dtype)
    model.query_tokens.data = model.query_tokens.data.to(qformer_dtype)


def component_dtypes(model: torch.nn.Module) -> dict[str, str]:
    """The dtype each BLIP-2 component's weights hold (recorded in run.json)."""
    parts = {"vision": "vision_model", "qformer": "qformer", "language_model": "language_model",
             "projection": "language_projection", "vision_projection": "vision_projection",
             "text_projection": "text_projection"}
    found = {}
    for label, attribute in parts.items():
        module = getattr(model, attribute, None)
        parameter = next(module.parameters(), None) if module is not None else None
        if parameter is not None:
            found[label] = dtype_name(parameter.dtype)
    return found


def dtype_name(dtype: torch.dtype) -> str:
    """torch.float16 -> 'float16'."""
    return str(dtype).replace("torch.", "")


def checkpoint_directory(source: str) -> Path:
    """The local directory holding the checkpoint's files (the hub cache snapshot for hub ids)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, local_files_only=True))
    except Exception:  # noqa: BLE001 - any hub failure means "not available offline"
        pass
    try:
        return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except Exception as err:  # noqa: BLE001
        raise EvalkitError(
            f"cannot get checkpoint {source!r}: not in the Hugging Face cache and the hub is unreachable "
            f"({type(err).__name__}); download it where there is network, or pass a local directory"
        ) from None


def weights_sha256(directory: Path) -> str:
    """sha256 over the weight files (name + content hash). Hub-cache files reuse their LFS blob sha256."""
    entries = []
    for file in sorted(directory.iterdir()):
        if not file.name.endswith(WEIGHT_SUFFIXES):
            continue
        resolved = file.resolve()
        blob_name = resolved.name
        if file.is_symlink() and len(blob_name) == 64 and all(c in "0123456789abcdef" for c in blob_name):
            digest = blob_name  # the hub cache names LFS blobs by their sha256
        else:
            digest = file_sha256(resolved)
        entries.append(f"{file.name}:{digest}")
    if not entries:
        raise EvalkitError(f"no weight files (*.safetensors, *.bin) in {directory}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def load_checkpoint(entry: ModelEntry, device: str = "auto", dtype: str | None = None,
                    known_weights_sha256: str | None = None) -> LoadedCheckpoint:
    """Load model + processor for a registry entry, on the chosen device and dtype.

    ``known_weights_sha256`` skips re-hashing weight files the caller has already hashed.
    """
    from transformers import Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval, Blip2Processor
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(entry.family, torch_device, dtype)
    directory = checkpoint_directory(entry.source)
    model_class = Blip2ForImageTextRetrieval if entry.family == "itm" else Blip2ForConditionalGeneration
    try:
        processor = Blip2Processor.from_pretrained(directory)
        model = _from_pretrained(model_class, directory, torch_dtype)
    except (OSError, ValueError, KeyError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EvalkitError(f"cannot load checkpoint {entry.source}: {first_line}") from None
    set_component_precision(model, entry.family, torch_device, dtype)
    model.to(torch_device).eval()
    revision = directory.name if directory.parent.name == "snapshots" else "local"
    return LoadedCheckpoint(
        model=model,
        processor=processor,
        entry=entry,
        device=torch_device,
        dtype=torch_dtype,
        revision=revision,
        weights_sha256=known_weights_sha256 or weights_sha256(directory),
        num_parameters=sum(p.numel() for p in model.parameters()),
        checkpoint_dir=str(directory),
    )


def _from_pretrained(model_class, directory: Path, torch_dtype: torch.dtype):
    try:
        return model_class.from_pretrained(directory, dtype=torch_dtype)
    except TypeError:  # transformers < 4.56 names it torch_dtype
        return model_class.from_pretrained(directory, torch_dtype=torch_dtype)


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
