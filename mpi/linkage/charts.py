"""Model charts as Vega-Lite specs, rendered to self-contained HTML (JavaScript inlined) or PNG.

Owns: the five model charts (match weights per level, m/u parameters, match-probability
histogram, precision/recall against threshold, cluster-size distribution) built from plain
numbers, and rendering them with vl-convert, which bundles Vega and needs no network.
Must not: read the registry or score anything (callers pass the figures in).
"""

from __future__ import annotations

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


def m_u_spec(version: str, comparisons: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """m and u probability of every comparison level, side by side."""
    rows = []
    for r in _level_rows(comparisons):
        for p in ("m", "u"):
            rows.append({"comparison": r["comparison"], "level": r["level"], "label": r["label"],
                         "parameter": f"{p} probability", "value": r[p]})
    spec = _base(f"{version}: m and u probability per comparison level", rows)
    spec.update({
        **_per_comparison(comparisons),
        "spec": {"width": 420, "mark": "bar", "encoding": {
            "y": {"field": "label", "type": "nominal", "sort": {"field": "level"}, "title": None},
            "yOffset": {"field": "parameter"},
            "x": {"field": "value", "type": "quantitative", "title": "probability",
                  "scale": {"domain": [0, 1]}},
            "color": {"field": "parameter", "type": "nominal"},
            "tooltip": [{"field": "label"}, {"field": "parameter"},
                        {"field": "value", "format": ".4g"}]}}})
    return spec


def histogram_spec(version: str, bins: Sequence[dict[str, Any]], *, link: float,
                   review: float) -> dict[str, Any]:
    """Candidate pairs per match-probability bin (bins: start, end, pairs), thresholds marked."""
    spec = _base(f"{version}: match probability of candidate pairs", list(bins))
    spec.update({"width": 560, "height": 300, "layer": [
        {"mark": "bar", "encoding": {
            "x": {"field": "start", "type": "quantitative", "bin": {"binned": True, "step": 0.02},
                  "title": "match probability", "scale": {"domain": [0, 1]}},
            "x2": {"field": "end"},
            "y": {"field": "pairs", "type": "quantitative", "title": "candidate pairs",
                  "scale": {"type": "symlog"}},
            "tooltip": [{"field": "start"}, {"field": "end"}, {"field": "pairs"}]}},
        _rules(link, review)]})
    return spec


def _rules(link: float, review: float) -> dict[str, Any]:
    return {"data": {"values": [{"t": link, "name": "link"}, {"t": review, "name": "review"}]},
            "mark": {"type": "rule", "strokeDash": [4, 3]},
            "encoding": {"x": {"field": "t", "type": "quantitative"},
                         "color": {"field": "name", "type": "nominal", "title": "threshold",
                                   "scale": {"range": ["#1e8449", "#d68910"]}}}}


def precision_recall_spec(version: str, points: Sequence[dict[str, Any]], *, labels: int,
                          link: float, review: float) -> dict[str, Any]:
    """Precision and recall of labelled pairs against the match-probability threshold."""
    rows = [{"threshold": p["threshold"], "metric": m, "value": p[m]}
            for p in points for m in ("precision", "recall") if p[m] is not None]
    title = (f"{version}: precision and recall against threshold ({labels} labelled pairs)"
             if labels else f"{version}: precision/recall need labels (none yet)")
    spec = _base(title, rows)
    spec.update({"width": 560, "height": 300, "layer": [
        {"mark": {"type": "line", "point": True}, "encoding": {
            "x": {"field": "threshold", "type": "quantitative", "title": "match probability "
                  "threshold", "scale": {"domain": [0, 1]}},
            "y": {"field": "value", "type": "quantitative", "scale": {"domain": [0, 1]}},
            "strokeDash": {"field": "metric", "type": "nominal"},
            "tooltip": [{"field": "threshold"}, {"field": "metric"},
                        {"field": "value", "format": ".4f"}]}},
        _rules(link, review)]})
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
