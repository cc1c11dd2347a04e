"""run.json: the self-describing record of one run, written atomically beside its predictions."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from evalkit.core.sample_set import file_sha256
from evalkit.core.atomic_files import write_json_atomic, writing
from evalkit.models.blip2_generation import resolve_kv_cache
from evalkit.models.generation_semantics import beam_length_normalisation
from evalkit.models.image_preprocessing import PIPELINE as IMAGE_PIPELINE
from evalkit.models.known_breakages import breakage_reasons
from evalkit.models.loading import attention_kernels, component_dtypes, dtype_name
from evalkit.engine.provenance import device_description, provenance

SCHEMA_VERSION = 2  # 2: metrics carry std_error and higher_is_better (see run_record.schema.json)
RUN_FILE = "run.json"
SAMPLE_SCORES_FILE = "sample_scores.jsonl"


def reportability(task, sample_set, predictions: dict, limit: int | None,
                  image_pipeline: str = "lavis") -> tuple[bool, list[str]]:
    """A run is reportable when it covers the full split, has no --limit that cut it and no failed samples, and its
    pixels are the paper's (LAVIS's image pipeline).

    A --limit at or above the split's size cut nothing (the sample set carries a limit only when it cut), so that
    run is the full split; failed samples are counted over the run's own samples, as run.json's counts are (a
    journal line of a sample not in the run is neither)."""
    reasons = []
    limit = sample_set.identity.get("limit") if limit else None
    if image_pipeline != "lavis":
        reasons.append(f"--image-pipeline {image_pipeline}: pixels differ slightly from the paper's (LAVIS) pipeline")
    if limit:
        reasons.append(f"--limit {limit}: a subset (CIDEr's IDF and every mean depend on the full set)")
    split = sample_set.identity.get("split", "")
    expected = task.full_size.get(split)
    n = len(sample_set.samples)
    if expected and n != expected and not limit:
        reasons.append(f"{n} samples, the full {split} split has {expected}")
    failed = sum(1 for s in sample_set.samples if predictions[s.id].status != "ok")
    if failed:
        reasons.append(f"{failed} failed samples (scored as empty answers)")
    reasons += breakage_reasons()  # a transformers release known to break BLIP-2 (docs/COMPATIBILITY.md)
    return not reasons, reasons


def build_record(*, task, entry, protocol, overrides, sample_set, predictions, scores, stats, resumed, device,
                 dtype, weights, directory, checkpoint, run_id, header, options, wall_seconds,
                 extra: dict[str, Any] | None = None) -> dict:
    """Assemble run.json's content (metrics, protocol, data, model, counts, provenance)."""
    reportable, reasons = reportability(task, sample_set, predictions, options.limit,
                                        getattr(options, "image_pipeline", "lavis"))
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "task": task.to_record(),
        "model": _model_section(entry, checkpoint, directory, weights),
        "protocol": protocol.to_dict(),
        "protocol_fingerprint": protocol.fingerprint(),
        "overrides": overrides,
        "data": dict(sample_set.identity),
        "metrics": metric_entries(task.kind, scores, sample_set.samples),
        "headline_metric": scores.headline,
        "scale": scores.scale,
        "details": scores.details,
        "reportable": reportable,
        "not_reportable_reasons": reasons,
        "counts": _counts_section(sample_set, predictions, stats, resumed),
        "runtime": _runtime_section(stats=stats, device=device, dtype=dtype, checkpoint=checkpoint, options=options,
                                    image_size=protocol.image_size or entry.image_size, wall_seconds=wall_seconds),
        "journal_header": header,
        "provenance": provenance(),
    }
    if extra:
        record.update(extra)
    return record


def metric_entries(kind, scores, samples) -> dict[str, dict]:
    """run.json's "metrics": per metric its value, n, standard error (clustered by the kind's cluster key, e.g.
    the image, where it applies; null with the reason where there is no closed form) and direction."""
    errors = {**kind.standard_errors(scores.metrics, scores.per_sample, kind.sample_clusters(samples)),
              **getattr(scores, "std_errors", {})}
    return {name: {"value": value, "n": len(samples), **errors[name], "higher_is_better": kind.higher_is_better(name)}
            for name, value in scores.metrics.items()}


def _model_section(entry, checkpoint, directory: Path, weights: str) -> dict:
    """run.json's "model": which checkpoint ran, at which revision, with which weights."""
    return {
        "name": entry.name,
        "source": entry.source if not entry.builtin else f"evalkit:{entry.name}",
        "family": entry.family,
        "revision": checkpoint.revision if checkpoint else _revision(directory),
        "weights_sha256": weights,
        "num_parameters": checkpoint.num_parameters if checkpoint else None,
        **_lavis_conversion(directory),
        **_lavis_differences(entry, directory),
    }


