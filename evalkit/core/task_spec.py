"""What a task is: a frozen, declarative spec that task files in tasks/ return."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from evalkit.core.errors import EvalkitError
from evalkit.core.task_kind import TaskKind

# (data, split, image folder or None, column mapping) -> SampleSet
DataLoader = Callable[[Any, str, "Path | None", Mapping[str, str]], Any]


@dataclass(frozen=True)
class TaskSpec:
    """A task: its kind, its data, its paper protocol, and the settings that differ per model family.

    ``protocol`` is the base protocol, named by its ``name`` field (e.g. "paper"); ``family_overrides``
    maps a model family ("opt", "t5") to the fields that differ for it. ``alternative_protocols``
    names other protocols (``--protocol lavis``) as overrides on top of those, per family, with "*"
    for every family. ``prompt_variants`` are named alternative prompts (``--prompt-variant``). The spec is checked by its kind when it is built, so a mistyped kind
    or protocol field fails when the task file loads, not after generation.
    """

    name: str
    version: str
    kind: TaskKind
    description: str
    protocol: Any  # the kind's protocol record (GenerationProtocol | RetrievalProtocol)
    load_data: DataLoader
    default_split: str
    data_help: str
    family_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    alternative_protocols: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    default_data: str | None = None
    prompt_variants: Mapping[str, str] = field(default_factory=dict)
    columns: Mapping[str, str] = field(default_factory=dict)
    full_size: Mapping[str, int] = field(default_factory=dict)  # split -> number of samples of the full split
    protocol_source: str = ""
    default_model: str = ""
    compare_with: str = ""  # a task whose score this one's record shows beside its own (chat vs single-turn)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, TaskKind):
            raise EvalkitError(f"task {self.name}: kind must be a task kind from evalkit.kinds "
                               f"(e.g. evalkit.kinds.VQA), got {self.kind!r}")
        self.kind.check_spec(self)

    @property
    def families(self) -> tuple[str, ...]:
        """The model families this task has a protocol for."""
        return self.kind.model_families

    @property
    def protocol_names(self) -> tuple[str, ...]:
        """The default protocol's name, then the alternatives'."""
        return (self.protocol.name, *self.alternative_protocols)

    def protocol_for(self, family: str, name: str | None = None):
        """The protocol (default, or the one called ``name``) for a model family; an error if there is none."""
        if family not in self.families:
            raise EvalkitError(f"task {self.name} has no protocol for {family} models "
                               f"(supported: {', '.join(self.families)})")
        protocol = self.protocol.with_overrides(self.family_overrides.get(family, {}))
        if name is None or name == self.protocol.name:
            return protocol
        if name not in self.alternative_protocols:
            raise EvalkitError(f"task {self.name} has no protocol named {name!r} "
                               f"(protocols: {', '.join(self.protocol_names)})")
        alternative = self.alternative_protocols[name]
        return protocol.with_overrides({**alternative.get("*", {}), **alternative.get(family, {}), "name": name})

    def prompt_for_variant(self, variant: str) -> str:
        """The prompt template of a named variant."""
        if variant not in self.prompt_variants:
            raise EvalkitError(f"task {self.name} has no prompt variant {variant!r} "
                               f"(variants: {', '.join(self.prompt_variants) or 'none'})")
        return self.prompt_variants[variant]

    def to_record(self) -> dict:
        """The task's identity for a run record."""
        return {"name": self.name, "version": self.version, "kind": self.kind.name,
                "protocol_source": self.protocol_source}
