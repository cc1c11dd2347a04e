"""The TaskKind interface: everything that differs between caption, VQA, retrieval, ... tasks.

One object per kind (see evalkit/kinds/) owns how its tasks run, score, write their official file,
feed the paired bootstrap of ``evalkit compare`` and show themselves in ``evalkit report``. The
engine, compare and the report call these methods; none of them branches on a kind's name.
Adding a kind means one new module in evalkit/kinds/ and a task file that uses it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from evalkit.core.errors import EvalkitError

if TYPE_CHECKING:  # only for annotations: core imports nothing above it
    from evalkit.core.run_options import RunOptions
    from evalkit.core.sample_set import SampleSet
    from evalkit.core.samples import Prediction
    from evalkit.core.scores import RunStats, ScoreResult

# the unit a paired bootstrap resamples -> a function of the per-unit weights giving candidate - baseline
DiffFunction = Callable[[Mapping[str, Any]], float]


@dataclass
class RunJob:
    """What a kind needs to produce one run's predictions."""

    task: Any  # the TaskSpec being run
    model: Any  # evalkit.models.catalog.ModelEntry
    protocol: Any  # the task kind's protocol record
    sample_set: SampleSet
    options: RunOptions
    run_dir: Path
    done: dict[str, Prediction]  # predictions already in the journal (a resumed run)
    load_checkpoint: Callable[[], Any]  # loads the model (only when there is work to do)
    append: Callable[[list], None]  # journals a finished batch durably
    completed: Callable[[], dict]  # every prediction in the journal by sample id


@dataclass
class RunOutput:
    """A kind's predictions for every sample, and what the record and scorer need besides."""

    predictions: dict[str, Prediction]
    stats: RunStats | None = None
    checkpoint: Any = None  # the loaded checkpoint, when one was loaded
    resumed: int = 0
    artifacts: dict[str, Any] = field(default_factory=dict)  # kind-specific (e.g. retrieval score matrices)


@dataclass
class PairedStatistics:
    """How compare bootstraps a kind's metrics: per metric a difference function of resample weights."""

    functions: dict[str, DiffFunction] = field(default_factory=dict)
    unit_sizes: dict[str, int] = field(default_factory=dict)  # resampling unit -> how many
    method: dict[str, str] = field(default_factory=dict)
    unit: dict[str, str] = field(default_factory=dict)
    no_interval: dict[str, str] = field(default_factory=dict)  # metric -> why it gets no CI
    # unit -> (what its clusters are, e.g. "images"; each sample's cluster number): the unit is resampled by
    # cluster; compare also reports the unclustered (per-sample) interval as a secondary line
    clusters: dict[str, tuple[str, Any]] = field(default_factory=dict)
    # metric -> (baseline, candidate) re-computed exactly from the predictions: checked against run.json
    rescored: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreHistogram:
    """The report's distribution plot of a kind's per-sample score."""

    title: str  # "{task}" is replaced by the task name
    unit: str
    bins: tuple[tuple[str, float, float], ...]  # (label, low inclusive, high exclusive)


