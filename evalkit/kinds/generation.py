"""What the generating kinds (captioning, VQA) share: how a run produces its answers."""

from __future__ import annotations

from evalkit.core.errors import EvalkitError
from evalkit.core.progress import progress_bar
from evalkit.core.protocol import GenerationProtocol
from evalkit.core.task_kind import RunJob, RunOutput, TaskKind


class GenerationKind(TaskKind):
    """A kind whose model writes text for each sample (single-turn, or chat when the protocol says so)."""

    model_kind = "generation"
    model_families = ("opt", "t5")
    protocol_type = GenerationProtocol
    data_parallel = True  # under torchrun, each rank answers its images (evalkit.engine.distributed)

    def run(self, job: RunJob) -> RunOutput:
        """Generate the samples not yet in the journal, batched; the journal then holds every answer."""
        sample_set, options = job.sample_set, job.options
        answered = {k for k, p in job.done.items() if p.status == "ok"}  # failed samples are tried again
        pending = [s for s in sample_set.samples if s.id not in answered]
        resumed = sum(1 for s in sample_set.samples if s.id in answered)
        if not pending:
            return RunOutput(job.completed(), resumed=resumed)
        missing = sample_set.images.missing_files(sorted({s.image for s in pending}))
        if missing and not options.skip_bad_images:
            raise EvalkitError(f"{len(missing)} image files not found (first: {missing[0]}); "
                               "check --data/--images, or --skip-bad-images to record them as failed")
        from evalkit.inference.batch_size_probe import resolve_batch_size
        from evalkit.inference.chat_runner import run_chat
        from evalkit.inference.generation_runner import run_single_turn
        from evalkit.models.blip2_generation import Blip2Generator

        checkpoint = job.load_checkpoint()
        generator = Blip2Generator(checkpoint, job.protocol.image_size, options.kv_cache, options.image_pipeline)
        batch_size = resolve_batch_size(generator, pending, job.protocol, options.batch_size)
        run = run_chat if job.protocol.chat else run_single_turn
        with progress_bar(f"{job.task.name} · {job.model.name}", total=len(sample_set.samples),
                          completed=resumed, enabled=options.show_progress) as advance:
            stats = run(generator, pending, sample_set.images, job.protocol, job.append, batch_size,
                        options.skip_bad_images, advance)
        return RunOutput(job.completed(), stats, checkpoint, resumed=resumed)

