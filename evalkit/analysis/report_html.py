"""The self-contained HTML report: table, plots (inline SVG) and a per-run sample gallery.

Everything is inline (CSS, JS, images as base64 thumbnails): the page opens offline from a
file:// URL and never touches the network. Its size is bounded: per run the gallery holds the
``gallery_size`` worst samples plus up to ``gallery_size`` samples on which another run of the same
task (same data) answers differently, each with a ``thumb_px`` thumbnail (one per image file).
"""

from __future__ import annotations

import base64
import html
import io
import json
import sys
from pathlib import Path

from evalkit.analysis.report import Report, cell_text, footnotes, protocol_text
from evalkit.analysis.results_index import RunInfo

FLIP_MARK = {"better": "▲", "worse": "▼", "same score": "="}
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"]


def esc(value) -> str:
    return html.escape(str(value), quote=True)


# --------------------------------------------------------------------------------------------
# thumbnails
# --------------------------------------------------------------------------------------------


class Thumbnails:
    """Image path -> data: URI of a small JPEG thumbnail (each file read once); None if unreadable."""

    def __init__(self, size: int = 96):
        self.size = size
        self.cache: dict[str, str | None] = {}

    def resolve(self, image: str, run_dir: Path, base_dir: str = "") -> Path | None:
        """The image file: as recorded, below the folder the run was made in (``base_dir``), or the run folder."""
        if not image or image.startswith(("hf-row:", "hub-row:")):
            return None
        path = Path(image)
        for candidate in (path, Path(base_dir) / path if base_dir else None, run_dir / path):
            if candidate is not None and candidate.is_file():
                return candidate
        return None

    def uri(self, image: str, run_dir: Path, base_dir: str = "") -> str | None:
        path = self.resolve(image, run_dir, base_dir)
        if path is None:
            return None
        key = str(path.resolve())
        if key not in self.cache:
            self.cache[key] = self._encode(path)
        return self.cache[key]

    def _encode(self, path: Path) -> str | None:
        try:
            from PIL import Image

            with Image.open(path) as img:
                img = img.convert("RGB")
                img.thumbnail((self.size, self.size))
                buffer = io.BytesIO()
                img.save(buffer, format="JPEG", quality=80)
        except Exception:  # noqa: BLE001 - a broken image is shown as missing, never fatal
            return None
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# --------------------------------------------------------------------------------------------
# per-sample view of a run
# --------------------------------------------------------------------------------------------


_ROWS_CACHE: dict[int, tuple[RunInfo, list[dict]]] = {}


def sample_rows(run: RunInfo) -> list[dict]:
    """One entry per gallery sample: id, image, question, prediction, references, score (higher = better)."""
    cached = _ROWS_CACHE.get(id(run))
    if cached is not None and cached[0] is run:
        return cached[1]
    rows = _sample_rows(run)
    _ROWS_CACHE.clear() if len(_ROWS_CACHE) > 64 else None
    _ROWS_CACHE[id(run)] = (run, rows)
    return rows


def _sample_rows(run: RunInfo) -> list[dict]:
    preds, scores, kind = run.predictions(), run.sample_scores(), run.task_kind
    out = []
    for sample_id, line in preds.items():
        score = kind.sample_value(sample_id, scores)
        out.append({"id": sample_id, "image": line.get("image", ""), "prompt": line.get("prompt", ""),
                    "prediction": line.get("prediction", ""), "references": list(line.get("references") or []),
                    "status": line.get("status", "ok"), "score": score, "label": kind.sample_label(score)})
    return out


def _natural(sample_id: str) -> tuple:
    """Sort key: numeric ids by value (2 before 10), others as text after them."""
    return (0, int(sample_id), "") if sample_id.isdigit() else (1, 0, sample_id)


def _same_data(a: RunInfo, b: RunInfo) -> bool:
    ha, hb = a.record.get("journal_header") or {}, b.record.get("journal_header") or {}
    return a.task == b.task and ha.get("data") == hb.get("data") and ha.get("data") is not None


