"""A LAVIS BLIP-2 `.pth` -> a transformers checkpoint folder that `evalkit run --model DIR` loads (and back).

The key mapping is `lavis_keys`; this module reads the `.pth`, completes it with the frozen weights of a base
checkpoint (LAVIS's runner saves only the trained parameters), applies LAVIS's architecture constants to the
base config, checks that every weight the model needs is provided exactly once, and writes the folder
atomically with `lavis_conversion.json` (which weights came from where). Nothing is written on any error.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from evalkit.core.errors import EvalkitError
from evalkit.models.catalog import family_from_config, resolve_model
from evalkit.models.lavis_keys import FAMILIES, LM_PREFIX, LavisKeyError, hf_to_lavis, lavis_to_hf

RECORD_FILE = "lavis_conversion.json"
DEFAULT_BASE = {"opt": "blip2-opt-2.7b", "t5": "blip2-flan-t5-xl", "itm": "blip2-itm-vit-g"}
FAMILY_MARKERS = {"opt": ("opt_model.", "opt_proj."), "t5": ("t5_model.", "t5_proj."),
                  "itm": ("itm_head.", "vision_proj.", "text_proj.")}
BLIP2_MARKERS = ("visual_encoder.", "ln_vision.", "Qformer.", "query_tokens") + tuple(
    m for markers in FAMILY_MARKERS.values() for m in markers)
CONFIG_FILES = ("config.json", "generation_config.json", "preprocessor_config.json", "processor_config.json",
                "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                "merges.txt", "spiece.model", "added_tokens.json", "chat_template.json")
FIRST_NAMES = 5

# LAVIS's architecture constants that a transformers config can hold: (config path, LAVIS value, where LAVIS
# sets it). Applied to the converted config whatever the base says; each change is recorded.
LAVIS_CONSTANTS = {
    "all": [(("vision_config", "layer_norm_eps"), 1e-6, "lavis/models/eva_vit.py create_eva_vit_g: "
                                                         "norm_layer=partial(nn.LayerNorm, eps=1e-6)"),
            (("vision_config", "hidden_act"), "gelu", "lavis/models/eva_vit.py Mlp: act_layer=nn.GELU"),
            (("vision_config", "qkv_bias"), True, "lavis/models/eva_vit.py create_eva_vit_g: qkv_bias=True"),
            (("qformer_config", "layer_norm_eps"), 1e-12, "bert-base-uncased config.json via "
                                                          "lavis/models/blip2_models/blip2.py init_Qformer"),
            (("qformer_config", "hidden_act"), "gelu", "bert-base-uncased config.json (init_Qformer)")],
    "t5": [(("text_config", "dense_act_fn"), "gelu", "lavis/models/blip2_models/blip2_t5.py: "
                                                     "t5_config.dense_act_fn = \"gelu\"")],
}
# LAVIS constants no transformers BLIP-2 config field can hold: recorded, and set by evalkit's loader on the
# loaded model (apply_lavis_constants) for a converted folder, whose weights LAVIS trained with them
LN_VISION_EPS = 1e-5
NOT_EXPRESSIBLE = [
    {"what": "ln_vision eps", "lavis": LN_VISION_EPS, "transformers": "vision_config.layer_norm_eps (1e-6)",
     "applied_at_load": True,
     "source": "lavis/models/blip2_models/blip2.py init_vision_encoder: LayerNorm(num_features), torch's "
               "default eps 1e-5; transformers' Blip2VisionModel.post_layernorm uses vision_config.layer_norm_eps"},
]


def apply_lavis_constants(model: torch.nn.Module, directory: Path) -> dict:
    """For a folder written by `evalkit convert lavis`: the constants of NOT_EXPRESSIBLE set on the loaded model
    (measured: tests/test_lavis_reference.py). Returns what was set ({} for other folders)."""
    if not (Path(directory) / RECORD_FILE).is_file():
        return {}
    model.vision_model.post_layernorm.eps = LN_VISION_EPS
    return {"vision_model.post_layernorm.eps": LN_VISION_EPS}


def known_lavis_differences(source: str, directory: Path) -> list[dict]:
    """LAVIS-trained weights loaded as the hub ships them (``Salesforce/blip2-*``, by name or as a hub-cache
    folder): the NOT_EXPRESSIBLE constants this run uses that differ from LAVIS's, for run.json. They are flagged,
    not changed: the hub checkpoints' numbers are transformers' port as everyone loads it, and the difference is
    small (measured on the tiny models beside LAVIS's code: after ln_vision max |Δ| 3.5e-5, OPT logits 4.6e-4;
    docs/PROTOCOL_PARITY.md). A folder from `evalkit convert lavis` gets LAVIS's values at load instead."""
    directory = Path(directory)
    if (directory / RECORD_FILE).is_file():
        return []
    if not (source.startswith("Salesforce/blip2-") or "models--Salesforce--blip2-" in str(directory)):
        return []
    try:
        vision = json.loads((directory / "config.json").read_text(encoding="utf-8")).get("vision_config") or {}
    except (OSError, ValueError):
        return []
    eps = vision.get("layer_norm_eps", 1e-6)  # Blip2VisionConfig's default
    if eps == LN_VISION_EPS:
        return []
    return [{"what": "ln_vision eps", "lavis": LN_VISION_EPS, "this_run": eps,
             "where": "vision_model.post_layernorm (LAVIS's ln_vision)", "source": NOT_EXPRESSIBLE[0]["source"],
             "effect": "measured on the tiny models beside LAVIS 1.0.2: after ln_vision max |Δ| 3.5e-5 (1.9e-6 "
                       "with eps 1e-5), OPT logits 4.6e-4 (3.6e-5); docs/PROTOCOL_PARITY.md"}]