class TaskKind(ABC):
    """One kind of task (see module docstring). Subclasses set the class attributes below."""

    name: str
    model_kind: str  # the model kind it runs: "generation" | "retrieval" (see ModelEntry.kind)
    model_families: tuple[str, ...]  # the model families a task of this kind has protocols for
    protocol_type: type  # GenerationProtocol | RetrievalProtocol
    headline_metrics: tuple[str, ...]  # the report's columns
    report_order: int  # the report's column order across kinds
    sample_score: str  # the per-sample score compare lists and the gallery sorts on
    sample_score_prefix: str = ""  # its id prefix in sample_scores.jsonl
    histogram: ScoreHistogram | None = None
    references_label: str = "references"
    prediction_label: str = "prediction"
    shows_prompt: bool = False  # the gallery shows each sample's prompt (VQA: the question)
    breakdown_label: str = "category"  # what the report's breakdown chart splits by
    # the predictions.jsonl field shared by samples that are not independent (the questions about one image):
    # compare resamples these clusters, the standard errors in run.json are clustered by them
    cluster_key: str = "image"
    cluster_label: str = "images"
    # metrics that are exactly the mean of the same-named per-sample score (scaled by sample_mean_scale): run.json
    # gets their clustered standard error, and compare/report re-compute them from sample_scores.jsonl
    sample_mean_metrics: tuple[str, ...] = ()
    sample_mean_scale: float = 1.0
    hub_task_type: str = ""  # the task type of the hub model card's model-index (evalkit export model-index)

    def check_spec(self, spec) -> None:
        """Refuse, when a task file is loaded, a spec this kind cannot run."""
        if not isinstance(spec.protocol, self.protocol_type):
            raise EvalkitError(f"task {spec.name}: a {self.name} task needs a {self.protocol_type.__name__}, "
                               f"got {type(spec.protocol).__name__}")
        unknown = [f for f in spec.family_overrides if f not in self.model_families]
        if unknown:
            raise EvalkitError(f"task {spec.name}: model family {unknown[0]!r} is not one of {self.name}'s "
                               f"({', '.join(self.model_families)})")
        for name in spec.protocol_names:
            for family in spec.families:
                spec.protocol_for(family, name)  # every family's overrides must name real protocol fields

    @abstractmethod
    def run(self, job: RunJob) -> RunOutput:
        """Produce (or resume) the predictions of every sample, journaling as it goes."""

    @abstractmethod
    def score(self, job: RunJob, output: RunOutput) -> ScoreResult:
        """Corpus metrics and per-sample scores with the kind's official scorer."""

    @abstractmethod
    def write_official_file(self, run_dir: Path, sample_set: SampleSet,
                            predictions: dict[str, Prediction]) -> Path | None:
        """The predictions in the official result format (None if the kind has none)."""

    @abstractmethod
    def paired_statistics(self, base, cand, metrics: list[str]) -> PairedStatistics:
        """Difference functions for compare's paired bootstrap (``base``/``cand`` are finished runs)."""

    def scorer_settings(self, record: dict) -> dict:
        """Scorer choices recorded in a run that make two runs' numbers incomparable when they differ."""
        return {}

    def sample_value(self, sample_id: str, scores: Mapping[str, Mapping[str, float]]) -> float | None:
        """The per-sample score of one sample from sample_scores.jsonl (higher is better for the gallery)."""
        value = (scores.get(self.sample_score_prefix + sample_id) or {}).get(self.sample_score)
        return None if value is None else float(value)

    def sample_label(self, value: float | None) -> str:
        """The gallery's text for a per-sample score."""
        return "no score" if value is None else f"{self.sample_score} {value:.1f}"

    def histogram_values(self, scores: Mapping[str, Mapping[str, float]]) -> list[float]:
        """The per-sample values the report's histogram counts."""
        return [float(s[self.sample_score]) for key, s in scores.items()
                if key.startswith(self.sample_score_prefix) and self.sample_score in s]

    def references_text(self, references: list[str]) -> str:
        """A sample's references as one line in the gallery."""
        return " / ".join(references[:5]) + (f" (+{len(references) - 5})" if len(references) > 5 else "")

    def breakdown(self, record: dict) -> dict[str, float] | None:
        """Sub-scores the report plots per run (e.g. VQA accuracy per answer type), or None."""
        return None

    def higher_is_better(self, metric: str) -> bool:
        """Whether a larger value of ``metric`` is better (true of every evalkit metric so far)."""
        return True

    def mean_parts(self, metric: str, scores: Mapping[str, Mapping[str, float]],
                   clusters: Mapping[str, Any]) -> list | None:
        """``metric`` as a weighted sum of means of per-sample scores (evalkit.metrics.standard_error.MeanPart),
        or None when it is not one. ``scores``: sample_scores.jsonl by id; ``clusters``: id -> cluster."""
        from evalkit.metrics.standard_error import MeanPart

        if metric not in self.sample_mean_metrics:
            return None
        ids = [i for i, s in scores.items() if metric in s]
        if not ids:
            return None
        values = [self.sample_mean_scale * float(scores[i][metric]) for i in ids]
        return [MeanPart(1.0, values, [clusters.get(i, i) for i in ids])]

    def recomputed_metrics(self, scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        """The metrics that can be re-computed from sample_scores.jsonl alone (checked against run.json)."""
        out = {}
        for name in self.recomputable_metrics():
            parts = self.mean_parts(name, scores, {})
            if parts:
                out[name] = float(sum(p.weight * sum(p.values) / len(p.values) for p in parts))
        return out

    def recomputable_metrics(self) -> tuple[str, ...]:
        """Names of the metrics :meth:`mean_parts` can express."""
        return self.sample_mean_metrics

    def standard_errors(self, metrics: Mapping[str, float], scores: Mapping[str, Mapping[str, float]],
                        clusters: Mapping[str, Any]) -> dict[str, dict]:
        """Per metric: ``std_error`` (clustered by :attr:`cluster_key`) and ``std_error_method`` for run.json."""
        from evalkit.metrics.standard_error import clustered_standard_error

        out = {}
        for name in metrics:
            parts = self.mean_parts(name, scores, clusters)
            if not parts:
                out[name] = {"std_error": None, "std_error_method": self.no_standard_error(name)}
                continue
            se, g = clustered_standard_error(parts)
            n = max(len(p.values) for p in parts)
            how = f"clustered by {self.cluster_key} ({g} {self.cluster_label})" if g < n else \
                "one sample per cluster"
            out[name] = {"std_error": se, "std_error_method": f"cluster-robust SE of the mean of per-sample "
                                                                f"scores, {how}"}
        return out

    def sample_clusters(self, samples) -> dict[str, Any]:
        """sample_scores.jsonl id -> cluster (the :attr:`cluster_key` of each sample, e.g. its image)."""
        return {self.sample_score_prefix + s.id: getattr(s, self.cluster_key, s.id) for s in samples}

    def no_standard_error(self, metric: str) -> str:
        """Why ``metric`` has no closed-form standard error in run.json."""
        return "not a mean of per-sample scores (compare bootstraps it)"
