"""Benchmark: whole-process time of `evalkit --help` (or any evalkit command) for two checkouts, interleaved.

    python benchmarks/cli_startup_bench.py --before /path/to/old/checkout [--runs 15] [-- list tasks]

Each round runs the command once with ``PYTHONPATH=<before checkout>`` and once with this checkout, alternating
which goes first, in fresh interpreters (as the `evalkit` console script does: import evalkit.cli.main, call
main). Prints each side's median, min and max wall seconds and the 1-minute load average before and after, since
other processes on the machine move these numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY = "import sys; from evalkit.cli.main import main; sys.argv[0] = 'evalkit'; sys.exit(main())"


def timed_run(checkout: Path, args: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(checkout), COLUMNS="100")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", ENTRY, *args], env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the checkout to compare with")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("args", nargs="*", default=["--help"])
    a = parser.parse_args()
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {"before": [], "after": []}
    for k in range(a.runs):
        order = [("before", a.before), ("after", ROOT)]
        for name, checkout in (order if k % 2 == 0 else order[::-1]):
            times[name].append(timed_run(checkout, a.args))
    print(f"evalkit {' '.join(a.args)}: {a.runs} interleaved runs each; load average (1 min) "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    for name, values in times.items():
        print(f"{name:>6}: median {statistics.median(values):.3f} s  min {min(values):.3f}  max {max(values):.3f}")


if __name__ == "__main__":
    main()
