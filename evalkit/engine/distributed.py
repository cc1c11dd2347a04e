"""Data-parallel runs under torchrun / accelerate launch: shard by image, one journal per rank, rank 0 merges.

The launcher sets RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR/PORT). Each rank answers the samples of its
images (image i, in first-appearance order, goes to rank i mod N: no sample twice, no padding) into its own
journal ``predictions.rank{R}-of-{N}.jsonl`` in the one run folder, so the run id, header, lock and run.json
stay those of a one-process run. Only rank 0 holds the run-folder lock; the other ranks start after it has it.
Rank 0 then waits for every rank, merges the journals into ``predictions.jsonl`` in a one-process run's order
(grouped by image, first appearance) and scores once. The ranks only meet at barriers, so the process group is
gloo even on GPUs (no tensors are exchanged, and no NCCL watchdog times out a rank that is slower by hours).
Rank journals left by a killed launch of another world size (or any, for a one-process rerun) are folded into
``predictions.jsonl`` when rank 0 opens the run, so their answers are resumed. Multi-node runs need the results
folder on a filesystem every node sees.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from evalkit.core.atomic_files import writing
from evalkit.core.errors import EvalkitError
from evalkit.core.samples import Prediction, order_by_image
from evalkit.engine.journal import PredictionJournal

BARRIER_TIMEOUT = dt.timedelta(hours=48)  # rank 0 may wait that long for the slowest rank


@dataclass(frozen=True)
class Ranks:
    """This process's place in the launch: rank, world size and the local rank (its GPU on the node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def tag(self) -> str:
        return f"rank{self.rank}-of-{self.world}"


def ranks_from_env(environ=os.environ) -> Ranks:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun and accelerate launch set them (absent: one process)."""
    try:
        world = int(environ.get("WORLD_SIZE", "1"))
        rank = int(environ.get("RANK", "0"))
        local_rank = int(environ.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise EvalkitError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({err})") from None
    if world < 1 or not 0 <= rank < world:
        raise EvalkitError(f"RANK {rank} is not in a world of WORLD_SIZE {world}")
    return Ranks(rank, world, local_rank)


def init_process_group(ranks: Ranks) -> None:
    """Join the launch's process group (gloo, env:// rendezvous) once; a no-op for one process."""
    if ranks.world == 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT, rank=ranks.rank, world_size=ranks.world)


def barrier(ranks: Ranks) -> None:
    """Wait until every rank got here (a rank that dies makes the launcher stop the others)."""
    if ranks.world > 1:
        import torch.distributed as dist

        dist.barrier()


def rank_device(requested: str, ranks: Ranks) -> str:
    """Each rank on its own GPU: 'auto' or 'cuda' become cuda:LOCAL_RANK (mod the GPU count) when there are GPUs."""
    if ranks.world == 1 or requested not in ("auto", "cuda"):
        return requested
    import torch

    if not torch.cuda.is_available():
        return requested
    index = ranks.local_rank % torch.cuda.device_count()  # more ranks than GPUs share them
    torch.cuda.set_device(index)
    return f"cuda:{index}"


def shard_by_image(samples: Sequence[Any], rank: int, world: int) -> list[Any]:
    """The samples of the images i (first-appearance order) with i mod world == rank, in their order."""
    first_seen: dict[str, int] = {}
    for sample in samples:
        first_seen.setdefault(sample.image, len(first_seen))
    return [s for s in samples if first_seen[s.image] % world == rank]


def rank_journal(run_dir: Path, ranks: Ranks) -> PredictionJournal:
    """This rank's journal in the run folder (``predictions.rank{R}-of-{N}.jsonl``, ``images.rank…jsonl``)."""
    return PredictionJournal(run_dir, suffix=f".{ranks.tag}")


def merge_rank_journals(journal: PredictionJournal, samples: Sequence[Any], world: int) -> dict[str, Prediction]:
    """Rank 0, once every rank is done: fold the ranks' journals into ``predictions.jsonl``."""
    return _fold(journal, samples, [rank_journal(journal.run_dir, Ranks(r, world)) for r in range(world)])


