"""What in two runs' environments can move a number although weights, data and protocol are the same.

The same checkpoint gives different answers under different transformers versions (issue 21: the tiny T5
scores 85.0 under 4.57 and 99.74 under 5.x), and precision settings change the arithmetic. compare warns
about these differences (``--strict-env``: exit 2) and the report footnotes them.
"""

from __future__ import annotations

from typing import Any

# (run.json field, what to call it)
PACKAGE_FIELDS = (("provenance.packages.torch", "torch"), ("provenance.packages.transformers", "transformers"),
                  ("provenance.packages.tokenizers", "tokenizers"),
                  # image decoding (its libjpeg); the resize no longer depends on it (image_preprocessing.py)
                  ("provenance.packages.pillow", "Pillow"))
RUNTIME_FIELDS = (("journal_header.dtype", "dtype"), ("runtime.precision", "per-component precision"),
                  ("runtime.attn_implementation", "attention kernel"), ("runtime.kv_cache", "KV cache"),
                  ("runtime.beam_length_normalisation", "beam length normalisation"),
                  ("runtime.image_pipeline", "image pipeline"), ("runtime.device", "device type"))


def _get(record: dict, path: str) -> Any:
    node: Any = record
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    if path == "runtime.device" and isinstance(node, str):
        return node.split(":", 1)[0]  # cuda:0 and cuda:1 compute alike; cpu and cuda do not
    return node


def environment_differences(a: dict, b: dict) -> list[dict]:
    """Each environment field recorded in both runs whose values differ: {field, what, baseline, candidate}."""
    out = []
    for field, what in PACKAGE_FIELDS + RUNTIME_FIELDS:
        va, vb = _get(a, field), _get(b, field)
        if va is not None and vb is not None and va != vb:
            out.append({"field": field, "what": what, "baseline": _text(va), "candidate": _text(vb)})
    return out


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)
