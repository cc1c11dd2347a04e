"""Golden answers: the bundled tiny models' answers on a fixed slice of the shapes split, shipped with the package.

The same weights, protocol and images must give the same answers under every supported torch and transformers;
a library upgrade that changes one shows here first. The slice runs through `evalkit run`'s own steps (the real
loader, runner and journal, on CPU, into a temporary folder): captions and VQA answers of both generators, chat
answers, and the ITM model's retrieval rankings (each query's top 5). `python -m evalkit.doctor.golden --write`
makes the file (once, with the versions recorded in it); `python -m evalkit.doctor.golden` checks and prints JSON.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from evalkit.demo.bundled import DEMO_DIR

GOLDEN_FILE = DEMO_DIR / "golden_answers.json"
GOLDEN_RUNS = [  # (task, model, --limit): the first samples of the shapes test split, whole images
    ("shapes-caption", "blip2-tiny-opt", 10), ("shapes-caption", "blip2-tiny-t5", 10),
    ("shapes-vqa", "blip2-tiny-opt", 32), ("shapes-vqa", "blip2-tiny-t5", 32),
    ("shapes-chat", "blip2-tiny-opt", 16), ("shapes-chat", "blip2-tiny-t5", 16),
    ("shapes-retrieval", "blip2-tiny-itm", 12),
]
TOP_K = 5  # retrieval: the top 5 matches of each query are recorded, in order
BATCH_SIZE = 8  # answers do not depend on it (tests/test_batch_plan.py)


@dataclass(frozen=True)
class GoldenResult:
    """The check's outcome: identical or not, the first differing sample, and every run's count of differences."""

    identical: bool
    first_difference: str | None
    differences: dict[str, int]
    versions: dict[str, str]
    made_with: dict[str, str]

    def to_json(self) -> dict:
        return {"identical": self.identical, "first_difference": self.first_difference,
                "differences": self.differences, "versions": self.versions, "made_with": self.made_with}


def run_key(task: str, model: str) -> str:
    return f"{task}/{model}"


def compute_answers(results_dir: Path) -> dict[str, dict[str, object]]:
    """{task/model: {sample id: answer}} for every golden run (retrieval: each query's top matches, best first).

    The runs go through `evalkit run`'s own steps up to the predictions, without the caption scorer's Java (minutes
    of CPU that move no answer)."""
    from evalkit.core.run_options import RunOptions

    answers = {}
    for task, model, limit in GOLDEN_RUNS:
        options = RunOptions(task=task, model=model, results_dir=results_dir, limit=limit, batch_size=BATCH_SIZE,
                             device="cpu", show_progress=False)
        answers[run_key(task, model)] = _answers_of_run(options)
    return answers


def _answers_of_run(options) -> dict[str, object]:
    from evalkit.engine.evaluate import open_journal, prepare_run, run_job
    from evalkit.engine.journal import PredictionJournal

    prepared = prepare_run(options)
    journal = PredictionJournal(prepared.run_dir)
    with journal.locked(wait=False):
        job = run_job(prepared, journal, open_journal(prepared, journal))
        output = prepared.task.kind.run(job)
    if prepared.task.kind.model_kind == "retrieval":
        return _rankings(prepared.sample_set.samples, output.artifacts["i2t"], output.artifacts["t2i"])
    rows = [json.loads(line) for line in (prepared.run_dir / "predictions.jsonl").read_text().splitlines()
            if line.strip()]
    return {str(row["id"]): row["prediction"] for row in rows}


def _rankings(images, i2t, t2i) -> dict[str, list[int]]:
    """Each image query's top captions and each caption query's top images (indices, best first): a re-ordering
    shows even where every right match stays first."""
    import numpy as np

    answers = {f"image:{s.id}": [int(j) for j in np.argsort(-np.asarray(i2t[i]), kind="stable")[:TOP_K]]
               for i, s in enumerate(images)}
    answers.update({f"text:{j}": [int(i) for i in np.argsort(-np.asarray(row), kind="stable")[:TOP_K]]
                    for j, row in enumerate(t2i)})
    return answers


def installed_versions() -> dict[str, str]:
    """The versions that move the golden answers."""
    import platform
    from importlib.metadata import version

    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": version("transformers"),
            "tokenizers": version("tokenizers")}


def read_golden(path: Path = GOLDEN_FILE) -> dict:
    """The golden file; a missing or unreadable one is an EvalkitError naming it."""
    from evalkit.core.errors import EvalkitError

    try:
        golden = json.loads(Path(path).read_text())
        golden["answers"]  # noqa: B018 - the one key every golden file has
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise EvalkitError(f"cannot read golden answers {path}: {type(err).__name__}: {err}") from None
    return golden


def compare_answers(expected: dict[str, dict], got: dict[str, dict]) -> tuple[str | None, dict[str, int]]:
    """(the first differing sample as one line, or None; the number of differing samples per run)."""
    first, counts = None, {}
    for key, want in expected.items():
        have = got.get(key, {})
        differing = [sample for sample in want if have.get(sample) != want[sample]]
        differing += [sample for sample in have if sample not in want]
        counts[key] = len(differing)
        if differing and first is None:
            sample = differing[0]
            first = (f"{key} sample {sample}: golden {want.get(sample, '(absent)')!r}, "
                     f"got {have.get(sample, '(absent)')!r}")
    for key in got:
        if key not in expected:
            counts[key] = len(got[key])
            first = first or f"{key}: not in the golden file"
    return first, counts


def check_golden(path: Path = GOLDEN_FILE) -> GoldenResult:
    """Run the golden slice on CPU and compare it with the golden file."""
    golden = read_golden(path)
    with tempfile.TemporaryDirectory(prefix="evalkit-golden-") as tmp:
        got = compute_answers(Path(tmp))
    first, counts = compare_answers(golden["answers"], got)
    return GoldenResult(first is None, first, counts, installed_versions(), golden.get("made_with", {}))


def write_golden(path: Path = GOLDEN_FILE) -> dict:
    """Compute the golden answers with the installed libraries and write them (with those versions)."""
    from evalkit.core.atomic_files import write_json_atomic

    with tempfile.TemporaryDirectory(prefix="evalkit-golden-") as tmp:
        answers = compute_answers(Path(tmp))
    golden = {"about": "bundled tiny models' answers on the first samples of the shapes test split "
                       "(evalkit.doctor.golden); retrieval: the top 5 matches of each query, best first",
              "made_with": installed_versions(), "runs": [list(run) for run in GOLDEN_RUNS],
              "answers": answers}
    write_json_atomic(Path(path), golden)
    return golden


def main(argv: list[str]) -> int:
    """``--write``: make the golden file; otherwise check and print the result as JSON (exit 0 identical, 1 not)."""
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "2")
    if "--write" in argv:
        golden = write_golden()
        print(json.dumps({"written": str(GOLDEN_FILE), "made_with": golden["made_with"]}))
        return 0
    result = check_golden()
    print(json.dumps(result.to_json()))
    return 0 if result.identical else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
