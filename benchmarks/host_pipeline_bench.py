"""Host-side throughput: decode + LAVIS preprocessing of real COCO JPEGs through evalkit's own prefetcher.

Measures images/s with 1 worker (the single-core rate) and with N workers, at each image size, and checks the
issue-12 target: rate(N workers) >= 0.7 x N x rate(1 worker). Prints one JSON object.

``--pipeline device`` also measures the opt-in device pipeline's host side: the workers only decode to a uint8
tensor (``decode_uint8``, the same at every size), and, apart, ``DevicePixelValues`` per image on this
machine's CPU (a GPU does that step on the device; this number is not a GPU time).

    python benchmarks/host_pipeline_bench.py --workers 1 2 --sizes 224 364 --loops 12 --repeats 5
    python benchmarks/host_pipeline_bench.py --pipeline lavis device
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from evalkit.data.images import ImageSource
from evalkit.inference.image_prefetch import ImagePrefetcher
from evalkit.models.device_image_pipeline import PIPELINE as DEVICE_PIPELINE
from evalkit.models.device_image_pipeline import DevicePixelValues, decode_uint8
from evalkit.models.image_preprocessing import lavis_pixel_values

COCO = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "coco_val2017" / "val2017"
MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def rate(keys: list[str], size: int, workers: int, batch: int, decode_only: bool = False) -> tuple[float, float]:
    """(images/s of wall time, process CPU seconds) of decode + preprocess for ``keys`` in batches of ``batch``
    with ``workers`` threads; ``decode_only``: the device pipeline's worker side (decode to uint8, no resize)."""
    batches = [keys[i:i + batch] for i in range(0, len(keys), batch)]
    one = decode_uint8 if decode_only else lambda image: lavis_pixel_values([image], size, MEAN, STD)[0]
    started, cpu = time.perf_counter(), time.process_time()
    with ImagePrefetcher(ImageSource(), batches, one, workers, skip_bad=False) as prefetch:
        for index in range(len(batches)):
            loaded, _ = prefetch.take(index)
            if not decode_only:  # what the runner does with a batch (device: the uint8 list goes to the device)
                torch.stack(list(loaded.values()))
    return len(keys) / (time.perf_counter() - started), time.process_time() - cpu


def summarise(runs: dict[int, list[tuple[float, float]]], images: int) -> dict:
    """Median img/s per worker count, and the issue-12 target against 1 worker."""
    per_workers = {}
    for workers, measured in runs.items():
        per_workers[workers] = {"median_img_s": round(statistics.median(r for r, _ in measured), 1),
                                "runs": [round(r, 1) for r, _ in measured],
                                "img_per_cpu_s": round(images / statistics.median(c for _, c in measured), 1)}
    single = per_workers.get(1, {}).get("median_img_s")
    if single:
        for workers, measured in per_workers.items():
            if workers > 1:
                target = 0.7 * workers * single
                measured["target_img_s"] = round(target, 1)
                measured["speedup"] = round(measured["median_img_s"] / single, 2)
                measured["meets_target"] = measured["median_img_s"] >= target
    return per_workers


def device_cpu_ms_per_image(files: list[str], size: int, repeats: int) -> float:
    """Median milliseconds per image of ``DevicePixelValues`` on the CPU (decoded images, batches of all)."""
    images = [decode_uint8(ImageSource().open(f)) for f in files]
    pixel_values = DevicePixelValues(size, MEAN, STD, torch.device("cpu"))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        pixel_values(images)
        times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times) / len(images), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=COCO)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 364])
    parser.add_argument("--loops", type=int, default=12, help="passes over the images per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per setting (the median is kept)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch intra-op threads (1: each worker is one core's work)")
    parser.add_argument("--pipeline", nargs="+", choices=["lavis", "device"], default=["lavis"],
                        help="lavis: decode + LAVIS preprocessing in the workers (the 'sizes' key); device: "
                             "decode only in the workers, plus DevicePixelValues on the CPU (the 'device' key)")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    files = sorted(str(p) for p in args.images.glob("*.jpg"))
    # distinct keys per pass so nothing is cached between passes (ImageSource opens the file each time)
    keys = [f for _ in range(args.loops) for f in files]
    rate(keys[:len(files)], args.sizes[0], 1, args.batch)  # warm-up: imports, page cache
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    result = {"images": len(files), "per_measurement": len(keys), "repeats": args.repeats, "cores": cores,
              "torch_threads": args.torch_threads, "sizes": {}}
    if "lavis" in args.pipeline:
        for size in args.sizes:
            runs: dict[int, list[tuple[float, float]]] = {w: [] for w in args.workers}
            for _ in range(args.repeats):  # settings interleaved, so load from other processes hits them alike
                for workers in args.workers:
                    runs[workers].append(rate(keys, size, workers, args.batch))
            result["sizes"][str(size)] = {"workers": summarise(runs, len(keys))}
    if "device" in args.pipeline:
        runs = {w: [] for w in args.workers}
        for _ in range(args.repeats):
            for workers in args.workers:
                runs[workers].append(rate(keys, args.sizes[0], workers, args.batch, decode_only=True))
        result["device"] = {
            "pipeline": DEVICE_PIPELINE, "worker_side_decode_only": {"workers": summarise(runs, len(keys))},
            "pixel_values_on_cpu_ms_per_image": {str(s): device_cpu_ms_per_image(files, s, args.repeats)
                                                 for s in args.sizes},
            "note": "pixel_values_on_cpu is DevicePixelValues on this machine's CPU, not a GPU time"}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
