"""The steward commands (`mpi review`, `mpi persons`, `mpi labels`, `mpi constraints`) through
typer's CliRunner on a local registry (`--data-dir`) in tmp_path.

Owns: each command doing what its API twin does on the same registry: list/show/decide review
items (waterfall printed, no token), merge and split, label import from CSV (bad rows named,
nothing stored), list and revoke constraints.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from mpi.cli.main import app
from mpi.config import Settings
from mpi.errors import Conflict, InvalidInput
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import Registry
from mpi.store import labels as lstore
from mpi.synth import generate

runner = CliRunner()


def run(data: Path, *args: str) -> Result:
    """Invoke ``mpi`` with ``--data-dir``; it must succeed."""
    result = runner.invoke(app, [*args, "--data-dir", str(data)])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    reg = Registry(Settings(data_dir=d))
    try:
        for agency, rows in generate(people=300, agencies=3, seed=11)[0].items():
            recs, _ = tokenize_rows(rows, secret=demo_secret(1))
            reg.enrol_records(agency, list(enumerate(recs, start=1)))
    finally:
        reg.close()
    return d


def test_review_commands(data: Path) -> None:
    page = json.loads(run(data, "review", "list", "--json").output)
    assert page["items"]
    item = page["items"][0]
    listed = run(data, "review", "list").output
    assert f"#{item['item_id']} {item['kind']}" in listed and "given_name=" in listed
    shown = run(data, "review", "show", str(item["item_id"])).output
    assert "prior" in shown and "total" in shown and "household" in shown
    as_json = run(data, "review", "show", str(item["item_id"]), "--json").output
    tokens = {tok.split(":", 1)[1] for rows in generate(people=300, agencies=3, seed=11)[0].values()
              for rec in tokenize_rows(rows, secret=demo_secret(1))[0]
              for tok in rec["tokens"].values() if tok}
    reg = Registry(Settings(data_dir=data))
    try:  # nor the int64 form the registry holds
        n = reg.index.n
        tokens |= {str(v) for c in reg.index.columns for v in reg.index.data[c][:n].tolist() if v}
    finally:
        reg.close()
    assert tokens and not any(t in text for t in tokens for text in (listed, shown, as_json))
    decided = run(data, "review", "decide", str(item["item_id"]), "--decision", "non_match",
                  "--reason", "twins").output
    assert "decided (non_match)" in decided
    cons = json.loads(run(data, "constraints", "list", "--json").output)["constraints"]
    assert cons and {c["kind"] for c in cons} == {"cannot_link"}
    run(data, "constraints", "revoke", str(cons[0]["constraint_id"]), "--reason", "wrong")
    assert "revoked" in run(data, "constraints", "list", "--status", "revoked").output
    bad = runner.invoke(app, ["review", "decide", str(item["item_id"]), "--decision", "match",
                              "--reason", "again", "--data-dir", str(data)])
    assert isinstance(bad.exception, Conflict)
    for group in ("review", "constraints"):  # a page of none is a named refusal, not a crash
        zero = runner.invoke(app, [group, "list", "--limit", "0", "--data-dir", str(data)])
        assert isinstance(zero.exception, InvalidInput), zero.exception
        assert [p.field for p in zero.exception.problems] == ["limit"]


@pytest.mark.integration
def test_persons_and_labels_commands(data: Path, tmp_path: Path) -> None:
    reg = Registry(Settings(data_dir=data))
    try:
        singles = [k for k in reg.persons if reg.person_count[reg.person_of[k]] == 1][:2]
        refs = {k: reg.get_person(k)["records"][0] for k in singles}
    finally:
        reg.close()
    out = run(data, "persons", "merge", singles[1], "--with", singles[0], "--reason", "same").output
    assert f"merged into {singles[0]}" in out
    groups = [f"{a}:{s}" for a, s in refs.values()]
    refused = runner.invoke(app, ["persons", "split", singles[0], "--group", groups[0], "--group",
                                  groups[1], "--reason", "not the same", "--data-dir", str(data)])
    assert isinstance(refused.exception, Conflict)  # the merge's must-link stands
    path = tmp_path / "labels.csv"
    (a1, s1), (a2, s2) = refs.values()
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["agency_a", "source_record_id_a", "agency_b", "source_record_id_b",
                    "is_match", "reason"])
        w.writerow([a1, s1, a2, "missing-id", "true", ""])
    res = runner.invoke(app, ["labels", "import", str(path), "--data-dir", str(data)])
    assert isinstance(res.exception, InvalidInput)
    assert [(p.row, p.field) for p in res.exception.problems] == [(1, "source_record_id_b")]
    reg = Registry(Settings(data_dir=data))
    try:
        before = lstore.count_labels(reg.store.cursor())
    finally:
        reg.close()
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["agency_a", "source_record_id_a", "agency_b", "source_record_id_b",
                    "is_match"])
        w.writerow([a1, s1, a2, s2, "true"])
    assert "1 labels, 1 constraints" in run(data, "labels", "import", str(path)).output
    reg = Registry(Settings(data_dir=data))
    try:
        assert lstore.count_labels(reg.store.cursor()) == before + 0  # same pair: newest wins
        assert len(reg.constraints.items) == 2
    finally:
        reg.close()


def test_label_file_problems_are_named_by_row_and_field(data: Path, tmp_path: Path) -> None:
    """A short row, an empty id or a bad is_match is an InvalidInput naming each row and field
    (never a stack trace), and a missing file is a usage error."""
    path = tmp_path / "labels.csv"
    path.write_text("agency_a,source_record_id_a,agency_b,source_record_id_b,is_match\n"
                    "agency_a,A1,agency_b\n"
                    "agency_a,,agency_b,B1,maybe\n"
                    "agency_a,A1,agency_b,B1,true\n")
    res = runner.invoke(app, ["labels", "import", str(path), "--data-dir", str(data)])
    assert isinstance(res.exception, InvalidInput), res.exception
    assert [(p.row, p.field) for p in res.exception.problems] == [
        (1, "source_record_id_b"), (1, "is_match"), (2, "source_record_id_a"), (2, "is_match")]
    missing = runner.invoke(app, ["labels", "import", str(tmp_path / "none.csv"),
                                  "--data-dir", str(data)])
    assert missing.exit_code == 2 and not isinstance(missing.exception, OSError)


def test_review_list_sorts_by_current_probability(data: Path) -> None:
    page = json.loads(run(data, "review", "list", "--sort", "probability_desc", "--json",
                          "--limit", "200").output)
    probs = [i["current_probability"] for i in page["items"]]
    assert len(probs) > 1 and probs == sorted(probs, reverse=True)
    assert "(queued " in run(data, "review", "list").output
    bad = runner.invoke(app, ["review", "list", "--sort", "nope", "--data-dir", str(data)])
    assert bad.exit_code != 0
