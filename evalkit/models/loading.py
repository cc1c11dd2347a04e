"""Load a BLIP-2 checkpoint (hub id or local directory) with transformers, and identify its weights."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from evalkit.core.errors import EvalkitError, NotDownloadedError
from evalkit.core.sample_set import file_sha256
from evalkit.models.catalog import GPU_DTYPE_BY_FAMILY, GPU_VISION_DTYPE_BY_FAMILY, ModelEntry
from evalkit.models.t5_output_scaling import align_t5_output_scaling

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
    # T5 only: the decoder-output scaling used, read as the checkpoint's writer meant it (t5_output_scaling)
    t5_output_scaling: dict | None = None


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


ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")  # --attn-implementation choices


def attention_kernels(model: torch.nn.Module) -> dict[str, str]:
    """The attention implementation each BLIP-2 component runs (recorded in run.json)."""
    found = {}
    for label, attribute in (("vision", "vision_model"), ("qformer", "qformer"), ("language_model", "language_model")):
        config = getattr(getattr(model, attribute, None), "config", None)
        implementation = getattr(config, "_attn_implementation", None)
        if implementation:
            found[label] = str(implementation)
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
    if not looks_like_hub_id(source):
        raise EvalkitError(f"checkpoint folder {source} does not exist (a hub id is ORG/NAME)")
    try:
        return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except Exception as err:  # noqa: BLE001
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
        reason = "HF_HUB_OFFLINE is set" if offline else f"the hub cannot be reached: {type(err).__name__}"
        raise NotDownloadedError(model_not_here_message(source, reason)) from None


def looks_like_hub_id(source: str) -> bool:
    """ORG/NAME, as the hub spells repository ids (not a relative or absolute folder path)."""
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", source) is not None and not source.startswith(".")


def model_not_here_message(source: str, reason: str) -> str:
    """The one line for a hub checkpoint that is neither in the cache nor downloadable now: how to get it."""
    return (f"model {source} is not in the Hugging Face cache and could not be downloaded ({reason}): download it "
            f"once with `hf download {source}` (`huggingface-cli download` before huggingface_hub 1.0) and run with "
            "HF_HUB_OFFLINE=1, or pass a local checkpoint folder")


def check_image_size(directory: Path, image_size: int | None) -> None:
    """Refuse an image size smaller than one ViT patch of the checkpoint (``vision_config.patch_size`` in its
    config.json, 14 when absent): such an image has no patch to embed."""
    if image_size is None:
        return
    import json

    try:
        vision = json.loads((directory / "config.json").read_text()).get("vision_config") or {}
    except (OSError, ValueError):
        vision = {}
    patch = int(vision.get("patch_size") or 14)
    if image_size < patch:
        raise EvalkitError(f"--image-size {image_size} is smaller than one vision patch of this checkpoint "
                           f"({patch} px, vision_config.patch_size in {directory / 'config.json'})")


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
                    known_weights_sha256: str | None = None, device_map: str | None = None,
                    attn_implementation: str | None = None) -> LoadedCheckpoint:
    """Load model + processor for a registry entry, on the chosen device and dtype.

    ``known_weights_sha256`` skips re-hashing weight files the caller has already hashed. ``device_map``
    ("auto") lets accelerate spread a model too large for one device; inputs go to the vision tower's device.
    ``attn_implementation`` picks transformers' attention kernels (None: its default, sdpa where supported).
    """
    from transformers import Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval, Blip2Processor
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(entry.family, torch_device, dtype)
    directory = checkpoint_directory(entry.source)
    model_class = Blip2ForImageTextRetrieval if entry.family == "itm" else Blip2ForConditionalGeneration
    from safetensors import SafetensorError

    try:
        processor = load_processor(directory)
        model, loading_info = _from_pretrained(model_class, directory, torch_dtype, device_map, attn_implementation)
    except SafetensorError as err:
        raise EvalkitError(f"cannot load checkpoint {entry.source}: {_corrupt_weight_file(directory, err)}") from None
    except (OSError, ValueError, KeyError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EvalkitError(f"cannot load checkpoint {entry.source}: {first_line}") from None
    check_loading_info(entry.source, loading_info)
    from evalkit.models.lavis_convert import apply_lavis_constants

    apply_lavis_constants(model, directory)  # a converted LAVIS checkpoint: ln_vision's eps (recorded in run.json)
    t5_scaling = align_t5_output_scaling(model, directory, entry.source)
    set_component_precision(model, entry.family, torch_device, dtype)
    if device_map:
        torch_device = next(model.vision_model.parameters()).device
    else:
        model.to(torch_device)
    model.eval()
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
        t5_output_scaling=t5_scaling,
    )


def load_processor(directory: Path):
    """The checkpoint's Blip2Processor. older transformers (see docs/COMPATIBILITY.md) cannot read the nested ``processor_config.json`` that
    5.x writes (``Blip2Processor.__init__() got multiple values for argument 'image_processor'``); the processor
    is then built from its parts, each read from its own file as those versions do."""
    from transformers import AutoTokenizer, Blip2Processor, BlipImageProcessor

    try:
        return Blip2Processor.from_pretrained(directory)
    except TypeError as err:
        if "image_processor" not in str(err):
            raise
    import json

    config = json.loads((directory / "processor_config.json").read_text())
    return Blip2Processor(image_processor=BlipImageProcessor.from_pretrained(directory),
                          tokenizer=AutoTokenizer.from_pretrained(directory),
                          num_query_tokens=config.get("num_query_tokens"))


def check_loading_info(source: str, info: dict) -> None:
    """Refuse a checkpoint whose weights do not match the model exactly: transformers would fill a missing
    weight with random values (and score it without a word) and drop an unexpected one. Names the keys."""
    problems = []
    for label, field in (("missing", "missing_keys"), ("unexpected", "unexpected_keys"),
                         ("wrong-shape", "mismatched_keys")):
        keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(field) or ())
        if keys:
            shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            problems.append(f"{len(keys)} {label} weight{'s' if len(keys) > 1 else ''} ({shown})")
    if problems:
        raise EvalkitError(f"checkpoint {source} does not match its model class: {'; '.join(problems)}")


def _corrupt_weight_file(directory: Path, err: Exception) -> str:
    """Which safetensors file is unreadable (truncated, or not safetensors at all), for the one-line error."""
    from safetensors import safe_open

    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    for file in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():
                    handle.get_slice(key)
        except Exception as file_err:  # noqa: BLE001 - any failure marks the file
            first = str(file_err).strip().splitlines()[0] if str(file_err).strip() else type(file_err).__name__
            return f"weight file {file} is truncated or corrupt ({first})"
    return f"a weight file in {directory} is truncated or corrupt ({reason})"


def _from_pretrained(model_class, directory: Path, torch_dtype: torch.dtype, device_map: str | None = None,
                     attn_implementation: str | None = None):
    """(model, loading info with missing_keys / unexpected_keys / mismatched_keys)."""
    placement = {"device_map": device_map} if device_map else {}
    if attn_implementation:
        placement["attn_implementation"] = attn_implementation
    try:
        return model_class.from_pretrained(directory, dtype=torch_dtype, output_loading_info=True, **placement)
    except TypeError:  # transformers < 4.56 names it torch_dtype
        return model_class.from_pretrained(directory, torch_dtype=torch_dtype, output_loading_info=True, **placement)


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
