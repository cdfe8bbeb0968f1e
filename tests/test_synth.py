"""Tests for mpi.synth: file layout, determinism, volumes and that every planted error occurs.

Owns: checks of the synthetic generator's observable output only (public API:
generate, synthesize, agency_names).  Must not depend on private internals or
on exact random draws (only on rates and structure).
"""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from nicknames import NickNamer

from mpi.synth import AGENCY_COLUMNS, agency_names, generate, synthesize

Rows = dict[str, list[dict[str, str]]]
Truth = list[tuple[str, str, str]]

HEADER = (
    "source_record_id,given_name,middle_name,family_name,date_of_birth,sex,national_id,"
    "postal_code,address_line,city,phone,email,race_ethnicity,birth_year,program,"
    "enrolled_on,research_consent"
)


@pytest.fixture(scope="module")
def sample() -> tuple[Rows, Truth]:
    return generate(people=5000, agencies=3, seed=2024)


def _by_person(records: Rows, truth: Truth) -> dict[str, list[dict[str, str]]]:
    index = {(a, r["source_record_id"]): r for a, rows in records.items() for r in rows}
    out: defaultdict[str, list[dict[str, str]]] = defaultdict(list)
    for agency, sid, pid in truth:
        out[pid].append(index[(agency, sid)])
    return out


def _mode(values: list[str]) -> str:
    vals = [v for v in values if v]
    if not vals:
        return ""
    return Counter(vals).most_common(1)[0][0]


def _within_one_edit(a: str, b: str) -> bool:
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def test_agency_names() -> None:
    assert agency_names(3) == ["agency_a", "agency_b", "agency_c"]
    assert agency_names(28)[-2:] == ["agency_aa", "agency_ab"]
    with pytest.raises(ValueError):
        agency_names(0)


def test_files_and_headers(tmp_path: Path) -> None:
    summary = synthesize(people=300, agencies=3, seed=5, out_dir=tmp_path)
    assert [p.name for p in summary.files] == ["agency_a.csv", "agency_b.csv", "agency_c.csv"]
    assert summary.truth == tmp_path / "truth.csv"
    assert summary.people == 300
    assert ",".join(AGENCY_COLUMNS) == HEADER
    for path in summary.files:
        assert path.read_text(encoding="utf-8").split("\n", 1)[0] == HEADER
    assert summary.truth.read_text(encoding="utf-8").split("\n", 1)[0] == "agency,source_record_id,person_id"
    with summary.truth.open(encoding="utf-8", newline="") as fh:
        assert sum(1 for _ in csv.DictReader(fh)) == summary.records
    total = 0
    for path in summary.files:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        total += len(rows)
        assert all(len(r) == len(AGENCY_COLUMNS) for r in rows)
    assert total == summary.records


def test_deterministic_bytes(tmp_path: Path) -> None:
    a = synthesize(people=800, agencies=3, seed=11, out_dir=tmp_path / "a")
    b = synthesize(people=800, agencies=3, seed=11, out_dir=tmp_path / "b")
    c = synthesize(people=800, agencies=3, seed=12, out_dir=tmp_path / "c")
    for fa, fb in zip([*a.files, a.truth], [*b.files, b.truth], strict=True):
        assert fa.read_bytes() == fb.read_bytes()
    pairs = zip([*a.files, a.truth], [*c.files, c.truth], strict=True)
    assert any(fa.read_bytes() != fc.read_bytes() for fa, fc in pairs)


