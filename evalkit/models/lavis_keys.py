"""LAVIS BLIP-2 state-dict keys <-> transformers BLIP-2 keys, both directions, every key accounted for.

evalkit's own mapping (no LAVIS import): the key names are those of LAVIS 1.0.2's `Blip2OPT`, `Blip2T5` and
`Blip2Qformer`/`Blip2ITM` (`visual_encoder` = `lavis/models/eva_vit.py` `VisionTransformer`, `Qformer` =
`lavis/models/blip2_models/Qformer.py` `BertLMHeadModel`), and of transformers' `Blip2ForConditionalGeneration`
/ `Blip2ForImageTextRetrieval`. Written by hand because the one public mapping (transformers'
`convert_blip_2_original_to_pytorch.py`) imports LAVIS, goes one way and fills the frozen weights from LAVIS's
own downloads.

Three things are not renames:
- EVA's attention has `q_bias` and `v_bias` and no key bias; transformers keeps one `qkv.bias`. LAVIS -> HF
  writes `cat(q_bias, 0, v_bias)`; HF -> LAVIS drops the key third. A key bias adds `q . k_bias` to every logit
  of one query's row, the same amount for every key, and softmax is unchanged by adding a constant to a row
  (`tests/test_lavis_convert.py` shows it on the tiny models' vision tower). The dropped values are reported.
- Tied weights (OPT `lm_head`, T5 `encoder/decoder.embed_tokens` and a tied `lm_head`) are one tensor in the
  HF files and several keys in a LAVIS state dict: LAVIS -> HF checks the copies are equal, HF -> LAVIS writes
  them.
- LAVIS-only keys that no HF model holds are dropped with their reason (`LAVIS_ONLY`), and only those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

FAMILIES = ("opt", "t5", "itm")
LM_PREFIX = {"opt": "opt_model.", "t5": "t5_model."}
PROJ = {"opt": "opt_proj", "t5": "t5_proj"}

# (LAVIS pattern, HF template): plain renames, tried in order; {n} is a layer number
_VISION = [
    (r"visual_encoder\.cls_token", "vision_model.embeddings.class_embedding"),
    (r"visual_encoder\.pos_embed", "vision_model.embeddings.position_embedding"),
    (r"visual_encoder\.patch_embed\.proj\.(weight|bias)", "vision_model.embeddings.patch_embedding.{0}"),
    (r"visual_encoder\.blocks\.(\d+)\.norm1\.(weight|bias)", "vision_model.encoder.layers.{0}.layer_norm1.{1}"),
    (r"visual_encoder\.blocks\.(\d+)\.norm2\.(weight|bias)", "vision_model.encoder.layers.{0}.layer_norm2.{1}"),
    (r"visual_encoder\.blocks\.(\d+)\.attn\.qkv\.weight", "vision_model.encoder.layers.{0}.self_attn.qkv.weight"),
    (r"visual_encoder\.blocks\.(\d+)\.attn\.proj\.(weight|bias)",
     "vision_model.encoder.layers.{0}.self_attn.projection.{1}"),
    (r"visual_encoder\.blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", "vision_model.encoder.layers.{0}.mlp.{1}.{2}"),
    (r"ln_vision\.(weight|bias)", "vision_model.post_layernorm.{0}"),
]
_QFORMER = [
    (r"Qformer\.bert\.embeddings\.LayerNorm\.(weight|bias)", "qformer.layernorm.{0}"),
    (r"Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.(query|key|value)\.(weight|bias)",
     "qformer.encoder.layer.{0}.{1}.attention.{2}.{3}"),
    (r"Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.output\.(dense|LayerNorm)\.(weight|bias)",
     "qformer.encoder.layer.{0}.{1}.output.{2}.{3}"),
    (r"Qformer\.bert\.encoder\.layer\.(\d+)\.(intermediate_query|output_query)\.(dense|LayerNorm)\.(weight|bias)",
     "qformer.encoder.layer.{0}.{1}.{2}.{3}"),
    (r"query_tokens", "query_tokens"),
]
_ITM = [
    (r"Qformer\.bert\.encoder\.layer\.(\d+)\.(intermediate|output)\.(dense|LayerNorm)\.(weight|bias)",
     "qformer.encoder.layer.{0}.{1}.{2}.{3}"),
    (r"Qformer\.bert\.embeddings\.(word_embeddings|position_embeddings)\.weight", "embeddings.{0}.weight"),
    (r"vision_proj\.(weight|bias)", "vision_projection.{0}"),
    (r"text_proj\.(weight|bias)", "text_projection.{0}"),
    (r"itm_head\.(weight|bias)", "itm_head.{0}"),
]

# LAVIS keys no transformers BLIP-2 model holds, with the reason dropping them changes no output
LAVIS_ONLY = {
    r"Qformer\.bert\.embeddings\.position_ids": "a buffer holding arange(max positions), rebuilt by transformers",
    r"Qformer\.cls\.predictions\..*": "the Q-Former's language-model head: LAVIS's image-grounded text generation "
                                      "loss (training only); ITC and ITM scoring never call it",
    r"temp": "the ITC softmax temperature: LAVIS's contrastive training loss only; compute_sim_matrix ranks by "
             "raw similarities",
}
LAVIS_ONLY_FAMILIES = {r"Qformer\.bert\.embeddings\.position_ids": FAMILIES,
                       r"Qformer\.cls\.predictions\..*": ("itm",), r"temp": ("itm",)}


class LavisKeyError(ValueError):
    """A key that maps nowhere, a weight that is missing, or copies of a tied weight that differ."""


@dataclass
class Conversion:
    """The converted state dict and what the conversion did to it."""

    state_dict: dict[str, torch.Tensor]
    dropped: dict[str, str] = field(default_factory=dict)  # source key -> reason
    notes: list[str] = field(default_factory=list)


def _rules(family: str) -> list[tuple[re.Pattern, str]]:
    rules = list(_VISION) + list(_QFORMER)
    if family == "itm":
        rules += _ITM
    else:
        prefix = re.escape(LM_PREFIX[family])
        rules += [(rf"{PROJ[family]}\.(weight|bias)", "language_projection.{0}"), (rf"{prefix}(.+)", "language_model.{0}")]
    return [(re.compile(pattern + r"\Z"), template) for pattern, template in rules]


def _lavis_only_reason(key: str, family: str) -> str | None:
    for pattern, reason in LAVIS_ONLY.items():
        if family in LAVIS_ONLY_FAMILIES[pattern] and re.fullmatch(pattern, key):
            return reason
    return None


def _tied_lm_keys(family: str, tied: bool) -> dict[str, str]:
    """LAVIS keys that are copies of the LM's input embedding -> the HF key they copy."""
    if family == "opt":
        return {"opt_model.lm_head.weight": "language_model.model.decoder.embed_tokens.weight"} if tied else {}
    if family == "t5":
        keys = {"t5_model.encoder.embed_tokens.weight": "language_model.shared.weight",
                "t5_model.decoder.embed_tokens.weight": "language_model.shared.weight"}
        if tied:
            keys["t5_model.lm_head.weight"] = "language_model.shared.weight"
        return keys
    return {}


