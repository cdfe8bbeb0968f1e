"""The ``mpi model`` command group on a local registry: list, show, chart, evaluate, impact,
promote and train.

Owns: ``model_app`` and the parsing and printing of its commands; mpi/cli/main.py adds it to
the root app like every other group (``app.add_typer``). Must not: hold domain logic
(mpi/steward/modelops.py, training.py) or print tokens or person keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mpi.cli.common import DataDir, open_registry, settings_for
from mpi.cli.remote import Remote, call, download, local_principal, remote_options, wait_job
from mpi.errors import MpiError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
model_app = typer.Typer(help="Match model versions.", no_args_is_help=True)

VersionArg = Annotated[str, typer.Argument(help="Model version, e.g. candidate-v001.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")]


def _f(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


@model_app.command("list")
@remote_options
def model_list(data_dir: DataDir = None, remote: Remote | None = None) -> None:
    """List model versions (shipped and trained here); the active one is marked."""
    from mpi.steward.modelops import list_models
    if remote is not None:
        rows = call(remote, "GET", "/v1/models")["models"]
    else:
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


@model_app.command("show")
@remote_options
def model_show(version: VersionArg, as_json: AsJson = False, data_dir: DataDir = None,
               remote: Remote | None = None) -> None:
    """A version's m, u and match weight per comparison level, thresholds and metrics."""
    from mpi.steward.modelops import get_model
    if remote is not None:
        m = call(remote, "GET", f"/v1/models/{version}")
    else:
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
    bad = m["level_order_violations"]
    if bad:  # Decision 89: a stronger agreement must never weigh less than a weaker one
        out.print(f"[bold]warning[/bold]: {len(bad)} level pair(s) out of order "
                  "(retrain: training pools them):")
        for v in bad:
            out.print(f"  {v['comparison']}: {escape(v['stronger'])} "
                      f"{v['stronger_weight']:+.3f} < {escape(v['weaker'])} "
                      f"{v['weaker_weight']:+.3f}")
    else:
        out.print("level order: every stronger agreement weighs at least as much as a weaker one")
    out.print("metrics: " + json.dumps(m["metrics"], default=str))


@model_app.command("chart")
@remote_options
def model_chart(
    version: VersionArg,
    chart: Annotated[str, typer.Argument(help="match-weights, m-u, probability-histogram, "
                                         "precision-recall or cluster-sizes.")],
    out_file: Annotated[Path, typer.Option("--out", help="Output file (.html or .png).")],
    fmt: Annotated[str | None, typer.Option("--format", help="html or png (default: from "
                                            "the --out suffix).")] = None,
    data_dir: DataDir = None, remote: Remote | None = None,
) -> None:
    """Write a chart of a version as self-contained HTML (works offline) or PNG."""
    from mpi.steward.modelops import chart as render
    kind = fmt or out_file.suffix.lstrip(".").lower()
    if remote is not None:
        size = download(remote, f"/v1/models/{version}/charts/{chart}?format={kind}", out_file)
        out.print(f"wrote {escape(str(out_file))} ({size} bytes)")
        return
    with open_registry(data_dir) as reg:
        body, _media = render(reg, version, chart, kind)
    out_file.write_bytes(body)
    out.print(f"wrote {escape(str(out_file))} ({len(body)} bytes)")


@model_app.command("evaluate")
@remote_options
def model_evaluate(version: VersionArg, as_json: AsJson = False,
                   data_dir: DataDir = None, remote: Remote | None = None) -> None:
    """Precision, recall and F1 at the version's thresholds against the labels; diagnostics."""
    from mpi.steward.modelops import evaluate_model
    if remote is not None:
        ev = call(remote, "POST", f"/v1/models/{version}/evaluate")
    else:
        with open_registry(data_dir) as reg:
            ev = evaluate_model(reg, version, principal=local_principal())
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


@model_app.command("impact")
@remote_options
def model_impact(version: VersionArg,
                 sample: Annotated[int, typer.Option(help="Changed pairs to show.")] = 5,
                 as_json: AsJson = False, data_dir: DataDir = None,
                 remote: Remote | None = None) -> None:
    """Preview what promoting a version would change (nothing is changed)."""
    from mpi.steward.modelops import model_impact as run
    if remote is not None:
        imp = call(remote, "GET", f"/v1/models/{version}/impact", params={"sample": sample})
    else:
        with open_registry(data_dir) as reg:
            imp = run(reg, version, principal=local_principal(), sample=sample)
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


