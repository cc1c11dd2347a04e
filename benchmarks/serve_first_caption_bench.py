"""Benchmark: from `evalkit serve` to the first caption, on CPU with a bundled tiny model.

    python benchmarks/serve_first_caption_bench.py [--model blip2-tiny-opt] [--repeats 3]

Each repeat starts `evalkit serve --device cpu` on 127.0.0.1 and a free port in a fresh process, polls the page
until it answers (``ready``), then asks for a caption of a bundled shapes image through gradio_client (the
first caption loads the model: ``first caption``), and a second one (model loaded: ``next caption``). Times
are wall-clock seconds from the command's start; the machine's other load counts.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from evalkit.demo.bundled import SHAPES_DIR

IMAGE = SHAPES_DIR / "images" / "shapes_test_000001.png"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def one_start(model: str) -> dict[str, float]:
    from gradio_client import Client, handle_file

    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    with tempfile.TemporaryDirectory() as results:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "evalkit", "serve", "--device", "cpu", "--results", results,
                                    "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
        try:
            while True:
                try:
                    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5):
                        break
                except OSError:
                    if process.poll() is not None:
                        raise SystemExit("evalkit serve exited before it answered")
                    time.sleep(0.1)
            ready = time.perf_counter() - start
            client = Client(url, verbose=False)
            controls = client.predict(model, "caption", api_name="/settings_for")[-9:]
            timings = {"ready": ready}
            for label in ("first caption", "next caption"):
                caption, _, status = client.predict(handle_file(str(IMAGE)), model, "caption", "", *controls,
                                                    api_name="/answer")[:3]
                assert caption and not status, status
                timings[label] = time.perf_counter() - start
            timings["caption"] = caption
            return timings
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="blip2-tiny-opt")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = [one_start(args.model) for _ in range(args.repeats)]
    print(f"evalkit serve --device cpu, {args.model}, {args.repeats} starts; caption: {runs[0]['caption']!r}")
    print("| from `evalkit serve` to | median s | min s | max s |")
    print("|---|---:|---:|---:|")
    for label in ("ready", "first caption", "next caption"):
        values = [r[label] for r in runs]
        print(f"| {label} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |")


if __name__ == "__main__":
    main()
