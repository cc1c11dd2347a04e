"""What a task is: a frozen, declarative spec that task files in tasks/ return."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from evalkit.data.data_arg import DataArg
from evalkit.data.sample_set import SampleSet
from evalkit.errors import EvalkitError
from evalkit.protocol import Protocol

# (data, split, image folder or None, column mapping) -> SampleSet
DataLoader = Callable[[DataArg, str, "Path | None", Mapping[str, str]], SampleSet]


@dataclass(frozen=True)
class TaskSpec:
    """A task: its data, its paper protocol per model family, and how it is scored.

    ``protocols`` maps a model family ("opt", "t5", "itm") to the protocol evalkit runs by default;
    ``prompt_variants`` are named alternative prompts (``--prompt-variant``).
    """

    name: str
    version: str
    kind: str  # "caption" | "vqa" | "retrieval"
    description: str
    protocols: Mapping[str, Protocol]
    load_data: DataLoader
    default_split: str
    data_help: str
    default_data: str | None = None
    prompt_variants: Mapping[str, str] = field(default_factory=dict)
    columns: Mapping[str, str] = field(default_factory=dict)
    full_size: Mapping[str, int] = field(default_factory=dict)  # split -> number of samples of the full split
    protocol_source: str = ""
    default_model: str = ""
    compare_with: str = ""  # a task whose score this one's record shows beside its own (chat vs single-turn)

    def protocol_for(self, family: str) -> Protocol:
        """The default protocol for a model family; an error if the task does not support it."""
        if family not in self.protocols:
            raise EvalkitError(f"task {self.name} has no protocol for {family} models "
                               f"(supported: {', '.join(self.protocols)})")
        return self.protocols[family]

    def prompt_for_variant(self, variant: str) -> str:
        """The prompt template of a named variant."""
        if variant not in self.prompt_variants:
            raise EvalkitError(f"task {self.name} has no prompt variant {variant!r} "
                               f"(variants: {', '.join(self.prompt_variants) or 'none'})")
        return self.prompt_variants[variant]

    def to_record(self) -> dict:
        """The task's identity for a run record."""
        return {"name": self.name, "version": self.version, "kind": self.kind,
                "protocol_source": self.protocol_source}
