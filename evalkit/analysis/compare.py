"""`evalkit compare`: is the candidate run better or worse than the baseline, beyond sampling noise?

Two runs of the same task on the same samples are compared metric by metric: the difference
(candidate - baseline) of the official numbers, a paired-bootstrap confidence interval (see
evalkit.metrics.bootstrap) and a verdict with a tolerance ``tol`` (absolute points, 0-100 scale):

* ``regression``: the CI's upper bound < -tol (the candidate is worse by more than tol, at 95%);
* ``improvement``: the CI's lower bound > +tol;
* ``no significant change``: otherwise.

Resampling units and statistics belong to the task kind (``TaskKind.paired_statistics``): images
for captioning (corpus CIDEr and BLEU re-scored on each resample; METEOR, ROUGE-L and SPICE as
per-image means), questions for VQA resampled by image (the questions about one image are one
cluster, ``TaskKind.cluster_key``; the question-level interval is kept as a labelled secondary
line), and for retrieval the image queries (txt_r*) and the text queries (img_r*), drawn
independently in each resample.

Beside the bootstrap, an exact paired test: the sign test on flips (samples, and clusters of samples,
whose per-sample score went up or down; evalkit.metrics.paired_tests), with the flipped sample ids.

Before any number is shown both records are checked (evalkit.analysis.record_check) and the kind's
exact re-scoring of each run must equal its run.json; a record that disagrees with itself is one line
naming the file and field, exit 2. Runs made under different torch/transformers versions or precision
settings get a warning line (``strict_env``: not comparable).

Exit codes (for CI): 0 no regression, 1 at least one metric regressed, 2 the runs are not
comparable (different task, data, sample ids, scorer or protocol; ``allow_protocol_change`` lets
a deliberate protocol change through; with ``strict_env`` a different environment) or a record lies.
"""

from __future__ import annotations

import json
from typing import Iterable

from evalkit.core.errors import EvalkitError, NotComparableError
from evalkit.kinds import kind_named
from evalkit.metrics.bootstrap import Interval, paired_bootstrap, verdict
from evalkit.metrics.paired_tests import flips
from evalkit.analysis.environment import environment_differences
from evalkit.analysis.record_check import check_record, check_rescored
from evalkit.analysis.reference_numbers import like_for_like_differences, references_for_run, run_model_names
from evalkit.analysis.results_index import RunInfo
from evalkit.core.protocol import overrides_text

EXIT_OK, EXIT_REGRESSION, EXIT_NOT_COMPARABLE = 0, 1, 2


def run_summary(run: RunInfo) -> dict:
    """What identifies a run in compare/report output."""
    return {"path": str(run.path), "run_id": run.run_id, "model": run.model, "task": run.task, "split": run.split,
            "created": run.created, "protocol_fingerprint": run.fingerprint, "overrides": run.overrides,
            "reportable": run.reportable, "not_reportable_reasons": run.not_reportable_reasons,
            "n_samples": (run.record.get("counts") or {}).get("samples")}


def _short(value, n: int = 16) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= n else text[:n - 4] + "…"