def test_volume_and_truth_coverage(sample: tuple[Rows, Truth]) -> None:
    records, truth = sample
    n = sum(len(rows) for rows in records.values())
    assert 1.85 * 5000 <= n <= 2.25 * 5000
    keys = [(a, s) for a, s, _ in truth]
    assert len(keys) == len(set(keys)) == n
    assert set(keys) == {(a, r["source_record_id"]) for a, rows in records.items() for r in rows}
    assert all(re.fullmatch(r"P\d{7}", p) for _, _, p in truth)
    people = {p for _, _, p in truth}
    assert 4900 <= len(people) <= 5000
    for agency, rows in records.items():
        prefix = agency.removeprefix("agency_").upper()
        ids = [r["source_record_id"] for r in rows]
        assert len(ids) == len(set(ids))
        assert all(re.fullmatch(prefix + r"\d{6,}", i) for i in ids)
        assert 0.2 * n < len(rows) < 0.45 * n
    # agencies per person: roughly 35/35/30 and ~3% within-agency duplicates
    per_person: defaultdict[str, list[str]] = defaultdict(list)
    for a, _, p in truth:
        per_person[p].append(a)
    dist = Counter(len(set(v)) for v in per_person.values())
    assert 0.28 < dist[1] / len(per_person) < 0.42
    assert 0.23 < dist[3] / len(per_person) < 0.37
    dups = sum(len(v) - len(set(v)) for v in per_person.values())
    assert 0.015 < dups / n < 0.05


def test_field_formats(sample: tuple[Rows, Truth]) -> None:
    records, _ = sample
    rows = [r for rs in records.values() for r in rs]
    iso = re.compile(r"\d{4}-\d{2}-\d{2}")
    assert all(iso.fullmatch(r["date_of_birth"]) for r in rows if r["date_of_birth"])
    assert all(iso.fullmatch(r["enrolled_on"]) for r in rows)
    assert all(re.fullmatch(r"\d{4}", r["birth_year"]) for r in rows)
    assert all(re.fullmatch(r"\d{3}-\d{2}-\d{4}|\d{9}", r["national_id"]) for r in rows if r["national_id"])
    assert all(re.fullmatch(r"\d{5}", r["postal_code"]) for r in rows if r["postal_code"])
    assert {r["sex"] for r in rows} <= {"M", "F", "m", "f", "male", "female", "MALE", "FEMALE", ""}
    assert {r["research_consent"] for r in rows} == {"true", "false"}
    consent_false = sum(r["research_consent"] == "false" for r in rows) / len(rows)
    assert 0.01 < consent_false < 0.06
    assert {r["race_ethnicity"] for r in rows} == {"white", "black", "hispanic", "asian", "native", "other"}
    phone_formats = {
        "paren": r"\(\d{3}\) \d{3}-\d{4}",
        "dots": r"\d{3}\.\d{3}\.\d{4}",
        "plain": r"\d{10}",
        "intl": r"\+1 \d{3} \d{3} \d{4}",
        "dashes": r"\d{3}-\d{3}-\d{4}",
    }
    phones = [r["phone"] for r in rows if r["phone"]]
    for name, pat in phone_formats.items():
        assert any(re.fullmatch(pat, p) for p in phones), name
    assert all(any(re.fullmatch(p, ph) for p in phone_formats.values()) for ph in phones)
    # missing-field rates in the intended ballpark
    def missing(col: str) -> float:
        return sum(not r[col] for r in rows) / len(rows)

    assert 0.2 < missing("national_id") < 0.45
    assert 0.3 < missing("email") < 0.6
    assert 0.1 < missing("phone") < 0.3
    assert missing("middle_name") > 0.3
    # mixed case, non-ASCII, compound and apostrophe names all occur
    fams = [r["family_name"] for r in rows]
    assert any(f.isupper() for f in fams) and any(f.istitle() for f in fams)
    assert any(not f.isascii() for f in fams)
    assert any(not r["given_name"].isascii() for r in rows)
    assert any(" " in f for f in fams)
    assert any("'" in f for f in fams)


def _dob_error(d: str, dob: str) -> str | None:
    """How a recorded date of birth differs from the person's modal one (None: it does not)."""
    if not (d and dob and d != dob):
        return None
    if d[5:7] == dob[8:10] and d[8:10] == dob[5:7]:
        return "dob_swap"
    return "dob_transpose" if sorted(d) == sorted(dob) else "dob_other"


