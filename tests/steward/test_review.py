"""The review queue, decisions, label import, constraints and manual merge/split over the API.

Owns: the steward routes seen from outside on a real app over a real registry (~400 synthetic
people at two agencies posted through ``POST /v1/records``): items show agreement patterns and
a waterfall that sums to the match weight and never a token; filters and paging; decisions
become labels and constraints (and a match merges now); defer stores nothing; bad label rows
are 422s naming row and field with nothing stored; merge and split follow the key rules and
lineage, are audited with key digests, and refuse to cross constraints.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mpi.audit import key_ref
from mpi.store import labels as lstore
from tests.support.api import A, B, World, close_world, enrolled_world
from tests.support.records import token_records

TOKENS = token_records(people=400, agencies=2, seed=13)  # yields both item kinds


@pytest.fixture
def sw(tmp_path: Path) -> Iterator[World]:
    """A world whose registry holds the synthetic records (and so some review items)."""
    w = enrolled_world(tmp_path, TOKENS)
    yield w
    close_world(w)


def _no_tokens(w: World, body: Any) -> None:
    text = json.dumps(body)
    assert '"tokens"' not in text
    for recs in TOKENS.values():
        for rec in recs[:200]:
            for tok in rec["tokens"].values():
                if tok:
                    assert tok.split(":", 1)[1] not in text
    n = w.registry.index.n
    stored = {int(v) for c in ("given_name", "family_name", "date_of_birth")
              for v in w.registry.index.data[c][:n].tolist() if v}
    assert not any(str(v) in text for v in stored)


def test_review_list_explains_items_without_tokens(sw: World) -> None:
    page = sw.get_json("/v1/review?status=all&limit=200")
    items = page["items"]
    assert page["next_after"] is None  # one page holds them all (the filters compare to it)
    assert items and {i["kind"] for i in items} <= {"record_person", "possible_duplicate"}
    _no_tokens(sw, page)
    for item in items:
        ex = item["explanation"]
        assert ex is not None and item["agencies"]
        total = ex["prior_weight"] + sum(c["match_weight"] for c in ex["comparisons"])
        assert abs(total - ex["match_weight"]) < 1e-9
        assert set(ex["agreement"]) == {c["comparison"] for c in ex["comparisons"]}
        assert {ex["left"]["agency"], ex["right"]["agency"]} <= set(item["agencies"])
    kinds = {i["kind"] for i in items}
    for kind in kinds:
        only = sw.get_json(f"/v1/review?status=all&kind={kind}")["items"]
        assert only and all(i["kind"] == kind for i in only)
    cut = sorted(i["match_probability"] for i in items)[len(items) // 2]
    high = sw.get_json(f"/v1/review?status=all&min_probability={cut}")["items"]
    assert {i["item_id"] for i in high} == {i["item_id"] for i in items
                                            if i["match_probability"] >= cut}
    for agency in (A, B):
        mine = sw.get_json(f"/v1/review?status=all&agency={agency}&limit=200")["items"]
        assert mine and all(agency in i["agencies"] for i in mine)
        assert {i["item_id"] for i in mine} == {i["item_id"] for i in items
                                                if agency in i["agencies"]}
    assert sw.get_json("/v1/review?status=all&agency=no_such_agency")["items"] == []
    first = sw.get_json("/v1/review?status=all&limit=1")
    assert len(first["items"]) == 1 and first["next_after"] == items[0]["item_id"]
    assert len(items) > 1
    second = sw.get_json(f"/v1/review?status=all&limit=1&after={first['next_after']}")
    assert second["items"][0]["item_id"] == items[1]["item_id"]
    one = sw.get_json(f"/v1/review/{items[0]['item_id']}")
    assert one["item_id"] == items[0]["item_id"]
    sw.get_json("/v1/review/999999", status=404)
    sw.get_json("/v1/review", who=A, status=403)
    bad = sw.get_json("/v1/review?min_probability=0.9&max_probability=0.1", status=422)
    assert bad["errors"][0]["field"] == "min_probability"
    assert [e["outcome"] for e in sw.audit() if e["action"] == "review.list"][-1] == "invalid"
    actions = [e["action"] for e in sw.audit()]
    assert "review.list" in actions and "review.read" in actions


def _open_item(w: World, kind: str = "record_person") -> dict[str, Any]:
    items = w.get_json(f"/v1/review?kind={kind}")["items"]
    assert items, f"no open {kind} item"
    return dict(items[0])


def test_match_decision_merges_now_and_becomes_labels_and_constraints(sw: World) -> None:
    item = _open_item(sw)
    record_key, person_key = item["record"]["person_key"], item["person_key"]
    assert record_key != person_key
    labels_before = lstore.count_labels(sw.registry.store.cursor())
    res = sw.post_json(f"/v1/review/{item['item_id']}/decision",
                {"decision": "match", "reason": "same person, checked at the agency"})
    _no_tokens(sw, res)
    assert res["status"] == "decided" and res["decision"] == "match"
    assert res["labels"] == len(res["constraint_ids"]) >= 1
    assert lstore.count_labels(sw.registry.store.cursor()) == labels_before + res["labels"]
    # The newer key (the record's own) is retired and forwards to the candidate person.
    assert res["retired"] == [record_key]
    old = sw.get_json(f"/v1/persons/{record_key}")
    assert old["status"] == "retired" and old["superseded_by"] == [person_key]
    cons = sw.get_json("/v1/constraints")["constraints"]
    assert {c["kind"] for c in cons} == {"must_link"} and {c["source"] for c in cons} == {"review"}
    assert all(c["source_ref"] == f"review:{item['item_id']}" for c in cons)
    again = sw.post_json(f"/v1/review/{item['item_id']}/decision",
                  {"decision": "non_match", "reason": "changed my mind"}, status=409)
    assert again["code"] == "conflict"
    events = [e for e in sw.audit() if e["action"] == "review.decide"]
    assert [e["outcome"] for e in events] == ["ok", "invalid"]
    sw.registry.link()
    _constraints_hold(sw)  # the decision survives a re-link


@pytest.mark.integration
def test_non_match_and_defer(sw: World) -> None:
    items = sw.get_json("/v1/review")["items"]
    assert len(items) >= 2
    first, second = items[0], items[1]
    res = sw.post_json(f"/v1/review/{first['item_id']}/decision",
                {"decision": "non_match", "reason": "different people (twins)"})
    assert res["records_moved"] == 0 and res["retired"] == []
    n = res["records"]["a"] * res["records"]["b"]
    assert res["labels"] == n == len(res["constraint_ids"])
    cons = sw.get_json("/v1/constraints?kind=cannot_link")["constraints"]
    assert len(cons) == n
    sw.registry.link()
    _constraints_hold(sw)
    d = sw.post_json(f"/v1/review/{second['item_id']}/decision",
              {"decision": "defer", "reason": "need the agency's file"})
    assert d["status"] == "deferred" and d["labels"] == 0 and d["constraint_ids"] == []
    assert [i["item_id"] for i in sw.get_json("/v1/review?status=deferred")["items"]] == \
        [second["item_id"]]
    bad = sw.post_json(f"/v1/review/{second['item_id']}/decision",
                {"decision": "maybe", "reason": "x"}, status=422)
    assert bad["errors"][0]["field"] == "decision"
    sw.post_json(f"/v1/review/{second['item_id']}/decision",
          {"decision": "match", "reason": ""}, status=422)


def _person_with(w: World, min_records: int) -> tuple[str, list[dict[str, str]]]:
    reg = w.registry
    for key in reg.persons:
        lab = reg.person_of[key]
        if reg.person_count[lab] >= min_records:
            recs = w.get_json(f"/v1/persons/{key}")["records"]
            return key, recs
    raise AssertionError("no such person")


@pytest.mark.integration
def test_label_import_all_or_none_with_rows_named(sw: World) -> None:
    (_k1, r1), cur = _person_with(sw, 2), sw.registry.store.cursor()
    a, b = r1[0], r1[1]
    before = lstore.count_labels(cur)
    body = {"labels": [
        {"agency_a": a["agency"], "source_record_id_a": a["source_record_id"],
         "agency_b": b["agency"], "source_record_id_b": b["source_record_id"], "is_match": False},
        {"agency_a": a["agency"], "source_record_id_a": "nope", "agency_b": b["agency"],
         "source_record_id_b": b["source_record_id"], "is_match": True},
        {"agency_a": a["agency"], "source_record_id_a": a["source_record_id"],
         "agency_b": a["agency"], "source_record_id_b": a["source_record_id"], "is_match": True},
    ]}
    bad = sw.post_json("/v1/labels", body, status=422)
    assert [(e["row"], e["field"]) for e in bad["errors"]] == [
        (2, "source_record_id_a"), (3, "source_record_id_b")]
    assert "nope" not in json.dumps(bad)
    assert lstore.count_labels(cur) == before
    shape = sw.post_json("/v1/labels", {"labels": [{"agency_a": A}]}, status=422)
    assert shape["errors"][0]["row"] == 1
    ok = sw.post_json("/v1/labels", {"labels": body["labels"][:1]})
    assert ok["labels"] == 1 and len(ok["constraint_ids"]) == 1 and ok["unmet"] == 1
    assert lstore.count_labels(cur) == before + 1
    # A must-link contradicting that cannot-link is refused on its row.
    contra = dict(body["labels"][0], is_match=True)
    sw.post_json("/v1/labels", {"labels": [contra]}, status=422)
    # Agencies label pairs of their own records only.
    own = [r for r in TOKENS[A][:2]]
    mine = {"agency_a": A, "source_record_id_a": own[0]["source_record_id"], "agency_b": A,
            "source_record_id_b": own[1]["source_record_id"], "is_match": False,
            "reason": "different people"}
    assert sw.post_json("/v1/labels", {"labels": [mine], "constrain": False}, who=A)["constraint_ids"] == []
    theirs = dict(mine, agency_b=B, source_record_id_b=TOKENS[B][0]["source_record_id"])
    refused = sw.post_json("/v1/labels", {"labels": [theirs]}, who=A, status=422)
    assert refused["errors"][0]["field"] == "agency_b"


@pytest.mark.integration
def test_merge_and_split_follow_key_rules_and_lineage(sw: World) -> None:
    reg = sw.registry
    singles = [k for k in reg.persons if reg.person_count[reg.person_of[k]] == 1][:3]
    older, newer, third = singles  # reg.persons is oldest first
    res = sw.post_json(f"/v1/persons/{newer}/merge", {"person_keys": [third, older],
                                                   "reason": "one person, three ids"})
    assert res["person_key"] == older and res["person_keys"] == [older]
    assert sorted(res["retired"]) == sorted([newer, third]) and res["records_moved"] == 2
    for k in (newer, third):
        p = sw.get_json(f"/v1/persons/{k}")
        assert p["status"] == "retired" and p["superseded_by"] == [older]
    merged = sw.get_json(f"/v1/persons/{older}")["records"]
    assert len(merged) == 3
    reg.link()  # three unrelated people stay merged: the must-links hold them together
    _constraints_hold(sw)
    assert sw.get_json(f"/v1/persons/{older}")["records"] == merged
    events = {(e["person_key"], e["event_type"], e["cause"]) for e in _events(sw)}
    assert {(newer, "retired", "merge"), (third, "retired", "merge")} <= events
    # Splitting across the merge's must-links is refused until they are revoked.
    groups = [[merged[0], merged[1]], [merged[2]]]
    refused = sw.post_json(f"/v1/persons/{older}/split", {"groups": groups, "reason": "two"},
                    status=409)
    assert refused["code"] == "conflict"
    for c in sw.get_json("/v1/constraints")["constraints"]:
        sw.post_json(f"/v1/constraints/{c['constraint_id']}/revoke", {"reason": "merged in error"})
    assert sw.get_json("/v1/constraints")["constraints"] == []
    # The larger group keeps the key; the other gets a new key with split lineage.
    sp = sw.post_json(f"/v1/persons/{older}/split", {"groups": groups, "reason": "two people"})
    assert sp["records_moved"] == 1 and len(sp["new_keys"]) == 1 and sp["retired"] == []
    new_key = sp["new_keys"][0]
    assert sorted(sp["person_keys"]) == sorted([older, new_key])
    assert len(sw.get_json(f"/v1/persons/{older}")["records"]) == 2
    assert {(new_key, "split", "split")} <= {(e["person_key"], e["event_type"], e["cause"])
                                              for e in _events(sw)}
    cons = sw.get_json("/v1/constraints")["constraints"]
    assert sorted(c["source"] for c in cons) == ["split", "split"]
    assert len(sw.get_json("/v1/constraints?status=revoked")["constraints"]) == 2
    # A merge across the split's cannot-links is refused, nothing changes.
    conflict = sw.post_json(f"/v1/persons/{older}/merge", {"person_keys": [new_key],
                                                        "reason": "oops"}, status=409)
    assert conflict["code"] == "conflict"
    # Bad splits name what is wrong.
    bad = sw.post_json(f"/v1/persons/{older}/split",
                {"groups": [[merged[0]], [{"agency": A, "source_record_id": "zz"}]],
                 "reason": "x"}, status=422)
    assert {e["field"] for e in bad["errors"]} == {"groups[1][0]"}
    sw.post_json("/v1/persons/pk_aaaaaaaaaaaaaaaaaaaa/merge", {"person_keys": [older],
                                                             "reason": "x"}, status=404)
    sw.post_json(f"/v1/persons/{newer}/merge", {"person_keys": [older], "reason": "x"},
          status=409)  # retired key
    audit = [e for e in sw.audit() if e["action"] in ("persons.merge", "persons.split")]
    assert [e["outcome"] for e in audit] == ["ok", "invalid", "ok", "invalid", "invalid",
                                            "not_found", "invalid"]
    assert audit[0]["target"] == key_ref(newer)
    text = json.dumps(audit, default=str)
    assert all(k not in text for k in (older, newer, third, new_key))
    # The split's cannot-links survive a re-link.
    reg.link()
    _constraints_hold(sw)
    assert reg.verify_audit().ok


def _constraints_hold(w: World) -> None:
    reg = w.registry
    n = reg.index.n
    person = {int(reg.index.ident[r]): int(reg.index.label[r]) for r in range(n)
              if reg.index.active[r]}
    assert reg.constraints
    for c in reg.constraints.items.values():
        assert (person[c.a] == person[c.b]) == (c.kind == "must_link"), c


def _events(w: World) -> list[dict[str, Any]]:
    rows = w.registry.store.cursor().execute(
        "SELECT person_key, event_type, cause FROM key_event").fetchall()
    return [{"person_key": k, "event_type": t, "cause": c} for k, t, c in rows]


@pytest.mark.integration
def test_possible_duplicate_merged_since_can_be_closed(sw: World) -> None:
    item = _open_item(sw, "possible_duplicate")
    keys = [item["person_key"], item["other_person_key"]]
    shown = sw.get_json(f"/v1/review/{item['item_id']}")
    assert shown["explanation"] is not None and shown["records"]["b"] >= 1
    sw.post_json(f"/v1/persons/{keys[0]}/merge", {"person_keys": [keys[1]], "reason": "dup"})
    after = sw.get_json(f"/v1/review/{item['item_id']}")
    assert after["explanation"] is None and after["records"]["b"] == 0
    assert after["status"] == "resolved"  # the merge settled it (still decidable)
    assert item["item_id"] not in {i["item_id"] for i in sw.get_json("/v1/review?limit=200")["items"]}
    refused = sw.post_json(f"/v1/review/{item['item_id']}/decision",
                    {"decision": "non_match", "reason": "no"}, status=409)
    assert "split" in refused["detail"]
    closed = sw.post_json(f"/v1/review/{item['item_id']}/decision",
                   {"decision": "match", "reason": "merged already"})
    assert closed["status"] == "decided" and closed["labels"] == 0


@pytest.mark.integration
def test_a_relink_that_settles_an_item_resolves_it(sw: World) -> None:
    from mpi.steward.labels import LabelRow, import_labels
    item = _open_item(sw)
    cur = sw.registry.store.cursor()
    (seq, person_key), = cur.execute("SELECT record_seq, person_key FROM review_item "
                                     "WHERE item_seq = ?", [item["item_id"]]).fetchall()
    (a_ag, a_sid), = cur.execute("SELECT agency, source_record_id FROM source_record "
                                 "WHERE record_seq = ?", [seq]).fetchall()
    b_ag, b_sid = cur.execute("SELECT agency, source_record_id FROM source_record WHERE "
                              "person_key = ? AND status = 'active'", [person_key]).fetchall()[0]
    untouched = [i["item_id"] for i in sw.get_json("/v1/review?limit=200")["items"]
                 if i["item_id"] != item["item_id"]]
    res = import_labels(sw.registry, [LabelRow(a_ag, a_sid, b_ag, b_sid, True, "agency check")],
                        principal="steward-test")
    assert res["unmet"] == 1  # an imported label takes effect at the next re-link
    assert sw.get_json(f"/v1/review/{item['item_id']}")["status"] == "open"
    sw.registry.link()
    after = sw.get_json(f"/v1/review/{item['item_id']}")
    assert after["status"] == "resolved"
    now = dict(cur.execute("SELECT source_record_id, person_key FROM source_record WHERE "
                           "(agency, source_record_id) IN ((?, ?), (?, ?))",
                           [a_ag, a_sid, b_ag, b_sid]).fetchall())
    assert now[a_sid] == now[b_sid]
    assert item["item_id"] in {i["item_id"] for i in sw.get_json("/v1/review?status=resolved")["items"]}
    # Items the re-link did not settle stay open; a resolved item can still be decided.
    still_open = {i["item_id"] for i in sw.get_json("/v1/review?limit=200")["items"]}
    assert still_open and still_open <= set(untouched)
    sw.post_json(f"/v1/review/{item['item_id']}/decision", {"decision": "match", "reason": "confirm"})


def test_match_decision_never_joins_a_cannot_linked_pair(sw: World) -> None:
    """A match merges the record's whole current person into the candidate person. When that
    person also holds a record cannot-linked to the candidate's records, the decision is
    refused (409, nothing stored) rather than silently breaking the constraint."""
    item = _open_item(sw)
    rec, candidate = item["record"], item["person_key"]
    tokens = next(t for t in TOKENS[rec["agency"]]
                  if t["source_record_id"] == rec["source_record_id"])
    twin = dict(tokens, source_record_id="twin-of-reviewed-record")
    r = sw.post_records(rec["agency"], [twin])
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["person_key"] == rec["person_key"]  # joins the record's person
    other = sw.get_json(f"/v1/persons/{candidate}")["records"][0]
    label = {"agency_a": rec["agency"], "source_record_id_a": twin["source_record_id"],
             "agency_b": other["agency"], "source_record_id_b": other["source_record_id"],
             "is_match": False, "reason": "known to be different people"}
    assert sw.post_json("/v1/labels", {"labels": [label]})["unmet"] == 0
    labels_before = lstore.count_labels(sw.registry.store.cursor())
    refused = sw.post_json(f"/v1/review/{item['item_id']}/decision",
                    {"decision": "match", "reason": "same person"}, status=409)
    assert refused["code"] == "conflict" and "cannot-link" in refused["detail"]
    assert rec["person_key"] not in refused["detail"] and candidate not in refused["detail"]
    assert lstore.count_labels(sw.registry.store.cursor()) == labels_before
    assert sw.get_json(f"/v1/review/{item['item_id']}")["status"] == "open"
    _constraints_hold(sw)
    # Splitting the twin off first lets the decision through, and every constraint holds.
    held = sw.get_json(f"/v1/persons/{rec['person_key']}")["records"]
    sw.post_json(f"/v1/persons/{rec['person_key']}/split", {"groups": [
        [{"agency": x["agency"], "source_record_id": x["source_record_id"]} for x in held
         if x["source_record_id"] != twin["source_record_id"]],
        [{"agency": rec["agency"], "source_record_id": twin["source_record_id"]}]],
        "reason": "the twin is someone else"})
    done = sw.post_json(f"/v1/review/{item['item_id']}/decision",
                 {"decision": "match", "reason": "same person"})
    assert done["status"] == "decided"
    _constraints_hold(sw)


@pytest.mark.integration
def test_a_non_match_keeps_the_two_persons_out_of_the_queue(sw: World) -> None:
    """After a steward's non_match on a possible duplicate, a new record bridging the same two
    persons does not queue them again (every record pair across them is cannot-linked)."""
    item = _open_item(sw, "possible_duplicate")
    pair = {item["person_key"], item["other_person_key"]}
    cur = sw.registry.store.cursor()
    bridges = cur.execute("SELECT agency, source_record_id FROM source_record WHERE "
                          "person_key = ? AND status = 'active'", [item["person_key"]]).fetchall()
    by_sid = {(a, r["source_record_id"]): r for a in (A, B) for r in TOKENS[a]}

    def queued_for_pair() -> int:
        rows = sw.registry.store.cursor().execute(
            "SELECT person_key, other_person_key FROM review_item WHERE kind = "
            "'possible_duplicate' AND status = 'open'").fetchall()
        return sum(1 for k, o in rows if {k, o} == pair)

    def repost(tag: str) -> None:
        for agency, sid in bridges:  # copies of the person's records: one of them bridges
            r = sw.post_records(agency, [dict(by_sid[(agency, sid)],
                                              source_record_id=f"{sid}-{tag}")])
            assert r.status_code == 200, r.text

    before = queued_for_pair()
    repost("again")  # without a decision, the pair is queued again
    assert queued_for_pair() > before
    for open_item in sw.get_json("/v1/review?kind=possible_duplicate&limit=200")["items"]:
        if {open_item["person_key"], open_item["other_person_key"]} == pair:
            sw.post_json(f"/v1/review/{open_item['item_id']}/decision",
                  {"decision": "non_match", "reason": "different people"})
    assert queued_for_pair() == 0
    repost("after-decision")
    assert queued_for_pair() == 0
