"""How much wider compare's interval gets when it resamples images instead of questions.

    python benchmarks/cluster_bootstrap_widening.py BASELINE_RUN CANDIDATE_RUN [--n-boot 2000]
    python benchmarks/cluster_bootstrap_widening.py --synthetic [--n-boot 2000]

With two run folders (e.g. the bundled tiny models on the full shapes-vqa split), it runs `compare` and prints,
per metric, the 95% interval resampling images (clusters of questions; the verdict's interval) and resampling
questions one by one (the secondary line), their widths and the ratio. ``--synthetic`` does the same on a set
with strong within-image correlation: 200 images x 5 questions whose accuracy change is mostly shared by all
questions of an image (an image-level effect of -100/0/0/+100 points plus a little per-question noise).
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def widths_of_runs(base: str, cand: str, n_boot: int) -> list[dict]:
    from evalkit.analysis.compare import compare_runs
    from evalkit.analysis.results_index import load_run

    result = compare_runs(load_run(base), load_run(cand), n_boot=n_boot, allow_protocol_change=True)
    if not result["comparable"]:
        raise SystemExit(result["message"])
    rows = []
    for row in result["metrics"]:
        item = row.get("unclustered_ci")
        if item is None or row["ci_low"] is None:
            continue
        rows.append({"metric": row["metric"], "units": result["units"], "clusters": result["clusters"],
                     "clustered": (row["ci_low"], row["ci_high"]), "unclustered": (item["ci_low"], item["ci_high"])})
    return rows


def widths_of_synthetic(n_boot: int, g: int = 200, m: int = 5, seed: int = 0) -> list[dict]:
    from evalkit.metrics.bootstrap import cluster_index, paired_bootstrap, ratio_diff

    rng = np.random.default_rng(seed)
    effect = rng.choice([-100.0, 0.0, 0.0, 100.0], size=g)
    noise = rng.choice([0.0] * 8 + [-100.0, 100.0], size=(g, m))
    base = np.full((g, m), 50.0)
    cand = np.clip(base + effect[:, None] + noise, 0, 100)
    labels = np.repeat(np.arange(g), m)
    fn = {"accuracy": ratio_diff("questions", base.ravel(), cand.ravel())}
    sizes = {"questions": g * m}
    clustered = paired_bootstrap(fn, sizes, {}, n_boot, 0, 0.95, {"questions": cluster_index(labels.tolist())})
    plain = paired_bootstrap(fn, sizes, {}, n_boot, 0, 0.95)
    diff = (cand - base)
    within = np.mean([np.corrcoef(diff[:, a], diff[:, b])[0, 1] for a in range(m) for b in range(m) if a < b])
    return [{"metric": f"accuracy (synthetic, mean within-image correlation {within:.2f})",
             "units": sizes, "clusters": {"questions": {"by": "images", "count": g}},
             "clustered": (clustered["accuracy"].low, clustered["accuracy"].high),
             "unclustered": (plain["accuracy"].low, plain["accuracy"].high)}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*")
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--n-boot", type=int, default=2000)
    args = parser.parse_args()
    rows = widths_of_synthetic(args.n_boot) if args.synthetic else widths_of_runs(*args.runs, args.n_boot)
    print("| metric | samples | clusters | 95% CI by image | width | 95% CI by question | width | ratio |")
    print("|:---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        (cl, ch), (ul, uh) = r["clustered"], r["unclustered"]
        n = sum(r["units"].values())
        g = sum(c["count"] for c in r["clusters"].values())
        print(f"| {r['metric']} | {n} | {g} | [{cl:+.2f}, {ch:+.2f}] | {ch - cl:.2f} | [{ul:+.2f}, {uh:+.2f}] | "
              f"{uh - ul:.2f} | " + (f"{(ch - cl) / (uh - ul):.2f}x |" if uh > ul else "— |"))
    print(json.dumps({"n_boot": args.n_boot}))


if __name__ == "__main__":
    main()
