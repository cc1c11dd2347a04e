"""`evalkit run`: task spec -> data -> the kind's runner -> journal -> the kind's scorer -> run record."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.core.sample_set import file_sha256
from evalkit.core.errors import EvalkitError, NotDownloadedError
from evalkit.core.protocol import sha256_of
from evalkit.core.registry import get_task
from evalkit.core.run_options import RunOptions
from evalkit.core.sample_set import SampleSet
from evalkit.core.scores import ScoreResult
from evalkit.core.task_kind import RunJob
from evalkit.core.task_spec import TaskSpec
from evalkit.data.data_arg import parse_data_arg
from evalkit.data.hub_datasets import progress_enabled
from evalkit.engine import distributed
from evalkit.engine.journal import PredictionJournal
from evalkit.engine.run_record import RUN_FILE, build_record, write_record
from evalkit.engine.sibling_runs import compare_with_sibling
from evalkit.models.catalog import ModelEntry, resolve_model, safe_name
from evalkit.models.device_image_pipeline import HEADER_NAME as DEVICE_HEADER_NAME
from evalkit.models.image_preprocessing import HEADER_NAME
from evalkit.models.loading import check_image_size, checkpoint_directory, dtype_name, load_checkpoint, pick_device, \
    pick_dtype, weights_sha256


@dataclass
class RunOutcome:
    """Where the run landed and its record; ``reused`` when the run was already complete (its recorded result,
    nothing generated or scored again)."""

    run_dir: Path
    record: dict
    reused: bool = False


def resolve_protocol(task: TaskSpec, family: str, options: RunOptions):
    """The task's protocol for this family, with the prompt variant and CLI overrides applied."""
    protocol = task.protocol_for(family, options.protocol_name)
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
    with progress_enabled(options.show_progress):  # hub downloads and data preparation; --quiet silences them
        sample_set = task.load_data(parse_data_arg(raw), options.split or task.default_split, options.images, columns)
    if options.columns:  # a mapping changes what the samples hold: it is part of the data's identity (run id)
        sample_set = dataclasses.replace(sample_set, identity={**sample_set.identity,
                                                               "columns": dict(sorted(options.columns.items()))})
    if options.limit is not None and options.limit < 1:
        raise EvalkitError(f"--limit must be at least 1 (got {options.limit})")
    return sample_set.limited(options.limit)


@dataclass(frozen=True)
class PreparedRun:
    """Everything settled before the run folder is locked: what runs, with which model and data, and where."""

    options: RunOptions
    started: float
    ranks: distributed.Ranks
    task: TaskSpec
    entry: ModelEntry
    protocol: Any
    overrides: dict
    sample_set: SampleSet
    device_arg: str
    device: Any
    dtype: Any
    directory: Path
    weights: str
    header: dict
    run_id: str
    run_dir: Path


def run_task(options: RunOptions) -> RunOutcome:
    """Run (or resume, or re-score) one task with one model and write its run record."""
    prepared = prepare_run(options)
    journal = PredictionJournal(prepared.run_dir)
    if prepared.ranks.is_main:
        journal.check_writable()  # a read-only results or run folder fails now, not after the model loaded
    distributed.init_process_group(prepared.ranks)
    # one process per run folder, from the journal to run.json; of a data-parallel run, rank 0 holds it
    with journal.locked(wait=options.wait) if prepared.ranks.is_main else contextlib.nullcontext():
        if prepared.ranks.world == 1:
            recorded = None if options.rescore else recorded_result(prepared, journal)
            if recorded is not None:
                return RunOutcome(prepared.run_dir, recorded, reused=True)
        record = run_in_locked_folder(prepared, journal)
    distributed.barrier(prepared.ranks)  # the other ranks wait for run.json
    if record is None:  # a data-parallel rank other than 0 returns rank 0's record
        record = json.loads((prepared.run_dir / RUN_FILE).read_text(encoding="utf-8"))
    return RunOutcome(prepared.run_dir, record)


