"""Chat-style VQA: each image's questions asked as one conversation, earlier turns kept in the prompt."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Sequence

import torch

from evalkit.core.protocol import GenerationProtocol
from evalkit.core.samples import Prediction, Sample
from evalkit.core.scores import RunStats
from evalkit.data.images import ImageSource
from evalkit.data.lavis_text import preprocess_question
from evalkit.inference.generation_runner import Append, Progress, finish_batch, render_prompt
from evalkit.inference.cpu_threads import torch_threads_for
from evalkit.inference.image_prefetch import ImagePrefetcher, default_workers
from evalkit.models.blip2_generation import Blip2Generator


def chat_prompt(protocol: GenerationProtocol, history: Sequence[tuple[str, str]], question: str,
                count_tokens: Callable[[str], int], budget: int) -> tuple[str, int]:
    """The multi-turn prompt: earlier (question, answer) turns, then the current question.

    Oldest turns are dropped first until the prompt fits ``budget`` tokens; returns the prompt
    and how many earlier turns it keeps.
    """
    current = render_prompt(protocol, question)
    turns = [protocol.chat_turn.replace("{question}", preprocess_question(q, protocol.question_preprocess))
             .replace("{answer}", a) for q, a in history]
    while True:
        prompt = " ".join(turns + [current])
        if not turns or count_tokens(prompt) <= budget:
            return prompt, len(turns)
        turns = turns[1:]


def run_chat(generator: Blip2Generator, samples: Sequence[Sample], images: ImageSource, protocol: GenerationProtocol,
             append: Append, batch_size: int, skip_bad_images: bool = False,
             progress: Progress | None = None, decode_workers: int | None = None) -> RunStats:
    """Ask each image's questions one after another in one conversation, batched across images.

    Each prompt holds the earlier questions and the model's own answers; the journal is written per
    group of images once all their turns are done, so a resumed run never holds half a conversation.
    """
    stats = RunStats(batch_size=batch_size)
    conversations: OrderedDict[str, list[Sample]] = OrderedDict()
    for sample in samples:
        conversations.setdefault(sample.image, []).append(sample)
    keys = list(conversations)
    context = min(protocol.max_context_tokens, generator.max_positions or protocol.max_context_tokens)
    budget = context - generator.num_query_tokens - protocol.max_new_tokens
    groups = [keys[start:start + batch_size] for start in range(0, len(keys), batch_size)]
    stats.decode_workers = decode_workers or default_workers(generator.device)
    with torch_threads_for(generator.device), \
            ImagePrefetcher(images, groups, generator.image_pipeline.worker, stats.decode_workers,
                            skip_bad_images) as prefetch:
        for index, group in enumerate(groups):
            loaded, bad = prefetch.take(index)
            finish_batch(*_run_group(generator, conversations, group, loaded, bad, protocol, budget, stats),
                         stats, append, progress)
    return stats


def _run_group(generator: Blip2Generator, conversations: OrderedDict[str, list[Sample]], group: list[str],
               loaded: dict, bad: dict[str, str], protocol: GenerationProtocol, budget: int,
               stats: RunStats) -> tuple[list[Prediction], float]:
    """All turns of one group of conversations: (predictions, when generation started)."""
    predictions: list[Prediction] = []
    for key in group:
        if key in bad:
            for s in conversations[key]:
                predictions.append(Prediction(s.id, "", "", s.references, "failed", f"bad image: {bad[key]}",
                                              image=key))
                stats.failed += 1
    good = [k for k in group if k not in bad]
    started = time.perf_counter()
    if good:
        embeds = dict(zip(good, generator.encode_images(generator.image_pipeline.batch([loaded[k] for k in good]))))
        stats.images_encoded += len(good)
        history: dict[str, list[tuple[str, str]]] = {k: [] for k in good}
        for turn in range(max(len(conversations[k]) for k in good)):
            active = [k for k in good if turn < len(conversations[k])]
            asked = [conversations[k][turn] for k in active]
            built = [chat_prompt(protocol, history[k], s.question, generator.prompt_token_count, budget)
                     for k, s in zip(active, asked)]
            answers = generator.generate(torch.stack([embeds[k] for k in active]), [b[0] for b in built],
                                         protocol)
            for key, sample, (prompt, kept), answer in zip(active, asked, built, answers):
                history[key].append((sample.question, answer))
                predictions.append(Prediction(sample.id, prompt, answer, sample.references, image=key,
                                              extra={**sample.meta_dict(), "turn": turn,
                                                     "history_turns": kept}))
    return predictions, started