def comparability(base: RunInfo, cand: RunInfo, allow_protocol_change: bool = False,
                  strict_env: bool = False) -> tuple[list[dict], list[str]]:
    """(blocking differences, notes). Each difference names the run.json field that differs."""
    blocking: list[dict] = []
    notes: list[str] = []
    for env in environment_differences(base.record, cand.record):
        if strict_env:
            blocking.append({**env, "why": "different environment (--strict-env)"})
    bh, ch = base.record.get("journal_header") or {}, cand.record.get("journal_header") or {}

    def differ(field: str, a, b, why: str) -> None:
        blocking.append({"field": field, "baseline": a, "candidate": b, "why": why})

    if base.task != cand.task:
        differ("task.name", base.task, cand.task, "different tasks")
    elif str(base.record["task"].get("version")) != str(cand.record["task"].get("version")):
        differ("task.version", base.record["task"].get("version"), cand.record["task"].get("version"),
               "different versions of the task")
    if bh.get("data") != ch.get("data"):
        differ("journal_header.data", bh.get("data"), ch.get("data"),
               "different data (annotation files, split or --limit)")
    if bh.get("sample_ids") != ch.get("sample_ids"):
        differ("journal_header.sample_ids", bh.get("sample_ids"), ch.get("sample_ids"), "different samples")
    if base.kind == cand.kind:
        kind = kind_named(base.kind)
        settings_b, settings_c = kind.scorer_settings(base.record), kind.scorer_settings(cand.record)
        for name in sorted(set(settings_b) | set(settings_c)):
            if settings_b.get(name) != settings_c.get(name):
                differ(name, settings_b.get(name), settings_c.get(name), "scored with different scorer settings")
    if base.fingerprint != cand.fingerprint:
        fields = protocol_differences(base, cand)
        shown = ", ".join(f"{k}: {_short(a, 48)} -> {_short(b, 48)}" for k, (a, b) in fields.items()) or "?"
        if allow_protocol_change:
            notes.append(f"protocols differ ({shown}); compared deliberately (--allow-protocol-change)")
        else:
            why = f"different decoding protocols ({shown})"
            if not base.overrides and not cand.overrides:
                why += "; both are the task's default protocol for their model family"
            differ("protocol_fingerprint", base.fingerprint, cand.fingerprint,
                   why + "; pass --allow-protocol-change to compare them deliberately")
    if not base.metrics or not cand.metrics:
        differ("metrics", bool(base.metrics), bool(cand.metrics), "a run without metrics (a split without answers)")
    if base.path.resolve() == cand.path.resolve():
        notes.append("baseline and candidate are the same run folder")
    if bh.get("weights_sha256") and bh.get("weights_sha256") == ch.get("weights_sha256"):
        notes.append("same model weights in both runs")
    for label, run in (("baseline", base), ("candidate", cand)):
        if not run.reportable:
            notes.append(f"{label} is not reportable: {'; '.join(run.not_reportable_reasons) or 'see run.json'}")
    return blocking, notes


def protocol_differences(base: RunInfo, cand: RunInfo) -> dict[str, tuple]:
    """Protocol fields whose values differ between the two runs."""
    a, b = base.record.get("protocol") or {}, cand.record.get("protocol") or {}
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def not_comparable_message(blocking: list[dict]) -> str:
    """One line naming each field that differs."""
    parts = [f"{d['field']} differs ({_short(d['baseline'])} vs {_short(d['candidate'])}: {d['why']})"
             for d in blocking]
    return "runs are not comparable: " + "; ".join(parts)


def sample_flips(base: RunInfo, cand: RunInfo) -> dict:
    """Samples whose per-sample score (the kind's ``sample_value``, higher is better) went up or down, counted
    per sample and per cluster (the kind's ``cluster_key``), each with the exact sign test's p-value."""
    kind = base.task_kind
    scores_b, scores_c = base.sample_scores(), cand.sample_scores()
    preds_b = base.predictions()
    differences, clusters = {}, {}
    for sample_id, line in preds_b.items():
        b, c = kind.sample_value(sample_id, scores_b), kind.sample_value(sample_id, scores_c)
        if b is None or c is None:
            continue
        differences[sample_id] = c - b
        clusters[sample_id] = line.get(kind.cluster_key) or f"sample:{sample_id}"
    counted = flips(differences, clusters)
    eps = 1e-9
    return {"score": kind.sample_score, "cluster": kind.cluster_label, "items": counted["items"],
            "clusters": counted["clusters"],
            "improved": [i for i, d in differences.items() if d > eps],
            "regressed": [i for i, d in differences.items() if d < -eps],
            "test": f"exact sign test on {kind.cluster_label} (mean change of each one's {kind.sample_score}); on "
                    "items it is McNemar's exact test for 0/1 scores"}


