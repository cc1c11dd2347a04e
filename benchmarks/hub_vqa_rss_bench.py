"""Peak memory of preparing the full VQAv2 val split from the hub parquet (214,354 questions).

Writes a synthetic ``lmms-lab-encoder/VQAv2`` validation split with the real schema (question_type,
multiple_choice_answer, answers [{answer, answer_confidence, answer_id}], image_id, answer_type, question_id,
question, image {bytes, path}; each question's row repeats its image's bytes; ~5.3 questions per image as in
val2014's 40,504 images; row groups of 100 rows as ``datasets`` writes image parquet) into a hub-cache replica
in a temporary HF_HOME, spread over several shards. Then, in a fresh child process with ``HF_HUB_OFFLINE=1``,
it loads the split through the real path (``snapshot_download`` + ``evalkit.data.vqa_datasets.load_hub_vqa``),
opens every image once in sample order (as the generation runner does, grouped by image), and reports the
peak resident memory (``ru_maxrss``).

The synthetic JPEGs are small (``--image-kb``) to keep the disk use down; the loader keeps one row group's
image bytes (100 rows) and 16 decoded images, so real ~160 KB COCO images add ~16 MB to what is measured.

    python benchmarks/hub_vqa_rss_bench.py [--questions 214354] [--shards 8] [--image-kb 2] [--images N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VAL2014_QUESTIONS = 214_354
VAL2014_IMAGES = 40_504
REPO, COMMIT = "lmms-lab-encoder/VQAv2", "0" * 40


def _jpegs(count: int, kb: int) -> list[bytes]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    side = max(16, int((kb * 1024 / 1.5) ** 0.5))
    out = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=60)
        out.append(buffer.getvalue())
    return out


def write_split(home: Path, questions: int, shards: int, image_kb: int) -> None:
    """The synthetic split as a hub-cache replica under ``home``."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = datasets.Features({
        "question_type": datasets.Value("string"), "multiple_choice_answer": datasets.Value("string"),
        "answers": [{"answer": datasets.Value("string"), "answer_confidence": datasets.Value("string"),
                     "answer_id": datasets.Value("int64")}],
        "image_id": datasets.Value("int64"), "answer_type": datasets.Value("string"),
        "question_id": datasets.Value("int64"), "question": datasets.Value("string"), "image": datasets.Image()})
    schema = features.arrow_schema
    jpegs = _jpegs(64, image_kb)
    n_images = max(1, round(questions * VAL2014_IMAGES / VAL2014_QUESTIONS))
    repo = home / "hub" / f"datasets--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT / "data"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    per_shard = -(-questions // shards)
    for shard in range(shards):
        path = snapshot / f"validation-{shard:05d}-of-{shards:05d}.parquet"
        with pq.ParquetWriter(path, schema) as writer:
            start, stop = shard * per_shard, min(questions, (shard + 1) * per_shard)
            for chunk in range(start, stop, 100):
                rows = range(chunk, min(stop, chunk + 100))
                image_ids = [q * n_images // questions for q in rows]
                table = pa.Table.from_pydict({
                    "question_type": ["what color is the"] * len(rows),
                    "multiple_choice_answer": ["red"] * len(rows),
                    "answers": [[{"answer": ["red", "blue", "dark red"][k % 3], "answer_confidence": "yes",
                                  "answer_id": k + 1} for k in range(10)] for _ in rows],
                    "image_id": image_ids, "answer_type": ["other"] * len(rows),
                    "question_id": [i * 1000 + q for q, i in zip(rows, image_ids)],
                    "question": [f"What color is the thing number {q}?" for q in rows],
                    "image": [{"bytes": jpegs[i % len(jpegs)], "path": None} for i in image_ids]}, schema=schema)
                writer.write_table(table)


def measure(home: str, open_images: int | None) -> dict:
    """In this (fresh) process: load the split offline, open the images, report time and peak RSS."""
    os.environ.update(HF_HOME=home, HF_HUB_OFFLINE="1")
    from evalkit.data.data_arg import parse_data_arg
    from evalkit.data.hub_datasets import progress_enabled
    from evalkit.data.vqa_datasets import load_vqa_set

    started = time.perf_counter()
    with progress_enabled(False):
        sample_set = load_vqa_set(parse_data_arg(f"hf:{REPO}@{COMMIT}?val=data/validation-*.parquet"), "val")
    loaded = time.perf_counter()
    rss_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    keys = list(dict.fromkeys(s.image for s in sample_set.samples))
    images_opened = 0  # counted as they come back decoded, not derived from the number of keys
    for key in keys[:open_images] if open_images else keys:
        image = sample_set.images.open(key)
        images_opened += image is not None and min(image.size) > 0
    opened = time.perf_counter()
    return {"questions": len(sample_set.samples), "images": len(keys), "load_s": round(loaded - started, 1),
            "open_images_s": round(opened - loaded, 1), "images_opened": images_opened,
            "peak_rss_after_load_mb": round(rss_after_load),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=VAL2014_QUESTIONS)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--image-kb", type=int, default=2)
    parser.add_argument("--images", type=int, default=None, help="open only the first N images (default: all)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.images)))
        return
    with tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()
        write_split(Path(home), args.questions, args.shards, args.image_kb)
        written = time.perf_counter() - started
        size = sum(p.stat().st_size for p in Path(home).rglob("*.parquet"))
        command = [sys.executable, __file__, "--measure", home]
        command += ["--images", str(args.images)] if args.images else []
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        result.update(write_s=round(written, 1), parquet_mb=round(size / 2**20))
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
