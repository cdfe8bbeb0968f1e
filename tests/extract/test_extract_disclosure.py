"""Disclosure control of research extracts (issue #5): pseudonyms and generalization.

k-anonymity and l-diversity of rows extracts (mpi/extract/protect.py) are confirmed with pycanon in
tests/extract/test_reid_attack.py and tests/extract/test_extract_build.py.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import hashlib
import hmac
import re
from importlib import resources

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpi.errors import InvalidInput
from mpi.extract.generalize import (
    APPLICABLE,
    LOW_POPULATION_ZIP3,
    check_generalization,
    default_generalization,
    generalize,
)
from mpi.extract.pseudonym import date_shift_days, new_project_secret, pseudonymize

HIPAA_ZIP3 = {"036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878",
              "879", "884", "890", "893"}
person_keys = st.lists(st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZ", min_size=1, max_size=26),
                       min_size=1, max_size=60)
secrets32 = st.binary(min_size=32, max_size=32)


# ---- pseudonyms ---------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(keys=person_keys, s1=secrets32, s2=secrets32)
def test_two_projects_share_no_pseudonym(keys: list[str], s1: bytes, s2: bytes) -> None:
    if s1 == s2:
        return
    a, b = pseudonymize(keys, s1).to_pylist(), pseudonymize(keys, s2).to_pylist()
    assert not set(a) & set(b)
    assert a == pseudonymize(keys, s1).to_pylist()            # same secret reproduces the ids
    assert a == pseudonymize(pa.array(keys), s1).to_pylist()  # Arrow input gives the same
    assert len(set(a)) == len(set(keys))                       # distinct persons stay distinct
    assert all(re.fullmatch(r"p_[a-z2-7]{24}", p) for p in a)
    assert not any(k in p for k in keys if len(k) > 3 for p in a)


def test_pseudonym_known_answer_and_domain_separation() -> None:
    secret = bytes(range(32))
    sub = hmac.digest(secret, b"mpi/extract/pseudonym/v1", hashlib.sha256)
    expected = "p_" + base64.b32encode(hmac.digest(sub, b"K123", hashlib.sha256)[:15]).decode().lower()
    assert pseudonymize(["K123"], secret).to_pylist() == [expected]
    shift_sub = hmac.digest(secret, b"mpi/extract/date-shift/v1", hashlib.sha256)
    word = int.from_bytes(hmac.digest(shift_sub, b"K123", hashlib.sha256)[:8], "big")
    r = word % 364
    assert date_shift_days(["K123"], secret).to_pylist() == [r - 182 if r < 182 else r - 181]


def test_fresh_secrets_and_bad_input() -> None:
    s = new_project_secret()
    assert len(s) == 32 and s != new_project_secret()
    with pytest.raises(InvalidInput):
        pseudonymize(["a"], b"short")
    with pytest.raises(InvalidInput):
        pseudonymize(pa.array(["a", None]), s)
    with pytest.raises(InvalidInput):
        date_shift_days(["a"], s, max_days=0)


@settings(max_examples=100, deadline=None)
@given(keys=person_keys, secret=secrets32, max_days=st.integers(1, 400))
def test_date_shift_is_per_person_nonzero_and_in_range(keys: list[str], secret: bytes, max_days: int) -> None:
    shifts = date_shift_days(keys, secret, max_days=max_days)
    assert shifts.type == pa.int32()
    values = shifts.to_pylist()
    assert all(v != 0 and -max_days <= v <= max_days for v in values)
    per_person = collections.defaultdict(set)
    for k, v in zip(keys, values, strict=True):
        per_person[k].add(v)
    assert all(len(v) == 1 for v in per_person.values())
    assert values == date_shift_days(list(reversed(keys)), secret, max_days=max_days).to_pylist()[::-1]


def test_date_shift_is_uniform_and_unrelated_to_the_pseudonym() -> None:
    secret = new_project_secret()
    keys = [f"K{i:08d}" for i in range(60_000)]
    shifts = np.asarray(date_shift_days(keys, secret, max_days=5))
    counts = np.array([np.sum(shifts == v) for v in (-5, -4, -3, -2, -1, 1, 2, 3, 4, 5)])
    expected = len(keys) / 10
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 27.9        # 9 degrees of freedom, p = 0.001
    # the shift is not a function of the pseudonym's first character (a cheap independence check)
    first = np.array([p[2] for p in pseudonymize(keys, secret).to_pylist()])
    by_char = [np.mean(shifts[first == c]) for c in "abcdefgh"]
    assert max(abs(m) for m in by_char) < 0.25


# ---- generalization -------------------------------------------------------------------------------

def test_zip3_list_is_the_hipaa_list_shipped_as_package_data() -> None:
    assert LOW_POPULATION_ZIP3 == HIPAA_ZIP3
    text = resources.files("mpi.extract").joinpath("data/low_population_zip3.csv").read_text()
    assert "Census" in text and "hhs.gov" in text and "20,000" in text


@pytest.mark.parametrize(("name", "type_", "expected"), [
    ("enrollment_start", "date", "month"), ("birth_date", "date", "year"), ("date_of_birth", "date", "year"),
    ("age", "integer", "top_code_90"), ("age_at_entry", "number", "top_code_90"),
    ("zip", "string", "zip3"), ("postal_code", "string", "zip3"), ("zip5", "integer", "zip3"),
    ("sex", "string", "none"), ("birth_year", "integer", "none"), ("page", "integer", "none"),
    ("program", "string", "none"), ("employed", "boolean", "none"), ("income", "number", "none"),
])
def test_defaults_follow_the_issue(name: str, type_: str, expected: str) -> None:
    assert default_generalization(name, type_, "quasi_identifier") == expected
    check_generalization(name, type_, expected)


def test_each_generalization() -> None:
    t = pa.table({
        "visit": ["2021-03-15", "1999-12-31", None],
        "birth_date": ["1950-07-04", "2001-01-01", "1933-02-28"],
        "birth_year": [1950, 2001, None],
        "age": [89, 90, 104],
        "age_f": ["4.9", "35", "90.5"],
        "zip": ["03601", "02139-4307", "89301"],
        "zip_i": [2139, 55612, 82100],
        "sex": ["F", "M", None],
    })
    out = generalize(t, {"visit": "month", "birth_date": "year", "birth_year": "year", "age": "top_code_90",
                         "age_f": "age_band_5", "zip": "zip3", "zip_i": "zip3", "sex": "suppress"},
                     types={"age_f": "number"})
    assert out.column_names == ["visit", "birth_date", "birth_year", "age", "age_f", "zip", "zip_i"]
    assert out.to_pydict() == {
        "visit": ["2021-03", "1999-12", None], "birth_date": ["1950", "2001", "1933"],
        "birth_year": [1950, 2001, None], "age": ["89", "90+", "90+"], "age_f": ["0-4", "35-39", "90+"],
        "zip": ["000", "021", "000"], "zip_i": ["021", "000", "000"],
    }
    assert generalize(t, {"visit": "none"}, types={"visit": "date"}).column("visit").type == pa.date32()


def test_every_low_population_zip3_becomes_000() -> None:
    zips = [f"{z}42" for z in sorted(HIPAA_ZIP3)] + ["10001", "94110"]
    out = generalize(pa.table({"zip": zips}), {"zip": "zip3"}).column("zip").to_pylist()
    assert out == ["000"] * len(HIPAA_ZIP3) + ["100", "941"]


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["P1", "P2", "P3", "P4"]),
                               st.dates(dt.date(1950, 1, 1), dt.date(2030, 12, 31))),
                     min_size=1, max_size=40),
       secret=secrets32)
def test_date_shift_keeps_intervals_within_a_person(rows: list[tuple[str, dt.date]], secret: bytes) -> None:
    keys = [k for k, _ in rows]
    t = pa.table({"visit": [d.isoformat() for _, d in rows]})
    shift = date_shift_days(keys, secret)
    out = generalize(t, {"visit": "date_shift"}, shift_days=shift).column("visit").to_pylist()
    for (k1, d1), s1 in zip(rows, out, strict=True):
        assert s1 != d1
        for (k2, d2), s2 in zip(rows, out, strict=True):
            if k1 == k2:
                assert s1 - s2 == d1 - d2


@pytest.mark.parametrize(("values", "type_", "generalization"), [
    (["2020-01-01", "31/01/2020"], "date", "month"), (["2020-02-30"], "date", "month"),
    (["12", "twelve"], "integer", "none"), ([1.0, 2.5], "integer", "none"),
    (["1e3", "NaN"], "number", "none"), ([-3, 40], "integer", "top_code_90"),
    (["0213", "02139"], "string", "zip3"), (["yes"], "boolean", "none"),
    ([123456], "integer", "zip3"),
])
def test_bad_values_name_the_attribute_never_the_value(values: list[object], type_: str,
                                                       generalization: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        generalize(pa.table({"secret_attr": values}), {"secret_attr": generalization},
                   types={"secret_attr": type_})
    text = exc.value.message + " ".join(p.describe() for p in exc.value.problems)
    assert "secret_attr" in text
    for v in values:
        if str(v) not in ("1", "2", "12", "40", "0", "2020"):
            assert str(v) not in text


def test_plan_errors() -> None:
    t = pa.table({"a": ["x"]})
    with pytest.raises(InvalidInput, match="not in the table"):
        generalize(t, {"b": "none"})
    with pytest.raises(InvalidInput, match="does not apply"):
        generalize(t, {"a": "month"}, types={"a": "string"})
    with pytest.raises(InvalidInput, match="unknown generalization"):
        check_generalization("a", "string", "blur")
    with pytest.raises(InvalidInput, match="unknown attribute type"):
        check_generalization("a", "text", "none")
    with pytest.raises(InvalidInput, match="shift days"):
        generalize(pa.table({"d": ["2020-01-01"]}), {"d": "date_shift"})
    assert all("suppress" in v and "none" in v for v in APPLICABLE.values())


# ---- generalization on realistic attributes ----------------------------------------------------

def test_generalize_synthetic_people_with_the_issue_defaults() -> None:
    """The issue's defaults on realistic attributes (k-anonymity of rows extracts:
    tests/extract/test_reid_attack.py)."""
    rng = np.random.default_rng(5)
    n = 400
    t = pa.table({
        "birth_date": [f"{y}-{m:02d}-{d:02d}" for y, m, d in zip(
            rng.integers(1930, 2010, n), rng.integers(1, 13, n), rng.integers(1, 29, n), strict=True)],
        "zip": [f"{z:05d}" for z in rng.choice([2139, 3601, 10001, 94110, 89301], n)],
        "sex": rng.choice(["F", "M", "X"], n, p=[0.49, 0.49, 0.02]).tolist(),
        "enrolled": [f"20{y:02d}-{m:02d}-01" for y, m in zip(rng.integers(15, 24, n), rng.integers(1, 13, n),
                                                             strict=True)],
    })
    plan = {c: default_generalization(c, "date" if c in ("birth_date", "enrolled") else "string",
                                      "quasi_identifier") for c in t.column_names}
    assert plan == {"birth_date": "year", "zip": "zip3", "sex": "none", "enrolled": "month"}
    out = generalize(t, plan)
    assert out.num_rows == n
    assert all(re.fullmatch(r"\d{4}", y) for y in out.column("birth_date").to_pylist())
    assert "000" in out.column("zip").to_pylist()


def test_chunked_columns_behave_like_one_chunk() -> None:
    part = pa.table({"k": ["K1", "K2", "K3"], "d": ["2020-01-02", "2020-02-03", None],
                     "z": ["02139", "10001", "89301"]})
    t = pa.concat_tables([part, part, part])
    assert t.column("d").num_chunks == 3
    secret = bytes(32)
    shift = date_shift_days(t.column("k"), secret)
    expected = pseudonymize(["K1", "K2", "K3"] * 3, secret).to_pylist()
    assert pseudonymize(t.column("k"), secret).to_pylist() == expected
    out = generalize(t, {"d": "date_shift", "z": "zip3"}, shift_days=shift)
    assert out.column("z").to_pylist() == ["021", "100", "000"] * 3
