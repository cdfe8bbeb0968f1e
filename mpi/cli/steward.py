"""The steward command groups: ``mpi review``, ``mpi persons``, ``mpi labels``, ``mpi constraints``.

Owns: the typer sub-apps mpi/cli.py registers, their parsing and printing. Each command works
against a running service (``--url``, through its API as the key's principal) or on a stopped
registry (``--data-dir``), where it calls one use case of mpi/steward/review.py, stewardship.py
or labels.py as the OS user (``os:<name>``, Decision 85). Must not:
hold domain logic or print tokens (person keys are printed: stewards act on them). It does not
import mpi.cli.main (mpi.cli.main imports it).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from mpi.cli.common import DataDir, open_registry
from mpi.cli.remote import Remote, call, local_principal, remote_options
from mpi.errors import InvalidInput, Problem

if TYPE_CHECKING:
    from mpi.steward.labels import LabelRow

review_app = typer.Typer(help="The review queue: list, show and decide items.", no_args_is_help=True)
persons_app = typer.Typer(help="Fix persons by hand: merge and split.", no_args_is_help=True)
labels_app = typer.Typer(help="Labelled record pairs.", no_args_is_help=True)
constraints_app = typer.Typer(help="Must-link / cannot-link constraints.", no_args_is_help=True)
out = Console(soft_wrap=True)

AsJson = Annotated[bool, typer.Option("--json", help="Print the full JSON result.")]
Reason = Annotated[str, typer.Option("--reason", help="Why (kept with the decision and audited).")]


def _json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _item_line(item: dict[str, Any]) -> str:
    ex = item["explanation"]
    agree = ""
    if ex is not None:
        agree = ", ".join(f"{k}={v}" for k, v in ex["agreement"].items())
    current = item.get("current_probability", item["match_probability"])
    return (f"#{item['item_id']} {item['kind']} {item['status']} p={current:.3f} "
            f"(queued {item['match_probability']:.3f}) "
            f"agencies={','.join(item['agencies'])} records={item['records']['a']}+"
            f"{item['records']['b']} {agree}")


@review_app.command("list")
@remote_options
def review_list(
    kind: Annotated[str | None, typer.Option(help="record_person or possible_duplicate.")] = None,
    status: Annotated[str, typer.Option(help="open, deferred, decided, resolved or all.")] = "open",
    agency: Annotated[str | None, typer.Option(help="Items involving this agency.")] = None,
    min_probability: Annotated[float | None, typer.Option()] = None,
    max_probability: Annotated[float | None, typer.Option()] = None,
    after: Annotated[int, typer.Option(help="Start after this item id (with a probability "
                                       "sort: skip this many items).")] = 0,
    limit: Annotated[int, typer.Option()] = 50,
    sort: Annotated[str, typer.Option(help="id, probability_desc or probability_asc (the "
                                      "current probability, as rescored after a promote or "
                                      "re-link).")] = "id",
    as_json: AsJson = False, data_dir: DataDir = None, remote: Remote | None = None,
) -> None:
    """List review items with their current probability and agreement pattern (never a
    token); filters and the probability sort use the current probability."""
    from mpi.steward.review import list_review
    query = {"kind": kind, "status": status, "agency": agency,
             "min_probability": min_probability, "max_probability": max_probability,
             "after": after, "limit": limit, "sort": sort}
    if remote is not None:
        page = call(remote, "GET", "/v1/review", params=query)
    else:
        with open_registry(data_dir) as reg:
            page = list_review(reg, principal=local_principal(), **query)  # type: ignore[arg-type]
    if as_json:
        _json(page)
        return
    for item in page["items"]:
        out.print(escape(_item_line(item)))
    out.print(f"{len(page['items'])} items" + (
        f"; the page stopped at --limit {limit}: more with --after {page['next_after']}"
        if page["next_after"] else ""))


@review_app.command("show")
@remote_options
def review_show(item_id: int, as_json: AsJson = False, data_dir: DataDir = None,
                remote: Remote | None = None) -> None:
    """One review item with its match-weight waterfall."""
    from mpi.steward.review import get_review_item
    if remote is not None:
        item = call(remote, "GET", f"/v1/review/{item_id}")
    else:
        with open_registry(data_dir) as reg:
            item = get_review_item(reg, item_id, principal=local_principal())
    if as_json:
        _json(item)
        return
    out.print(escape(_item_line(item)))
    ex = item["explanation"]
    if ex is None:
        out.print("no explanation: a side has no active record")
        return
    for side in ("left", "right"):
        r = ex[side]
        out.print(escape(f"  {side}: {r['agency']} {r['source_record_id']} ({r['person_key']})"))
    out.print(f"  prior {ex['prior_weight']:+.2f}")
    for c in ex["comparisons"]:
        out.print(escape(f"  {c['comparison']:<14} {c['label']:<34} {c['match_weight']:+.2f}"))
        if c.get("detail"):
            out.print(escape(f"  {'':<14} {c['detail']}"))
    out.print(f"  total {ex['match_weight']:+.2f} (p={ex['match_probability']:.4f})")


@review_app.command("decide")
@remote_options
def review_decide(
    item_id: int,
    decision: Annotated[str, typer.Option("--decision", help="match, non_match or defer.")],
    reason: Reason, as_json: AsJson = False, data_dir: DataDir = None,
    remote: Remote | None = None,
) -> None:
    """Decide an item: match (merge + must-link), non_match (cannot-link) or defer."""
    from mpi.steward.review import decide_review
    if remote is not None:
        res = call(remote, "POST", f"/v1/review/{item_id}/decision",
                   json={"decision": decision, "reason": reason})
    else:
        with open_registry(data_dir) as reg:
            res = decide_review(reg, item_id, decision=decision, reason=reason,
                                principal=local_principal())
    if as_json:
        _json(res)
        return
    out.print(f"#{item_id} {res['status']} ({decision}): {res['labels']} labels, "
              f"{len(res['constraint_ids'])} constraints, {res['records_moved']} records moved, "
              f"{len(res['retired'])} keys retired")


def _regroup_line(res: dict[str, Any]) -> str:
    return (f"persons now: {', '.join(res['person_keys'])}; retired: "
            f"{', '.join(res['retired']) or '-'}; new: {', '.join(res['new_keys']) or '-'}; "
            f"{res['records_moved']} records moved; {len(res['constraint_ids'])} constraints")


@persons_app.command("merge")
@remote_options
def persons_merge(
    person_key: str,
    with_keys: Annotated[list[str], typer.Option("--with", help="Another person key (repeat).")],
    reason: Reason, as_json: AsJson = False, data_dir: DataDir = None,
    remote: Remote | None = None,
) -> None:
    """Merge persons (the oldest key survives; the others forward to it; must-links)."""
    from mpi.steward.stewardship import merge_persons
    if remote is not None:
        res = call(remote, "POST", f"/v1/persons/{person_key}/merge",
                   json={"person_keys": with_keys, "reason": reason})
    else:
        with open_registry(data_dir) as reg:
            res = merge_persons(reg, person_key, others=with_keys, reason=reason,
                                principal=local_principal())
    _json(res) if as_json else out.print(escape(f"merged into {res['person_key']}; "
                                                + _regroup_line(res)))


def _group(text: str, index: int) -> list[tuple[str, str]]:
    refs = []
    for j, part in enumerate(p for p in text.split(",") if p.strip()):
        agency, sep, sid = part.strip().partition(":")
        if not sep or not agency or not sid:
            raise InvalidInput("bad --group", problems=[Problem(
                None, f"group {index + 1} item {j + 1}", "expected AGENCY:SOURCE_RECORD_ID")])
        refs.append((agency, sid))
    return refs


@persons_app.command("split")
@remote_options
def persons_split(
    person_key: str,
    group: Annotated[list[str], typer.Option("--group", help="AGENCY:ID,AGENCY:ID,... (repeat; "
                                             "every active record in exactly one group).")],
    reason: Reason, as_json: AsJson = False, data_dir: DataDir = None,
    remote: Remote | None = None,
) -> None:
    """Split a person into groups of records (cannot-links across groups)."""
    from mpi.steward.stewardship import split_person
    groups = [_group(g, i) for i, g in enumerate(group)]
    if remote is not None:
        res = call(remote, "POST", f"/v1/persons/{person_key}/split", json={
            "reason": reason, "groups": [[{"agency": a, "source_record_id": sid} for a, sid in g]
                                         for g in groups]})
    else:
        with open_registry(data_dir) as reg:
            res = split_person(reg, person_key, groups=groups, reason=reason,
                               principal=local_principal())
    _json(res) if as_json else out.print(escape(f"split {person_key}; " + _regroup_line(res)))


_LABEL_COLUMNS = ("agency_a", "source_record_id_a", "agency_b", "source_record_id_b", "is_match")


def _parse_bool(value: str | None) -> bool | None:
    v = (value or "").strip().lower()
    if v in ("1", "true", "yes", "match"):
        return True
    if v in ("0", "false", "no", "non_match"):
        return False
    return None


def _label_rows(reader: csv.DictReader[str]) -> list[LabelRow]:
    """LabelRows of a label CSV; InvalidInput naming every empty field and bad is_match."""
    from mpi.steward.labels import LabelRow
    rows: list[LabelRow] = []
    problems: list[Problem] = []
    for i, r in enumerate(reader, start=1):
        for c in _LABEL_COLUMNS[:4]:
            if not (r.get(c) or "").strip():
                problems.append(Problem(i, c, "empty"))
        is_match = _parse_bool(r.get("is_match"))
        if is_match is None:
            problems.append(Problem(i, "is_match", "expected true/false"))
        else:
            rows.append(LabelRow(r["agency_a"], r["source_record_id_a"], r["agency_b"],
                                 r["source_record_id_b"], is_match, r.get("reason") or None))
    if problems:
        raise InvalidInput("bad label file; nothing was stored", problems=problems)
    return rows


@labels_app.command("import")
@remote_options
def labels_import(
    path: Annotated[Path, typer.Argument(help="CSV: agency_a, source_record_id_a, agency_b, "
                                         "source_record_id_b, is_match (true/false), reason.",
                                         exists=True, dir_okay=False, readable=True)],
    constrain: Annotated[bool, typer.Option(help="Also make each pair a constraint.")] = True,
    data_dir: DataDir = None, remote: Remote | None = None,
) -> None:
    """Import labelled record pairs (all or none; bad rows named by row and field)."""
    from mpi.steward.labels import import_labels
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in _LABEL_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInput("bad label file", problems=[
                Problem(None, c, "column missing") for c in missing])
        rows = _label_rows(reader)
    if remote is not None:
        res = call(remote, "POST", "/v1/labels", json={
            "constrain": constrain, "labels": [dataclasses.asdict(r) for r in rows]})
    else:
        with open_registry(data_dir) as reg:
            res = import_labels(reg, rows, principal=local_principal(), constrain=constrain)
    out.print(f"{res['labels']} labels, {len(res['constraint_ids'])} constraints "
              f"({res['unmet']} take effect at the next `mpi link`)")


@constraints_app.command("list")
@remote_options
def constraints_list(
    status: Annotated[str, typer.Option(help="active, revoked or all.")] = "active",
    kind: Annotated[str | None, typer.Option(help="must_link or cannot_link.")] = None,
    person_key: Annotated[str | None, typer.Option(help="Only constraints on a record this "
                                                   "person holds now.")] = None,
    agency: Annotated[str | None, typer.Option(help="Only constraints on a record of this "
                                               "agency.")] = None,
    source_record_id: Annotated[str | None, typer.Option(help="With --agency: only "
                                                         "constraints on this record.")] = None,
    after: Annotated[int, typer.Option(help="Start after this constraint id.")] = 0,
    limit: Annotated[int, typer.Option(help="At most this many (a page).")] = 100,
    as_json: AsJson = False, data_dir: DataDir = None, remote: Remote | None = None,
) -> None:
    """List constraints, oldest first, a page at a time."""
    from mpi.steward.labels import list_constraints
    query = {"status": status, "kind": kind, "person_key": person_key, "agency": agency,
             "source_record_id": source_record_id, "after": after, "limit": limit}
    if remote is not None:
        page = call(remote, "GET", "/v1/constraints", params=query)
    else:
        with open_registry(data_dir) as reg:
            page = list_constraints(reg, principal=local_principal(), **query)  # type: ignore[arg-type]
    if as_json:
        _json(page)
        return

    def fmt(r: dict[str, Any]) -> str:
        return f"{r['agency']}:{r['source_record_id']}"

    for c in page["constraints"]:
        state = "revoked" if c["revoked_at"] else "active"
        out.print(escape(f"#{c['constraint_id']} {c['kind']} {fmt(c['records'][0])} "
                         f"{fmt(c['records'][1])} {c['source']} {state}"))
    out.print(f"{len(page['constraints'])} constraints" + (
        f"; the page stopped at --limit {limit}: more with --after {page['next_after']}"
        if page["next_after"] else ""))


@constraints_app.command("revoke")
@remote_options
def constraints_revoke(constraint_id: int, reason: Reason, data_dir: DataDir = None,
                       remote: Remote | None = None) -> None:
    """Revoke a constraint (and its label); keys change at the next `mpi link`."""
    from mpi.steward.labels import revoke_constraint
    if remote is not None:
        call(remote, "POST", f"/v1/constraints/{constraint_id}/revoke", json={"reason": reason})
    else:
        with open_registry(data_dir) as reg:
            revoke_constraint(reg, constraint_id, reason=reason, principal=local_principal())
    out.print(f"constraint #{constraint_id} revoked")