def run_label(run: RunInfo) -> str:
    return f"{run.model} · {protocol_text(run)} · run {run.run_id}"


def gallery_items(run: RunInfo, others: list[RunInfo], gallery_size: int) -> tuple[list[dict], int, int]:
    """(items worst-first with their worst-rank and disagreement flag, #samples, #disagreeing samples)."""
    rows = sample_rows(run)
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["score"] if rows[i]["score"] is not None else float("inf"),
                                                    _natural(rows[i]["id"])))
    worst_rank = {rows[i]["id"]: rank for rank, i in enumerate(order)}
    other_rows = [(o, {r["id"]: r for r in sample_rows(o)}) for o in others]
    disagree = {}
    for row in rows:
        diffs = []
        for other, by_id in other_rows:
            theirs = by_id.get(row["id"])
            if theirs is not None and (theirs["prediction"] != row["prediction"] or theirs["score"] != row["score"]):
                diffs.append({"run": run_label(other), "prediction": theirs["prediction"], "label": theirs["label"],
                              "flip": _flip(row["score"], theirs["score"])})
        if diffs:
            disagree[row["id"]] = diffs
    keep = [rows[i]["id"] for i in order[:gallery_size]]
    keep += [rows[i]["id"] for i in order if rows[i]["id"] in disagree][:gallery_size]
    keep = list(dict.fromkeys(keep))
    by_id = {r["id"]: r for r in rows}
    items = []
    for sample_id in sorted(keep, key=lambda i: worst_rank[i]):
        item = dict(by_id[sample_id])
        item["worst"] = worst_rank[sample_id]
        item["others"] = disagree.get(sample_id, [])
        items.append(item)
    return items, len(rows), len(disagree)


def _flip(mine: float | None, theirs: float | None) -> str:
    """How the other run did on this sample: 'better', 'worse' or 'same score' (higher is better)."""
    if mine is None or theirs is None or abs(theirs - mine) <= 1e-9:
        return "same score"
    return "better" if theirs > mine else "worse"


def flip_summaries(run: RunInfo, others: list[RunInfo]) -> list[str]:
    """Per other run of the same data: how many samples (and images) it answers better or worse than ``run``,
    with the exact sign test on images (evalkit.metrics.paired_tests)."""
    from evalkit.metrics.paired_tests import flips

    kind, mine = run.task_kind, {r["id"]: r for r in sample_rows(run)}
    out = []
    for other in others:
        theirs = {r["id"]: r for r in sample_rows(other)}
        diffs = {i: theirs[i]["score"] - r["score"] for i, r in mine.items()
                 if i in theirs and r["score"] is not None and theirs[i]["score"] is not None}
        if not diffs:
            continue
        counted = flips(diffs, {i: mine[i]["image"] or i for i in diffs})
        items, groups = counted["items"], counted["clusters"]
        out.append(f"{run_label(other)} vs this run: {items['improved']} samples better, {items['regressed']} worse "
                   f"({kind.sample_score}); per {kind.cluster_label}: {groups['improved']} better, "
                   f"{groups['regressed']} worse, exact sign test p = {groups['p_value']:.3g}")
    return out


def render_item(run: RunInfo, item: dict, thumbs: Thumbnails) -> str:
    uri = thumbs.uri(item["image"], run.path, (run.record.get("provenance") or {}).get("working_directory", ""))
    image = (f'<img class="thumb" alt="{esc(item["id"])}" src="{uri}">' if uri else
             '<div class="thumb noimg">no image</div>')
    kind = run.task_kind
    question = ""
    if kind.shows_prompt:
        prompt = item["prompt"] if len(item["prompt"]) <= 240 else "…" + item["prompt"][-239:]
        question = f'<div class="q">{esc(prompt)}</div>'
    others = "".join(f'<div class="other" data-flip="{esc(o["flip"])}">{FLIP_MARK[o["flip"]]} {esc(o["run"])}: '
                     f'<b>{esc(o["prediction"])}</b> ({esc(o["label"])}, {esc(o["flip"])})</div>'
                     for o in item["others"])
    failed = ' <span class="failed">failed</span>' if item["status"] != "ok" else ""
    return (f'<div class="item" data-worst="{item["worst"]}" data-disagree="{1 if item["others"] else 0}" '
            f'data-id="{esc(item["id"])}">{image}<div class="meta"><div class="sid">#{esc(item["id"])} · '
            f'<span class="score">{esc(item["label"])}</span>{failed}</div>{question}'
            f'<div class="pred">{kind.prediction_label}: <b>{esc(item["prediction"])}</b></div>'
            f'<div class="refs">{kind.references_label}: {esc(kind.references_text(item["references"]))}</div>'
            f'{others}</div></div>')


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------


