"""Seeded synthetic population generator: plaintext agency records plus ground truth.

Owns: building a realistic, fully deterministic synthetic population (households,
twins, moves, marriages, common names, non-ASCII names) and writing one noisy
plaintext CSV per agency (``agency_<letter>.csv``) plus ``truth.csv``
(``agency,source_record_id,person_id``) for evaluating linkage.

Must not: touch real data, read the network, call Faker's per-item generator
methods (only Faker's bundled *lists* are used), depend on wall-clock time, on
``hash()`` ordering or on anything other than its arguments -- the same
arguments always produce the same bytes.  It does no hashing, encryption or
linkage itself; it only produces test input.

Speed: the base population is drawn with vectorised numpy; only per-record
corruption runs in Python (about 1M records in ~10-20 s).
"""

from __future__ import annotations

import csv
import datetime as _dt
import random
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from faker.providers.address.en_US import Provider as _AddressEN
from faker.providers.person.de_DE import Provider as _PersonDE
from faker.providers.person.en_US import Provider as _PersonEN
from faker.providers.person.es_MX import Provider as _PersonMX
from faker.providers.person.vi_VN import Provider as _PersonVN
from nicknames import NickNamer

__all__ = [
    "AGENCY_COLUMNS",
    "RACE_CATEGORIES",
    "SynthSummary",
    "agency_names",
    "generate",
    "synthesize",
]

AGENCY_COLUMNS: tuple[str, ...] = (
    "source_record_id",
    "given_name",
    "middle_name",
    "family_name",
    "date_of_birth",
    "sex",
    "national_id",
    "postal_code",
    "address_line",
    "city",
    "phone",
    "email",
    "race_ethnicity",
    "birth_year",
    "program",
    "enrolled_on",
    "research_consent",
)
TRUTH_COLUMNS: tuple[str, ...] = ("agency", "source_record_id", "person_id")

RACE_CATEGORIES: tuple[str, ...] = ("white", "hispanic", "black", "asian", "native", "other")
_RACE_SHARES = np.array([0.57, 0.19, 0.12, 0.06, 0.01, 0.05])
_WHITE, _HISPANIC, _BLACK, _ASIAN, _NATIVE, _OTHER, _GROUP_X = range(7)
_RACE_LABELS = (*RACE_CATEGORIES, "group_x")

_REF_DATE = _dt.date(2025, 1, 1)
_EPOCH = _dt.date(1970, 1, 1)
_REF_DAY = (_REF_DATE - _EPOCH).days
_ENROLL_START_DAY = (_dt.date(2008, 1, 1) - _EPOCH).days
_ENROLL_END_DAY = (_dt.date(2024, 12, 31) - _EPOCH).days

# ---- per-record error rates (base; the weak group multiplies name typos and
# missing-field rates by _WEAK_FACTOR) -------------------------------------
RATES: dict[str, float] = {
    "given_typo": 0.04,
    "middle_typo": 0.02,
    "family_typo": 0.04,
    "ocr": 0.006,  # per name field
    "nickname": 0.07,  # conditional on the name having a known nickname
    "accent_strip": 0.5,  # for names with non-ASCII letters
    "apostrophe_drop": 0.3,  # O'Brien -> OBrien / O Brien
    "compound_partial": 0.25,  # Garcia Lopez -> Garcia / Garcia-Lopez
    "dob_swap": 0.015,  # day/month swap when day <= 12
    "dob_transpose": 0.01,
    "dob_typo": 0.005,
    "dob_missing": 0.005,
    "ssn_transpose": 0.01,
    "ssn_typo": 0.003,
    "ssn_placeholder": 0.003,
    "sex_missing": 0.02,
    "sex_wrong": 0.003,
    "zip_typo": 0.006,
    "address_missing": 0.03,
    "address_typo": 0.01,
    "phone_missing": 0.12,  # on top of people with no phone at all
    "phone_typo": 0.01,
    "email_missing": 0.25,  # on top of people with no email (children, ~8% of adults)
    "email_typo": 0.005,
    "middle_missing": 0.30,  # on top of people without a middle name
    "middle_initial": 0.30,
    "placeholder_infant": 0.03,  # records of infants (< 1 year at enrolment)
    "placeholder_any": 0.0005,
    "research_consent_false": 0.03,
    "duplicate": 0.03,
    # Off by default so that seeded populations stay as they were; error_profile sets them.
    "name_swap": 0.0,  # given and family names swapped
    "ssn_other": 0.0,  # another valid-looking SSN altogether (a relative's, a made-up one)
    "dob_other": 0.0,  # another date of birth altogether (entered for the wrong person)
    "given_other": 0.0,  # another given name altogether (a preferred or second name)
}
# the rates error_profile scales and sets
_SET_BY_PROFILE = ("name_swap", "ssn_other", "dob_other", "given_other")
_WEAK_FACTOR = 4.0
# Rates that describe the population or the files rather than errors: error_profile keeps them.
_NOT_ERRORS = frozenset({"accent_strip", "apostrophe_drop", "compound_partial",
                         "placeholder_infant", "research_consent_false", "duplicate",
                         "nickname"})


@contextmanager
def error_profile(scale: float, *, name_swap: float = 0.0, other: float = 0.0) -> Iterator[None]:
    """Scale every error and missing-field rate by ``scale`` (capped at 0.9) while inside, swap
    given and family names in a ``name_swap`` share of records, and replace the SSN, the date
    of birth and the given name by another value altogether each in an ``other`` share.

    For training mixes and benchmarks at low / medium / high error (not thread-safe: it changes
    the module's rates for the duration).
    """
    saved = dict(RATES)
    try:
        for k, v in saved.items():
            if k not in _NOT_ERRORS:
                RATES[k] = min(0.9, v * scale)
        RATES["name_swap"] = name_swap
        for k in _SET_BY_PROFILE[1:]:
            RATES[k] = other
        yield
    finally:
        RATES.clear()
        RATES.update(saved)