def fold_leftover_journals(journal: PredictionJournal, samples: Sequence[Any], world: int,
                           done: dict[str, Prediction]) -> dict[str, Prediction]:
    """At open (rank 0, holding the lock): rank journals of a killed launch of another world size, or of any
    launch when this run is one process, are folded in, so their answers are resumed rather than redone."""
    # a rank killed after its first ledger line but before its first answer leaves only ``images.rank…``
    suffixes = sorted({path.name[path.name.index("."):-len(".jsonl")]
                       for pattern in ("predictions.rank*-of-*.jsonl", "images.rank*-of-*.jsonl")
                       for path in journal.run_dir.glob(pattern) if not path.name.endswith(f"-of-{world}.jsonl")})
    leftovers = [PredictionJournal(journal.run_dir, suffix=suffix) for suffix in suffixes]
    return _fold(journal, samples, leftovers) if leftovers else done


def _fold(journal: PredictionJournal, samples: Sequence[Any], shards: list[PredictionJournal]) -> dict[str, Prediction]:
    """``predictions.jsonl`` rewritten with the shards' answers (one line per sample, one-process order) and
    ``images.jsonl`` extended, durably, then the shard files removed; returns the merged predictions."""
    merged = journal.completed()
    for shard in shards:
        merged.update(shard.completed())
    lines = "".join(json.dumps(merged[s.id].to_json(), ensure_ascii=False) + "\n"
                    for s in order_by_image(samples) if s.id in merged)
    tmp = journal.predictions_path.with_name(f".{journal.predictions_path.name}.merge")
    with writing(journal.predictions_path, tmp), open(tmp, "w", encoding="utf-8") as handle:
        handle.write(lines)
        handle.flush()
        os.fsync(handle.fileno())
    journal.merge_images([entry for shard in shards for entry in shard.images().values()])
    os.replace(tmp, journal.predictions_path)
    for shard in shards:
        for path in (shard.predictions_path, shard.images_path):
            path.unlink(missing_ok=True)
    return journal.completed()


def gather_counts(ranks: Ranks, counts: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's ``counts`` (a small dict), in rank order; waits for all ranks like a barrier."""
    if ranks.world == 1:
        return [counts]
    import torch.distributed as dist

    gathered: list[Any] = [None] * ranks.world
    dist.all_gather_object(gathered, counts)
    return gathered


def run_shard(job: Any, journal: PredictionJournal, ranks: Ranks) -> tuple[Any, list[dict[str, Any]]]:
    """Run the kind on this rank's shard into its own journal; once every rank is done, rank 0 merges.

    Returns (the run output: on rank 0 every merged prediction, on the others their shard's; each rank's counts).
    """
    from dataclasses import replace

    from evalkit.core.sample_set import SampleSet

    full = job.sample_set
    shard = rank_journal(journal.run_dir, ranks)
    mine = shard_by_image(full.samples, ranks.rank, ranks.world)
    shard_done = shard.check_images(mine, shard.completed())
    # rank 0 checked the folder's journal against its ledger when it opened it; the other ranks leave out what the
    # ledger lacks, as rank 0 did (answered again, never trusted)
    done = {**journal.in_ledger(full.samples, journal.completed()), **shard_done}
    shard_job = replace(job, sample_set=SampleSet(mine, full.images, full.identity, full.annotations), done=done,
                        append=shard.append, completed=lambda: {**journal.completed(), **shard.completed()})
    output = job.task.kind.run(shard_job)
    stats = output.stats
    counts = gather_counts(ranks, {"rank": ranks.rank, "samples": len(mine), "resumed": output.resumed,
                                   "generated": stats.generated if stats else 0})
    if ranks.is_main:
        output = replace(output, predictions=merge_rank_journals(journal, full.samples, ranks.world),
                         resumed=sum(c["resumed"] for c in counts))
    return output, counts
