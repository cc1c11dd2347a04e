"""Time and memory of VQAv2 scoring at full val2014 size (214,354 questions).

Writes official-format questions / annotations / predictions files into a temporary
folder (in a child process), then, in a fresh child process, times
``score_vqa_files`` (load + validate + score) and ``score_vqa`` alone, and reports the
peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of that process.

    python benchmarks/vqa_scoring_bench.py [--questions 214354] [--variant official] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VAL2014_QUESTIONS = 214_354

_COLORS = ["red", "blue", "green", "white", "black", "yellow", "brown", "gray", "orange", "pink",
           "purple", "silver", "tan", "beige", "gold"]
_NOUNS = ["dog", "cat", "man", "woman", "bus", "train", "pizza", "frisbee", "kite", "tennis", "baseball",
          "skateboard", "surfboard", "table", "chair", "bed", "sink", "toilet", "grass", "tree", "sky", "water",
          "snow", "street", "kitchen", "bathroom", "living room", "hot dog", "t-shirt", "umbrella", "clock",
          "phone", "laptop", "horse", "cow", "sheep", "elephant", "giraffe", "zebra", "bear", "bird", "plane",
          "boat", "truck", "car", "bike", "motorcycle", "sandwich", "banana", "apple", "donut", "cake"]
_ADJECTIVES = ["old", "new", "big", "small", "wooden", "metal", "plastic", "left", "right", "front",
               "back", "top", "bottom", "open", "closed", "wet", "dry", "dark", "light", "striped"]
_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def _other_vocabulary() -> list[str]:
    words = list(_NOUNS) + list(_COLORS)
    words += [f"{c} and {d}" for c in _COLORS for d in _COLORS if c != d]
    words += [f"{a} {n}" for a in _ADJECTIVES for n in _NOUNS]
    words += [f"{c} {n}" for c in _COLORS for n in _NOUNS]
    words += [f"{a} {c} {n}" for a in _ADJECTIVES for c in _COLORS for n in _NOUNS[:20]]
    return words  # about 10,000 distinct answers


def _variant_of(answer: str, rng: random.Random) -> str:
    """A spelling a human annotator might type for the same answer."""
    kind = rng.randrange(8)
    if kind == 0:
        return answer.capitalize()
    if kind == 1:
        return answer + rng.choice([".", "!", "?", " "])
    if kind == 2:
        return rng.choice(["the ", "a ", "an "]) + answer
    if kind == 3:
        return answer.replace(" ", "-")
    if kind == 4 and answer.isdigit() and int(answer) <= 10:
        return _NUMBER_WORDS[int(answer)]
    if kind == 5:
        return answer.upper()
    return answer


def generate(folder: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    other = _other_vocabulary()
    numbers = [str(i) for i in range(0, 30)] + [str(i) for i in range(30, 2000, 7)]
    question_types = [f"what {w} is the" for w in ("color", "kind", "type", "sport", "room", "animal")] + \
        ["how many", "is the", "is this", "are there", "does the", "what is", "where is", "why", "which",
         "who is", "what time", "none of the above"] + [f"synthetic type {i}" for i in range(47)]
    questions, annotations, predictions = [], [], []
    for k in range(n):
        image_id = 100_000 + k // 5
        qid = image_id * 1000 + k % 5
        answer_type = rng.choices(["yes/no", "number", "other"], weights=[38, 12, 50])[0]
        pool = ["yes", "no"] if answer_type == "yes/no" else numbers if answer_type == "number" else other
        truth = rng.choice(pool)
        agreement = rng.choice([1.0, 1.0, 0.9, 0.8, 0.6, 0.4])
        answers = []
        for i in range(10):
            roll = rng.random()
            text = truth if roll < agreement else (_variant_of(truth, rng) if roll < agreement + 0.1
                                                   else rng.choice(pool))
            answers.append({"answer": text, "answer_confidence": rng.choice(["yes", "yes", "maybe", "no"]),
                            "answer_id": i + 1})
        roll = rng.random()
        prediction = truth if roll < 0.6 else (_variant_of(truth, rng) if roll < 0.75 else rng.choice(pool))
        questions.append({"image_id": image_id, "question": f"synthetic question {k}?", "question_id": qid})
        annotations.append({"question_type": rng.choice(question_types), "multiple_choice_answer": truth,
                            "answers": answers, "image_id": image_id, "answer_type": answer_type,
                            "question_id": qid})
        predictions.append({"question_id": qid, "answer": prediction})
    header = {"info": {"description": "synthetic, evalkit benchmark"}, "license": {"name": "none"},
              "data_type": "mscoco", "data_subtype": "val2014"}
    (folder / "questions.json").write_text(json.dumps({**header, "task_type": "Open-Ended", "questions": questions}))
    (folder / "annotations.json").write_text(json.dumps({**header, "annotations": annotations}))
    (folder / "predictions.json").write_text(json.dumps(predictions))


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def measure(folder: Path, variant: str) -> dict:
    from evalkit.data.vqav2_files import load_annotations, load_predictions, load_questions, score_vqa_files
    from evalkit.metrics.vqa_accuracy import score_vqa

    files = [folder / name for name in ("questions.json", "annotations.json", "predictions.json")]
    baseline = _peak_rss_mib()
    start = time.perf_counter()
    scores = score_vqa_files(*files, variant=variant)
    total_s = time.perf_counter() - start
    peak = _peak_rss_mib()
    start = time.perf_counter()
    load_questions(files[0])
    annotations = load_annotations(files[1])
    predictions = load_predictions(files[2])
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    score_vqa(annotations, predictions, variant)
    score_s = time.perf_counter() - start
    return {"questions": scores.n, "variant": variant, "overall": scores.overall,
            "score_vqa_files_s": round(total_s, 2), "load_and_validate_s": round(load_s, 2),
            "score_vqa_s": round(score_s, 2), "peak_rss_mib": round(peak, 1),
            "rss_before_mib": round(baseline, 1),
            "file_mib": round(sum(f.stat().st_size for f in files) / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=VAL2014_QUESTIONS)
    parser.add_argument("--variant", default="official")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--_generate", help=argparse.SUPPRESS)
    parser.add_argument("--_measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._generate:
        generate(Path(args._generate), args.questions, args.seed)
        return
    if args._measure:
        print(json.dumps(measure(Path(args._measure), args.variant)))
        return
    repo = str(Path(__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory(prefix="vqa_bench_") as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--_generate", tmp, "--questions", str(args.questions),
                        "--seed", str(args.seed)], check=True)
        print(f"generated {args.questions:,} questions in {time.perf_counter() - start:.1f} s")
        out = subprocess.run([sys.executable, __file__, "--_measure", tmp, "--variant", args.variant],
                             check=True, capture_output=True, text=True, cwd=repo,
                             env={**os.environ, "PYTHONPATH": repo}).stdout
    result = json.loads(out)
    print(f"questions            {result['questions']:,} ({result['file_mib']} MiB of JSON), "
          f"variant {result['variant']}, overall {result['overall']}")
    print(f"score_vqa_files      {result['score_vqa_files_s']} s  (load+validate "
          f"{result['load_and_validate_s']} s, score_vqa {result['score_vqa_s']} s)")
    print(f"peak RSS             {result['peak_rss_mib']} MiB  (after imports: {result['rss_before_mib']} MiB)")


if __name__ == "__main__":
    main()