# share of records lacking a national id, cycled over agencies
_SSN_MISSING_BY_AGENCY = (0.12, 0.28, 0.40, 0.22, 0.32)
_SSN_DASHED_BY_AGENCY = (0.85, 0.25, 0.6, 0.5)
_UPPER_BY_AGENCY = (0.1, 0.55, 0.25, 0.4)
_LONG_SEX_BY_AGENCY = (0.0, 0.05, 0.3, 0.1)
_PROGRAMS = (
    "MEDICAID", "SNAP", "WIC", "TANF", "CHIP", "LIHEAP", "HOUSING", "CHILDCARE",
    "JOBTRAIN", "BEHAVHLTH", "IMMUNIZ", "SCHOOL", "FOSTER", "SENIOR", "DENTAL",
)

_COMMON_SUFFIXES = (
    "Street", "Avenue", "Road", "Drive", "Lane", "Court", "Boulevard", "Way",
    "Place", "Circle", "Terrace", "Parkway",
)
_SUFFIX_ABBR = {
    "Street": "St", "Avenue": "Ave", "Road": "Rd", "Drive": "Dr", "Lane": "Ln",
    "Court": "Ct", "Boulevard": "Blvd", "Place": "Pl", "Circle": "Cir",
    "Terrace": "Ter", "Parkway": "Pkwy",
}
_EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "aol.com", "icloud.com")
_EMAIL_DOMAIN_P = np.array([0.45, 0.2, 0.1, 0.1, 0.08, 0.07])
_IRISH = ("O'Brien", "O'Connor", "O'Neill", "O'Sullivan", "O'Malley", "O'Donnell", "O'Hara", "D'Angelo")
_EAST_ASIAN = (
    "Wang", "Li", "Zhang", "Chen", "Liu", "Kim", "Lee", "Park", "Choi", "Patel",
    "Shah", "Singh", "Huang", "Zhao", "Wu", "Yang", "Tanaka", "Sato",
)
_OCR = (("0", "O"), ("O", "0"), ("o", "0"), ("1", "l"), ("l", "1"), ("I", "1"),
        ("i", "l"), ("5", "S"), ("S", "5"), ("s", "5"), ("8", "B"), ("B", "8"),
        ("rn", "m"), ("m", "rn"))

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SynthSummary:
    """What ``synthesize`` wrote."""

    people: int
    records: int
    files: list[Path]
    truth: Path


def agency_names(k: int) -> list[str]:
    """Return the first ``k`` agency names: agency_a, agency_b, ..., agency_z, agency_aa, ..."""
    if k < 1:
        raise ValueError(f"need at least one agency, got {k}")
    return [f"agency_{_letters(i)}" for i in range(k)]


def _letters(i: int) -> str:
    out = ""
    i += 1
    while i > 0:
        i, rem = divmod(i - 1, 26)
        out = chr(ord("a") + rem) + out
    return out


# --------------------------------------------------------------------- pools
def _clean(name: str) -> str:
    return " ".join(name.split())


@dataclass(frozen=True)
class _Pool:
    names: tuple[str, ...]
    p: FloatArray

    def draw(self, rng: np.random.Generator, n: int) -> IntArray:
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        return rng.choice(len(self.names), size=n, p=self.p).astype(np.int64)


def _weighted_pool(items: Sequence[tuple[str, float]]) -> _Pool:
    seen: dict[str, float] = {}
    for name, w in items:
        c = _clean(name)
        if c:
            seen[c] = seen.get(c, 0.0) + float(w)
    names = tuple(seen)
    p = np.array([seen[n] for n in names], dtype=np.float64)
    return _Pool(names, p / p.sum())


def _zipf_pool(names: Sequence[str], *, shuffle_seed: int, exponent: float = 0.9) -> _Pool:
    uniq = list(dict.fromkeys(_clean(n) for n in names if _clean(n)))
    order = np.random.default_rng(shuffle_seed).permutation(len(uniq))
    ranked = [uniq[i] for i in order]
    w = 1.0 / np.arange(1, len(ranked) + 1, dtype=np.float64) ** exponent
    return _Pool(tuple(ranked), w / w.sum())


def _mix(parts: Sequence[tuple[_Pool, float]]) -> _Pool:
    acc: dict[str, float] = {}
    for pool, share in parts:
        for name, p in zip(pool.names, pool.p, strict=True):
            acc[name] = acc.get(name, 0.0) + float(p) * share
    return _weighted_pool(list(acc.items()))


class _Pools:
    """Name pools by (race group, sex) and surname pools by race group."""

    def __init__(self) -> None:
        en_f = _weighted_pool(list(_PersonEN.first_names_female.items()))
        en_m = _weighted_pool(list(_PersonEN.first_names_male.items()))
        en_last = _weighted_pool(list(_PersonEN.last_names.items()))
        mx_f = _zipf_pool(_PersonMX.first_names_female, shuffle_seed=11)
        mx_m = _zipf_pool(_PersonMX.first_names_male, shuffle_seed=12)
        mx_last = _zipf_pool(_PersonMX.last_names, shuffle_seed=13, exponent=0.8)
        vi_f = _zipf_pool(_PersonVN.first_names_female, shuffle_seed=14)
        vi_m = _zipf_pool(_PersonVN.first_names_male, shuffle_seed=15)
        vi_last = _weighted_pool([(n, 1.0 / (i + 1)) for i, n in enumerate(_PersonVN.last_names)])
        de_last = _zipf_pool(_PersonDE.last_names, shuffle_seed=16)
        irish = _zipf_pool(_IRISH, shuffle_seed=17, exponent=0.5)
        east = _zipf_pool(_EAST_ASIAN, shuffle_seed=18, exponent=0.7)
        white_last = _mix([(en_last, 0.93), (de_last, 0.05), (irish, 0.02)])
        asian_last = _mix([(vi_last, 0.4), (east, 0.6)])
        other_last = _mix([(en_last, 0.7), (mx_last, 0.1), (de_last, 0.1), (east, 0.1)])
        mixed_f = _mix([(en_f, 0.7), (mx_f, 0.2), (vi_f, 0.1)])
        mixed_m = _mix([(en_m, 0.7), (mx_m, 0.2), (vi_m, 0.1)])
        hisp_f = _mix([(mx_f, 0.8), (en_f, 0.2)])
        hisp_m = _mix([(mx_m, 0.8), (en_m, 0.2)])
        asian_f = _mix([(en_f, 0.6), (vi_f, 0.4)])
        asian_m = _mix([(en_m, 0.6), (vi_m, 0.4)])
        # given[race][sex]  sex: 0 = F, 1 = M
        self.given: list[tuple[_Pool, _Pool]] = [
            (en_f, en_m),  # white
            (hisp_f, hisp_m),  # hispanic
            (en_f, en_m),  # black
            (asian_f, asian_m),  # asian
            (en_f, en_m),  # native
            (mixed_f, mixed_m),  # other
            (mixed_f, mixed_m),  # group_x
        ]
        self.middle: tuple[_Pool, _Pool] = (en_f, en_m)
        self.family: list[_Pool] = [
            white_last, mx_last, en_last, asian_last, en_last, other_last, other_last,
        ]
        self.common_given: tuple[tuple[str, ...], tuple[str, ...]] = (
            tuple(en_f.names[i] for i in np.argsort(-en_f.p, kind="stable")[:10]),
            tuple(en_m.names[i] for i in np.argsort(-en_m.p, kind="stable")[:10]),
        )
        self.common_family: tuple[str, ...] = tuple(
            en_last.names[i] for i in np.argsort(-en_last.p, kind="stable")[:5]
        )
        self.street_first = en_m
        self.street_last = en_last