def read_lavis_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a LAVIS checkpoint file (under "model", or bare). One-line errors for anything else."""
    if not path.is_file():
        raise EvalkitError(f"{path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated zip, pickle error, not torch at all
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EvalkitError(f"{path}: not a readable torch checkpoint (truncated or not a .pth): {reason[:160]}") from None
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    bare = state is checkpoint and isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    if not isinstance(state, dict) or not state or (state is checkpoint and not bare):
        kind = type(checkpoint).__name__
        keys = ", ".join(list(checkpoint)[:FIRST_NAMES]) if isinstance(checkpoint, dict) else kind
        raise EvalkitError(f"{path}: not a LAVIS BLIP-2 checkpoint (no state dict under \"model\"; found {keys})")
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise EvalkitError(f"{path}: not a LAVIS BLIP-2 state dict (non-tensor entries: {', '.join(not_tensors[:3])})")
    if not any(str(k).startswith(BLIP2_MARKERS) for k in state):
        raise EvalkitError(f"{path}: not a LAVIS BLIP-2 checkpoint (first keys: {', '.join(list(state)[:3])})")
    return state


def detect_family(state: dict, path: Path, family: str) -> None:
    """Refuse a checkpoint of another family than --family, naming the key that shows it."""
    for other, markers in FAMILY_MARKERS.items():
        if other == family:
            continue
        found = next((k for k in state if k.startswith(markers)), None)
        if found:
            raise EvalkitError(f"{path}: a LAVIS {other} checkpoint (key {found}), not --family {family}")


def base_state_and_config(base: str, family: str) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    """The base checkpoint's folder, config.json and weights (safetensors, possibly sharded)."""
    from safetensors.torch import load_file

    from evalkit.models.loading import checkpoint_directory

    entry = resolve_model(base)
    directory = checkpoint_directory(entry.source)
    config = json.loads((directory / "config.json").read_text())
    if family_from_config(config) != family:
        raise EvalkitError(f"--base {base} is a {family_from_config(config)} checkpoint, not --family {family}")
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise EvalkitError(f"--base {base}: no *.safetensors weights in {directory}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update(load_file(str(file)))
        except Exception as err:  # noqa: BLE001
            raise EvalkitError(f"--base {base}: weight file {file} is unreadable ({str(err)[:120]})") from None
    return directory, config, state


def lavis_config(base_config: dict, family: str) -> tuple[dict, list[dict]]:
    """The base config with LAVIS's architecture constants, and the fields that changed."""
    config = json.loads(json.dumps(base_config))
    changed = []
    for (section, name), value, source in LAVIS_CONSTANTS["all"] + LAVIS_CONSTANTS.get(family, []):
        if section not in config and family == "itm" and section == "text_config":
            continue
        holder = config.setdefault(section, {})
        if holder.get(name) != value:
            changed.append({"field": f"{section}.{name}", "base": holder.get(name), "lavis": value, "source": source})
            holder[name] = value
    return config, changed


def model_keys(config: dict, family: str) -> set[str]:
    """The weights the transformers model of this config needs (tied copies counted once), built on `meta`."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval

    model_class = Blip2ForImageTextRetrieval if family == "itm" else Blip2ForConditionalGeneration
    with torch.device("meta"):
        model = model_class(Blip2Config.from_dict(config))
    keys = {name for name, _ in model.named_parameters()}
    persistent = set(model.state_dict())
    return keys | {name for name, _ in model.named_buffers() if name in persistent}


def convert_lavis_checkpoint(pth: Path, family: str, base: str | None, out: Path) -> dict:
    """Write the converted folder at `out`; returns the conversion record (also in out/lavis_conversion.json)."""
    if family not in FAMILIES:
        raise EvalkitError(f"--family {family!r}: use one of {', '.join(FAMILIES)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EvalkitError(f"--out {out} exists and is not empty; choose a new folder")
    state = read_lavis_state(pth)
    detect_family(state, pth, family)
    base = base or DEFAULT_BASE[family]
    base_dir, base_config, base_state = base_state_and_config(base, family)
    config, changed = lavis_config(base_config, family)
    tied = _tied(config, family)
    try:
        converted = lavis_to_hf(state, family, tied)
    except LavisKeyError as err:
        raise EvalkitError(f"{pth}: {err}") from None
    needed = model_keys(config, family)
    extra = sorted(set(converted.state_dict) - needed)
    if extra:
        raise EvalkitError(f"{pth}: {len(extra)} key(s) the {family} model of --base {base} has no place for: "
                           f"{', '.join(extra[:3])}")
    for key, tensor in converted.state_dict.items():
        if key in base_state and tuple(base_state[key].shape) != tuple(tensor.shape):
            raise EvalkitError(f"{pth}: {key} has shape {tuple(tensor.shape)}, --base {base} has "
                               f"{tuple(base_state[key].shape)}")
    from_base = sorted(k for k in needed if k not in converted.state_dict and k in base_state)
    missing = sorted(needed - set(converted.state_dict) - set(base_state))
    if missing:
        raise EvalkitError(f"{pth}: {len(missing)} weight(s) neither the .pth nor --base {base} provides: "
                           f"{', '.join(missing[:3])}")
    weights = {k: base_state[k] for k in from_base}
    weights.update(converted.state_dict)
    record = {
        "schema": 1,
        "lavis_checkpoint": str(pth),
        "lavis_checkpoint_sha256": _sha256(pth),
        "family": family,
        "base": base,
        "base_dir": str(base_dir),
        "from_lavis": {"count": len(converted.state_dict), "first": sorted(converted.state_dict)[:FIRST_NAMES]},
        "from_base": {"count": len(from_base), "first": from_base[:FIRST_NAMES]},
        "dropped_lavis_keys": converted.dropped,
        "notes": converted.notes,
        "config_changes": changed,
        "not_expressible": NOT_EXPRESSIBLE,
    }
    _write_folder(out, base_dir, config, weights, record)
    return record


def hf_folder_to_lavis(directory: Path) -> tuple[dict[str, torch.Tensor], dict, list[str]]:
    """A transformers BLIP-2 folder -> (LAVIS state dict, its config.json, conversion notes)."""
    from safetensors.torch import load_file

    config = json.loads((directory / "config.json").read_text())
    family = family_from_config(config)
    state: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        state.update(load_file(str(file)))
    positions = (config.get("qformer_config") or {}).get("max_position_embeddings", 512)
    converted = hf_to_lavis(state, family, _tied(config, family), positions)
    return converted.state_dict, config, converted.notes


def save_lavis_checkpoint(state: dict[str, torch.Tensor], path: Path) -> None:
    """Save as LAVIS's runner does: {"model": state_dict}."""
    torch.save({"model": state}, path)


def _tied(config: dict, family: str) -> bool:
    if family == "itm":
        return False
    text = config.get("text_config") or {}
    return bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", family == "opt")))


def _sha256(path: Path) -> str:
    from evalkit.core.sample_set import file_sha256

    return file_sha256(path)


def _write_folder(out: Path, base_dir: Path, config: dict, weights: dict, record: dict) -> None:
    """Everything in a temporary folder beside `out`, then one rename: `out` is whole or absent."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name in CONFIG_FILES:
            if (base_dir / name).is_file() and name != "config.json":
                shutil.copyfile(base_dir / name, staging / name)
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file({k: v.contiguous() for k, v in sorted(weights.items())}, str(staging / "model.safetensors"),
                  metadata={"format": "pt"})
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def conversion_summary(directory: Path) -> dict | None:
    """The part of a converted folder's record that run.json carries (None for other folders)."""
    file = Path(directory) / RECORD_FILE
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    keep = ("lavis_checkpoint", "lavis_checkpoint_sha256", "family", "base", "from_lavis", "from_base",
            "config_changes", "not_expressible")
    return {k: record.get(k) for k in keep}


__all__ = ["convert_lavis_checkpoint", "hf_folder_to_lavis", "save_lavis_checkpoint", "read_lavis_state",
           "conversion_summary", "LM_PREFIX"]