def changed_samples(base: RunInfo, cand: RunInfo) -> list[dict]:
    """Samples whose prediction (or, for retrieval, the rank of the first right caption) changed."""
    preds_b, preds_c = base.predictions(), cand.predictions()
    scores_b, scores_c = base.sample_scores(), cand.sample_scores()
    kind = kind_named(base.kind)
    score_name, prefix = kind.sample_score, kind.sample_score_prefix
    changed = []
    for sample_id, line in preds_b.items():
        other = preds_c.get(sample_id)
        if other is None:
            continue
        key = prefix + sample_id
        sb = (scores_b.get(key) or {}).get(score_name)
        sc = (scores_c.get(key) or {}).get(score_name)
        if line.get("prediction", "") != other.get("prediction", "") or sb != sc:
            changed.append({"id": sample_id, "baseline": line.get("prediction", ""),
                            "candidate": other.get("prediction", ""), "score": score_name,
                            "baseline_score": sb, "candidate_score": sc})
    return changed


def compare_runs(base: RunInfo, cand: RunInfo, *, n_boot: int = 1000, seed: int = 0, tolerance: float = 0.0,
                 metrics: Iterable[str] | None = None, allow_protocol_change: bool = False,
                 level: float = 0.95, strict_env: bool = False) -> dict:
    """The full comparison as plain data; ``result["exit_code"]`` is 0, 1 or 2 (see module docstring)."""
    if tolerance < 0:
        raise EvalkitError(f"--tolerance must be >= 0 (got {tolerance})")
    check_record(base)
    check_record(cand)
    blocking, notes = comparability(base, cand, allow_protocol_change, strict_env)
    env = environment_differences(base.record, cand.record)
    result = {"baseline": run_summary(base), "candidate": run_summary(cand), "task": base.task, "kind": base.kind,
              "environment_differences": env,
              "warnings": [environment_warning(env)] if env else [],
              "notes": notes, "tolerance": tolerance, "n_boot": n_boot, "seed": seed, "level": level,
              "verdict_rule": f"tol = {tolerance:g}: regression if the CI's upper bound < -tol, improvement if "
                              "its lower bound > +tol, else no significant change",
              "protocol_change": base.fingerprint != cand.fingerprint}
    if blocking:
        return {**result, "comparable": False, "differences": blocking, "exit_code": EXIT_NOT_COMPARABLE,
                "message": not_comparable_message(blocking)}
    names = [m for m in base.metrics if m in cand.metrics]
    if metrics:
        wanted = list(metrics)
        unknown = [m for m in wanted if m not in names]
        if unknown:
            raise EvalkitError(f"metric {unknown[0]!r} is not in both runs (metrics: {', '.join(names)})")
        names = [m for m in names if m in wanted]
    try:
        stats = kind_named(base.kind).paired_statistics(base, cand, names)
    except NotComparableError as err:
        return {**result, "comparable": False, "differences": err.differences, "exit_code": EXIT_NOT_COMPARABLE,
                "message": not_comparable_message(err.differences)}
    for name, (b, c) in stats.rescored.items():
        check_rescored(base, name, b)
        check_rescored(cand, name, c)
    fns, sizes, method, unit, no_ci = stats.functions, stats.unit_sizes, stats.method, stats.unit, stats.no_interval
    observed = {m: cand.metrics[m] - base.metrics[m] for m in names}
    clusters = {u: index for u, (_, index) in stats.clusters.items()}
    intervals: dict[str, Interval] = paired_bootstrap(fns, sizes, observed, n_boot, seed, level, clusters) \
        if fns else {}
    # the same statistics with every sample drawn on its own: the interval that ignores the clusters
    clustered = {m: f for m, f in fns.items() if unit.get(m) in clusters}
    unclustered = paired_bootstrap(clustered, sizes, observed, n_boot, seed, level) if clustered else {}
    higher = {m: base.task_kind.higher_is_better(m) for m in names}
    rows = []
    for name in names:
        ci, item = intervals.get(name), unclustered.get(name)
        row_unit = unit.get(name, "")
        rows.append({"metric": name, "baseline": base.metrics[name], "candidate": cand.metrics[name],
                     "difference": observed[name], "ci_low": ci.low if ci else None,
                     "ci_high": ci.high if ci else None, "higher_is_better": higher[name],
                     "verdict": verdict(ci.low if ci else None, ci.high if ci else None, tolerance, higher[name]),
                     "method": method.get(name) or no_ci.get(name, ""), "unit": row_unit,
                     "resampled": stats.clusters[row_unit][0] if row_unit in stats.clusters else row_unit,
                     "n": sizes.get(row_unit, sum(sizes.values()) if row_unit else None),
                     "rescored_difference": ci.full if ci else None, "std_error": ci.std_error if ci else None,
                     "unclustered_ci": None if item is None else
                     {"unit": row_unit, "ci_low": item.low, "ci_high": item.high, "std_error": item.std_error}})
    changed = changed_samples(base, cand)
    regressions = [r["metric"] for r in rows if r["verdict"] == "regression"]
    return {**result, "comparable": True, "units": sizes,
            "clusters": {u: {"by": label, "count": int(index.max()) + 1} for u, (label, index) in stats.clusters.items()},
            "metrics": rows, "regressions": regressions,
            "improvements": [r["metric"] for r in rows if r["verdict"] == "improvement"],
            "flips": sample_flips(base, cand),
            "changed_samples": {"count": len(changed), "of": len(base.predictions()), "samples": changed},
            "exit_code": EXIT_REGRESSION if regressions else EXIT_OK}


