"""On CPU, torch threads + decode workers stay within the cores while a run works, and run.json says how; the
run records its generation rate and its wall rate, each named."""

from __future__ import annotations

import pytest
import torch

from evalkit.core.run_options import RunOptions
from evalkit.engine.evaluate import run_task
from evalkit.inference.cpu_threads import cpu_budget, torch_threads_for


@pytest.mark.parametrize("cores, torch_threads, workers", [(1, 1, 1), (2, 1, 1), (4, 3, 1), (8, 6, 2),
                                                           (16, 12, 4), (64, 56, 8)])
def test_the_budget_keeps_within_the_cores(cores, torch_threads, workers):
    budget = cpu_budget(cores)
    assert (budget.torch_threads, budget.decode_workers) == (torch_threads, workers)
    assert cores == 1 or budget.torch_threads + budget.decode_workers <= cores


def test_set_thread_counts_are_taken_as_they_are():
    assert (cpu_budget(8, omp_threads="2").torch_threads, cpu_budget(8, omp_threads="2").decode_workers) == (2, 6)
    assert (cpu_budget(8, workers_env=5).torch_threads, cpu_budget(8, workers_env=5).decode_workers) == (3, 5)
    assert cpu_budget(2, omp_threads="4").torch_threads == 4  # the user's choice, even above the cores


def test_torch_threads_hold_only_for_the_block(monkeypatch):
    monkeypatch.setattr("evalkit.inference.cpu_threads.available_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("EVALKIT_DECODE_WORKERS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        with torch_threads_for("cpu") as budget:
            assert torch.get_num_threads() == budget.torch_threads == 3
        assert torch.get_num_threads() == 4
        with torch_threads_for("meta") as budget:
            assert budget is None and torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


def test_a_cpu_run_uses_and_records_the_budget_and_both_rates(tmp_path, monkeypatch):
    from evalkit.models.blip2_generation import Blip2Generator

    monkeypatch.setattr("evalkit.inference.cpu_threads.available_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("EVALKIT_DECODE_WORKERS", raising=False)
    seen = []
    generate = Blip2Generator.generate

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(Blip2Generator, "generate", spy)
    torch.set_num_threads(2)
    outcome = run_task(RunOptions(task="shapes-vqa", model="blip2-tiny-opt", results_dir=tmp_path, limit=16,
                                  device="cpu", batch_size=8, show_progress=False))
    runtime = outcome.record["runtime"]
    assert seen and set(seen) == {3}  # 4 cores: 3 torch threads while generating, 1 decode worker
    assert torch.get_num_threads() == 2  # restored after the run
    assert runtime["cpu_threads"]["torch_threads"] == 3 and runtime["cpu_threads"]["decode_workers"] == 1
    assert runtime["decode_workers"] == 1 and runtime["cpu_threads"]["cores"] == 4
    generated = outcome.record["counts"]["generated_this_invocation"]
    assert runtime["generation_samples_per_second"] == pytest.approx(generated / runtime["generation_seconds"],
                                                                      rel=0.01)
    assert runtime["wall_samples_per_second"] == pytest.approx(generated / runtime["wall_seconds"], rel=0.01)
    assert runtime["wall_samples_per_second"] < runtime["generation_samples_per_second"]
    assert "samples_per_second" not in runtime  # the old, ambiguous name
