"""Model charts as Vega-Lite specs, rendered to self-contained HTML (JavaScript inlined) or PNG.

Owns: the five model charts (match weights per level, m/u parameters, match-probability
histogram, precision/recall against threshold, cluster-size distribution) built from plain
numbers, and rendering them with vl-convert, which bundles Vega and needs no network.
Must not: read the registry or score anything (callers pass the figures in).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import vl_convert as vlc

ChartFormat = Literal["html", "png"]
CHARTS = ("match-weights", "m-u", "probability-histogram", "precision-recall", "cluster-sizes")
_SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"  # an identifier, never fetched


def _base(title: str, data: list[dict[str, Any]]) -> dict[str, Any]:
    return {"$schema": _SCHEMA, "title": title, "data": {"values": data},
            "config": {"view": {"stroke": None}, "font": "sans-serif"}}


def _level_rows(comparisons: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for comp in comparisons:
        for lv in comp["levels"]:
            if lv["level"] < 0:
                continue
            rows.append({"comparison": comp["comparison"], "level": lv["level"],
                         "label": f'{lv["level"]}: {lv["label"]}',
                         "m": lv["m_probability"], "u": lv["u_probability"],
                         "match_weight": lv["match_weight"]})
    return rows


def _per_comparison(comparisons: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One row of the facet per comparison, in definition order, each with its own levels."""
    return {"facet": {"row": {"field": "comparison", "type": "nominal",
                              "header": {"labelAngle": 0, "labelAlign": "left"},
                              "sort": [c["comparison"] for c in comparisons]}},
            "resolve": {"scale": {"y": "independent"}}}


def match_weights_spec(version: str, comparisons: Sequence[dict[str, Any]],
                       prior_weight: float) -> dict[str, Any]:
    """Bar per comparison level: its match weight log2(m/u), negative in red."""
    spec = _base(f"{version}: match weight per comparison level (prior {prior_weight:.2f})",
                 _level_rows(comparisons))
    spec.update({
        **_per_comparison(comparisons),
        "spec": {"width": 420, "mark": "bar", "encoding": {
            "y": {"field": "label", "type": "nominal", "sort": {"field": "level"}, "title": None},
            "x": {"field": "match_weight", "type": "quantitative", "title": "match weight"},
            "color": {"condition": {"test": "datum.match_weight < 0", "value": "#c0392b"},
                      "value": "#2471a3"},
            "tooltip": [{"field": "comparison"}, {"field": "label"},
                        {"field": "match_weight", "format": ".3f"}]}}})
    return spec


def _log_floor(values: Sequence[float]) -> float:
    """The power of ten at or below the smallest positive value (1e-6 when there is none)."""
    positive = [v for v in values if v > 0]
    return 10.0 ** math.floor(math.log10(min(positive))) if positive else 1e-6


