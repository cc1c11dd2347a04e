"""Benchmark: official COCOEvalCap vs evalkit's score_caption_files on COCO caption files.

    python benchmarks/caption_scoring_bench.py [--annotations A.json[.gz]] [--predictions P.json[.gz]]

Defaults to the Karpathy test split fixture (4,982 images, MAGIC captions). Times, in one process,

* official: read the files, ``COCO`` + ``loadRes`` + ``COCOEvalCap.evaluate()``; per stage by
  wrapping ``PTBTokenizer.tokenize`` and each scorer's ``compute_score`` (METEOR includes waiting
  for its JVM, which the official code starts just before scoring). SPICE is replaced by a stub
  because it cannot run offline (it would download Stanford CoreNLP).
* evalkit: ``score_caption_files(..., spice="off")``, stages from ``CaptionScores.timings_s``
  (its METEOR stage includes cutting the paraphrase table to the captions; the table's index, built once
  per machine in evalkit's cache folder, is built by the first run when missing).

and checks that the corpus numbers are equal. Wall-clock seconds; the machine's other load counts.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from official_coco_eval import NoSpice  # noqa: E402 - the tests' reference scorer's SPICE stand-in
FIXTURES = ROOT / "tests" / "fixtures" / "karpathy_refs"
STAGES = ["tokenize", "BLEU", "METEOR", "ROUGE-L", "CIDEr", "total"]


def _read(path: Path):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def run_official(annotations_path: Path, predictions_path: Path) -> tuple[dict[str, float], dict[str, float]]:
    import pycocoevalcap.eval as official
    from pycocotools.coco import COCO

    timings: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - t
        return wrapper

    saved = {name: getattr(official, name) for name in ("PTBTokenizer", "Bleu", "Meteor", "Rouge", "Cider", "Spice")}
    patched = {"PTBTokenizer": "tokenize", "Bleu": "BLEU", "Meteor": "METEOR", "Rouge": "ROUGE-L", "Cider": "CIDEr"}
    try:
        for cls_name, stage in patched.items():
            base = saved[cls_name]
            method = "tokenize" if cls_name == "PTBTokenizer" else "compute_score"
            setattr(official, cls_name, type(cls_name, (base,), {method: timed(stage, getattr(base, method))}))
        official.Spice = NoSpice  # SPICE cannot run offline (tests/official_coco_eval.py)
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO()
            coco.dataset = _read(annotations_path)  # COCO(path) cannot read .gz
            coco.createIndex()
            evaluator = official.COCOEvalCap(coco, coco.loadRes(_read(predictions_path)))
            evaluator.evaluate()
        timings["total"] = time.perf_counter() - start
    finally:
        for name, value in saved.items():
            setattr(official, name, value)
    return {k: v for k, v in evaluator.eval.items() if k != "SPICE"}, timings


def run_evalkit(annotations_path: Path, predictions_path: Path):
    from evalkit.data.coco_caption_files import score_caption_files

    start = time.perf_counter()
    scores = score_caption_files(annotations_path, predictions_path, spice="off")
    total = time.perf_counter() - start
    return scores, {**scores.timings_s, "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", type=Path, default=FIXTURES / "annotations.json.gz")
    parser.add_argument("--predictions", type=Path, default=FIXTURES / "predictions.json.gz")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run both N times, alternating which goes first; report each stage's minimum")
    args = parser.parse_args()

    from evalkit.metrics.caption_metrics import OFFICIAL_KEYS

    official_runs, ours_runs = [], []
    for k in range(args.repeat):
        if k % 2 == 0:
            official_eval, t = run_official(args.annotations, args.predictions)
            official_runs.append(t)
            scores, t = run_evalkit(args.annotations, args.predictions)
            ours_runs.append(t)
        else:
            scores, t = run_evalkit(args.annotations, args.predictions)
            ours_runs.append(t)
            official_eval, t = run_official(args.annotations, args.predictions)
            official_runs.append(t)
    official_t = {s: min(r[s] for r in official_runs) for s in STAGES}
    ours_t = {s: min(r[s] for r in ours_runs) for s in STAGES}
    official_totals = [r["total"] for r in official_runs]
    ours_totals = [r["total"] for r in ours_runs]

    print(f"COCO caption scoring, {scores.n_images} images ({args.predictions.name}); "
          f"wall-clock seconds, min of {args.repeat} run(s)")
    print(f"{'stage':<10} {'official':>9} {'evalkit':>9}")
    for stage in STAGES:
        print(f"{stage:<10} {official_t.get(stage, float('nan')):>9.2f} {ours_t.get(stage, float('nan')):>9.2f}")
    print("(SPICE: not run by either; it needs Stanford CoreNLP 3.6.0, which cannot be downloaded offline)")
    print(f"totals per run: official {', '.join(f'{t:.2f}' for t in official_totals)}; "
          f"evalkit {', '.join(f'{t:.2f}' for t in ours_totals)}")
    print(f"median total: official {statistics.median(official_totals):.2f} s, evalkit "
          f"{statistics.median(ours_totals):.2f} s, evalkit/official "
          f"{statistics.median(ours_totals) / statistics.median(official_totals):.2f}")
    if scores.meteor_paraphrase_entries:
        kept, total = scores.meteor_paraphrase_entries
        print(f"METEOR read {kept:,} of its {total:,} paraphrase entries (a table cut to these captions; "
              "evalkit.metrics.meteor_paraphrase)")
    else:
        print("METEOR read its whole paraphrase table (no cut could be made)")
    print(f"\n{'metric':<8} {'official*100':>20} {'evalkit':>20}  rel.diff")
    worst = 0.0
    for name, value in scores.corpus.items():
        expected = 100 * official_eval[OFFICIAL_KEYS[name]]
        diff = abs(value - expected) / abs(expected) if expected else abs(value)
        worst = max(worst, diff)
        print(f"{name:<8} {expected:>20.15f} {value:>20.15f}  {diff:.1e}")
    print(f"max relative difference: {worst:.1e}")


if __name__ == "__main__":
    main()
