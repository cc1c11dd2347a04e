"""The peak-RSS benchmark of benchmarks/hub_vqa_rss_bench.py runs (at a small size) through the hub path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "hub_vqa_rss_bench.py"


def test_rss_benchmark_runs_small():
    proc = subprocess.run([sys.executable, str(BENCH), "--questions", "2000", "--shards", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    images = round(2000 * 40504 / 214354)  # what the bench writes: val2014's questions per image
    assert result["questions"] == 2000 and result["images"] == images
    # every image came back decoded (the bench counts what open() returns, apart from the number of keys)
    assert result["images_opened"] == images and 0 < result["peak_rss_mb"] < 4096