_POOLS: _Pools | None = None
_NICKS: dict[str, tuple[str, ...]] = {}
_NICKNAMER: NickNamer | None = None


def _pools() -> _Pools:
    global _POOLS
    if _POOLS is None:
        _POOLS = _Pools()
    return _POOLS


def _nicknames(name: str) -> tuple[str, ...]:
    global _NICKNAMER
    got = _NICKS.get(name)
    if got is None:
        if _NICKNAMER is None:
            _NICKNAMER = NickNamer()
        raw = _NICKNAMER.nicknames_of(name) if name.isascii() else set()
        got = tuple(sorted(n.capitalize() for n in raw if n and n.lower() != name.lower()))
        _NICKS[name] = got
    return got


# ---------------------------------------------------------------- geography
@dataclass
class _Geo:
    city: list[str]
    city_p: FloatArray
    city_zips: list[IntArray]
    city_area: list[IntArray]
    city_streets: list[list[tuple[str, int]]]  # (street name, zip)


def _make_geo(rng: np.random.Generator, n_cities: int) -> _Geo:
    pools = _pools()
    states = list(_AddressEN.states_postcode.items())
    states = [(s, r) for s, r in states if r[1] - r[0] > 400]
    home = states[int(rng.integers(len(states)))]
    prefixes = _AddressEN.city_prefixes
    suffixes = tuple(dict.fromkeys(_AddressEN.city_suffixes))
    all_suffixes = tuple(_AddressEN.street_suffixes)
    names: list[str] = []
    used: set[str] = set()
    zips: list[IntArray] = []
    areas: list[IntArray] = []
    streets: list[list[tuple[str, int]]] = []
    while len(names) < n_cities:
        fmt = int(rng.integers(4))
        first = pools.street_first.names[int(pools.street_first.draw(rng, 1)[0])]
        last = pools.street_last.names[int(pools.street_last.draw(rng, 1)[0])]
        pre = prefixes[int(rng.integers(len(prefixes)))]
        suf = suffixes[int(rng.integers(len(suffixes)))]
        name = (f"{pre} {first}{suf}", f"{pre} {first}", f"{first}{suf}", f"{last}{suf}")[fmt]
        if name in used:
            continue
        used.add(name)
        names.append(name)
        state = home if rng.random() < 0.85 else states[int(rng.integers(len(states)))]
        lo, hi = state[1]
        nz = int(rng.integers(1, 7))
        base = int(rng.integers(lo, max(lo + 1, hi - 3 * nz)))
        city_zips = base + np.cumsum(rng.integers(1, 4, size=nz)) - 1
        zips.append(city_zips.astype(np.int64))
        areas.append(rng.integers(201, 990, size=int(rng.integers(1, 3))).astype(np.int64))
        n_streets = int(rng.integers(15, 60))
        st: list[tuple[str, int]] = []
        for _ in range(n_streets):
            if rng.random() < 0.85:
                sfx = _COMMON_SUFFIXES[min(int(rng.geometric(0.3)) - 1, len(_COMMON_SUFFIXES) - 1)]
            else:
                sfx = all_suffixes[int(rng.integers(len(all_suffixes)))]
            src = pools.street_first if rng.random() < 0.4 else pools.street_last
            base_name = src.names[int(src.draw(rng, 1)[0])]
            if rng.random() < 0.15:
                base_name = f"{('N', 'S', 'E', 'W')[int(rng.integers(4))]} {base_name}"
            st.append((f"{base_name} {sfx}", int(city_zips[int(rng.integers(nz))])))
        streets.append(st)
    w = 1.0 / np.arange(1, n_cities + 1, dtype=np.float64) ** 1.0
    return _Geo(names, w / w.sum(), zips, areas, streets)


@dataclass
class _Addresses:
    line: list[str]
    city: list[str]
    zip: list[str]
    area: list[int]


def _make_addresses(rng: np.random.Generator, geo: _Geo, n: int) -> _Addresses:
    city_idx = rng.choice(len(geo.city), size=n, p=geo.city_p)
    street_u = rng.random(n)
    numbers = np.clip(np.exp(rng.normal(5.0, 1.4, size=n)), 1, 19999).astype(np.int64)
    has_unit = rng.random(n) < 0.2
    units = rng.integers(1, 40, size=n)
    unit_letter = rng.integers(0, 6, size=n)
    area_u = rng.random(n)
    lines: list[str] = []
    cities: list[str] = []
    zips: list[str] = []
    area: list[int] = []
    for i in range(n):
        c = int(city_idx[i])
        st = geo.city_streets[c]
        street, z = st[int(street_u[i] * len(st))]
        line = f"{int(numbers[i])} {street}"
        if has_unit[i]:
            line += f" Apt {int(units[i])}{'ABCDEF'[int(unit_letter[i])] if unit_letter[i] < 3 else ''}"
        lines.append(line)
        cities.append(geo.city[c])
        zips.append(f"{z:05d}")
        a = geo.city_area[c]
        area.append(int(a[int(area_u[i] * len(a))]))
    return _Addresses(lines, cities, zips, area)


