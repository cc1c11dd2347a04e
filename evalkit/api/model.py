"""evalkit from Python: load a BLIP-2 model once, then caption images, ask questions, or chat.

    >>> import evalkit
    >>> m = evalkit.load("blip2-tiny-opt")                          # doctest: +SKIP
    >>> m.caption("evalkit/demo/data/shapes/images", prompt="a photo of")   # doctest: +SKIP
    [Caption(image='.../shapes_test_000001.png', prompt='a photo of', caption='there are three shapes, ...'), ...]
    >>> m.ask("photo.jpg", ["how many dogs are there?"])            # doctest: +SKIP
    >>> chat = m.chat("photo.jpg"); chat.ask("what is this?"); chat.ask("what colour is it?")  # doctest: +SKIP

The answers are those of `evalkit run`: each call takes the protocol of a task (captions: `coco-caption`,
questions: `vqav2`, chat: `vqav2-chat`), applies the same overrides, and goes through the same batched
runner (:func:`~evalkit.inference.generation_runner.run_single_turn`) and generator. Every record carries
the protocol fingerprint that a run with the same settings records.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from evalkit.api.conversation import Conversation
from evalkit.api.image_inputs import DEFAULT_URL_TIMEOUT_S, ImageInputs, MemoryImageSource, Notice, resolve_each, \
    resolve_images
from evalkit.api.records import Answer, Caption
from evalkit.core.errors import EvalkitError
from evalkit.core.protocol import GenerationProtocol
from evalkit.core.registry import get_task
from evalkit.core.run_options import RunOptions
from evalkit.core.samples import Prediction, Sample
from evalkit.core.task_spec import TaskSpec
from evalkit.models.catalog import ModelEntry, resolve_model

log = logging.getLogger("evalkit")

# (the paper task, the shapes task) whose protocol each use takes
TASKS_BY_USE = {"caption": ("coco-caption", "shapes-caption"), "ask": ("vqav2", "shapes-vqa"),
                "chat": ("vqav2-chat", "shapes-chat")}
# Checkpoints are loaded without hashing their weights (a run record needs the hash; these records do not).
NOT_HASHED = "not hashed (evalkit.load)"


def task_for(use: str, entry: ModelEntry) -> TaskSpec:
    """The task whose protocol a use (caption, ask, chat) takes for this model."""
    paper, shapes = TASKS_BY_USE[use]
    # The bundled tiny models (64 px, trained on shapes) are evaluated with the shapes tasks, which hold
    # the paper protocols adjusted for them (their own image size, no minimum caption length); taking
    # those keeps `evalkit caption --model blip2-tiny-opt` equal to `evalkit run shapes-caption`.
    return get_task(shapes if entry.builtin else paper)


def load(model: str, device: str = "auto", dtype: str | None = None, batch_size: int | str | None = None) -> "Model":
    """Load a BLIP-2 generation model: a registry name (`evalkit list models`), hub id or local folder.

    ``dtype`` None means the family's default (fp32 on CPU, fp16 for OPT / bf16 for T5 on a GPU);
    ``batch_size`` None means ``"auto"`` on a GPU (the largest that fits) and 8 on CPU, as `evalkit run`.
    """
    from evalkit.models.loading import load_checkpoint

    entry = resolve_model(model)
    if entry.kind != "generation":
        raise EvalkitError(f"{entry.name} is a retrieval (ITC/ITM) model; captions, questions and chat need a "
                           "generation model (see `evalkit list models`)")
    check_batch_size(batch_size)
    checkpoint = load_checkpoint(entry, device, dtype, known_weights_sha256=NOT_HASHED)
    return Model(entry, checkpoint, dtype, batch_size)


def check_batch_size(batch_size: int | str | None) -> None:
    """A batch size is a positive number, "auto" or None (a one-line error otherwise)."""
    if batch_size is None or batch_size == "auto":
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EvalkitError(f"batch size must be a positive number or 'auto' (got {batch_size!r})")


class Model:
    """A loaded BLIP-2 generation model; see :func:`load`."""

    def __init__(self, entry: ModelEntry, checkpoint, dtype: str | None = None, batch_size: int | str | None = None):
        self.entry = entry
        self.name = entry.name
        self.checkpoint = checkpoint
        self.dtype = dtype
        self.batch_size = batch_size
        self._generators: dict[int | None, Any] = {}

    def __repr__(self) -> str:
        return f"Model({self.name!r}, family={self.entry.family!r}, device={str(self.checkpoint.device)!r})"

    # -- protocols ---------------------------------------------------------------------------

    def protocol(self, use: str, prompt: str | None = None, prompt_variant: str | None = None,
                 **overrides: Any) -> GenerationProtocol:
        """The protocol a use takes for this model, with overrides applied as `evalkit run` applies them."""
        from evalkit.engine.evaluate import resolve_protocol

        if use not in TASKS_BY_USE:
            raise EvalkitError(f"unknown use {use!r}; one of {', '.join(TASKS_BY_USE)}")
        task = task_for(use, self.entry)
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if "dtype" in overrides and overrides["dtype"] != self.dtype:
            raise EvalkitError("dtype is chosen when the model is loaded: evalkit.load(..., dtype=...)")
        if self.dtype:
            overrides["dtype"] = self.dtype
        if prompt is not None:
            overrides["prompt"] = prompt
        options = RunOptions(task=task.name, model=self.name, overrides=overrides, prompt_variant=prompt_variant)
        protocol, _ = resolve_protocol(task, self.entry.family, options)
        return protocol

    def generator(self, image_size: int | None):
        """The generator for an image size (None: the checkpoint's processor), made once."""
        from evalkit.models.blip2_generation import Blip2Generator

        if image_size not in self._generators:
            self._generators[image_size] = Blip2Generator(self.checkpoint, image_size)
        return self._generators[image_size]

    # -- captions and questions ----------------------------------------------------------------

    def caption(self, images: Any, prompt: str | None = None, *, prompt_variant: str | None = None,
                batch_size: int | str | None = None, skip_bad_images: bool = False, progress: bool = False,
                notice: Notice | None = None, url_timeout_s: float = DEFAULT_URL_TIMEOUT_S,
                **overrides: Any) -> list[Caption]:
        """One caption per image (files, folders, glob patterns, URLs or PIL images, or
        :class:`~evalkit.api.image_inputs.ImageInputs` already resolved), in the order given.

        Without ``prompt`` the caption is unprompted (the `coco-caption` task's ``none`` prompt variant);
        ``prompt="a photo of"`` is the paper's prompt, and the caption continues it.
        ``overrides`` are protocol fields (``num_beams=3``, ``max_new_tokens=20``, ...).
        """
        if prompt is None and prompt_variant is None:
            prompt_variant = "none"
        protocol = self.protocol("caption", prompt, prompt_variant, **overrides)
        inputs = images if isinstance(images, ImageInputs) else resolve_images(images, notice or log.warning,
                                                                                url_timeout_s, skip_bad_images)
        samples = [Sample(id=str(n), image=key) for n, key in enumerate(inputs.keys)]
        predictions = self._generate(samples, inputs.source, protocol, batch_size, skip_bad_images, progress,
                                     "caption")
        fingerprint = protocol.fingerprint()
        return [Caption(image=p.image or s.image, prompt=p.prompt, caption=p.prediction, model=self.name,
                        protocol_fingerprint=fingerprint, status=p.status, error=p.error)
                for s, p in ((s, predictions[s.id]) for s in samples)]

    def ask(self, images: Any, questions: str | Sequence[str], *, prompt: str | None = None,
            prompt_variant: str | None = None, batch_size: int | str | None = None, skip_bad_images: bool = False,
            progress: bool = False, notice: Notice | None = None,
            url_timeout_s: float = DEFAULT_URL_TIMEOUT_S, **overrides: Any) -> list[Answer]:
        """Every question asked of every image (single-turn, the `vqav2` task's prompt for the model family).

        Records come image by image, each image's questions in the order given.
        """
        questions = [questions] if isinstance(questions, str) else list(questions)
        inputs = images if isinstance(images, ImageInputs) else resolve_images(images, notice or log.warning,
                                                                                url_timeout_s, skip_bad_images)
        pairs = [(key, question) for key in inputs.keys for question in questions]
        return self._ask(pairs, inputs.source, prompt, prompt_variant, batch_size, skip_bad_images, progress,
                         overrides)

    def ask_each(self, images: Any, questions: Sequence[str], *, prompt: str | None = None,
                 prompt_variant: str | None = None, batch_size: int | str | None = None, skip_bad_images: bool = False,
                 progress: bool = False, url_timeout_s: float = DEFAULT_URL_TIMEOUT_S,
                 **overrides: Any) -> list[Answer]:
        """The i-th question asked of the i-th image (one image each: a file, URL or PIL image, or
        :func:`~evalkit.api.image_inputs.resolve_each`'s result); records in that order."""
        inputs = images if isinstance(images, ImageInputs) else resolve_each(images, url_timeout_s, skip_bad_images)
        questions = [questions] if isinstance(questions, str) else list(questions)
        if len(inputs.keys) != len(questions):
            raise EvalkitError(f"{len(inputs.keys)} images but {len(questions)} questions; ask_each pairs them")
        return self._ask(list(zip(inputs.keys, questions)), inputs.source, prompt, prompt_variant, batch_size,
                         skip_bad_images, progress, overrides)

    def _ask(self, pairs: list[tuple[str, str]], source: MemoryImageSource, prompt: str | None,
             prompt_variant: str | None, batch_size: int | str | None, skip_bad_images: bool, progress: bool,
             overrides: dict) -> list[Answer]:
        protocol = self.protocol("ask", prompt, prompt_variant, **overrides)
        for _, question in pairs:
            if not isinstance(question, str) or not question.strip():
                raise EvalkitError("every question must be a non-empty string")
        samples = [Sample(id=str(n), image=key, question=question.strip()) for n, (key, question) in enumerate(pairs)]
        predictions = self._generate(samples, source, protocol, batch_size, skip_bad_images, progress, "ask")
        fingerprint = protocol.fingerprint()
        return [Answer(image=s.image, question=s.question, prompt=p.prompt, answer=p.prediction, model=self.name,
                       protocol_fingerprint=fingerprint, status=p.status, error=p.error)
                for s, p in ((s, predictions[s.id]) for s in samples)]

    def _generate(self, samples: list[Sample], source: MemoryImageSource, protocol: GenerationProtocol,
                  batch_size: int | str | None, skip_bad_images: bool, progress: bool, label: str) -> dict[str, Prediction]:
        """The batched runner of `evalkit run`, journaling into memory instead of predictions.jsonl."""
        from evalkit.core.progress import progress_bar
        from evalkit.inference.batch_size_probe import resolve_batch_size
        from evalkit.inference.generation_runner import run_single_turn

        check_batch_size(batch_size)
        generator = self.generator(protocol.image_size)
        self._check_prompt_lengths(generator, samples, protocol)
        size = resolve_batch_size(generator, samples, protocol, batch_size or self.batch_size)
        collected: dict[str, Prediction] = {}

        def append(batch: list[Prediction]) -> None:
            collected.update((p.id, p) for p in batch)

        with progress_bar(f"{label} · {self.name}", total=len(samples), enabled=progress) as advance:
            run_single_turn(generator, samples, source, protocol, append, size, skip_bad_images, advance)
        return collected

    def _check_prompt_lengths(self, generator, samples: list[Sample], protocol: GenerationProtocol) -> None:
        """A prompt past the LM's learned positions (OPT) would crash inside the model: say so instead."""
        from evalkit.inference.generation_runner import render_prompt

        if not generator.max_positions:
            return
        budget = generator.max_positions - generator.num_query_tokens - protocol.max_new_tokens
        for question in dict.fromkeys(s.question for s in samples):
            tokens = generator.prompt_token_count(render_prompt(protocol, question))
            if getattr(protocol, "max_prompt_tokens", 0):  # the generator cuts the prompt to this length
                tokens = min(tokens, protocol.max_prompt_tokens)
            if tokens > budget:
                what = f"question {question[:40]!r}" if question else "prompt"
                raise EvalkitError(f"{what} too long: its prompt takes {tokens} tokens, and {self.name}'s "
                                   f"{generator.max_positions} positions leave {budget} after the "
                                   f"{generator.num_query_tokens} image tokens and {protocol.max_new_tokens} "
                                   "answer tokens")

    # -- chat ----------------------------------------------------------------------------------

    def chat(self, image: Any, *, prompt: str | None = None, prompt_variant: str | None = None,
             url_timeout_s: float = DEFAULT_URL_TIMEOUT_S, **overrides: Any) -> Conversation:
        """A conversation about one image (the `vqav2-chat` protocol): ``conversation.ask(question)``.

        ``image`` is a file, URL or PIL image, or :func:`~evalkit.api.image_inputs.resolve_each`'s result
        for one image.
        """
        protocol = self.protocol("chat", prompt, prompt_variant, **overrides)
        inputs = image if isinstance(image, ImageInputs) else resolve_each([image], url_timeout_s)
        if len(inputs.keys) != 1:
            raise EvalkitError(f"a conversation is about one image, got {len(inputs.keys)}")
        key = inputs.keys[0]
        generator = self.generator(protocol.image_size)
        query_embeds = generator.encode_images(generator.pixel_values([inputs.source.open(key)]))[0]
        return Conversation(generator, protocol, key, query_embeds, self.name)
