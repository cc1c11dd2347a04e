"""`evalkit run`: task spec -> data -> runner -> journal -> scorer -> run record."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from evalkit.data.data_arg import parse_data_arg
from evalkit.data.sample_set import SampleSet
from evalkit.errors import EvalkitError
from evalkit.journal import PredictionJournal
from evalkit.model_catalog import ModelEntry, resolve_model
from evalkit.models.loading import checkpoint_directory, pick_device, pick_dtype, dtype_name, weights_sha256
from evalkit.progress import progress_bar
from evalkit.protocol import Protocol, sha256_of
from evalkit.run_options import RunOptions
from evalkit.run_record import build_record, write_record
from evalkit.journal import write_json_atomic
from evalkit.run_record import RUN_FILE
from evalkit.scoring import ScoreResult, score_predictions
from evalkit.task_registry import get_task
from evalkit.task_spec import TaskSpec

DEFAULT_BATCH_SIZE = {"cpu": 8, "cuda": 32, "mps": 8}


@dataclass
class RunOutcome:
    """Where the run landed and its record."""

    run_dir: Path
    record: dict


def resolve_protocol(task: TaskSpec, family: str, options: RunOptions) -> tuple[Protocol, dict]:
    """The task's protocol for this family, with the prompt variant and CLI overrides applied."""
    protocol = task.protocol_for(family)
    overrides = dict(options.overrides)
    if options.prompt_variant:
        overrides.setdefault("prompt", task.prompt_for_variant(options.prompt_variant))
        overrides.setdefault("prompt_variant", options.prompt_variant)
    elif "prompt" in overrides:
        overrides.setdefault("prompt_variant", "custom")
    return protocol.with_overrides(overrides), overrides


def load_task_data(task: TaskSpec, options: RunOptions) -> SampleSet:
    """The task's evaluation set from --data (or the task's bundled default), cut to --limit."""
    raw = options.data or task.default_data
    if not raw:
        raise EvalkitError(f"task {task.name} needs --data: {task.data_help}")
    columns = {**task.columns, **options.columns}
    sample_set = task.load_data(parse_data_arg(raw), options.split or task.default_split, options.images, columns)
    if options.limit is not None and options.limit < 1:
        raise EvalkitError(f"--limit must be at least 1 (got {options.limit})")
    return sample_set.limited(options.limit)


def run_task(options: RunOptions) -> RunOutcome:
    """Run (or resume, or re-score) one task with one model and write its run record."""
    started = time.time()
    task = get_task(options.task, list(options.include_paths))
    entry = resolve_model(options.model)
    if (task.kind == "retrieval") != (entry.kind == "retrieval"):
        raise EvalkitError(f"task {task.name} ({task.kind}) cannot run {entry.name} (a {entry.kind} model)")
    protocol, overrides = resolve_protocol(task, entry.family, options)
    sample_set = load_task_data(task, options)
    device = pick_device(options.device)
    dtype = pick_dtype(entry.family, device, protocol.dtype)
    directory = checkpoint_directory(entry.source)
    weights = weights_sha256(directory)
    header = journal_header(task, entry, protocol, sample_set, weights, dtype_name(dtype))
    run_id = options.run_id or header_id(header)
    run_dir = Path(options.results_dir) / safe_name(entry.name) / task.name / run_id
    journal = PredictionJournal(run_dir)
    done = journal.open(header, overwrite=options.overwrite)
    if task.kind == "retrieval":
        from evalkit.retrieval_run import run_retrieval

        return run_retrieval(task, entry, protocol, overrides, sample_set, options, run_dir, header, started)
    pending = [s for s in sample_set.samples if s.id not in done]
    stats = None
    checkpoint = None
    if pending:
        missing = sample_set.images.missing_files(sorted({s.image for s in pending}))
        if missing and not options.skip_bad_images:
            raise EvalkitError(f"{len(missing)} image files not found (first: {missing[0]}); "
                               "check --data/--images, or --skip-bad-images to record them as failed")
        from evalkit.models.blip2_generation import Blip2Generator
        from evalkit.models.loading import load_checkpoint
        from evalkit.runner import run_chat, run_single_turn

        checkpoint = load_checkpoint(entry, options.device, protocol.dtype, known_weights_sha256=weights)
        generator = Blip2Generator(checkpoint, protocol.image_size)
        batch_size = options.batch_size or DEFAULT_BATCH_SIZE.get(device.type, 8)
        run = run_chat if protocol.chat else run_single_turn
        with progress_bar(f"{task.name} · {entry.name}", total=len(sample_set.samples), completed=len(done),
                          enabled=options.show_progress) as advance:
            stats = run(generator, pending, sample_set.images, protocol, journal, batch_size,
                        options.skip_bad_images, advance)
    predictions = journal.completed()
    official_file = write_official_predictions(task.kind, run_dir, sample_set, predictions)
    if sample_set.annotations is None:  # a test split without answers: the output is a submission file
        scores = ScoreResult({}, {}, "", {"submission_file": str(official_file),
                                          "note": "no answers for this split; submit the file to the evaluation server"})
    else:
        scores = score_predictions(task.kind, sample_set, predictions, options.vqa_metric)
    record = build_record(task=task, entry=entry, protocol=protocol, overrides=overrides, sample_set=sample_set,
                          predictions=predictions, scores=scores, stats=stats, resumed=len(done),
                          device=device, dtype=dtype, weights=weights, directory=directory,
                          checkpoint=checkpoint, run_id=run_id, header=header, options=options,
                          wall_seconds=time.time() - started,
                          extra={"official_predictions_file": official_file.name})
    if task.compare_with and scores.metrics:
        record["comparison"] = compare_with_sibling(Path(options.results_dir) / safe_name(entry.name),
                                                    task.compare_with, header, scores)
    write_record(run_dir, record, scores)
    return RunOutcome(run_dir, record)


