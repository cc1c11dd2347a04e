"""Published BLIP-2 numbers (reference_numbers.json) and how a run is matched to them.

A reference matches a run only when the model, the task and the split agree. The model is matched
by its registry name (``blip2-opt-2.7b``); a hub id (``Salesforce/blip2-opt-2.7b``) or a run made
from one (model name ``Salesforce--blip2-opt-2.7b``) normalises to the same name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from evalkit.core.errors import EvalkitError

REFERENCE_FILE = Path(__file__).with_name("reference_numbers.json")
KINDS = ("paper", "lavis")
HUB_ORG = "Salesforce"


@dataclass(frozen=True)
class Reference:
    """One published value: model x task x split x metric."""

    model: str
    task: str
    split: str
    metric: str
    value: float
    source: str  # key into the file's "sources"
    source_text: str  # the citation itself
    kind: str  # "paper" | "lavis"
    protocol: str = ""  # the reference's own words for its protocol
    derived: bool = False
    protocol_name: str = ""  # the evalkit named protocol that reproduces it ("paper", "lavis")
    scorer: tuple[tuple[str, str], ...] = ()  # scorer settings it was computed with, e.g. the VQA accuracy variant

    def to_json(self) -> dict:
        """Plain data for --json output."""
        return {"model": self.model, "task": self.task, "split": self.split, "metric": self.metric,
                "value": self.value, "source": self.source, "source_text": self.source_text, "kind": self.kind,
                "protocol": self.protocol, "derived": self.derived, "protocol_name": self.protocol_name,
                "scorer": dict(self.scorer)}


@lru_cache(maxsize=4)
def load_references(path: str | None = None) -> tuple[Reference, ...]:
    """Every reference value in the file (default: the one shipped with evalkit)."""
    file = Path(path) if path else REFERENCE_FILE
    try:
        content = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise EvalkitError(f"cannot read reference numbers {file}: {err}") from None
    sources = content.get("sources", {})
    refs = []
    for number, entry in enumerate(content.get("references", []), 1):
        missing = [k for k in ("model", "task", "split", "metric", "value", "source", "kind") if k not in entry]
        if missing:
            raise EvalkitError(f"{file}: reference #{number} lacks {', '.join(missing)}")
        if entry["source"] not in sources:
            raise EvalkitError(f"{file}: reference #{number} cites unknown source {entry['source']!r}")
        if entry["kind"] not in KINDS:
            raise EvalkitError(f"{file}: reference #{number} has kind {entry['kind']!r} (expected {KINDS})")
        refs.append(Reference(model=entry["model"], task=entry["task"], split=entry["split"], metric=entry["metric"],
                              value=float(entry["value"]), source=entry["source"],
                              source_text=sources[entry["source"]], kind=entry["kind"],
                              protocol=entry.get("protocol", ""), derived=bool(entry.get("derived", False)),
                              protocol_name=entry.get("protocol_name", ""),
                              scorer=tuple(sorted((entry.get("scorer") or {}).items()))))
    return tuple(refs)


def normalise_model_name(name: str) -> str:
    """``Salesforce/blip2-opt-2.7b`` and ``Salesforce--blip2-opt-2.7b`` -> ``blip2-opt-2.7b``."""
    for prefix in (f"{HUB_ORG}/", f"{HUB_ORG}--"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def run_model_names(record: dict) -> set[str]:
    """The names a run's model may match a reference by: its registry name and its hub id."""
    model = record.get("model", {})
    names = {normalise_model_name(str(model.get("name", "")))}
    source = str(model.get("source", ""))
    if source.startswith(f"{HUB_ORG}/"):
        names.add(normalise_model_name(source))
    if source.startswith("evalkit:"):
        names.add(source.split(":", 1)[1])
    names.discard("")
    return names


def references_for(model_names: set[str] | str, task: str, split: str, kind: str | None = None,
                   metric: str | None = None) -> list[Reference]:
    """Reference values for this model, task and split (optionally one kind / one metric)."""
    names = {model_names} if isinstance(model_names, str) else set(model_names)
    names = {normalise_model_name(n) for n in names}
    return [r for r in load_references()
            if r.model in names and r.task == task and r.split == split
            and (kind is None or r.kind == kind) and (metric is None or r.metric == metric)]


def references_for_run(record: dict, kind: str | None = None) -> list[Reference]:
    """Reference values matching a run record (model, task name and data split)."""
    split = str(record.get("data", {}).get("split", ""))
    return references_for(run_model_names(record), record["task"]["name"], split, kind)


def preferred_reference(refs: list[Reference], metric: str) -> Reference | None:
    """The value a table cell shows for ``metric``: the paper's first, else the LAVIS record."""
    for kind in KINDS:
        for ref in refs:
            if ref.metric == metric and ref.kind == kind:
                return ref
    return None


def like_for_like_differences(ref: Reference, record: dict) -> list[str]:
    """What keeps a run from being like-for-like with a reference: its named protocol, its overrides, its
    scorer settings (e.g. the VQA accuracy variant). Empty when the run reproduces the reference's setting."""
    from evalkit.core.protocol import overrides_text
    from evalkit.kinds import kind_named

    differences = []
    name = str((record.get("protocol") or {}).get("name", "default"))
    if ref.protocol_name and name != ref.protocol_name:
        differences.append(f"protocol {name!r}, the reference's {ref.protocol_name!r}")
    if record.get("overrides"):
        differences.append(f"overrides ({overrides_text(record['overrides'])})")
    settings = kind_named(str(record["task"].get("kind", ""))).scorer_settings(record)
    for key, wanted in ref.scorer:
        if settings.get(key) != wanted:
            differences.append(f"{key.rsplit('.', 1)[-1]} {settings.get(key)!r}, the reference's {wanted!r}")
    return differences
