"""The ``mpi model`` lifecycle commands on a local registry: list, show, chart, evaluate,
impact, promote (``mpi model train`` stays in mpi/cli.py).

Owns: parsing and printing of those commands; ``register`` adds them to the ``model_app``
that mpi/cli.py creates. Must not: hold domain logic (mpi/modelops.py) or print tokens or
person keys. It does not import mpi.cli.main (mpi.cli.main imports it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mpi.cli.common import DataDir, open_registry

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
PRINCIPAL = "cli"

VersionArg = Annotated[str, typer.Argument(help="Model version, e.g. candidate-v001.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")]


def _f(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def model_list(data_dir: DataDir = None) -> None:
    """List model versions (shipped and trained here); the active one is marked."""
    from mpi.steward.modelops import list_models
    with open_registry(data_dir) as reg:
        rows = list_models(reg)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    widest = max([len(r["version"]) for r in rows] + [7])
    table.add_column("version", no_wrap=True, min_width=widest)
    for col in ("active", "where", "parent", "link", "review", "records", "labels"):
        table.add_column(col, overflow="fold")
    for r in rows:
        th = r["thresholds"] or {}
        table.add_row(r["version"], "*" if r["active"] else "", r["location"],
                      r["parent_version"] or "-", _f(th.get("link"), "g"),
                      _f(th.get("review"), "g"), str(r["training_records"] or "-"),
                      str(r["label_count"]))
    out.print(table)


def model_show(version: VersionArg, as_json: AsJson = False, data_dir: DataDir = None) -> None:
    """A version's m, u and match weight per comparison level, thresholds and metrics."""
    from mpi.steward.modelops import get_model
    with open_registry(data_dir) as reg:
        m = get_model(reg, version)
    if as_json:
        out.print_json(json.dumps(m, default=str))
        return
    th = m["thresholds"]
    out.print(f"{m['version']}{' (active)' if m['active'] else ''}: link >= {th['link']:g} "
              f"(weight {th['link_weight']:.2f}), review >= {th['review']:g} "
              f"(weight {th['review_weight']:.2f}); prior weight {m['prior_weight']:.3f}")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("comparison", "level", "m", "u", "weight"):
        table.add_column(col, no_wrap=True, justify="left" if col in ("comparison", "level")
                         else "right")
    for comp in m["comparisons"]:
        for lv in comp["levels"]:
            table.add_row(comp["comparison"], escape(lv["label"]), _f(lv["m_probability"], ".4g"),
                          _f(lv["u_probability"], ".4g"), f"{lv['match_weight']:+.3f}")
    out.print(table)
    out.print("metrics: " + json.dumps(m["metrics"], default=str))


def model_chart(
    version: VersionArg,
    chart: Annotated[str, typer.Argument(help="match-weights, m-u, probability-histogram, "
                                         "precision-recall or cluster-sizes.")],
    out_file: Annotated[Path, typer.Option("--out", help="Output file (.html or .png).")],
    fmt: Annotated[str | None, typer.Option("--format", help="html or png (default: from "
                                            "the --out suffix).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Write a chart of a version as self-contained HTML (works offline) or PNG."""
    from mpi.steward.modelops import chart as render
    kind = fmt or out_file.suffix.lstrip(".").lower()
    with open_registry(data_dir) as reg:
        body, _media = render(reg, version, chart, kind)
    out_file.write_bytes(body)
    out.print(f"wrote {escape(str(out_file))} ({len(body)} bytes)")


def model_evaluate(version: VersionArg, as_json: AsJson = False,
                   data_dir: DataDir = None) -> None:
    """Precision, recall and F1 at the version's thresholds against the labels; diagnostics."""
    from mpi.steward.modelops import evaluate_model
    with open_registry(data_dir) as reg:
        ev = evaluate_model(reg, version, principal=PRINCIPAL)
    if as_json:
        out.print_json(json.dumps(ev, default=str))
        return
    label_stats = ev["labels"]
    out.print(f"{ev['version']}: {label_stats['pairs']} labelled pairs ({label_stats['matches']} match, "
              f"{label_stats['non_matches']} non-match; {label_stats['skipped_inactive']} skipped)")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("at", "threshold", "precision", "recall", "F1"):
        table.add_column(col, justify="right")
    for name in ("at_link_threshold", "at_review_threshold"):
        r = ev[name]
        table.add_row(name.split("_")[1], f"{r['threshold']:g}", _f(r["precision"]),
                      _f(r["recall"]), _f(r["f1"]))
    out.print(table)
    out.print("diagnostics: " + ", ".join(f"{k} {_f(v, '.4g') if isinstance(v, float) else v}"
                                          for k, v in ev["diagnostics"].items()))


def model_impact(version: VersionArg,
                 sample: Annotated[int, typer.Option(help="Changed pairs to show.")] = 5,
                 as_json: AsJson = False, data_dir: DataDir = None) -> None:
    """Preview what promoting a version would change (nothing is changed)."""
    from mpi.steward.modelops import model_impact as run
    with open_registry(data_dir) as reg:
        imp = run(reg, version, principal=PRINCIPAL, sample=sample)
    if as_json:
        out.print_json(json.dumps(imp, default=str))
        return
    p, a = imp["promote"], imp["active_relink"]
    out.print(f"{imp['version']} against active {imp['active_version']} over {imp['records']} "
              f"records{' (same parameters)' if imp['same_parameters'] else ''}:")
    out.print(f"  promote would change the key of {p['records_changing_key']} records "
              f"({p['keys_affected']} keys; {p['persons_merging']} merges, "
              f"{p['persons_splitting']} splits, {p['new_keys']} new keys)")
    out.print(f"  re-linking with the active version would change {a['records_changing_key']}")
    out.print(f"  pairs: {imp['pairs']}; review items: {imp['review_items']}")
    for s in imp["sample"]:
        recs = " / ".join(f"{r['agency']}:{r['source_record_id']}" for r in s["records"])
        out.print(f"  {escape(recs)}: {s['active']['decision']} ({s['active']['match_weight']:+.2f})"
                  f" -> {s['candidate']['decision']} ({s['candidate']['match_weight']:+.2f})")


def model_promote(version: VersionArg, data_dir: DataDir = None) -> None:
    """Activate a version: re-link with key carry-over; prints the churn."""
    from mpi.steward.modelops import promote_model
    with open_registry(data_dir) as reg:
        res = promote_model(reg, version, principal=PRINCIPAL,
                            progress=lambda m: err.print(f"[dim]{escape(m)}[/dim]"))
    out.print(f"{res['to_version']} active (was {res['from_version']}; {res['mode']}): "
              f"{res['records_changing_key']} of {res['records']} records changed key, "
              f"{res['persons_merging']} merges, {res['persons_splitting']} splits, "
              f"{res['new_keys']} new keys, {res['key_events']} key events")


COMMANDS: dict[str, Callable[..., None]] = {
    "list": model_list, "show": model_show, "chart": model_chart, "evaluate": model_evaluate,
    "impact": model_impact, "promote": model_promote}


def register(model_app: typer.Typer) -> None:
    """Add the lifecycle commands to ``mpi model``."""
    for name, fn in COMMANDS.items():
        model_app.command(name)(fn)
