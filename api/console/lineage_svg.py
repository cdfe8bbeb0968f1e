"""The geometry of a person's lineage drawing on the console (server-rendered inline SVG).

Owns: placing the keys of a lineage graph (``StewardDesk.person_lineage``) in columns by
generation (ancestry left, the key in the middle, descendants right) and the arrows between
them, with the text each box and arrow carries for screen readers (``<title>``). Must not:
read the registry, draw anything itself (person.html does), or use a JavaScript library.
"""

from __future__ import annotations

from typing import Any

from .render import when

BOX_W, BOX_H = 210, 46
COL_GAP, ROW_GAP, PAD = 90, 22, 16
KIND_WORDS = {"merge": "was merged into", "split": "had records split off into",
              "moved": "moved records to"}


def layout(lineage: dict[str, Any]) -> dict[str, Any] | None:
    """Boxes and arrows of the drawing; None when the key has no merge or split."""
    if not lineage["events"]:
        return None
    gens = sorted({n["generation"] for n in lineage["nodes"]})
    column = {g: i for i, g in enumerate(gens)}
    rows: dict[int, int] = {}
    boxes: dict[str, dict[str, Any]] = {}
    for n in lineage["nodes"]:
        g = n["generation"]
        row = rows.get(g, 0)
        rows[g] = row + 1
        current = n["person_key"] == lineage["person_key"]
        boxes[n["person_key"]] = {
            "key": n["person_key"], "status": n["status"], "current": current,
            "x": PAD + column[g] * (BOX_W + COL_GAP), "y": PAD + row * (BOX_H + ROW_GAP),
            "title": f"{n['person_key']} ({n['status']}"
                     + (", this person" if current else "") + ")"}
    height = max(rows.values())
    arrows = []
    for e in lineage["events"]:
        a, b = boxes.get(e["from_key"]), boxes.get(e["to_key"])
        if a is None or b is None:
            continue
        forward = b["x"] >= a["x"]
        x1 = a["x"] + (BOX_W if forward else 0)
        x2 = b["x"] + (0 if forward else BOX_W)
        if a["x"] == b["x"]:  # same generation: leave and enter on the right
            x1 = x2 = a["x"] + BOX_W
        arrows.append({
            "kind": e["kind"], "x1": x1, "y1": a["y"] + BOX_H // 2,
            "x2": x2 + (-4 if forward else 4), "y2": b["y"] + BOX_H // 2,
            "title": describe(e)})
    return {"width": 2 * PAD + len(gens) * BOX_W + (len(gens) - 1) * COL_GAP,
            "height": 2 * PAD + height * BOX_H + (height - 1) * ROW_GAP,
            "box_w": BOX_W, "box_h": BOX_H, "boxes": list(boxes.values()), "arrows": arrows}


def describe(event: dict[str, Any]) -> str:
    """One lineage event in words: who passed records to whom, how, why and when."""
    verb = KIND_WORDS.get(event["kind"], event["kind"])
    cause = f", cause {event['cause']}" if event.get("cause") else ""
    at = f" on {when(event['occurred_at'])} UTC" if event.get("occurred_at") else ""
    return f"{event['from_key']} {verb} {event['to_key']}{cause}{at}"