def journal_header(task: TaskSpec, entry: ModelEntry, protocol: Protocol, sample_set: SampleSet, weights: str,
                   dtype: str) -> dict:
    """Everything the predictions depend on; a journal only resumes under the same header."""
    return {
        "task": task.name,
        "task_version": task.version,
        "model": entry.source if not entry.builtin else entry.name,
        "weights_sha256": weights,
        "protocol_fingerprint": protocol.fingerprint(),
        "dtype": dtype,
        "data": sha256_of({k: v for k, v in sample_set.identity.items() if k != "source"}),
        "sample_ids": sha256_of([s.id for s in sample_set.samples]),
    }


def header_id(header: dict) -> str:
    """The default run id: the same command on the same inputs lands in (and resumes) the same run."""
    return sha256_of(header)[:12]


def safe_name(name: str) -> str:
    """A model name usable as one folder name."""
    return name.replace("/", "--").replace("\\", "--")


def write_official_predictions(kind: str, run_dir: Path, sample_set: SampleSet, predictions: dict) -> Path:
    """The predictions in the official result format (COCO captions / VQA; EvalAI takes the VQA one)."""
    if kind == "caption":
        rows = [{"image_id": _int_or_str(s.id), "caption": predictions[s.id].prediction} for s in sample_set.samples]
        path = run_dir / "captions_results.json"
    else:
        rows = [{"question_id": int(s.id), "answer": predictions[s.id].prediction} for s in sample_set.samples]
        path = run_dir / f"vqa_{sample_set.identity.get('split', 'split')}_results.json"
    write_json_atomic(path, rows)
    return path


def _int_or_str(value: str):
    return int(value) if value.isdigit() else value


def compare_with_sibling(model_dir: Path, other_task: str, header: dict, scores: ScoreResult) -> dict:
    """The headline of the latest run of ``other_task`` on the same data and weights, and the difference."""
    import json

    candidates = []
    for run_file in (model_dir / other_task).glob(f"*/{RUN_FILE}"):
        other = json.loads(run_file.read_text())
        theirs = other.get("journal_header", {})
        if theirs.get("data") == header["data"] and theirs.get("weights_sha256") == header["weights_sha256"]:
            candidates.append(other)
    if not candidates:
        return {"task": other_task, "note": f"no {other_task} run on the same data and weights to compare with"}
    default_protocol = [r for r in candidates if not r.get("overrides")]  # prefer the task's own protocol
    latest = max(default_protocol or candidates, key=lambda r: r["created"])
    name = scores.headline
    theirs = latest["metrics"][name]["value"]
    return {"task": other_task, "run_id": latest["run_id"], "metric": name, "other": theirs,
            "this": scores.metrics[name], "difference": round(scores.metrics[name] - theirs, 4)}
