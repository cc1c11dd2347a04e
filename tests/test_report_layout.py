"""The HTML report's layout: bar groups centred in their chart, and the subtitle explains Δ only where a cell
shows one (there is no Δ column)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from evalkit.analysis.report_html import PAGE, _subtitle, bar_chart


def _bars(svg: str) -> list[tuple[float, float]]:
    return [(float(x), float(w)) for x, w in re.findall(r'<rect class="bar" x="([\d.]+)" y="[\d.]+" width="(\d+)"', svg)]


@pytest.mark.parametrize("title, series", [
    ("shapes-vqa: vqa_accuracy by answer type, a long title that widens the chart", [("run a", [50.0, 80.0])]),
    ("t", [("a run label long enough to widen the legend well past the bars", [10.0, 20.0, 30.0])]),
    ("t", [("a", [10.0, 20.0]), ("b", [30.0, 40.0])]),
])
def test_bar_groups_are_centred_in_the_plot_area(title, series):
    svg = bar_chart(title, [f"c{i}" for i in range(len(series[0][1]))], series, "%", 100.0)
    width = float(re.search(r'<svg class="chart" width="(\d+)"', svg).group(1))
    left = float(re.search(r'<line x1="(\d+)"', svg).group(1))
    bars = _bars(svg)
    first, last = min(x for x, _ in bars), max(x + w for x, w in bars)
    plot_left, plot_right = left, width - 10
    # the space left of the first bar and right of the last are equal, within a gap's rounding
    assert abs((first - plot_left) - (plot_right - last)) <= 20, (first, last, plot_left, plot_right)


def test_the_subtitle_explains_delta_only_when_a_cell_shows_one():
    report = SimpleNamespace(runs=[1, 2], results_dir="results")
    without = _subtitle(report, '<table id="leaderboard"><td class="num">52.10</td></table>')
    assert "Δ" not in without and "2 runs below results" in without
    with_ref = _subtitle(report, '<td class="num">52.10<div class="ref">ref 53.50 [1] · Δ -1.40</div></td>')
    assert "Δ = run − reference" in with_ref and "under a score" in with_ref
    assert "Δ" not in PAGE  # the page template itself no longer claims a Δ
