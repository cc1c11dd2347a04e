"""Short names for BLIP-2 checkpoints, and how any model argument resolves to one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from evalkit.core.errors import EvalkitError, closest_names
from evalkit.demo.bundled import MODELS_DIR as DEMO_MODELS_DIR


# Precision per component on a GPU, as LAVIS evaluated (baad2d7; docs/PROTOCOL_PARITY.md): the language model
# in fp16 (OPT) or bf16 (Flan-T5 overflows in fp16), the ViT in fp16 (LAVIS runs it under fp16 autocast for
# both), the Q-Former in fp32 (transformers keeps it so); retrieval entirely in fp32 (no autocast in LAVIS's
# retrieval path). CPU runs are fp32 throughout. --dtype makes every component that dtype (a recorded override).
GPU_DTYPE_BY_FAMILY = {"opt": "float16", "t5": "bfloat16", "itm": "float32"}
GPU_VISION_DTYPE_BY_FAMILY = {"opt": "float16", "t5": "float16", "itm": "float32"}


@dataclass(frozen=True)
class ModelEntry:
    """A registered checkpoint: where it lives and what kind of BLIP-2 it is."""

    name: str
    source: str  # hub id or local directory
    family: str  # "opt" | "t5" | "itm"
    image_size: int
    description: str
    builtin: bool = False  # shipped inside evalkit (the trained demo models)

    @property
    def kind(self) -> str:
        """'retrieval' for ITM models, else 'generation'."""
        return "retrieval" if self.family == "itm" else "generation"


def _hub(name: str, family: str, size: int, description: str) -> ModelEntry:
    return ModelEntry(name, f"Salesforce/{name}", family, size, description)


def _demo(name: str, family: str, description: str) -> ModelEntry:
    return ModelEntry(name, str(DEMO_MODELS_DIR / name), family, 64, description, builtin=True)


MODELS: dict[str, ModelEntry] = {
    m.name: m
    for m in [
        _hub("blip2-opt-2.7b", "opt", 224, "pretrained, OPT-2.7b LM (zero-shot VQA, captioning)"),
        _hub("blip2-opt-6.7b", "opt", 224, "pretrained, OPT-6.7b LM"),
        _hub("blip2-flan-t5-xl", "t5", 224, "pretrained, Flan-T5-XL LM"),
        _hub("blip2-flan-t5-xxl", "t5", 224, "pretrained, Flan-T5-XXL LM"),
        _hub("blip2-opt-2.7b-coco", "opt", 364, "fine-tuned on COCO captions"),
        _hub("blip2-opt-6.7b-coco", "opt", 364, "fine-tuned on COCO captions"),
        _hub("blip2-flan-t5-xl-coco", "t5", 364, "fine-tuned on COCO captions"),
        _hub("blip2-itm-vit-g", "itm", 224, "stage-1 Q-Former with ITC/ITM heads (retrieval)"),
        _hub("blip2-itm-vit-g-coco", "itm", 364, "ITC/ITM fine-tuned on COCO retrieval"),
        _demo("blip2-tiny-opt", "opt", "demo: tiny OPT-style BLIP-2 trained on shapes (ships with evalkit)"),
        _demo("blip2-tiny-t5", "t5", "demo: tiny T5-style BLIP-2 trained on shapes (ships with evalkit)"),
        _demo("blip2-tiny-itm", "itm", "demo: tiny retrieval BLIP-2 trained on shapes (ships with evalkit)"),
    ]
}


def safe_name(name: str) -> str:
    """A model name (or hub id) usable as one folder name: ``Salesforce/blip2-opt-2.7b`` -> ``Salesforce--blip2-opt-2.7b``."""
    return name.replace("/", "--").replace("\\", "--")


def family_from_config(config: dict) -> str:
    """The family ('opt' | 't5' | 'itm') of a BLIP-2 config.json."""
    architectures = config.get("architectures") or []
    if any("Retrieval" in a for a in architectures) or config.get("model_type") == "blip-2" and not config.get(
        "text_config"
    ):
        return "itm"
    text_type = (config.get("text_config") or {}).get("model_type", "")
    if text_type in ("t5", "mt5", "umt5"):
        return "t5"
    if text_type == "opt":
        return "opt"
    if not config.get("use_decoder_only_language_model", True):
        return "t5"
    return "opt"


def resolve_model(name_or_path: str) -> ModelEntry:
    """Registry name, local checkpoint directory, or hub id -> ModelEntry."""
    if name_or_path in MODELS:
        return MODELS[name_or_path]
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise EvalkitError(f"model directory {path} has no config.json (not a saved checkpoint)")
        try:
            config = json.loads(config_file.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise EvalkitError(f"cannot read {config_file}: {err}") from None
        image_size = (config.get("vision_config") or {}).get("image_size", 224)
        return ModelEntry(path.name, str(path.resolve()), family_from_config(config), image_size, "local checkpoint")
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if "/" in name_or_path and not looks_local:
        family = "t5" if "t5" in name_or_path.lower() else "itm" if "itm" in name_or_path.lower() else "opt"
        return ModelEntry(safe_name(name_or_path), name_or_path, family, 224, "hub checkpoint")
    if looks_local:
        raise EvalkitError(f"model directory {name_or_path} does not exist")
    raise EvalkitError(f"unknown model {name_or_path!r}{closest_names(name_or_path, list(MODELS))}; "
                       "see `evalkit list models`, or pass a hub id or a local directory")
