"""The hub model card's ``model-index`` block from run records, written with huggingface_hub's own card classes.

Each headline metric of each run becomes one ``EvalResult``: the kind's hub task type, the dataset (hub id and
revision when the run read a hub dataset, else the task name and the sha256 of the data read), the split, the
metric and its value, and the protocol (name and fingerprint as the metric's configuration, every field as its arguments). Merging into an existing
card replaces only the results of the same task, dataset, split and metric; the card's text and other metadata are
kept as they were.
"""

from __future__ import annotations

from pathlib import Path

from evalkit.analysis.results_index import RunInfo, load_run
from evalkit.core.errors import EvalkitError

NEW_CARD = "# {model}\n\nEvaluation results below were measured with evalkit.\n"


def eval_results(run: RunInfo, allow_non_reportable: bool = False) -> list:
    """The EvalResult entries of one run's headline metrics (a non-reportable run only when allowed, and marked)."""
    from huggingface_hub import EvalResult

    if not run.reportable and not allow_non_reportable:
        raise EvalkitError(f"{run.path}: not reportable ({'; '.join(run.not_reportable_reasons)}); "
                           "pass --allow-non-reportable to export it marked as such")
    record, kind = run.record, run.task_kind
    data = record.get("data") or {}
    evalkit_version = (record.get("provenance") or {}).get("evalkit_version", "")
    # The protocol is the metric's configuration: huggingface_hub accepts a source_name only with a source_url,
    # and a local run has no public URL.
    setting = (f"evalkit {evalkit_version} protocol {record['protocol'].get('name', 'default')} "
               f"{run.fingerprint[:12]}, run {run.run_id}")
    if not run.reportable:
        setting += f" (NOT REPORTABLE: {'; '.join(run.not_reportable_reasons)})"
    results = []
    for metric in kind.headline_metrics:
        if metric not in run.metrics:
            continue
        results.append(EvalResult(
            task_type=kind.hub_task_type, task_name=run.task, dataset_type=str(data.get("dataset_id") or run.task),
            dataset_name=run.task, dataset_split=run.split or None, dataset_revision=_data_revision(record),
            metric_type=metric.lower(), metric_name=metric, metric_value=run.metrics[metric], metric_config=setting,
            metric_args=_protocol_args(run)))
    return results


def _protocol_args(run: RunInfo) -> dict:
    """The protocol's fields with its fingerprint; unset fields (null: the task's default) are left out, as the
    card's YAML drops them."""
    fields = {"protocol_fingerprint": run.fingerprint, **(run.record.get("protocol") or {})}
    return {name: value for name, value in fields.items() if value is not None}


def _data_revision(record: dict) -> str | None:
    """The hub revision the run read, or (local files) the content hash the journal recorded for the data."""
    data = record.get("data") or {}
    return data.get("resolved_revision") or data.get("revision") or (record.get("journal_header") or {}).get("data")


def export_model_index(run_dirs: list[Path], card_path: Path | None, allow_non_reportable: bool = False) -> str:
    """The model card (existing ``card_path`` merged, or a new one) with the runs' results; written to
    ``card_path`` when given. All runs must be of one model: a card describes one model."""
    from huggingface_hub import ModelCard

    runs = [load_run(path) for path in run_dirs]
    models = sorted({run.model for run in runs})
    if len(models) != 1:
        raise EvalkitError(f"runs of {len(models)} models ({', '.join(models)}); a model card holds one model's "
                           "results: export each model's runs separately")
    new = [result for run in runs for result in eval_results(run, allow_non_reportable)]
    if card_path is not None and card_path.is_file():
        card = ModelCard.load(card_path)
    else:
        import logging

        # a new card has no metadata block yet: huggingface_hub warns "Repo card metadata block was not found",
        # which is expected here and would read like a fault
        repocard_log = logging.getLogger("huggingface_hub.repocard")
        level = repocard_log.level
        repocard_log.setLevel(logging.ERROR)
        try:
            card = ModelCard(NEW_CARD.format(model=models[0]))
        finally:
            repocard_log.setLevel(level)
    kept = [old for old in (card.data.eval_results or []) if not any(_same_slot(old, r) for r in new)]
    card.data.eval_results = kept + new
    card.data.model_name = card.data.model_name or models[0]
    if card_path is not None:
        card.save(card_path)
    return str(card)


def _same_slot(a, b) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in ("task_type", "dataset_type", "dataset_split", "dataset_config",
                                                         "metric_type", "metric_name"))