def recorded_result(prepared: PreparedRun, journal: PredictionJournal) -> dict | None:
    """The run's recorded result when it is complete and its inputs are unchanged, else None (run it).

    Complete: run.json exists, was written under this run's journal header (task version, model weights,
    protocol, dtype, data, sample ids) and scoring choices, every sample has a successful prediction (failed ones
    are retried), and the images are the ones recorded (the journal's ledger re-checks each image, refusing one
    whose bytes changed, and its digest equals run.json's ``data.images``)."""
    path = prepared.run_dir / RUN_FILE
    if not path.is_file() or not journal.header_path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a damaged record is rewritten by running
    if record.get("journal_header") != prepared.header or record.get("scoring") != scoring_choices(prepared.options):
        return None
    predictions = prepared.run_dir / "predictions.jsonl"
    if not predictions.is_file() or record.get("predictions_sha256") != file_sha256(predictions):
        return None  # the journal changed since it was scored (or the record predates the hash): score it again
    if prepared.task.compare_with and "run_id" not in (record.get("comparison") or {}):
        return None  # recorded before its sibling run existed: scored again, now beside it
    done = open_journal(prepared, journal)  # refuses a changed header or image, as a resume does
    samples = prepared.sample_set.samples
    if any(s.id not in done or done[s.id].status != "ok" for s in samples):
        return None
    if record.get("data", {}).get("images") != journal.image_identity(samples):
        return None
    return record


def scoring_choices(options: RunOptions) -> dict:
    """The options that change a run's scores or files but not its predictions (so not its journal header)."""
    return {"vqa_metric": options.vqa_metric, "export_scores": options.export_scores}


def prepare_run(options: RunOptions) -> PreparedRun:
    """The task, model, protocol, data, device, journal header and run folder of one run, checked before loading."""
    started = time.time()
    task = get_task(options.task, list(options.include_paths))
    entry = resolve_model(options.model)
    ranks = checked_ranks(task, entry)
    protocol, overrides = resolve_protocol(task, entry.family, options)
    sample_set, directory = data_and_checkpoint(task, entry, options)
    device_arg = distributed.rank_device(options.device, ranks)
    device = pick_device(device_arg)
    dtype = pick_dtype(entry.family, device, protocol.dtype)
    check_image_size(directory, protocol.image_size)
    weights = weights_sha256(directory)
    header = journal_header(task, entry, protocol, sample_set, weights, dtype_name(dtype), options.image_pipeline)
    run_id = options.run_id or header_id(header)
    run_dir = Path(options.results_dir) / safe_name(entry.name) / task.name / run_id
    return PreparedRun(options, started, ranks, task, entry, protocol, overrides, sample_set, device_arg, device,
                       dtype, directory, weights, header, run_id, run_dir)


def data_and_checkpoint(task: TaskSpec, entry: ModelEntry, options: RunOptions) -> tuple[SampleSet, Path]:
    """The run's samples and the checkpoint's folder; when neither is here, one error names both downloads."""
    try:
        sample_set = load_task_data(task, options)
    except NotDownloadedError as data_missing:
        try:
            checkpoint_directory(entry.source)
        except NotDownloadedError as model_missing:
            raise NotDownloadedError(f"neither the data nor the model of this run is here. 1) {data_missing} "
                                     f"2) {model_missing}") from None
        raise
    return sample_set, checkpoint_directory(entry.source)


def checked_ranks(task: TaskSpec, entry: ModelEntry) -> distributed.Ranks:
    """This process's place in the launch, once the model is of the kind the task runs and a data-parallel launch
    is of a kind that shards."""
    if task.kind.model_kind != entry.kind:
        raise EvalkitError(f"task {task.name} ({task.kind.name}) cannot run {entry.name} (a {entry.kind} model)")
    ranks = distributed.ranks_from_env()
    if ranks.world > 1 and not getattr(task.kind, "data_parallel", False):
        raise EvalkitError(f"task {task.name} ({task.kind.name}) runs in one process only; launch it without "
                           f"torchrun/accelerate (WORLD_SIZE={ranks.world})")
    return ranks


def run_in_locked_folder(prepared: PreparedRun, journal: PredictionJournal) -> dict | None:
    """Generate what the journal lacks, then score and record; None on a data-parallel rank other than 0."""
    ranks = prepared.ranks
    done = open_journal(prepared, journal) if ranks.is_main else {}
    job = run_job(prepared, journal, done)
    if ranks.world == 1:
        output = prepared.task.kind.run(job)
        if getattr(prepared.task.kind, "data_parallel", False):  # its journal may hold folded rank journals
            journal.put_in_order(prepared.sample_set.samples)
        return score_and_record(prepared, job, journal, output)
    distributed.barrier(ranks)  # the other ranks start once rank 0 holds and has opened the folder
    output, rank_counts = distributed.run_shard(job, journal, ranks)
    if not ranks.is_main:  # rank 0 scores and records
        return None
    return score_and_record(prepared, job, journal, output, rank_counts)


def open_journal(prepared: PreparedRun, journal: PredictionJournal) -> dict:
    """The predictions already made for this run: its journal (with the leftovers of data-parallel ranks folded
    in), opened under this run's header, its images checked against the journal's."""
    samples = prepared.sample_set.samples
    done = journal.open(prepared.header, overwrite=prepared.options.overwrite)
    done = distributed.fold_leftover_journals(journal, samples, prepared.ranks.world, done)
    return journal.check_images(samples, done)