def environment_warning(differences: list[dict]) -> str:
    """One line: what differs in the two runs' environments, and why it matters."""
    parts = [f"{d['what']} {d['baseline']} vs {d['candidate']}" for d in differences]
    return ("the runs were made in different environments (" + "; ".join(parts) + "): the same weights can give "
            "different numbers under another library version or precision; --strict-env makes this exit 2")


def compare_with_reference(run: RunInfo, which: str = "paper") -> dict:
    """A run's metrics against the published numbers (no CI: the paper gives none)."""
    kinds = {"paper": ("paper",), "lavis": ("lavis",), "all": ("paper", "lavis")}
    if which not in kinds:
        raise EvalkitError(f"--reference must be paper, lavis or all (got {which!r})")
    refs = [r for r in references_for_run(run.record) if r.kind in kinds[which]]
    if not refs:
        from evalkit.analysis.reference_numbers import load_references

        names = run_model_names(run.record)
        known = sorted({f"{r.task}/{r.split}" for r in load_references() if r.model in names and r.kind in kinds[which]})
        hint = f"; {which} numbers exist for this model on: {', '.join(known)}" if known else \
            "; see evalkit/analysis/reference_numbers.json for the models and tasks covered"
        raise EvalkitError(f"no {which} reference numbers for model {run.model} on {run.task} split "
                           f"{run.split or '?'}{hint}")
    notes = []
    if not run.reportable:
        notes.append(f"this run is not reportable: {'; '.join(run.not_reportable_reasons)}")
    rows = []
    for ref in refs:
        value = run.metrics.get(ref.metric)
        rows.append({"metric": ref.metric, "value": value, "reference": ref.value,
                     "difference": None if value is None else value - ref.value, "kind": ref.kind,
                     "source": ref.source, "source_text": ref.source_text, "protocol": ref.protocol,
                     "derived": ref.derived, "differences": like_for_like_differences(ref, run.record)})
    for row in rows:
        if row["differences"]:
            notes.append(f"{row['metric']} ({row['kind']}): not like-for-like: {'; '.join(row['differences'])}")
    return {"run": run_summary(run), "reference": which, "rows": rows, "notes": notes, "exit_code": EXIT_OK}


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------