def lavis_to_hf(lavis_state: dict[str, torch.Tensor], family: str, tied_lm: bool) -> Conversion:
    """Rename a LAVIS state dict to transformers keys. Raises LavisKeyError naming the first keys that map nowhere."""
    rules = _rules(family)
    out: dict[str, torch.Tensor] = {}
    conversion = Conversion(out)
    q_bias, v_bias, unmapped, tied_copies = {}, {}, [], {}
    tied_keys = _tied_lm_keys(family, tied_lm)
    for key, tensor in lavis_state.items():
        bias = re.fullmatch(r"visual_encoder\.blocks\.(\d+)\.attn\.(q|v)_bias", key)
        if bias:
            (q_bias if bias.group(2) == "q" else v_bias)[bias.group(1)] = tensor
            continue
        if key in tied_keys:
            tied_copies[key] = tensor
            continue
        reason = _lavis_only_reason(key, family)
        if reason:
            conversion.dropped[key] = reason
            continue
        renamed = _renamed(key, rules)
        if renamed is None:
            unmapped.append(key)
        else:
            out[renamed] = tensor
    if unmapped:
        raise LavisKeyError(f"{len(unmapped)} key(s) map to no {family} BLIP-2 weight: {_first(unmapped)}")
    for layer in sorted(set(q_bias) | set(v_bias), key=int):
        if layer not in q_bias or layer not in v_bias:
            missing = "q_bias" if layer not in q_bias else "v_bias"
            raise LavisKeyError(f"visual_encoder.blocks.{layer}.attn.{missing} is missing (its pair is present)")
        q, v = q_bias[layer], v_bias[layer]
        out[f"vision_model.encoder.layers.{layer}.self_attn.qkv.bias"] = torch.cat([q, torch.zeros_like(v), v])
    for key, tensor in tied_copies.items():
        target = tied_keys[key]
        if target in out and not torch.equal(out[target].to(tensor.dtype), tensor):
            raise LavisKeyError(f"{key} differs from the embedding it is tied to ({target}); the base config ties them")
        if target not in out:
            out[target] = tensor
    if q_bias:
        conversion.notes.append("vision qkv.bias = cat(q_bias, 0, v_bias): EVA's attention has no key bias")
    return conversion


