"""Benchmark: whole-process time of `evalkit --help` (or any evalkit command) for two checkouts, interleaved.

    python benchmarks/cli_startup_bench.py --before /path/to/old/checkout [--runs 15] [-- list tasks]

Each round runs the command once with ``PYTHONPATH=<before checkout>`` and once with this checkout, alternating
which goes first, in fresh interpreters (as the `evalkit` console script does: import evalkit.cli.main, call
main). Prints each side's median, min and max wall seconds and CPU seconds (user + system; less moved by other
processes than the wall time) and the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY = "import sys; from evalkit.cli.main import main; sys.argv[0] = 'evalkit'; sys.exit(main())"


def timed_run(checkout: Path, args: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the child) of one whole process."""
    env = dict(os.environ, PYTHONPATH=str(checkout), COLUMNS="100")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # cwd "/": with -c, the working directory comes first on sys.path and would shadow PYTHONPATH's checkout
    subprocess.run([sys.executable, "-c", ENTRY, *args], env=env, cwd="/", stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the checkout to compare with")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("args", nargs="*", default=["--help"])
    a = parser.parse_args()
    load_before = os.getloadavg()[0]
    times: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    for k in range(a.runs):
        order = [("before", a.before), ("after", ROOT)]
        for name, checkout in (order if k % 2 == 0 else order[::-1]):
            times[name].append(timed_run(checkout, a.args))
    print(f"evalkit {' '.join(a.args)}: {a.runs} interleaved runs each; load average (1 min) "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    for name, values in times.items():
        wall, cpu = [v[0] for v in values], [v[1] for v in values]
        print(f"{name:>6}: wall median {statistics.median(wall):.3f} s (min {min(wall):.3f}, max {max(wall):.3f}); "
              f"CPU median {statistics.median(cpu):.3f} s (min {min(cpu):.3f}, max {max(cpu):.3f})")


if __name__ == "__main__":
    main()