def _fmt(value, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def md_escape(text: str) -> str:
    """A string safe inside a Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    align = align or ["l"] * len(header)
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |",
             "|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _describe(summary: dict) -> str:
    text = f"{summary['model']} · {summary['task']} ({summary['split']}) · run {summary['run_id']} · " \
           f"protocol {summary['protocol_fingerprint'][:8]}"
    if summary.get("overrides"):
        text += f" ({overrides_text(summary['overrides'])})"
    return text + f" · {summary['path']}"


def render_comparison(result: dict, show_changed: int = 10) -> str:
    """Markdown: header lines, the metric table, the changed samples."""
    out = [f"**baseline**: {_describe(result['baseline'])}  ", f"**candidate**: {_describe(result['candidate'])}", ""]
    out += [f"**warning**: {w}" for w in result.get("warnings", [])]
    if result.get("warnings"):
        out.append("")
    if not result["comparable"]:
        out.append(f"**not comparable** (exit {result['exit_code']}):")
        out += [f"- `{d['field']}` differs: {_short(d['baseline'])} vs {_short(d['candidate'])} — {d['why']}"
                for d in result["differences"]]
        return "\n".join(out) + "\n"
    level = int(round(result["level"] * 100))
    clusters = result.get("clusters", {})
    units = ", ".join(f"{n} {u}" + (f" resampled as {clusters[u]['count']} {clusters[u]['by']} (clusters)"
                                    if u in clusters else "") for u, n in result["units"].items())
    out.append(f"Paired bootstrap over {units}; {result['n_boot']} resamples, seed {result['seed']}; "
               f"{result['verdict_rule']} (points, 0-100 scale).")
    out.append("")
    rows = [[r["metric"], _fmt(r["baseline"]), _fmt(r["candidate"]), _fmt(r["difference"], signed=True),
             "—" if r["ci_low"] is None else f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]", r["verdict"], r["method"]]
            for r in result["metrics"]]
    out.append(_md_table(["metric", "baseline", "candidate", "Δ (cand − base)", f"{level}% CI", "verdict", "method"],
                         rows, ["l", "r", "r", "r", "r", "l", "l"]))
    out.append("")
    secondary = [f"{r['metric']} [{r['unclustered_ci']['ci_low']:+.2f}, {r['unclustered_ci']['ci_high']:+.2f}]"
                 for r in result["metrics"] if r.get("unclustered_ci")]
    if secondary:
        unit = next(r["unit"] for r in result["metrics"] if r.get("unclustered_ci"))
        out.append(f"Secondary, {unit} resampled one by one ({level}% CI; treats the {unit} about one image as "
                   f"independent, so it is too narrow when their answers are correlated): {', '.join(secondary)}.")
        out.append("")
    flipped = result.get("flips")
    if flipped:
        items, groups = flipped["items"], flipped["clusters"]
        out.append(f"Flips ({flipped['score']}): {items['improved']} samples improved, {items['regressed']} "
                   f"regressed, {items['tied']} unchanged (sign test p = {items['p_value']:.3g}); over "
                   f"{flipped['cluster']}: {groups['improved']} improved, {groups['regressed']} regressed, "
                   f"{groups['tied']} unchanged (exact sign test p = {groups['p_value']:.3g}).")
        out.append("")
    for note in result["notes"]:
        out.append(f"- note: {note}")
    changed = result["changed_samples"]
    out.append(f"\nChanged predictions: {changed['count']} of {changed['of']} samples"
               + (f" (first {min(show_changed, changed['count'])}; all in --json)" if changed["count"] else "") + ".")
    if changed["count"] and show_changed > 0:
        out.append("")
        out.append(_md_table(["id", "baseline", "candidate", f"{changed['samples'][0]['score']} base → cand"],
                             [[s["id"], _clip(s["baseline"]), _clip(s["candidate"]),
                               f"{_fmt(s['baseline_score'])} → {_fmt(s['candidate_score'])}"]
                              for s in changed["samples"][:show_changed]]))
    verdict_line = ("REGRESSION in " + ", ".join(result["regressions"])) if result["regressions"] else "no regression"
    out.append(f"\nResult: {verdict_line} (exit {result['exit_code']}).")
    return "\n".join(out) + "\n"


def _clip(text: str, n: int = 80) -> str:
    text = str(text)
    return text if len(text) <= n else text[:n - 1] + "…"


def render_reference(result: dict) -> str:
    """Markdown table of a run against the reference numbers."""
    out = [f"**run**: {_describe(result['run'])}", ""]
    rows = [[r["metric"], _fmt(r["value"]), _fmt(r["reference"]), _fmt(r["difference"], signed=True),
             r["kind"] + (" (derived)" if r["derived"] else ""), "no" if r["differences"] else "yes", r["source_text"]]
            for r in result["rows"]]
    header = ["metric", "this run", "reference", "Δ (run − ref)", "kind", "like-for-like", "source"]
    out.append(_md_table(header, rows, ["l", "r", "r", "r", "l", "l", "l"]))
    out.append("")
    out.append("No confidence interval: the published numbers come without one.")
    for note in result["notes"]:
        out.append(f"- note: {note}")
    return "\n".join(out) + "\n"