def run_job(prepared: PreparedRun, journal: PredictionJournal, done: dict) -> RunJob:
    """What the kind's runner gets: the run's inputs, its finished predictions, and how to load the model."""
    options, entry, protocol = prepared.options, prepared.entry, prepared.protocol
    return RunJob(prepared.task, entry, protocol, prepared.sample_set, options, prepared.run_dir, done,
                  load_checkpoint=lambda: load_checkpoint(entry, prepared.device_arg, protocol.dtype,
                                                          known_weights_sha256=prepared.weights,
                                                          device_map=options.device_map,
                                                          attn_implementation=options.attn_implementation),
                  append=journal.append, completed=journal.completed)


def score_and_record(prepared: PreparedRun, job: RunJob, journal: PredictionJournal, output,
                     rank_counts: list[dict] | None = None) -> dict:
    """Write the official file, score the predictions, and write sample_scores.jsonl and run.json."""
    task, sample_set, run_dir = prepared.task, prepared.sample_set, prepared.run_dir
    official_file = task.kind.write_official_file(run_dir, sample_set, output.predictions)
    scores = score_run(job, output, official_file)
    record = build_record(task=task, entry=prepared.entry, protocol=prepared.protocol, overrides=prepared.overrides,
                          sample_set=sample_set, predictions=output.predictions, scores=scores, stats=output.stats,
                          resumed=output.resumed, device=prepared.device, dtype=prepared.dtype,
                          weights=prepared.weights, directory=prepared.directory, checkpoint=output.checkpoint,
                          run_id=prepared.run_id, header=prepared.header, options=prepared.options,
                          wall_seconds=time.time() - prepared.started,
                          extra={"official_predictions_file": official_file.name} if official_file else None)
    record["data"]["images"] = journal.image_identity(sample_set.samples)
    record["scoring"] = scoring_choices(prepared.options)
    record_data_parallel(record, prepared.ranks.world, rank_counts)
    if task.compare_with and scores.metrics:
        record["comparison"] = compare_with_sibling(Path(prepared.options.results_dir) / safe_name(prepared.entry.name),
                                                    task.compare_with, prepared.header, scores)
    write_record(run_dir, record, scores)
    return record


def record_data_parallel(record: dict, world: int, rank_counts: list[dict] | None) -> None:
    """The world size in the record's runtime; of a data-parallel run, also the sharding and each rank's counts."""
    record["runtime"]["world_size"] = world
    if world > 1:
        record["counts"]["generated_this_invocation"] = sum(c["generated"] for c in rank_counts)
        record["runtime"]["data_parallel"] = {"shard": "by image: image i (first appearance) on rank i mod N",
                                              "ranks": rank_counts}


def score_run(job: RunJob, output, official_file: Path | None) -> ScoreResult:
    """The kind's scores; a split without answers gets none, and its official file is the submission."""
    missing = [s.id for s in job.sample_set.samples if s.id not in output.predictions]
    if missing:
        raise EvalkitError(f"{len(missing)} samples have no prediction (first: {', '.join(missing[:3])})")
    if job.sample_set.annotations is None:
        return ScoreResult({}, {}, "", {"submission_file": str(official_file),
                                        "note": "no answers for this split; submit the file to the evaluation server"})
    return job.task.kind.score(job, output)


def journal_header(task: TaskSpec, entry: ModelEntry, protocol, sample_set: SampleSet, weights: str,
                   dtype: str, image_pipeline: str = "lavis") -> dict:
    """Everything the predictions depend on; a journal only resumes under the same header. LAVIS's pipeline is
    named by its resize (image_preprocessing.HEADER_NAME): journals of the one-call resize, whose pixels moved
    with Pillow 13, are never resumed as its answers."""
    names = {"lavis": HEADER_NAME, "device": DEVICE_HEADER_NAME}
    pipeline = {"image_pipeline": names.get(image_pipeline, image_pipeline)}
    return {
        "task": task.name,
        "task_version": task.version,
        "model": entry.source if not entry.builtin else entry.name,
        "weights_sha256": weights,
        "protocol_fingerprint": protocol.fingerprint(),
        "dtype": dtype,
        "data": sha256_of({k: v for k, v in sample_set.identity.items() if k != "source"}),
        "sample_ids": sha256_of([s.id for s in sample_set.samples]),
        **pipeline,
    }


def header_id(header: dict) -> str:
    """The default run id: the same command on the same inputs lands in (and resumes) the same run."""
    return sha256_of(header)[:12]