def _phones(rng: np.random.Generator, area: Sequence[int]) -> list[str]:
    n = len(area)
    exch = rng.integers(200, 1000, size=n)
    line = rng.integers(0, 10000, size=n)
    return [f"{area[i]}{int(exch[i]):03d}{int(line[i]):04d}" for i in range(n)]


# --------------------------------------------------------------- population
@dataclass
class _Population:
    n: int
    given: list[str]
    middle: list[str]
    family: list[str]
    maiden: list[str]  # "" unless the person shows a maiden/married variation
    sex: npt.NDArray[np.int8]  # 0 F, 1 M
    dob_day: IntArray  # days since 1970-01-01
    race: npt.NDArray[np.int8]
    ssn: list[str]  # 9 digits or ""
    addr: IntArray  # index into addresses
    addr2: IntArray  # second address or -1
    phone: list[str]  # primary contact phone (mobile or landline) or ""
    landline: list[str]
    phone2: list[str]  # phone used with the second address or ""
    email: list[str]
    household: IntArray
    twin_of: IntArray  # index of the twin sibling or -1
    addresses: _Addresses
    # plain-list views for the per-record Python loop (numpy scalar access is slow)
    sex_l: list[int]
    race_l: list[int]
    dob_l: list[int]
    dob_iso: list[str]
    addr_l: list[int]
    addr2_l: list[int]


def _ascii(s: str) -> str:
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii")


