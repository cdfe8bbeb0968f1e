"""The match model, defined once as structured comparisons and blocking rules.

Owns: which token columns are compared, in which ordered levels, and which blocking rules make
candidate pairs. From it come the Splink settings (splink_settings.py) and the in-process scorer
(scorer.py). Pure data: no splink import, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LevelKind = Literal["equal", "cross", "any_equal", "all_equal", "overlap", "similar",
                    "equal_unknown", "similar_swapped"]


@dataclass(frozen=True)
class Level:
    """One comparison level: a predicate over token columns of the left and right record.

    kinds: ``equal`` (l.c = r.c for the one column), ``any_equal`` (any listed column equal),
    ``all_equal`` (every listed column equal), ``cross`` (l.a = r.b or l.b = r.a, e.g. date vs.
    day/month-swapped date), ``overlap`` (any of the listed columns on the left equals any
    on the right, e.g. name parts or nickname groups), ``similar`` (the Dice coefficient of
    the one similarity-token column's bits is at least ``percent`` / 100),
    ``equal_unknown`` (the first column equal while each other one is missing on a side:
    e.g. the same city where there is no street address to compare) and ``similar_swapped``
    (the first similarity column similar while neither other one is, all three present: the
    name-order-free name filter similar while neither the given names nor the family names
    are, i.e. the names swapped, with a typo; Decision 91).
    """

    label: str
    kind: LevelKind
    columns: tuple[str, ...]
    percent: int = 0  # the Dice threshold of a ``similar`` level

    def sql(self) -> str:
        """Portable SQL condition (plain identifiers, = / OR only: DuckDB and Spark alike)."""
        c = self.columns
        if self.kind == "equal":
            return f"{c[0]}_l = {c[0]}_r"
        if self.kind == "any_equal":
            return " OR ".join(f"({x}_l = {x}_r)" for x in c)
        if self.kind == "all_equal":
            return " AND ".join(f"({x}_l = {x}_r)" for x in c)
        if self.kind == "cross":
            return f"({c[0]}_l = {c[1]}_r) OR ({c[1]}_l = {c[0]}_r)"
        if self.kind == "equal_unknown":
            unknown = " AND ".join(f"({x}_l IS NULL OR {x}_r IS NULL)" for x in c[1:])
            return f"({c[0]}_l = {c[0]}_r) AND {unknown}"
        if self.kind == "similar":
            return _dice_sql(c[0], self.percent)
        if self.kind == "similar_swapped":  # NOT of a NULL is NULL: a missing filter never holds
            return (f"{_dice_sql(c[0], self.percent)} AND "
                    + " AND ".join(f"NOT {_dice_sql(x, self.percent)}" for x in c[1:]))
        return " OR ".join(f"({a}_l = {b}_r)" for a in c for b in c)


def _dice_sql(x: str, percent: int) -> str:
    """2|l & r| / (|l| + |r|) >= percent / 100 over one similarity column, in integers."""
    def bits(e: str) -> str:  # DuckDB's bit_count is a TINYINT: widen before arithmetic
        return f"CAST(bit_count({e}) AS INTEGER)"
    return (f"(200 * {bits(f'{x}_l & {x}_r')} >= "
            f"{int(percent)} * ({bits(f'{x}_l')} + {bits(f'{x}_r')}))")


@dataclass(frozen=True)
class Comparison:
    """One piece of evidence compared in ordered levels.

    The comparison is null (weight 0) when either record lacks every one of ``null_columns``.
    """

    name: str
    null_columns: tuple[str, ...]
    levels: tuple[Level, ...]

    def null_sql(self) -> str:
        """Portable SQL for the null level."""
        def side(s: str) -> str:
            return " AND ".join(f"{c}_{s} IS NULL" for c in self.null_columns)
        return f"({side('l')}) OR ({side('r')})"

    def columns(self) -> tuple[str, ...]:
        """Every token column this comparison reads."""
        seen: dict[str, None] = dict.fromkeys(self.null_columns)
        for lvl in self.levels:
            for c in lvl.columns:
                seen[c] = None
        return tuple(seen)


@dataclass(frozen=True)
class ModelDefinition:
    """Comparisons plus blocking rules (each a tuple of columns that must all be equal)."""

    comparisons: tuple[Comparison, ...]
    blocking_rules: tuple[tuple[str, ...], ...]
    training_blocking_rules: tuple[tuple[str, ...], ...]

    def columns(self) -> tuple[str, ...]:
        """Every token column the model reads, in a stable order."""
        seen: dict[str, None] = {}
        for comp in self.comparisons:
            for c in comp.columns():
                seen[c] = None
        for rule in self.blocking_rules + self.training_blocking_rules:
            for c in rule:
                seen[c] = None
        return tuple(seen)


def _eq(label: str, column: str) -> Level:
    return Level(label, "equal", (column,))


# Comparisons and training rules both definitions share.
_MIDDLE_NAME = Comparison("middle_name", ("middle_name",), (
    _eq("exact", "middle_name"),
    _eq("initial equal", "middle_name_initial"),
))
_SEX = Comparison("sex", ("sex",), (_eq("exact", "sex"),))
_EMAIL = Comparison("email", ("email",), (_eq("exact", "email"),))
# EM needs blocks where true matches are a fair share of the pairs: at 1M records a block on
# date of birth alone is ~4% matches and EM inflates the "else" m values (README Decision 42;
# cluster F1 0.966 -> 0.986 on the 1M benchmark registry).
_TRAINING_RULES: tuple[tuple[str, ...], ...] = (
    ("date_of_birth", "postal_code_zip3"),
    ("family_name_phonetic", "given_name_phonetic", "date_of_birth_year"),
    ("national_id",),
)

_DOB_TWO_OF_THREE = Level("two of year, month, day equal", "any_equal",
                          ("date_of_birth_year_month", "date_of_birth_month_day",
                           "date_of_birth_year_day"))
_HOUSEHOLD_FIELDS = ("postal_code", "address_line", "phone")
_SAME_ADDRESS = (
    Level("address line and phone equal", "all_equal", ("address_line", "phone")),
    _eq("address line equal", "address_line"),
    _eq("phone equal", "phone"),
)
_SAME_AREA = (
    _eq("ZIP equal", "postal_code"),
    _eq("city equal", "city"),
    _eq("ZIP3 equal", "postal_code_zip3"),
)

# Version 1 of the definition (token contract revision 1), kept so that models trained on it
# (default-v001, and candidates trained before revision 2) load and score exactly as before.
DEFINITION_V1 = ModelDefinition(
    comparisons=(
        Comparison("given_name", ("given_name",), (
            _eq("exact", "given_name"),
            _eq("nickname-canonical equal", "given_name_nickname"),
            _eq("phonetic equal", "given_name_phonetic"),
            _eq("first 3 letters equal", "given_name_prefix3"),
        )),
        _MIDDLE_NAME,
        Comparison("family_name", ("family_name",), (
            _eq("exact", "family_name"),
            Level("a compound part shared", "overlap",
                  ("family_name_part1", "family_name_part2", "family_name_part3")),
            _eq("phonetic equal", "family_name_phonetic"),
            _eq("first 3 letters equal", "family_name_prefix3"),
        )),
        Comparison("date_of_birth", ("date_of_birth",), (
            _eq("exact", "date_of_birth"),
            Level("day and month swapped", "cross", ("date_of_birth", "date_of_birth_swap")),
            _DOB_TWO_OF_THREE,
        )),
        _SEX,
        Comparison("national_id", ("national_id",), (
            _eq("exact", "national_id"),
            _eq("last 4 digits equal", "national_id_last4"),
        )),
        # Address line, ZIP, city and (landline) phone are one piece of evidence: a household
        # shares all of them. One comparison counts it once instead of four times.
        Comparison("household", _HOUSEHOLD_FIELDS, (*_SAME_ADDRESS, *_SAME_AREA)),
        _EMAIL,
    ),
    blocking_rules=(
        ("national_id",),
        ("date_of_birth", "given_name_phonetic"),
        ("date_of_birth", "family_name_phonetic"),
        ("given_name_nickname", "family_name_phonetic", "postal_code_zip3"),
        ("phone",),
        ("email",),
        ("family_name_part1", "given_name_prefix3", "date_of_birth_year"),
    ),
    training_blocking_rules=_TRAINING_RULES,
)


_NICK = ("given_name_nick1", "given_name_nick2", "given_name_nick3")
# Below exact agreement, an equal unordered name pair means the two names were swapped.
_NAMES_SWAPPED = _eq("given and family names swapped", "family_name_name_set")
_SIMILAR = 75  # Dice >= 0.75: one letter changed, added or lost in a name of 5+ letters


def _similar(label: str, column: str) -> Level:
    return Level(label, "similar", (column,), _SIMILAR)


_DOB_MASKS = tuple(f"date_of_birth_mask{i}" for i in range(1, 9))
_SSN_MASKS = tuple(f"national_id_mask{i}" for i in range(1, 8))

# Version 2: contract revision 2's fuzzy evidence (nickname groups, swapped names, one-digit
# typos in dates of birth and SSNs) and blocking rules that need no SSN, ZIP or exact date.
DEFINITION_V2 = ModelDefinition(
    comparisons=(
        Comparison("given_name", ("given_name",), (
            _eq("exact", "given_name"),
            Level("nickname groups overlap", "overlap", _NICK),
            _NAMES_SWAPPED,
            _similar("similar spelling", "given_name_bloom"),
            _eq("phonetic equal", "given_name_phonetic"),
            _eq("first 3 letters equal", "given_name_prefix3"),
        )),
        _MIDDLE_NAME,
        Comparison("family_name", ("family_name",), (
            _eq("exact", "family_name"),
            Level("a compound part shared", "overlap",
                  ("family_name_part1", "family_name_part2", "family_name_part3")),
            _NAMES_SWAPPED,
            _similar("similar spelling", "family_name_bloom"),
            _eq("phonetic equal", "family_name_phonetic"),
            _eq("first 3 letters equal", "family_name_prefix3"),
        )),
        Comparison("date_of_birth", ("date_of_birth",), (
            _eq("exact", "date_of_birth"),
            Level("day and month swapped", "cross", ("date_of_birth", "date_of_birth_swap")),
            Level("one digit differs", "any_equal", _DOB_MASKS),
            _DOB_TWO_OF_THREE,
        )),
        _SEX,
        Comparison("national_id", ("national_id",), (
            _eq("exact", "national_id"),
            Level("one digit or two neighbours differ (not the last)", "any_equal", _SSN_MASKS),
            _eq("last 4 digits equal", "national_id_last4"),
        )),
        Comparison("household", _HOUSEHOLD_FIELDS, (
            *_SAME_ADDRESS, _similar("address line similar", "address_line_bloom"), *_SAME_AREA,
        )),
        _EMAIL,
    ),
    blocking_rules=(
        ("national_id",),
        ("date_of_birth", "given_name_phonetic"),
        ("date_of_birth", "family_name_phonetic"),
        ("given_name_nick1", "family_name_phonetic", "postal_code_zip3"),
        ("phone",),
        ("email",),
        ("family_name_part1", "given_name_prefix3", "date_of_birth_year"),
        # Rules that need no SSN, ZIP, phone or email (an agency without them, or a typo in
        # each), chosen by the blocking recall they add on FEBRL and synthetic data for the
        # comparisons they cost at 1M records (BENCHMARKS.md, blocking recall): the street
        # address, the city with the date of birth, the names with the city, and the
        # unordered name pair (swapped names) with the city or the birth year.
        ("address_line",),
        ("city", "date_of_birth"),
        ("given_name_phonetic", "family_name_phonetic", "city"),
        ("family_name_name_set", "city"),
        ("family_name_name_set", "date_of_birth_year"),
        # an SSN with a typo or two swapped digits (its masks; blocks of one or two records)
        *((m,) for m in _SSN_MASKS),
    ),
    training_blocking_rules=_TRAINING_RULES,
)


# Version 3: the city is household evidence on its own. Under v2 the household comparison was
# null unless a record had a ZIP, an address line or a phone, so two records with only names,
# a date of birth and a city never used the city; and ZIP or city agreement meant "the same
# area but another address" (evidence against, for movers) even where there was no address to
# compare. v3 adds the city to the comparison's columns and two levels for agreement where the
# address line is missing on a side (Decision 63).
_HOUSEHOLD_V3 = Comparison("household", (*_HOUSEHOLD_FIELDS, "city"), (
    *_SAME_ADDRESS, _similar("address line similar", "address_line_bloom"),
    Level("ZIP equal, no address line to compare", "equal_unknown",
          ("postal_code", "address_line")),
    Level("city equal, no address line to compare", "equal_unknown", ("city", "address_line")),
    *_SAME_AREA,
))
DEFINITION_V3 = ModelDefinition(
    comparisons=tuple(_HOUSEHOLD_V3 if c.name == "household" else c
                      for c in DEFINITION_V2.comparisons),
    blocking_rules=DEFINITION_V2.blocking_rules,
    training_blocking_rules=_TRAINING_RULES,
)


# Version 4 (contract revision 3): swapped names with a typo. Each name token is hashed under
# its own field's key, so the service cannot compare a given name with a family name, and the
# unordered name pair needs both names exact. The name-order-free similarity token (a Bloom
# filter of both names' letter pairs) is similar for "MASON BLAKE" / "BLAKF MASON" while
# neither the given names nor the family names are: that is the level, in both name
# comparisons right below the exact swap, one predicate, so training counts it once
# (Decision 90). A record without the token (revision 2) is not comparable on it (Decision 91).
_NAMES_SWAPPED_TYPO = Level("given and family names swapped, with a typo", "similar_swapped",
                            ("family_name_name_set_bloom", "given_name_bloom",
                             "family_name_bloom"), _SIMILAR)


def _after_swap(comp: Comparison) -> Comparison:
    levels = list(comp.levels)
    levels.insert(levels.index(_NAMES_SWAPPED) + 1, _NAMES_SWAPPED_TYPO)
    return Comparison(comp.name, comp.null_columns, tuple(levels))


DEFINITION_V4 = ModelDefinition(
    comparisons=tuple(_after_swap(c) if _NAMES_SWAPPED in c.levels else c
                      for c in DEFINITION_V3.comparisons),
    blocking_rules=DEFINITION_V3.blocking_rules,
    training_blocking_rules=_TRAINING_RULES,
)

DEFINITIONS: dict[str, ModelDefinition] = {"v1": DEFINITION_V1, "v2": DEFINITION_V2,
                                           "v3": DEFINITION_V3, "v4": DEFINITION_V4}
CURRENT = "v4"  # what candidates are trained on (a retrain upgrades)
DEFAULT_DEFINITION = DEFINITIONS[CURRENT]
# Every column some definition reads: what the registry keeps in memory, so a model of any
# definition can be trained, previewed and promoted from the in-memory copy.
ALL_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(c for d in DEFINITIONS.values()
                                                   for c in d.columns()))


def definition_named(name: str | None) -> ModelDefinition:
    """The definition a model's sidecar names (``v1`` when it names none: older sidecars)."""
    try:
        return DEFINITIONS[name or "v1"]
    except KeyError:
        raise ValueError(f"unknown model definition {name!r}; known: {sorted(DEFINITIONS)}") \
            from None