def bar_chart(title: str, categories: list[str], series: list[tuple[str, list[float | None]]],
              y_label: str = "", y_max: float | None = None) -> str:
    """A grouped bar chart as inline SVG (categories on x, one bar per series)."""
    bar_w, gap, left, top, height = 18, 18, 48, 34, 180
    group_w = max(1, len(series)) * bar_w + gap
    legend_h = 16 * len(series)
    longest = max([len(name) for name, _ in series] + [0])
    width = int(max(left + max(1, len(categories)) * group_w + 20, left + 24 + 6.4 * longest, 8 * len(title) + 20))
    values = [v for _, vs in series for v in vs if v is not None]
    y_max = y_max or (max(values) if values else 1.0) or 1.0
    total_h = top + height + 44 + legend_h
    parts = [f'<svg class="chart" width="{width}" height="{total_h}" '
             f'role="img" aria-label="{esc(title)}">',
             f'<text x="{left}" y="16" class="ctitle">{esc(title)}</text>']
    for t in range(5):
        value = y_max * t / 4
        y = top + height - height * t / 4
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" class="tick" text-anchor="end">{value:.0f}</text>')
    if y_label:
        parts.append(f'<text x="10" y="{top + height / 2}" class="tick" transform="rotate(-90 10 {top + height / 2})" '
                     f'text-anchor="middle">{esc(y_label)}</text>')
    # the groups are centred in the plot area (a long title or legend widens the chart beyond them)
    start = left + max(0.0, (width - 10 - left - max(1, len(categories)) * group_w) / 2)
    for c, category in enumerate(categories):
        x0 = start + c * group_w + gap / 2
        for s, (name, vs) in enumerate(series):
            value = vs[c] if c < len(vs) else None
            if value is None:
                continue
            h = height * min(value, y_max) / y_max
            parts.append(f'<rect class="bar" x="{x0 + s * bar_w:.1f}" y="{top + height - h:.1f}" width="{bar_w - 2}" '
                         f'height="{h:.1f}" fill="{PALETTE[s % len(PALETTE)]}"><title>{esc(name)} · '
                         f'{esc(category)}: {value:.2f}</title></rect>')
        parts.append(f'<text x="{x0 + len(series) * bar_w / 2:.1f}" y="{top + height + 14}" class="tick" '
                     f'text-anchor="middle">{esc(category)}</text>')
    for s, (name, _) in enumerate(series):
        y = top + height + 30 + 16 * s
        parts.append(f'<rect x="{left}" y="{y - 9}" width="10" height="10" fill="{PALETTE[s % len(PALETTE)]}"/>')
        parts.append(f'<text x="{left + 14}" y="{y}" class="tick">{esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def breakdown_chart(task: str, runs: list[RunInfo]) -> str | None:
    """The kind's sub-scores (e.g. VQA accuracy by answer type), one bar per run."""
    per_run = [(run_label(run), parts) for run in runs if (parts := run.task_kind.breakdown(run.record))]
    if not per_run:
        return None
    categories = list(dict.fromkeys(c for _, parts in per_run for c in parts))
    series = [(label, [parts.get(c) for c in categories]) for label, parts in per_run]
    metric = runs[0].task_kind.sample_score
    return bar_chart(f"{task}: {metric} by {runs[0].task_kind.breakdown_label}", categories, series, metric, 100.0)


def distribution_chart(task: str, runs: list[RunInfo]) -> str | None:
    """Share of samples per bin of the kind's per-sample score (its ScoreHistogram)."""
    kind = runs[0].task_kind if runs else None
    if kind is None or kind.histogram is None:
        return None
    bins = kind.histogram.bins
    series = []
    for run in runs:
        values = kind.histogram_values(run.sample_scores())
        if not values:
            continue
        shares = [100.0 * sum(1 for v in values if lo <= v < hi) / len(values) for _, lo, hi in bins]
        series.append((run_label(run), shares))
    if not series:
        return None
    return bar_chart(kind.histogram.title.replace("{task}", task), [b[0] for b in bins], series,
                     kind.histogram.unit, 100.0)


# --------------------------------------------------------------------------------------------
# page
# --------------------------------------------------------------------------------------------


def _metric_cell_html(report: Report, cell, metric: str) -> str:
    value = cell.run.metrics.get(metric)
    if value is None:
        return '<td class="num na">n/a</td>'
    marks = ""
    ref = cell.reference(metric)
    sub = ""
    if ref is not None:
        number = report.footnote_number(ref.source)
        sub = (f'<div class="ref">ref {ref.value:.2f} [{number}] · Δ <span class="{"pos" if value >= ref.value else "neg"}">'
               f'{value - ref.value:+.2f}</span></div>')
        if cell.differences(metric):
            marks += " ‡"
    if not cell.run.reportable:
        marks += " †"
    classes = "num" + ("" if cell.run.reportable else " nr")
    title = esc(f"{cell.run.path} · {cell_text(report, cell, metric)}")
    se = cell.run.std_error(metric)
    pm = f'<span class="se"> ± {se:.2f}</span>' if se is not None else ""
    return f'<td class="{classes}" title="{title}"><b>{value:.2f}</b>{pm}{esc(marks)}{sub}</td>'


def table_html(report: Report) -> str:
    """The leaderboard as an HTML table (same content as the Markdown one)."""
    head1 = ['<th rowspan="2">model</th>']
    head2 = []
    for column in report.tasks:
        head1.append(f'<th colspan="{len(column.metrics) + 1}">{esc(column.name)}</th>')
        head2.append('<th>protocol</th>' + "".join(f"<th>{esc(m)}</th>" for m in column.metrics))
    body = []
    for model, row in report.rows:
        cells = [f'<td class="model">{esc(model)}</td>']
        for column in report.tasks:
            cell = row.get(column.name)
            if cell is None:
                cells.append('<td></td>' * (len(column.metrics) + 1))
                continue
            cells.append(f'<td class="proto" title="{esc(cell.run.fingerprint)}">{esc(protocol_text(cell.run))}'
                         f'<div class="ref">run {esc(cell.run.run_id)}</div></td>')
            cells += [_metric_cell_html(report, cell, metric) for metric in column.metrics]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="tablewrap"><table id="leaderboard"><thead><tr>{"".join(head1)}</tr>'
            f'<tr>{"".join(head2)}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def _missing_images_note(run: RunInfo, items: list[dict], thumbs: Thumbnails) -> str:
    """A visible warning (and one on stderr) when a run's sample images cannot be found from here."""
    base = (run.record.get("provenance") or {}).get("working_directory", "")
    files = [i["image"] for i in items if i["image"] and not i["image"].startswith(("hf-row:", "hub-row:"))]
    missing = [f for f in files if thumbs.resolve(f, run.path, base) is None]
    if not missing:
        return ""
    text = (f"{len(missing)} of {len(files)} sample images not found (first: {missing[0]}); paths are as the run "
            f"recorded them, relative to {base or 'the folder it was made in'}")
    print(f"warning: report: run {run.run_id}: {text}", file=sys.stderr)
    return f'<p class="warn">{esc(text)}</p>'


def _subtitle(report: Report, table: str) -> str:
    """What the page holds and how to read a cell; the Δ is explained only when a cell shows one (under its
    score, beside the published reference: there is no Δ column)."""
    text = f"{len(report.runs)} runs below {report.results_dir} · scores on the 0-100 scale"
    if 'class="ref"' in table:
        text += " · under a score with a published reference: ref value [source] · Δ = run − reference"
    return text


def build_html(report: Report, gallery_size: int = 30, thumb_px: int = 96) -> str:
    """The whole page as one string."""
    thumbs = Thumbnails(thumb_px)
    notes = "".join(f"<li>{esc(n)}</li>" for n in footnotes(report))
    by_task: dict[str, list[RunInfo]] = {}
    for _, row in report.rows:
        for task, cell in row.items():
            by_task.setdefault(task, []).append(cell.run)
    plots, sections = [], []
    for column in report.tasks:
        runs = by_task.get(column.name, [])
        chart = breakdown_chart(column.name, runs)
        if chart:
            plots.append(chart)
        try:
            chart = distribution_chart(column.name, runs)
        except Exception:  # noqa: BLE001 - missing sample scores only cost the plot
            chart = None
        if chart:
            plots.append(chart)
        run_blocks = []
        for run in runs:
            others = [o for o in runs if o is not run and _same_data(o, run)]
            try:
                items, n_samples, n_disagree = gallery_items(run, others, gallery_size)
            except Exception as err:  # noqa: BLE001 - a run without predictions still gets a table cell
                run_blocks.append(f'<div class="run"><h3>{esc(run_label(run))}</h3>'
                                  f'<p class="muted">no gallery: {esc(err)}</p></div>')
                continue
            rendered = "".join(render_item(run, item, thumbs) for item in items)
            summaries = "".join(f'<li>{esc(line)}</li>' for line in flip_summaries(run, others))
            flips_html = f'<ul class="flips">{summaries}</ul>' if summaries else ""
            run_blocks.append(
                f'<div class="run" data-run="{esc(run.run_id)}"><h3>{esc(run_label(run))}</h3>'
                f'{_missing_images_note(run, items, thumbs)}'
                f'<p class="muted">{n_samples} samples; shown: the {min(gallery_size, n_samples)} worst and up to '
                f'{gallery_size} of the {n_disagree} on which another run of this task answers differently · '
                f'<span class="run-visible">{len(items)}</span> visible</p>{flips_html}'
                f'<div class="gallery">{rendered}</div></div>')
        sections.append(f'<section class="task"><h2>{esc(column.name)} <span class="muted">({esc(column.kind)})'
                        f'</span></h2>{"".join(run_blocks)}</section>')
    table = table_html(report)
    page = (PAGE.replace("{{TITLE}}", esc(f"evalkit report · {report.results_dir}"))
            .replace("{{SUBTITLE}}", esc(_subtitle(report, table)))
            .replace("{{TABLE}}", table)
            .replace("{{FOOTNOTES}}", notes)
            .replace("{{PLOTS}}", "".join(f'<figure>{p}</figure>' for p in plots) or '<p class="muted">no plots</p>')
            .replace("{{DEFAULT_K}}", str(min(10, gallery_size)))
            .replace("{{GALLERY}}", "".join(sections))
            .replace("{{DATA}}", json.dumps({"gallery_size": gallery_size}).replace("<", "\\u003c")))
    return page


def write_html(report: Report, path: Path, gallery_size: int = 30, thumb_px: int = 96) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_html(report, gallery_size, thumb_px), encoding="utf-8")
    return path


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{TITLE}}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; } h3 { font-size: 15px; margin: 16px 0 4px; }
.muted { color: #777; font-weight: normal; font-size: 13px; }
.warn { color: #a15c00; font-size: 13px; }
table#leaderboard { border-collapse: collapse; margin: 12px 0; }
#leaderboard th, #leaderboard td { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; }
#leaderboard th { background: #f4f4f4; text-align: left; }
#leaderboard td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
#leaderboard td.nr { background: #fff6e5; }
#leaderboard td.model { white-space: nowrap; font-weight: 600; }
#leaderboard td.proto { font-size: 12px; color: #555; }
#leaderboard .ref { font-size: 11.5px; color: #777; font-weight: normal; white-space: nowrap; }
#leaderboard .pos { color: #2a7a2a; } #leaderboard .neg { color: #b02a2a; }
.tablewrap { overflow-x: auto; }
ul.notes { font-size: 13px; color: #444; }
figure { display: inline-block; margin: 8px 16px 8px 0; vertical-align: top; }
svg.chart .ctitle { font-size: 13px; font-weight: 600; } svg.chart .tick { font-size: 11px; fill: #444; }
svg.chart .grid { stroke: #e5e5e5; }
.controls { position: sticky; top: 0; background: #fff; padding: 8px 0; border-bottom: 1px solid #eee; z-index: 2; }
.controls label { margin-right: 14px; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
.item { display: flex; gap: 8px; width: 380px; border: 1px solid #e3e3e3; border-radius: 6px; padding: 6px; }
.item .thumb { width: 96px; height: 96px; object-fit: contain; background: #fafafa; flex: none; }
.item .noimg { display: flex; align-items: center; justify-content: center; color: #999; font-size: 12px; }
.item .meta { font-size: 12.5px; overflow-wrap: anywhere; }
.item .sid { color: #666; } .item .score { font-weight: 600; color: #333; }
.item .q { font-style: italic; } .item .refs { color: #555; } .item .other { color: #a33; }
.item .other[data-flip="better"] { color: #2a7a2a; } .se { color: #777; font-weight: normal; font-size: 12px; }
ul.flips { font-size: 13px; color: #444; margin: 2px 0 8px; }
.item .failed { color: #fff; background: #c33; border-radius: 3px; padding: 0 4px; }
.item[data-disagree="1"] { border-color: #e0a0a0; }
</style>
</head>
<body>
<h1>{{TITLE}}</h1>
<div class="muted">{{SUBTITLE}}</div>
<h2>Leaderboard</h2>
{{TABLE}}
<ul class="notes">{{FOOTNOTES}}</ul>
<h2>Plots</h2>
<div id="plots">{{PLOTS}}</div>
<h2>Samples</h2>
<div class="controls">
<label><input type="radio" name="mode" value="all" checked> all shown</label>
<label><input type="radio" name="mode" value="worst"> worst <input id="worst-k" type="number" min="1" value="{{DEFAULT_K}}" style="width:4em"> per run</label>
<label><input type="radio" name="mode" value="disagree"> runs disagree</label>
<span class="muted"><span id="visible-count">0</span> samples visible</span>
</div>
<div id="galleries">{{GALLERY}}</div>
<script id="report-data" type="application/json">{{DATA}}</script>
<script>
(function () {
  function mode() {
    var checked = document.querySelector('input[name="mode"]:checked');
    return checked ? checked.value : "all";
  }
  function apply() {
    var m = mode(), k = parseInt(document.getElementById("worst-k").value, 10) || 0, total = 0;
    document.querySelectorAll(".run").forEach(function (run) {
      var visible = 0;
      run.querySelectorAll(".item").forEach(function (item) {
        var show = m === "all" || (m === "worst" && parseInt(item.dataset.worst, 10) < k) ||
                   (m === "disagree" && item.dataset.disagree === "1");
        item.style.display = show ? "" : "none";
        if (show) { visible += 1; }
      });
      var counter = run.querySelector(".run-visible");
      if (counter) { counter.textContent = visible; }
      total += visible;
    });
    document.getElementById("visible-count").textContent = total;
  }
  document.querySelectorAll('input[name="mode"]').forEach(function (r) { r.addEventListener("change", apply); });
  document.getElementById("worst-k").addEventListener("input", apply);
  window.evalkitApplyFilter = apply;
  apply();
})();
</script>
</body>
</html>
"""

__all__ = ["build_html", "write_html", "bar_chart", "gallery_items", "cell_text"]