@model_app.command("promote")
@remote_options
def model_promote(version: VersionArg, data_dir: DataDir = None,
                  remote: Remote | None = None) -> None:
    """Activate a version: re-link with key carry-over; prints the churn."""
    from mpi.steward.modelops import promote_model
    if remote is not None:
        res = call(remote, "POST", f"/v1/models/{version}/promote")
    else:
        with open_registry(data_dir) as reg:
            res = promote_model(reg, version, principal=local_principal(),
                                progress=lambda m: err.print(f"[dim]{escape(m)}[/dim]"))
    out.print(f"{res['to_version']} active (was {res['from_version']}; {res['mode']}): "
              f"{res['records_changing_key']} of {res['records']} records changed key, "
              f"{res['persons_merging']} merges, {res['persons_splitting']} splits, "
              f"{res['new_keys']} new keys, {res['key_events']} key events")


@model_app.command("train")
@remote_options
def model_train(
    sample: Annotated[float, typer.Option(help="Fraction of records to train on (0-1].")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed for sampling and training.")] = 42,
    name: Annotated[str, typer.Option(help="Model name of the new version.")] = "candidate",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where to write the version "
                                                 "(default DATA_DIR/models).")] = None,
    spark_snapshot: Annotated[str | None, typer.Option("--spark-snapshot", help="Train on a "
                                                       "sample of this Parquet snapshot, taken "
                                                       "on Spark (a registry that lives there).")] = None,
    spark_master: Annotated[str, typer.Option("--spark-master", help="Spark master URL.")] = "local[*]",
    link: Annotated[float | None, typer.Option(help="Link threshold (match probability) of the "
                                               "version; default: the active one's.")] = None,
    review: Annotated[float | None, typer.Option(help="Review threshold; default: the active "
                                                 "one's.")] = None,
    data_dir: DataDir = None, remote: Remote | None = None,
) -> None:
    """Train a candidate model version on a sample (Splink on this machine, or the server's
    background job with --url); never activates it. Audited as ``models.train``."""
    from rich.markup import escape

    if remote is not None:
        if out_dir is not None or spark_snapshot is not None:
            raise typer.BadParameter("--out and --spark-snapshot apply to a stopped registry; "
                                     "the server writes DATA_DIR/models")
        job = call(remote, "POST", "/v1/models/train", json={
            "sample": sample, "seed": seed, "name": name, "link": link, "review": review})
        job = wait_job(remote, job, say=lambda m: err.print(f"[dim]{escape(m)}[/dim]"))
        out.print(f"trained {(job['result'] or {}).get('version')}; it is not active")
        return
    from mpi.audit import AuditEntry
    from mpi.identity.registry import Registry
    from mpi.linkage.modelfile import Thresholds
    from mpi.linkage.spark_engine import SparkOptions
    from mpi.steward.training import train_candidate
    settings = settings_for(data_dir)
    reg = Registry(settings)
    try:
        th = reg.model.thresholds
        audit = {"seed": seed, "sample": sample, "name": name, "link": link, "review": review}
        version = train_candidate(reg, out_dir=out_dir or settings.data_dir / "models", name=name,
                                  seed=seed, fraction=sample, spark_snapshot=spark_snapshot,
                                  spark=SparkOptions(master=spark_master),
                                  progress=lambda m: err.print(f"[dim]{escape(m)}[/dim]"),
                                  thresholds=None if link is None and review is None else
                                  Thresholds(link=th.link if link is None else link,
                                             review=th.review if review is None else review))
        reg.record_audit([AuditEntry(local_principal(), "models.train", f"model:{name}",
                                     detail={**audit, "version": version})])
    except MpiError:
        _audit_failure(reg, name, "invalid")
        raise  # main() prints it as one line, exit 2
    except Exception as exc:  # a Splink/DuckDB failure: one line, no traceback
        _audit_failure(reg, name, "failed")
        why = [(str(e).strip().splitlines() or [type(e).__name__])[0]
               for e in (exc, exc.__cause__) if e is not None]
        err.print(f"[red]error:[/red] training failed ({type(exc).__name__}): "
                  f"{escape('; cause: '.join(why)[:400])}")
        raise typer.Exit(1) from None
    finally:
        reg.close()
    out.print(f"trained {version}; it is not active")


def _audit_failure(reg: Any, name: str, outcome: str) -> None:
    """Audit a refused or failed training on the command line (best effort: the registry may
    be what failed)."""
    import contextlib

    from mpi.audit import AuditEntry
    with contextlib.suppress(Exception):
        reg.record_audit([AuditEntry(local_principal(), "models.train", f"model:{name}",
                                     outcome)])