def _lavis_differences(entry, directory: Path) -> dict:
    """LAVIS-trained hub weights: the model constants that differ from LAVIS's code (flagged, not changed)."""
    from evalkit.models.lavis_convert import known_lavis_differences

    found = known_lavis_differences(entry.source or "", directory)
    return {"lavis_differences": found} if found else {}


def _lavis_conversion(directory: Path) -> dict:
    """A folder written by `evalkit convert lavis`: which weights came from the .pth and which from the base."""
    from evalkit.models.lavis_convert import conversion_summary

    summary = conversion_summary(directory)
    return {"lavis_conversion": summary} if summary else {}


def _counts_section(sample_set, predictions: dict, stats, resumed) -> dict:
    """run.json's "counts": samples, empty and failed predictions, and how many came from the journal."""
    in_run = [predictions[s.id] for s in sample_set.samples]
    return {
        "samples": len(sample_set.samples),
        "empty_predictions": sum(1 for p in in_run if p.status == "ok" and not p.prediction.strip()),
        "failed": sum(1 for p in in_run if p.status != "ok"),
        "resumed_from_journal": resumed,
        "generated_this_invocation": stats.generated if stats else 0,
    }


def _runtime_section(*, stats, device, dtype, checkpoint, options, image_size, wall_seconds: float) -> dict:
    """run.json's "runtime": where and how the model ran, and how fast."""
    generated = stats.generated if stats else 0
    gen_seconds = stats.generation_seconds if stats else 0.0
    return {
        "device": str(device),
        "device_map": _device_map(checkpoint, options),
        "device_name": device_description(device),
        "dtype": dtype_name(dtype),
        "image_size": image_size,
        "batch_size": (stats.batch_size if stats else None) or options.batch_size,
        "batch_size_requested": options.batch_size or "default",
        "wall_seconds": round(wall_seconds, 3),
        "generation_seconds": round(gen_seconds, 3),
        # samples generated in this invocation per second of the generation loop (model time, image decode
        # overlapped) and per second of the whole run (data, model load, generation, scoring, record)
        "generation_samples_per_second": round(generated / gen_seconds, 3) if gen_seconds else None,
        "wall_samples_per_second": round(generated / wall_seconds, 3) if generated and wall_seconds else None,
        "cpu_threads": cpu_threads(device),
        "images_encoded": stats.images_encoded if stats else 0,
        "oom_retries": stats.oom_retries if stats else 0,
        "decode_workers": stats.decode_workers if stats else 0,
        "precision": component_dtypes(checkpoint.model) if checkpoint else None,
        "image_pipeline": _image_pipeline(options),
        "attn_implementation": attention_kernels(checkpoint.model) if checkpoint else None,
        "kv_cache": resolve_kv_cache(getattr(options, "kv_cache", "auto"), device),
        "beam_length_normalisation": beam_length_normalisation(),
        "t5_output_scaling": getattr(checkpoint, "t5_output_scaling", None) if checkpoint else None,
    }


def cpu_threads(device) -> dict | None:
    """On CPU, how torch threads and decode workers shared the cores (see evalkit.inference.cpu_threads)."""
    if str(device) != "cpu":
        return None
    from evalkit.inference.cpu_threads import current_budget

    return current_budget().to_json()


def _image_pipeline(options) -> str:
    """The image pipeline's description: LAVIS's (the paper's), or the on-device one (pixels moved)."""
    if getattr(options, "image_pipeline", "lavis") == "lavis":
        return IMAGE_PIPELINE
    from evalkit.models.device_image_pipeline import PIPELINE

    return PIPELINE


def _revision(directory: Path) -> str:
    return directory.name if directory.parent.name == "snapshots" else "local"


def write_record(run_dir: Path, record: dict, scores) -> None:
    """Write sample_scores.jsonl then run.json, each via temp file + rename (never half-written)."""
    run_dir = Path(run_dir)
    tmp = run_dir / f".{SAMPLE_SCORES_FILE}.tmp"
    with writing(run_dir / SAMPLE_SCORES_FILE, tmp):
        with open(tmp, "w", encoding="utf-8") as handle:
            for sample_id, values in scores.per_sample.items():
                handle.write(json.dumps({"id": sample_id, "scores": values}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, run_dir / SAMPLE_SCORES_FILE)
    predictions = run_dir / "predictions.jsonl"
    if predictions.is_file():  # what the record was scored from: a complete run is reused only while it is unchanged
        record["predictions_sha256"] = file_sha256(predictions)
    write_json_atomic(run_dir / RUN_FILE, record)


def _device_map(checkpoint, options) -> dict | None:
    """Where accelerate put each part of the model under ``--device-map`` (None without it)."""
    if not getattr(options, "device_map", None):
        return None
    placed = getattr(getattr(checkpoint, "model", None), "hf_device_map", None) or \
        ({"": str(checkpoint.device)} if checkpoint is not None else {})  # one device: accelerate keeps no map
    return {"requested": options.device_map, "placement": {str(k): str(v) for k, v in placed.items()}}
