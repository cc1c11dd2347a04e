"""On CPU, torch's intra-op threads and the image decode workers share the cores: budget them together.

With torch's default (one thread per core) plus one decode worker per core, a 2-core machine ran 4 busy
threads; OpenMP threads that spin-wait for each other then stall whenever the scheduler parks one of them, and
whole runs took 5-20x their median (issue 23: 1 in 3 to 1 in 7 runs). The budget keeps torch threads + decode
workers within the cores this process may use: a quarter of the cores (at least 1) decode, the rest run torch.
``OMP_NUM_THREADS`` / ``EVALKIT_DECODE_WORKERS``, when set, are taken as they are (the other side gets what is
left, at least 1). The choice holds while a runner works (``torch_threads_for``) and is recorded in run.json
(``runtime.cpu_threads``).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from typing import Iterator

import torch

from evalkit.core.errors import EvalkitError

WORKERS_ENV = "EVALKIT_DECODE_WORKERS"
MAX_AUTO_WORKERS = 8


@dataclass(frozen=True)
class CpuThreads:
    """How many threads run torch and how many decode images, out of how many cores, and why."""

    cores: int
    torch_threads: int
    decode_workers: int
    rule: str

    def to_json(self) -> dict:
        return asdict(self)


def available_cores() -> int:
    """The cores this process may run on (its affinity mask on Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def env_workers() -> int | None:
    """``EVALKIT_DECODE_WORKERS`` when set (a whole number >= 1), else None."""
    value = os.environ.get(WORKERS_ENV)
    if not value:
        return None
    try:
        workers = int(value)
    except ValueError:
        raise EvalkitError(f"{WORKERS_ENV}={value!r} is not a whole number") from None
    if workers < 1:
        raise EvalkitError(f"{WORKERS_ENV} must be at least 1, not {workers}")
    return workers


def cpu_budget(cores: int | None = None, omp_threads: str | None = None,
               workers_env: int | None = None) -> CpuThreads:
    """The split of ``cores`` between torch threads and decode workers (see the module docstring)."""
    cores = cores or available_cores()
    if omp_threads and omp_threads.strip().isdigit() and int(omp_threads) >= 1:
        torch_threads = int(omp_threads)
        workers = workers_env or max(1, min(cores - torch_threads, MAX_AUTO_WORKERS))
        return CpuThreads(cores, torch_threads, workers, "OMP_NUM_THREADS set; decode workers get the rest")
    if workers_env:
        return CpuThreads(cores, max(1, cores - workers_env), workers_env,
                          f"{WORKERS_ENV} set; torch threads get the rest")
    workers = max(1, min(cores // 4, MAX_AUTO_WORKERS))
    return CpuThreads(cores, max(1, cores - workers), workers,
                      "torch threads + decode workers <= cores (a quarter of the cores decode, at least 1)")


def current_budget() -> CpuThreads:
    """The budget for this process now (its cores, OMP_NUM_THREADS, EVALKIT_DECODE_WORKERS)."""
    return cpu_budget(omp_threads=os.environ.get("OMP_NUM_THREADS"), workers_env=env_workers())


@contextlib.contextmanager
def torch_threads_for(device: torch.device | str) -> Iterator[CpuThreads | None]:
    """On CPU, torch's intra-op threads set to the budget for the ``with`` block (the previous count restored
    after); elsewhere nothing changes."""
    if torch.device(device).type != "cpu":
        yield None
        return
    budget, before = current_budget(), torch.get_num_threads()
    torch.set_num_threads(budget.torch_threads)
    try:
        yield budget
    finally:
        torch.set_num_threads(before)


def gpu_workers() -> int:
    """Decode workers beside a GPU: ``EVALKIT_DECODE_WORKERS``, else the cores (at most 8); torch's CPU threads
    are mostly idle there."""
    return env_workers() or max(1, min(available_cores(), MAX_AUTO_WORKERS))