def _row_errors(r: dict[str, str], modal: tuple[str, str, str, str], nicks: set[str],
                fams: set[str]) -> list[str]:
    """The planted error types one record of a person shows against the person's modal values
    (``modal``: given name, family name, date of birth, SSN digits)."""
    given, family, dob, ssn = modal
    g, f = r["given_name"].casefold(), r["family_name"].casefold()
    s = r["national_id"].replace("-", "")
    checks = {
        "nickname": g in nicks,
        "name_typo": _within_one_edit(g, given) or _within_one_edit(f, family),
        "hyphenated_married": "-" in f and any(part in fams for part in f.split("-")),
        "placeholder_name": g in ("unknown", "baby boy", "baby girl"),
        "placeholder_ssn": r["national_id"] in ("000-00-0000", "000000000"),
        "ssn_transpose": bool(s and ssn and s != ssn and s != "000000000" and sorted(s) == sorted(ssn)),
        # only OCR-style substitutions put digits into names
        "ocr_digit": any(ch.isdigit() for ch in r["given_name"] + r["family_name"]),
    }
    kinds = [kind for kind, hit in checks.items() if hit]
    dob_kind = _dob_error(r["date_of_birth"], dob)
    return kinds if dob_kind is None else [*kinds, dob_kind]


def _twins(modal: dict[str, tuple[str, str, str, str]]) -> list[list[str]]:
    """Groups of two or more different people sharing DOB, family name and ZIP."""
    groups: defaultdict[tuple[str, str, str], list[str]] = defaultdict(list)
    for pid, (_, family, dob, zipc) in modal.items():
        if dob and family and zipc:
            groups[(dob, family, zipc)].append(pid)
    return [g for g in groups.values() if len(g) >= 2]


def test_every_error_type_occurs(sample: tuple[Rows, Truth]) -> None:
    records, truth = sample
    people = _by_person(records, truth)
    nn = NickNamer()
    hits: Counter[str] = Counter()
    modal: dict[str, tuple[str, str, str, str]] = {}
    for pid, rows in people.items():
        given = _mode([r["given_name"].casefold() for r in rows])
        family = _mode([r["family_name"].casefold() for r in rows])
        dob = _mode([r["date_of_birth"] for r in rows])
        ssn = _mode([r["national_id"].replace("-", "") for r in rows if r["national_id"] != "000-00-0000"])
        modal[pid] = (given, family, dob, _mode([r["postal_code"] for r in rows]))
        if len({r["postal_code"] for r in rows if r["postal_code"]}) > 1:
            hits["moved"] += 1
        nicks = {n.casefold() for n in nn.nicknames_of(given)} if given else set()
        fams = {r["family_name"].casefold() for r in rows}
        for r in rows:
            hits.update(_row_errors(r, (given, family, dob, ssn), nicks, fams))
    twins = _twins(modal)
    for kind in (
        "moved", "nickname", "name_typo", "hyphenated_married", "placeholder_name", "placeholder_ssn",
        "dob_swap", "dob_transpose", "dob_other", "ssn_transpose", "ocr_digit",
    ):
        assert hits[kind] > 0, kind
    assert len(twins) >= 10
    n = len(truth)
    assert hits["nickname"] / n > 0.01
    assert hits["name_typo"] / n > 0.03
    assert hits["dob_swap"] / n > 0.002


def test_weak_group_only_when_requested() -> None:
    plain, _ = generate(people=1500, agencies=3, seed=9)
    assert all(r["race_ethnicity"] != "group_x" for rows in plain.values() for r in rows)
    records, truth = generate(people=3000, agencies=3, seed=9, weak_group_share=0.2)
    people = _by_person(records, truth)
    weak = [rows for rows in people.values() if rows[0]["race_ethnicity"] == "group_x"]
    assert all(len({r["race_ethnicity"] for r in rows}) == 1 for rows in people.values())
    assert 0.1 < len(weak) / len(people) < 0.3
    strong = [rows for rows in people.values() if rows[0]["race_ethnicity"] != "group_x"]

    def email_missing(groups: list[list[dict[str, str]]]) -> float:
        rows = [r for g in groups for r in g]
        return sum(not r["email"] for r in rows) / len(rows)

    assert email_missing(weak) > email_missing(strong) + 0.15


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(people=0, agencies=3, seed=1)
    with pytest.raises(ValueError):
        generate(people=10, agencies=3, seed=1, weak_group_share=1.5)
    with pytest.raises(ValueError):
        synthesize(people=10, agencies=0, seed=1, out_dir=tmp_path)