def _log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks from ``low`` to the first at or above ``high`` (a log axis readable at
    every decade, not only at the powers of ten)."""
    ticks: list[float] = []
    decade = low
    while not ticks or ticks[-1] < high:
        for step in (1, 2, 5):
            ticks.append(float(f"{decade * step:.6g}"))
            if ticks[-1] >= high:
                break
        decade *= 10
    return ticks


def m_u_spec(version: str, comparisons: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """m and u probability of every comparison level, side by side, on a log scale (a u of
    1e-5 and one of 0.3 differ by four decades: on a linear axis both look like 0)."""
    rows = []
    for r in _level_rows(comparisons):
        for p in ("m", "u"):
            rows.append({"comparison": r["comparison"], "level": r["level"], "label": r["label"],
                         "parameter": f"{p} probability", "value": r[p]})
    floor = _log_floor([r["value"] for r in rows])
    for r in rows:
        r["base"] = floor
    spec = _base(f"{version}: m and u probability per comparison level (log scale)", rows)
    spec.update({
        **_per_comparison(comparisons),
        "spec": {"width": 420, "mark": "bar", "transform": [{"filter": "datum.value > 0"}],
                 "encoding": {
            "y": {"field": "label", "type": "nominal", "sort": {"field": "level"}, "title": None},
            "yOffset": {"field": "parameter"},
            "x": {"field": "value", "type": "quantitative", "title": "probability (log scale)",
                  "scale": {"type": "log", "domain": [floor, 1]},
                  "axis": {"values": [10.0 ** -k for k in range(
                      round(-math.log10(floor)), -1, -1)], "format": ".0e"}},
            "x2": {"field": "base"},
            "color": {"field": "parameter", "type": "nominal",
                      "scale": {"domain": ["m probability", "u probability"],
                                "range": ["#2471a3", "#e67e22"]}},
            "tooltip": [{"field": "label"}, {"field": "parameter"},
                        {"field": "value", "format": ".4g"}]}}})
    return spec


HISTOGRAM_BASE = 0.5  # bars start below 1 on the log axis, so a bin of one pair shows


def histogram_spec(version: str, bins: Sequence[dict[str, Any]], *, link: float,
                   review: float) -> dict[str, Any]:
    """Candidate pairs per match-probability bin (bins: start, end, pairs; edges that include
    both thresholds, so no bar straddles one) on a log count axis with 1-2-5 ticks, the
    thresholds drawn and named."""
    rows = [{**b, "base": HISTOGRAM_BASE} for b in bins if b["pairs"] > 0]
    top = max((int(b["pairs"]) for b in rows), default=1)
    ticks = _log_ticks(1, top)
    spec = _base(f"{version}: match probability of candidate pairs", rows)
    spec.update({"width": 560, "height": 300, "layer": [
        {"mark": "bar", "encoding": {
            "x": {"field": "start", "type": "quantitative", "title": "match probability",
                  "scale": {"domain": [0, 1]}},
            "x2": {"field": "end"},
            "y": {"field": "pairs", "type": "quantitative",
                  "title": "candidate pairs (log scale)",
                  "scale": {"type": "log", "domain": [HISTOGRAM_BASE, ticks[-1]]},
                  "axis": {"values": ticks, "format": "~s"}},
            "y2": {"field": "base"},
            "color": {"value": "#5d6d7e"},
            "tooltip": [{"field": "start"}, {"field": "end"}, {"field": "pairs"}]}},
        *_rules(link, review)]})
    return spec


SERIES = ("precision", "recall", "link threshold", "review threshold")
SERIES_COLOURS = ("#2471a3", "#c0392b", "#1e8449", "#d68910")  # distinct, readable in grey too


def _colour(names: Sequence[str]) -> dict[str, Any]:
    """One colour scale for every layer (the series shown, each in its own SERIES colour): lines
    and thresholds never share a colour."""
    colours = dict(zip(SERIES, SERIES_COLOURS, strict=True))
    return {"field": "name", "type": "nominal", "title": None,
            "scale": {"domain": list(names), "range": [colours[n] for n in names]}}


def _rules(link: float, review: float, names: Sequence[str] = SERIES[2:]
           ) -> list[dict[str, Any]]:
    values = [{"t": link, "name": "link threshold", "text": f"link {link:g}"},
              {"t": review, "name": "review threshold", "text": f"review {review:g}"}]
    return [{"data": {"values": values}, "mark": {"type": "rule", "strokeDash": [4, 3],
                                                  "strokeWidth": 2},
             "encoding": {"x": {"field": "t", "type": "quantitative"},
                          "color": _colour(names)}},
            {"data": {"values": values},
             "mark": {"type": "text", "angle": 270, "align": "right", "baseline": "bottom",
                      "dx": -4, "dy": -3, "y": 0},
             "encoding": {"x": {"field": "t", "type": "quantitative"}, "text": {"field": "text"},
                          "color": _colour(names)}}]


def precision_recall_spec(version: str, points: Sequence[dict[str, Any]], *, labels: int,
                          link: float, review: float) -> dict[str, Any]:
    """Precision and recall of labelled pairs against the match-probability threshold."""
    rows = [{"threshold": p["threshold"], "name": m, "value": p[m]}
            for p in points for m in ("precision", "recall") if p[m] is not None]
    title = (f"{version}: precision and recall against threshold ({labels} labelled pairs)"
             if labels else f"{version}: precision/recall need labels (none yet)")
    spec = _base(title, rows)
    spec.update({"width": 560, "height": 300, "layer": [
        {"mark": {"type": "line", "strokeWidth": 2, "point": {"size": 14}}, "encoding": {
            "x": {"field": "threshold", "type": "quantitative", "title": "match probability "
                  "threshold", "scale": {"domain": [0, 1]}},
            "y": {"field": "value", "type": "quantitative", "scale": {"domain": [0, 1]}},
            "color": _colour(SERIES),
            "strokeDash": {"field": "name", "type": "nominal", "legend": None,
                           "scale": {"domain": ["precision", "recall"], "range": [[1, 0], [6, 3]]}},
            "tooltip": [{"field": "threshold"}, {"field": "name", "title": "metric"},
                        {"field": "value", "format": ".4f"}]}},
        *_rules(link, review, SERIES)]})
    return spec


def cluster_sizes_spec(version: str, sizes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Persons per cluster size (sizes: size, persons)."""
    spec = _base(f"{version}: cluster-size distribution (records per person)", list(sizes))
    spec.update({"width": 560, "height": 300, "mark": "bar", "encoding": {
        "x": {"field": "size", "type": "ordinal", "title": "records per person"},
        "y": {"field": "persons", "type": "quantitative", "title": "persons",
              "scale": {"type": "symlog"}},
        "tooltip": [{"field": "size"}, {"field": "persons"}]}})
    return spec


def render(spec: dict[str, Any], fmt: ChartFormat) -> bytes:
    """The chart as self-contained HTML (Vega inlined, works offline) or PNG bytes."""
    if fmt == "html":
        return str(vlc.vegalite_to_html(spec, bundle=True)).encode()
    return bytes(vlc.vegalite_to_png(spec, scale=2))