def hf_to_lavis(hf_state: dict[str, torch.Tensor], family: str, tied_lm: bool,
                qformer_max_positions: int | None = None) -> Conversion:
    """transformers keys -> LAVIS keys (the inverse of lavis_to_hf). The vision key bias is dropped (see above)."""
    inverse = _inverse_rules(family)
    out: dict[str, torch.Tensor] = {}
    conversion = Conversion(out)
    unmapped, key_bias_max = [], 0.0
    for key, tensor in hf_state.items():
        qkv_bias = re.fullmatch(r"vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.bias", key)
        if qkv_bias:
            q, k, v = tensor.chunk(3)
            out[f"visual_encoder.blocks.{qkv_bias.group(1)}.attn.q_bias"] = q.clone()
            out[f"visual_encoder.blocks.{qkv_bias.group(1)}.attn.v_bias"] = v.clone()
            key_bias_max = max(key_bias_max, float(k.abs().max()))
            conversion.dropped[key + "[key third]"] = ("EVA's attention has no key bias; a key bias adds the same "
                                                       "amount to every logit of a query, which softmax ignores")
            continue
        renamed = _renamed(key, inverse)
        if renamed is None:
            unmapped.append(key)
        else:
            out[renamed] = tensor
    if unmapped:
        raise LavisKeyError(f"{len(unmapped)} key(s) have no LAVIS {family} name: {_first(unmapped)}")
    for lavis_key, hf_key in _tied_lm_keys(family, tied_lm).items():
        if hf_key not in hf_state:
            raise LavisKeyError(f"{hf_key} is missing")
        out[lavis_key] = hf_state[hf_key]
    if qformer_max_positions:
        out["Qformer.bert.embeddings.position_ids"] = torch.arange(qformer_max_positions).expand((1, -1))
    conversion.notes.append(f"vision key bias dropped: max |k_bias| {key_bias_max:.6g}")
    return conversion


def _renamed(key: str, rules: list[tuple[re.Pattern, str]]) -> str | None:
    """``key`` renamed by the first rule whose pattern matches it whole, or None when none does."""
    for pattern, template in rules:
        match = pattern.fullmatch(key)
        if match:
            return template.format(*match.groups())
    return None


def _inverse_rules(family: str) -> list[tuple[re.Pattern, str]]:
    """Each (LAVIS pattern, HF template) turned around: an HF pattern and a LAVIS template."""
    inverse = []
    for pattern, template in _rules(family):
        lavis_template, groups = _pattern_to_template(pattern.pattern[:-2])
        hf_pattern = re.escape(template)
        for index, group in enumerate(groups):
            hf_pattern = hf_pattern.replace(re.escape("{%d}" % index), f"({group})", 1)
        inverse.append((re.compile(hf_pattern + r"\Z"), lavis_template))
    return inverse


def _pattern_to_template(pattern: str) -> tuple[str, list[str]]:
    """`a\\.(\\d+)\\.b` -> ('a.{0}.b', ['\\d+']): the groups of a rule's LAVIS pattern become slots."""
    groups, template, index = [], "", 0
    for part in re.split(r"(\([^()]*\))", pattern):
        if part.startswith("(") and part.endswith(")"):
            groups.append(part[1:-1])
            template += "{%d}" % index
            index += 1
        else:
            template += part.replace("\\.", ".")
    return template, groups


def _first(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" (+{len(keys) - n} more)" if len(keys) > n else "")
