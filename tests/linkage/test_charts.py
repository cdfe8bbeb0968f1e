"""Model charts are readable: distinct colours, log axes with ticks, thresholds drawn and never
straddled by a histogram bin; rendered offline (HTML with Vega inlined) and as PNG.

Owns: the Vega-Lite specs of the precision-recall, probability-histogram and m-u charts
(inspected as data), the histogram's bin edges, and one real render of each to HTML (no
script fetched from the network) and PNG (decoded: its pixels hold each series' colour).
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from typing import Any

import numpy as np
import pytest

from mpi.linkage import charts
from mpi.linkage.describe import describe_params
from mpi.linkage.modelfile import default_models_dir, load_version
from mpi.steward.modelanalysis import histogram_edges

LINK, REVIEW = 0.97, 0.2
POINTS = [{"threshold": t, "precision": 0.6 + 0.4 * t, "recall": 1.0 - 0.7 * t}
          for t in np.linspace(0.01, 0.99, 99).round(4).tolist()]


def _layers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("layer", []))


def _mark(layer: dict[str, Any]) -> str:
    mark = layer["mark"]
    return str(mark if isinstance(mark, str) else mark["type"])


def test_precision_and_recall_lines_have_distinct_colours_and_thresholds_are_drawn() -> None:
    spec = charts.precision_recall_spec("v", POINTS, labels=120, link=LINK, review=REVIEW)
    line = _layers(spec)[0]
    colour = line["encoding"]["color"]
    scale = dict(zip(colour["scale"]["domain"], colour["scale"]["range"], strict=True))
    assert scale["precision"] != scale["recall"]
    assert len(set(scale.values())) == len(scale) == 4  # thresholds in their own colours too
    rules = [layer for layer in _layers(spec) if _mark(layer) == "rule"]
    assert sorted(v["t"] for v in rules[0]["data"]["values"]) == [REVIEW, LINK]
    texts = [layer for layer in _layers(spec) if _mark(layer) == "text"]
    assert {v["text"] for v in texts[0]["data"]["values"]} == {"link 0.97", "review 0.2"}


def test_histogram_is_log_scaled_with_ticks_below_5000_and_no_bin_straddles_a_threshold() -> None:
    edges = histogram_edges(bins=50, cuts=(REVIEW, LINK))
    assert REVIEW in edges.tolist() and LINK in edges.tolist()
    assert np.all(np.diff(edges) > 0) and edges[0] == 0.0 and edges[-1] == 1.0
    bins = [{"start": float(a), "end": float(b), "pairs": 10 ** (i % 6)}
            for i, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True))]
    for b in bins:
        for t in (REVIEW, LINK):
            assert not b["start"] < t < b["end"], (b, t)
    spec = charts.histogram_spec("v", bins, link=LINK, review=REVIEW)
    y = _layers(spec)[0]["encoding"]["y"]
    assert y["scale"]["type"] == "log"
    ticks = y["axis"]["values"]
    assert [t for t in ticks if t < 5000][:6] == [1, 2, 5, 10, 20, 50]
    assert ticks[-1] >= 100_000
    assert all(r["pairs"] > 0 for r in spec["data"]["values"])  # log of 0 is never plotted
    rules = [layer for layer in _layers(spec) if _mark(layer) == "rule"]
    assert sorted(v["t"] for v in rules[0]["data"]["values"]) == [REVIEW, LINK]


def _png_pixels(png: bytes) -> set[tuple[int, int, int]]:
    """The RGB colours of an 8-bit RGB/RGBA non-interlaced PNG (zlib and the five filters; no
    image library is a dependency)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 4
    while pos < len(png):
        length = struct.unpack(">I", png[pos: pos + 4])[0]
        kind, body = png[pos + 4: pos + 8], png[pos + 8: pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * channels
    prev, out = bytearray(stride), set[tuple[int, ...]]()
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1: (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out.update(tuple(line[x: x + 3]) for x in range(0, stride, channels))
        prev = line
    return {(int(r), int(g), int(b)) for r, g, b in out}


def _m_u_spec() -> dict[str, Any]:
    mv = load_version(default_models_dir(), "default-v003")
    return charts.m_u_spec(mv.version, describe_params(mv.definition, mv.params))


def test_m_u_chart_is_on_a_log_scale_down_to_the_smallest_u() -> None:
    spec = _m_u_spec()
    x = spec["spec"]["encoding"]["x"]
    assert x["scale"]["type"] == "log"
    smallest = min(r["value"] for r in spec["data"]["values"] if r["value"] > 0)
    assert x["scale"]["domain"][0] <= smallest < 1e-3  # a tiny u is visible, not 0
    assert x["axis"]["values"][0] == x["scale"]["domain"][0]
    colours = spec["spec"]["encoding"]["color"]["scale"]["range"]
    assert len(set(colours)) == 2


@pytest.mark.integration
def test_rendered_html_is_offline_and_png_shows_both_series_colours() -> None:
    spec = charts.precision_recall_spec("v", POINTS, labels=120, link=LINK, review=REVIEW)
    html = charts.render(spec, "html").decode()
    assert not re.search(r"<script[^>]+src=", html) and "cdn." not in html
    assert json.dumps(charts.SERIES_COLOURS[0])[1:-1] in html
    png = charts.render(spec, "png")
    pixels = _png_pixels(png)
    for hex_colour in charts.SERIES_COLOURS:
        rgb = tuple(int(hex_colour[i: i + 2], 16) for i in (1, 3, 5))
        assert rgb in pixels, hex_colour
    hist = charts.render(charts.histogram_spec("v", [
        {"start": 0.0, "end": 0.02, "pairs": 3000}, {"start": 0.96, "end": 0.97, "pairs": 2},
        {"start": 0.97, "end": 0.98, "pairs": 40}], link=LINK, review=REVIEW), "png")
    assert hist[:8] == b"\x89PNG\r\n\x1a\n"