def _build_population(rng: np.random.Generator, people: int, weak_group_share: float) -> _Population:
    pools = _pools()
    n = people
    # households --------------------------------------------------------
    est = people // 2 + 16
    sizes = rng.choice(np.arange(1, 6), size=est, p=[0.28, 0.34, 0.16, 0.13, 0.09])
    cum = np.cumsum(sizes)
    h_count = int(np.searchsorted(cum, people) + 1)
    sizes = sizes[:h_count].copy()
    sizes[-1] -= int(cum[h_count - 1] - people)
    household = np.repeat(np.arange(h_count), sizes).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pos = np.arange(n) - starts[household]
    has_partner = (sizes >= 2) & (rng.random(h_count) < 0.72)
    role = np.where(pos == 0, 0, np.where((pos == 1) & has_partner[household], 1, 2))

    h_race = rng.choice(6, size=h_count, p=_RACE_SHARES).astype(np.int8)
    if weak_group_share > 0:
        h_race[rng.random(h_count) < weak_group_share] = _GROUP_X
    race = h_race[household].copy()
    mixed = (role == 1) & (rng.random(n) < 0.08) & (race != _GROUP_X)
    race[mixed] = rng.choice(6, size=int(mixed.sum()), p=_RACE_SHARES).astype(np.int8)

    # ages / sex --------------------------------------------------------
    head_age = np.clip(18 + rng.gamma(4.0, 7.0, size=h_count), 18, 97)
    partner_age = np.clip(head_age + rng.normal(0, 4, size=h_count), 18, 99)
    parent_age = np.minimum(head_age, np.where(has_partner, partner_age, head_age))
    head_sex = (rng.random(h_count) < 0.5).astype(np.int8)
    age = np.where(role == 0, head_age[household], partner_age[household])
    child_span = np.clip(parent_age[household] - 18.0, 0.2, 32.0)
    child_age = rng.random(n) * child_span
    age = np.where(role == 2, child_age, age)
    sex = (rng.random(n) < 0.5).astype(np.int8)
    sex = np.where(role == 0, head_sex[household], sex)
    opposite = rng.random(n) < 0.95
    sex = np.where(role == 1, np.where(opposite, 1 - head_sex[household], head_sex[household]), sex)
    sex = sex.astype(np.int8)
    dob_day = (_REF_DAY - np.floor(age * 365.25)).astype(np.int64) - 1

    # twins: ~1% of households, needs two child slots ------------------------
    n_child = sizes - 1 - has_partner.astype(np.int64)
    eligible = n_child >= 2
    p_twin = min(1.0, 0.01 * h_count / max(1, int(eligible.sum())))
    twin_h = eligible & (rng.random(h_count) < p_twin)
    twin_of = np.full(n, -1, dtype=np.int64)
    last = starts + sizes - 1
    tw_h = np.flatnonzero(twin_h)
    a_idx, b_idx = last[tw_h] - 1, last[tw_h]
    twin_of[a_idx], twin_of[b_idx] = b_idx, a_idx
    dob_day[b_idx] = dob_day[a_idx]
    same_sex = rng.random(len(tw_h)) < 0.6
    sex[b_idx] = np.where(same_sex, sex[a_idx], 1 - sex[a_idx]).astype(np.int8)

    # names ---------------------------------------------------------------
    common = rng.random(n) < 0.02
    given_idx = np.zeros(n, dtype=np.int64)
    middle_idx = np.zeros(n, dtype=np.int64)
    for r in range(7):
        for s in (0, 1):
            m = np.flatnonzero((race == r) & (sex == s))
            given_idx[m] = pools.given[r][s].draw(rng, len(m))
    for s in (0, 1):
        m = np.flatnonzero(sex == s)
        middle_idx[m] = pools.middle[s].draw(rng, len(m))
    given = [pools.given[int(race[i])][int(sex[i])].names[int(given_idx[i])] for i in range(n)]
    middle_names = [pools.middle[int(sex[i])].names[int(middle_idx[i])] for i in range(n)]
    has_middle = rng.random(n) < 0.8
    middle = [middle_names[i] if has_middle[i] else "" for i in range(n)]
    common_i = np.flatnonzero(common)
    cg = rng.integers(0, 10, size=len(common_i))
    for j, i in enumerate(common_i):
        given[i] = pools.common_given[int(sex[i])][int(cg[j])]

    def draw_family(races: npt.NDArray[np.int8]) -> list[str]:
        out = [""] * len(races)
        for r in range(7):
            m = np.flatnonzero(races == r)
            pool = pools.family[r]
            idx = pool.draw(rng, len(m))
            for k, i in enumerate(m):
                out[i] = pool.names[int(idx[k])]
        # Hispanic compound surnames (two apellidos)
        hisp = np.flatnonzero((races == _HISPANIC) & (rng.random(len(races)) < 0.3))
        extra = pools.family[_HISPANIC].draw(rng, len(hisp))
        for k, i in enumerate(hisp):
            second = pools.family[_HISPANIC].names[int(extra[k])]
            if second != out[i]:
                out[i] = f"{out[i]} {second}"
        cm = rng.random(len(races)) < 0.02
        ci = rng.integers(0, 5, size=len(races))
        for i in np.flatnonzero(cm):
            out[i] = pools.common_family[int(ci[i])]
        return out

    h_family = draw_family(h_race)
    family = [h_family[int(household[i])] for i in range(n)]
    own = draw_family(race)  # maiden / own surnames when needed
    keep_own = (role == 1) & (rng.random(n) < 0.12)
    for i in np.flatnonzero(keep_own):
        family[i] = own[i]
    adult_f = (sex == 0) & (age >= 20) & ~keep_own
    changer = adult_f & (rng.random(n) < 0.25)
    maiden = [""] * n
    for i in np.flatnonzero(changer):
        if own[i] != family[i]:
            maiden[i] = own[i]
    # twins: sometimes very similar given names
    similar = rng.random(len(tw_h)) < 0.3
    for j in range(len(tw_h)):
        a, b = int(a_idx[j]), int(b_idx[j])
        pool = pools.given[int(race[b])][int(sex[b])]
        if similar[j]:
            pref = given[a][:3]
            cands = [x for x in pool.names if x.startswith(pref) and x != given[a]]
            if cands:
                given[b] = cands[int(rng.integers(len(cands)))]
                continue
        if given[b] == given[a]:
            alts = [x for x in pool.names[:50] if x != given[a]]
            given[b] = alts[int(rng.integers(len(alts)))]

    # national ids (unique, twins get adjacent serials) ---------------------
    area_num = rng.integers(1, 900, size=n)
    area_num[area_num == 666] = 667
    ssn_num = area_num * 1_000_000 + rng.integers(1, 100, size=n) * 10_000 + rng.integers(1, 10000, size=n)
    ssn_num[b_idx] = np.where(ssn_num[a_idx] % 10000 < 9999, ssn_num[a_idx] + 1, ssn_num[a_idx] - 1)
    for _ in range(20):
        _, first_pos, counts = np.unique(ssn_num, return_index=True, return_counts=True)
        dup_mask = np.ones(n, dtype=bool)
        dup_mask[first_pos] = False
        if not dup_mask.any():
            break
        k = int(dup_mask.sum())
        ssn_num[dup_mask] = (
            rng.integers(1, 666, size=k) * 1_000_000
            + rng.integers(1, 100, size=k) * 10_000
            + rng.integers(1, 10000, size=k)
        )
    no_ssn = ((age < 1.0) & (rng.random(n) < 0.5)) | (rng.random(n) < 0.01)
    ssn = ["" if no_ssn[i] else f"{int(ssn_num[i]):09d}" for i in range(n)]

    # addresses, moves, phones ----------------------------------------------
    n_cities = int(np.clip(people // 400, 25, 2500))
    geo = _make_geo(rng, n_cities)
    moved_h = rng.random(h_count) < 0.12
    moved_self = (role == 2) & (age >= 18) & (rng.random(n) < 0.3) & ~moved_h[household]
    moved_self |= (role == 0) & (rng.random(n) < 0.03) & ~moved_h[household]
    n_new_h = int(moved_h.sum())
    n_self = int(moved_self.sum())
    addrs = _make_addresses(rng, geo, h_count + n_new_h + n_self)
    h_addr2 = np.full(h_count, -1, dtype=np.int64)
    h_addr2[moved_h] = h_count + np.arange(n_new_h)
    addr = household.copy()
    addr2 = h_addr2[household].copy()
    addr2[moved_self] = h_count + n_new_h + np.arange(n_self)

    h_has_land = rng.random(h_count) < 0.45
    h_land = _phones(rng, [addrs.area[h] for h in range(h_count)])
    has_mobile = (age >= 13) & (rng.random(n) < 0.88)
    mobiles = _phones(rng, [addrs.area[int(addr[i])] for i in range(n)])
    landline = [h_land[int(household[i])] if h_has_land[household[i]] else "" for i in range(n)]
    use_land = rng.random(n) < 0.3
    phone = [
        landline[q] if (landline[q] and (use_land[q] or not has_mobile[q]))
        else (mobiles[q] if has_mobile[q] else "")
        for q in range(n)
    ]
    # children without a phone of their own are reached through the head of household
    head_phone = [phone[int(starts[h])] for h in range(h_count)]
    phone = [phone[q] or (head_phone[int(household[q])] if role[q] == 2 else "") for q in range(n)]
    new_phone = (addr2 >= 0) & (rng.random(n) < 0.4)
    alt = _phones(rng, [addrs.area[int(addr2[i])] if addr2[i] >= 0 else 555 for i in range(n)])
    phone2 = [alt[i] if new_phone[i] else "" for i in range(n)]

    # email -------------------------------------------------------------------
    has_email = (age >= 14) & (rng.random(n) < 0.92)
    style = rng.integers(0, 5, size=n)
    dom = rng.choice(len(_EMAIL_DOMAINS), size=n, p=_EMAIL_DOMAIN_P)
    num = rng.integers(1, 999, size=n)
    email: list[str] = []
    for q in range(n):
        if not has_email[q]:
            email.append("")
            continue
        g = _ascii(given[q]).lower().replace(" ", "")
        f = _ascii(family[q]).lower().replace(" ", "").replace("'", "")
        nn = int(num[q])
        local = (f"{g}.{f}", f"{g}{f}{nn}", f"{g[:1]}{f}", f"{f}.{g}{nn % 100}", f"{g}_{f}")[int(style[q])]
        email.append(f"{local}@{_EMAIL_DOMAINS[int(dom[q])]}")

    return _Population(
        n=n, given=given, middle=middle, family=family, maiden=maiden, sex=sex,
        dob_day=dob_day, race=race, ssn=ssn, addr=addr, addr2=addr2, phone=phone,
        landline=landline, phone2=phone2, email=email, household=household,
        twin_of=twin_of, addresses=addrs,
        sex_l=sex.tolist(), race_l=race.tolist(), dob_l=dob_day.tolist(),
        dob_iso=np.datetime_as_string(dob_day.astype("datetime64[D]")).tolist(),
        addr_l=addr.tolist(), addr2_l=addr2.tolist(),
    )


# ---------------------------------------------------------------- corruption
def _typo(s: str, rr: random.Random) -> str:
    if len(s) < 2:
        return s
    kind = rr.randrange(4)
    i = rr.randrange(len(s))
    letter = rr.choice("abcdefghijklmnopqrstuvwxyz")
    if s[i].isupper():
        letter = letter.upper()
    if kind == 0:  # insert
        return s[:i] + letter + s[i:]
    if kind == 1:  # delete
        return s[:i] + s[i + 1 :]
    if kind == 2:  # substitute
        if s[i].lower() == letter.lower():
            letter = "e" if letter.lower() != "e" else "a"
        return s[:i] + letter + s[i + 1 :]
    j = min(i, len(s) - 2)  # transpose
    if s[j] == s[j + 1]:
        return s[:j] + letter + s[j + 1 :]
    return s[:j] + s[j + 1] + s[j] + s[j + 2 :]


def _ocr(s: str, rr: random.Random) -> str:
    opts = [(a, b) for a, b in _OCR if a in s]
    if not opts:
        return _typo(s, rr)
    a, b = opts[rr.randrange(len(opts))]
    hits = [k for k in range(len(s)) if s.startswith(a, k)]
    k = hits[rr.randrange(len(hits))]
    return s[:k] + b + s[k + len(a) :]


def _case(s: str, style: int) -> str:
    if style == 1:
        return s.upper()
    if style == 2:
        return s.lower()
    return s


def _valid(y: int, m: int, d: int) -> bool:
    try:
        _dt.date(y, m, d)
    except ValueError:
        return False
    return 1900 <= y <= 2025


def _dob_corrupt(iso: str, kind: int, rr: random.Random) -> str:
    y, m, d = int(iso[:4]), int(iso[5:7]), int(iso[8:10])
    if kind == 0 and d <= 12 and d != m:
        return f"{y:04d}-{d:02d}-{m:02d}"
    digits = iso.replace("-", "")
    for _ in range(8):
        if kind == 1:
            p = rr.randrange(7)
            if digits[p] == digits[p + 1]:
                continue
            cand = digits[:p] + digits[p + 1] + digits[p] + digits[p + 2 :]
        else:
            p = rr.randrange(2, 8)
            cand = digits[:p] + str((int(digits[p]) + rr.choice((1, 9, 2, 8))) % 10) + digits[p + 1 :]
        cy, cm, cd = int(cand[:4]), int(cand[4:6]), int(cand[6:8])
        if cand != digits and _valid(cy, cm, cd):
            return f"{cy:04d}-{cm:02d}-{cd:02d}"
    return iso


def _digits_corrupt(digits: str, transpose: bool, rr: random.Random) -> str:
    for _ in range(8):
        p = rr.randrange(len(digits) - 1)
        if transpose:
            if digits[p] != digits[p + 1]:
                return digits[:p] + digits[p + 1] + digits[p] + digits[p + 2 :]
        else:
            return digits[:p] + str((int(digits[p]) + rr.randrange(1, 10)) % 10) + digits[p + 1 :]
    return digits


def _fmt_phone(d: str, rr: random.Random) -> str:
    k = rr.random()
    if k < 0.35:
        return f"({d[:3]}) {d[3:6]}-{d[6:]}"
    if k < 0.55:
        return f"{d[:3]}-{d[3:6]}-{d[6:]}"
    if k < 0.70:
        return f"{d[:3]}.{d[3:6]}.{d[6:]}"
    if k < 0.90:
        return d
    return f"+1 {d[:3]} {d[3:6]} {d[6:]}"


def _abbr_address(line: str, rr: random.Random) -> str:
    words = line.split(" ")
    out = [(_SUFFIX_ABBR.get(w, w) if rr.random() < 0.5 else w) for w in words]
    s = " ".join(out)
    if " Apt " in s and rr.random() < 0.4:
        s = s.replace(" Apt ", rr.choice((" # ", " #", " Unit ", ", Apt ")))
    return s


def _name_variant(name: str, rr: random.Random, *, family: bool) -> tuple[str, bool]:
    """Clerk-level variants of a correct name: accents, apostrophes, compounds."""
    changed = False
    if family and " " in name and rr.random() < RATES["compound_partial"]:
        parts = name.split(" ")
        name = parts[0] if rr.random() < 0.6 else "-".join(parts)
        changed = True
    if "'" in name and rr.random() < RATES["apostrophe_drop"]:
        name = name.replace("'", "" if rr.random() < 0.6 else " ")
        changed = True
    if not name.isascii() and rr.random() < RATES["accent_strip"]:
        name = _ascii(name)
        changed = True
    return name, changed


@dataclass(frozen=True)
class _AgencyStyle:
    ssn_missing: float
    ssn_dashed: float
    upper: float
    long_sex: float
    programs: tuple[str, ...]


def _agency_style(i: int, rng: np.random.Generator) -> _AgencyStyle:
    progs = tuple(str(p) for p in rng.choice(_PROGRAMS, size=3, replace=False))
    return _AgencyStyle(
        ssn_missing=_SSN_MISSING_BY_AGENCY[i % len(_SSN_MISSING_BY_AGENCY)],
        ssn_dashed=_SSN_DASHED_BY_AGENCY[i % len(_SSN_DASHED_BY_AGENCY)],
        upper=_UPPER_BY_AGENCY[i % len(_UPPER_BY_AGENCY)],
        long_sex=_LONG_SEX_BY_AGENCY[i % len(_LONG_SEX_BY_AGENCY)],
        programs=progs,
    )


def _agency_counts_p(k: int) -> FloatArray:
    if k == 1:
        return np.array([1.0])
    if k == 2:
        return np.array([0.5, 0.5])
    rest = np.full(k - 2, 0.30 / (k - 2))
    return np.concatenate([[0.35, 0.35], rest])


def _make_record(
    pop: _Population,
    i: int,
    style: _AgencyStyle,
    rr: random.Random,
    *,
    use_second: bool,
    enrolled_day: int,
    enrolled_on: str,
    program: str,
) -> tuple[dict[str, str], bool]:
    r = rr.random
    race = pop.race_l[i]
    weak = race == _GROUP_X
    tf = _WEAK_FACTOR if weak else 1.0  # typo factor
    mf = _WEAK_FACTOR if weak else 1.0  # missing factor
    err = False
    case_style = 1 if r() < style.upper else (2 if r() < 0.05 else 0)

    # given name
    given = pop.given[i]
    dob_day = pop.dob_l[i]
    infant = enrolled_day - dob_day < 365
    if (infant and r() < RATES["placeholder_infant"]) or r() < RATES["placeholder_any"]:
        given = "UNKNOWN" if (not infant or r() < 0.3) else ("BABY BOY" if pop.sex_l[i] == 1 else "BABY GIRL")
        err = True
    else:
        nicks = _nicknames(given)
        if nicks and r() < RATES["nickname"]:
            given = nicks[rr.randrange(len(nicks))]
            err = True
        given, ch = _name_variant(given, rr, family=False)
        err |= ch
        if r() < RATES["given_typo"] * tf:
            given = _typo(given, rr)
            err = True
        if r() < RATES["ocr"] * tf:
            given = _ocr(given, rr)
            err = True
        if RATES["given_other"] and r() < RATES["given_other"]:
            given = pop.given[rr.randrange(len(pop.given))]
            err = True

    # middle name
    middle = pop.middle[i]
    if middle:
        u = r()
        if u < min(0.95, RATES["middle_missing"] * mf):
            middle = ""
        elif u < min(0.97, RATES["middle_missing"] * mf + RATES["middle_initial"]):
            middle = middle[0] + ("." if r() < 0.3 else "")
        elif r() < RATES["middle_typo"] * tf:
            middle = _typo(middle, rr)
            err = True

    # family name (maiden / married / hyphenated)
    family = pop.family[i]
    maiden = pop.maiden[i]
    if maiden:
        u = r()
        if u < 0.35:
            family = maiden
        elif u < 0.5:
            family = f"{maiden}-{family}"
    family, ch = _name_variant(family, rr, family=True)
    err |= ch
    if r() < RATES["family_typo"] * tf:
        family = _typo(family, rr)
        err = True
    if r() < RATES["ocr"] * tf:
        family = _ocr(family, rr)
        err = True
    if RATES["name_swap"] and r() < RATES["name_swap"]:  # no draw when off: same stream
        given, family = family, given
        err = True

    # date of birth
    dob = pop.dob_iso[i]
    birth_year = dob[:4]
    u = r()
    if u < RATES["dob_missing"] * mf:
        dob = ""
    elif u < RATES["dob_missing"] * mf + RATES["dob_swap"]:
        new = _dob_corrupt(dob, 0, rr)
        err |= new != dob
        dob = new
    elif u < RATES["dob_missing"] * mf + RATES["dob_swap"] + RATES["dob_transpose"]:
        new = _dob_corrupt(dob, 1, rr)
        err |= new != dob
        dob = new
    elif u < RATES["dob_missing"] * mf + RATES["dob_swap"] + RATES["dob_transpose"] + RATES["dob_typo"]:
        new = _dob_corrupt(dob, 2, rr)
        err |= new != dob
        dob = new
    if RATES["dob_other"] and dob and r() < RATES["dob_other"]:
        year = int(dob[:4]) + rr.randint(-30, 30)
        dob = f"{min(max(year, 1900), 2024):04d}-{rr.randint(1, 12):02d}-{rr.randint(1, 28):02d}"
        err = True

    # sex
    sx = pop.sex_l[i]
    u = r()
    if u < RATES["sex_missing"] * mf:
        sex = ""
    else:
        if u > 1.0 - RATES["sex_wrong"]:
            sx = 1 - sx
            err = True
        sex = ("female", "male")[sx] if r() < style.long_sex else ("F", "M")[sx]
        if r() < 0.03:
            sex = sex.lower() if r() < 0.5 else sex.upper()

    # national id
    ssn = pop.ssn[i]
    if r() < RATES["ssn_placeholder"]:
        ssn = "000000000"
        err = True
    elif not ssn or r() < min(0.95, style.ssn_missing * mf):
        ssn = ""
    else:
        u = r()
        if u < RATES["ssn_transpose"]:
            ssn = _digits_corrupt(ssn, True, rr)
            err = True
        elif u < RATES["ssn_transpose"] + RATES["ssn_typo"]:
            ssn = _digits_corrupt(ssn, False, rr)
            err = True
        elif RATES["ssn_other"] and r() < RATES["ssn_other"]:
            ssn = f"{rr.randint(1, 665):03d}{rr.randint(1, 99):02d}{rr.randint(1, 9999):04d}"
            err = True
    if ssn and r() < style.ssn_dashed:
        ssn = f"{ssn[:3]}-{ssn[3:5]}-{ssn[5:]}"

    # address
    a = pop.addr2_l[i] if use_second else pop.addr_l[i]
    addrs = pop.addresses
    if r() < RATES["address_missing"] * mf:
        line = city = zipc = ""
    else:
        line = _abbr_address(addrs.line[a], rr)
        city = addrs.city[a]
        zipc = addrs.zip[a]
        if r() < RATES["address_typo"] * tf:
            line = _typo(line, rr)
            err = True
        if r() < RATES["zip_typo"]:
            zipc = _digits_corrupt(zipc, r() < 0.5, rr)
            err = True
        if r() < 0.1:
            city = city.upper()
        line = _case(line, case_style)

    # phone
    ph = pop.phone2[i] if (use_second and pop.phone2[i]) else pop.phone[i]
    if ph and r() < min(0.95, RATES["phone_missing"] * mf):
        ph = ""
    if ph:
        if r() < RATES["phone_typo"]:
            ph = _digits_corrupt(ph, r() < 0.5, rr)
            err = True
        ph = _fmt_phone(ph, rr)

    # email
    em = pop.email[i]
    if em and r() < min(0.95, RATES["email_missing"] * mf):
        em = ""
    if em:
        if r() < RATES["email_typo"]:
            em = _typo(em, rr)
            err = True
        if r() < 0.05:
            em = em.upper() if r() < 0.3 else em[0].upper() + em[1:]

    row = {
        "source_record_id": "",
        "given_name": _case(given, case_style),
        "middle_name": _case(middle, case_style),
        "family_name": _case(family, case_style),
        "date_of_birth": dob,
        "sex": sex,
        "national_id": ssn,
        "postal_code": zipc,
        "address_line": line,
        "city": city,
        "phone": ph,
        "email": em,
        "race_ethnicity": _RACE_LABELS[race],
        "birth_year": birth_year,
        "program": program,
        "enrolled_on": enrolled_on,
        "research_consent": "false" if r() < RATES["research_consent_false"] else "true",
    }
    return row, err


# --------------------------------------------------------------------- API
def _generate(
    *, people: int, agencies: int, seed: int, weak_group_share: float = 0.0
) -> tuple[dict[str, list[dict[str, str]]], list[tuple[str, str, str]], dict[str, Any]]:
    if people < 1:
        raise ValueError(f"people must be >= 1, got {people}")
    if not 0.0 <= weak_group_share <= 1.0:
        raise ValueError(f"weak_group_share must be in [0, 1], got {weak_group_share}")
    names = agency_names(agencies)
    rng = np.random.default_rng(seed)
    pop = _build_population(rng, people, weak_group_share)
    styles = [_agency_style(k, rng) for k in range(agencies)]

    # which agencies hold each person -----------------------------------------
    counts = rng.choice(np.arange(1, agencies + 1), size=people, p=_agency_counts_p(agencies))
    order = np.argsort(rng.random((people, agencies)), axis=1)
    held = np.arange(agencies)[None, :] < counts[:, None]
    person_rep = np.repeat(np.arange(people), agencies).reshape(people, agencies)
    rec_person = person_rep[held]
    rec_agency = order[held]
    dup = rng.random(len(rec_person)) < RATES["duplicate"]
    rec_person = np.concatenate([rec_person, rec_person[dup]])
    rec_agency = np.concatenate([rec_agency, rec_agency[dup]])
    m = len(rec_person)

    # vectorised per-record draws ----------------------------------------------
    use_second = (pop.addr2[rec_person] >= 0) & (rng.random(m) < 0.5)
    dob = pop.dob_day[rec_person]
    lo = np.maximum(dob, _ENROLL_START_DAY)
    span = np.maximum(_ENROLL_END_DAY - lo, 0)
    enrolled = lo + np.floor(rng.random(m) * (span + 1)).astype(np.int64)
    prog_idx = rng.integers(0, 3, size=m).tolist()
    enrolled_iso: list[str] = np.datetime_as_string(enrolled.astype("datetime64[D]")).tolist()
    enrolled_l: list[int] = enrolled.tolist()
    second_l: list[bool] = use_second.tolist()
    person_l: list[int] = rec_person.tolist()

    rr = random.Random(int(rng.integers(0, 2**62)))
    out: dict[str, list[dict[str, str]]] = {}
    truth: list[tuple[str, str, str]] = []
    err_count = 0
    for k, agency in enumerate(names):
        idx = np.flatnonzero(rec_agency == k)
        idx = idx[rng.permutation(len(idx))]
        prefix = _letters(k).upper()
        width = max(6, len(str(10 * max(1, len(idx)))))
        ids = rng.choice(10 * max(1, len(idx)), size=len(idx), replace=False)
        rows: list[dict[str, str]] = []
        style = styles[k]
        ids_l: list[int] = ids.tolist()
        for j, ridx in enumerate(idx.tolist()):
            i = person_l[ridx]
            row, err = _make_record(
                pop, i, style, rr,
                use_second=second_l[ridx],
                enrolled_day=enrolled_l[ridx],
                enrolled_on=enrolled_iso[ridx],
                program=style.programs[prog_idx[ridx]],
            )
            err_count += err
            sid = f"{prefix}{ids_l[j]:0{width}d}"
            row["source_record_id"] = sid
            rows.append(row)
            truth.append((agency, sid, f"P{i + 1:07d}"))
        out[agency] = rows
    stats: dict[str, Any] = {"records": m, "records_with_error": err_count, "population": pop}
    return out, truth, stats


def generate(
    *, people: int, agencies: int, seed: int, weak_group_share: float = 0.0
) -> tuple[dict[str, list[dict[str, str]]], list[tuple[str, str, str]]]:
    """Return (records per agency as column->value dicts, truth rows (agency, record id, person id))."""
    records, truth, _ = _generate(
        people=people, agencies=agencies, seed=seed, weak_group_share=weak_group_share
    )
    return records, truth


def synthesize(
    *, people: int, agencies: int, seed: int, out_dir: Path, weak_group_share: float = 0.0
) -> SynthSummary:
    """Write agency_<letter>.csv files and truth.csv into out_dir; return a summary."""
    records, truth = generate(
        people=people, agencies=agencies, seed=seed, weak_group_share=weak_group_share
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for agency, rows in records.items():
        path = out_dir / f"{agency}.csv"
        with path.open("w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=AGENCY_COLUMNS, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
        files.append(path)
    truth_path = out_dir / "truth.csv"
    with truth_path.open("w", encoding="utf-8", newline="") as fh:
        tw = csv.writer(fh, lineterminator="\n")
        tw.writerow(TRUTH_COLUMNS)
        tw.writerows(truth)
    return SynthSummary(people=people, records=len(truth), files=files, truth=truth_path)
