"""Normalization of plaintext identifiers and derivation of their variants (agency side).

Owns: turning one raw field value into its canonical form (or missing), and deriving the
variant values the schema names. Pure: no I/O, no clock, no environment. Must not: hash or
tokenize (tokens.py) or know about files (tokenizer.py).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

import jellyfish
from nicknames import NickNamer
from unidecode import unidecode


class FieldError(ValueError):
    """A value that cannot be normalized; ``field`` names it and the message says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


_TITLES = frozenset({"MR", "MRS", "MS", "MISS", "MX", "DR", "PROF", "REV", "FR", "SIR",
                     "MADAM", "HON", "SGT", "CPT", "CAPT"})
_SUFFIXES = frozenset({"JR", "SR", "II", "III", "IV", "V", "VI", "MD", "PHD", "DDS", "ESQ",
                       "RN", "DO", "JNR", "SNR", "2ND", "3RD"})
_NAME_PLACEHOLDERS = frozenset({
    "UNKNOWN", "UNK", "NONE", "NULL", "NA", "N A", "NOT GIVEN", "NOT STATED", "NOTGIVEN",
    "BABY", "BABY BOY", "BABY GIRL", "BABYBOY", "BABYGIRL", "INFANT", "INFANT BOY",
    "INFANT GIRL", "NEWBORN", "NB", "FNU", "LNU", "NFN", "NLN", "NMN", "TEST", "TESTPATIENT",
    "TEST PATIENT", "XXX", "XX", "X", "ANONYMOUS", "NO NAME", "NONAME", "REFUSED", "TWIN A",
    "TWIN B",
})
_SSN_PLACEHOLDERS = frozenset({"123456789", "987654321", "078051120", "219099999"})
_DOB_PLACEHOLDERS = frozenset({"1900-01-01", "1899-12-31", "1800-01-01", "1901-01-01",
                               "0001-01-01", "9999-12-31", "1111-11-11"})
_PHONE_PLACEHOLDERS = frozenset({"0000000000", "9999999999", "1234567890", "5555555555",
                                 "1111111111", "0000000", "9999999"})
_STREET_ABBREVIATIONS = {
    "STREET": "ST", "STR": "ST", "AVENUE": "AVE", "AV": "AVE", "AVN": "AVE", "ROAD": "RD",
    "DRIVE": "DR", "LANE": "LN", "BOULEVARD": "BLVD", "COURT": "CT", "PLACE": "PL",
    "TERRACE": "TER", "CIRCLE": "CIR", "HIGHWAY": "HWY", "PARKWAY": "PKWY", "SQUARE": "SQ",
    "TRAIL": "TRL", "WAY": "WAY", "APARTMENT": "APT", "SUITE": "STE", "UNIT": "UNIT",
    "NORTH": "N", "SOUTH": "S", "EAST": "E", "WEST": "W", "NORTHEAST": "NE",
    "NORTHWEST": "NW", "SOUTHEAST": "SE", "SOUTHWEST": "SW", "FLOOR": "FL", "BUILDING": "BLDG",
    "NUMBER": "NO", "POINT": "PT", "MOUNT": "MT", "FORT": "FT", "SAINT": "ST",
}
_NON_ALNUM = re.compile(r"[^A-Z0-9 ]+")
_SPACES = re.compile(r"\s+")
_DIGITS = re.compile(r"[^0-9]+")
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")

_nicknamer = NickNamer()


def fold(text: str) -> str:
    """Unicode-fold to upper-case ASCII letters, digits and single spaces."""
    if not text.isascii():
        text = unidecode(unicodedata.normalize("NFKC", text))
    text = text.upper().replace("'", "").replace("`", "")
    text = _NON_ALNUM.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


@lru_cache(maxsize=200_000)
def normalize_name(raw: str) -> str | None:
    """Normalize a personal name; None when missing or a placeholder."""
    text = fold(raw)
    if not text or text in _NAME_PLACEHOLDERS:
        return None
    parts = text.split(" ")
    while len(parts) > 1 and parts[0] in _TITLES:
        parts.pop(0)
    while len(parts) > 1 and parts[-1] in _SUFFIXES:
        parts.pop()
    text = " ".join(parts)
    if text in _NAME_PLACEHOLDERS or not any(c.isalpha() for c in text):
        return None
    return text


# Leading-zero repair (``zero_pad=True``): spreadsheets drop the leading zeros of ZIPs and
# SSNs (areas 001-099 are real), so these digit counts are padded: count -> padded length.
_ZIP_PAD = {3: 5, 4: 5, 8: 9}
_SSN_PAD = {7: 9, 8: 9}
_PAD_HINT = " (leading zeros lost? zero-padding is off)"


def normalize_national_id(raw: str, *, zero_pad: bool = False) -> str | None:
    """Normalize a US SSN to 9 digits; None for placeholders and impossible numbers.

    With ``zero_pad`` a 7- or 8-digit SSN is zero-padded to 9 digits first; one that is then
    a placeholder or impossible raises FieldError (a padded guess is not a plain "unknown").
    """
    digits = _DIGITS.sub("", raw)
    if not digits:
        return None
    n = len(digits)
    padded = zero_pad and n in _SSN_PAD
    if padded:
        digits = digits.zfill(9)
    elif n != 9:
        hint = _PAD_HINT if n in _SSN_PAD else ""
        raise FieldError("national_id", f"expected 9 digits, got {n}{hint}")
    if (digits in _SSN_PLACEHOLDERS or len(set(digits)) == 1 or digits[:3] in ("000", "666")
            or digits[0] == "9" or digits[3:5] == "00" or digits[5:] == "0000"):
        if padded:
            raise FieldError("national_id", f"not a valid SSN once zero-padded from {n} digits")
        return None
    return digits


def normalize_date(raw: str, *, formats: Sequence[str] = (), today: dt.date | None = None,
                   field: str = "date_of_birth") -> str | None:
    """Normalize a date to ISO YYYY-MM-DD; other formats only when declared in ``formats``."""
    text = raw.strip()
    if not text:
        return None
    parsed: dt.date | None = None
    if _ISO_DATE.match(text):
        if text in _DOB_PLACEHOLDERS:
            return None
        try:
            parsed = dt.date.fromisoformat(text)
        except ValueError:
            raise FieldError(field, "not a valid calendar date") from None
    else:
        impossible = False
        for fmt in formats:
            try:
                parsed = dt.datetime.strptime(text, fmt).date()
                break
            except ValueError as exc:
                # "time data ... does not match" = wrong shape; anything else (e.g. "day is
                # out of range for month") = the shape fits but the date does not exist.
                impossible = impossible or not str(exc).startswith("time data")
                continue
        if parsed is None:
            if impossible:
                raise FieldError(field, "not a valid calendar date")
            hint = f" or one of {list(formats)}" if formats else " (declare other formats)"
            raise FieldError(field, f"not an ISO 8601 date YYYY-MM-DD{hint}")
    iso = parsed.isoformat()
    if iso in _DOB_PLACEHOLDERS:
        return None
    if parsed.year < 1875:
        raise FieldError(field, "year before 1875")
    if today is not None and parsed > today:
        raise FieldError(field, "date is in the future")
    return iso


def normalize_sex(raw: str) -> str | None:
    """Normalize administrative sex to M, F or X; None when unknown."""
    text = fold(raw)
    if text in ("", "U", "UNK", "UNKNOWN", "NOT STATED", "REFUSED"):
        return None
    if text in ("M", "MALE", "MAN", "BOY"):
        return "M"
    if text in ("F", "FEMALE", "WOMAN", "GIRL"):
        return "F"
    if text in ("X", "O", "OTHER", "NONBINARY", "NON BINARY"):
        return "X"
    raise FieldError("sex", "expected M, F, X or unknown")


def normalize_postal_code(raw: str, *, zero_pad: bool = False) -> str | None:
    """Normalize a US ZIP or ZIP+4 to 5 digits; None for 00000.

    With ``zero_pad`` a 3- or 4-digit ZIP is zero-padded to 5 digits and an 8-digit ZIP+4 to 9.
    """
    digits = _DIGITS.sub("", raw)
    if not digits:
        return None
    n = len(digits)
    if n in _ZIP_PAD:
        if not zero_pad:
            raise FieldError("postal_code", f"expected 5 or 9 digits, got {n}{_PAD_HINT}")
        digits = digits.zfill(_ZIP_PAD[n])
    elif n not in (5, 9):
        raise FieldError("postal_code", f"expected 5 or 9 digits, got {n}")
    zip5 = digits[:5]
    return None if zip5 == "00000" else zip5


@lru_cache(maxsize=200_000)
def normalize_address(raw: str) -> str | None:
    """Normalize a street address line with USPS abbreviations."""
    text = fold(raw)
    if not text:
        return None
    return " ".join(_STREET_ABBREVIATIONS.get(w, w) for w in text.split(" "))


@lru_cache(maxsize=50_000)
def normalize_city(raw: str) -> str | None:
    """Normalize a city name."""
    text = fold(raw)
    if not text:
        return None
    return " ".join(_STREET_ABBREVIATIONS.get(w, w) if w in ("SAINT", "FORT", "MOUNT") else w
                    for w in text.split(" "))


def normalize_phone(raw: str) -> str | None:
    """Normalize a phone number to its digits (NANP country code 1 dropped)."""
    digits = _DIGITS.sub("", raw)
    if not digits:
        return None
    if len(digits) == 11 and digits[0] == "1":
        digits = digits[1:]
    if not 7 <= len(digits) <= 15:
        raise FieldError("phone", f"expected 7 to 15 digits, got {len(digits)}")
    if digits in _PHONE_PLACEHOLDERS or len(set(digits)) == 1:
        return None
    return digits


def normalize_email(raw: str) -> str | None:
    """Normalize an email address (trim, lower-case)."""
    text = raw.strip().lower()
    if not text:
        return None
    local, sep, domain = text.partition("@")
    if not sep or not local or "." not in domain or "@" in domain or " " in text:
        raise FieldError("email", "not an email address")
    return text


@lru_cache(maxsize=200_000)
def phonetic(name: str) -> str:
    """NYSIIS code of a normalized name (spaces removed)."""
    return jellyfish.nysiis(name.replace(" ", ""))


@lru_cache(maxsize=100_000)
def nickname_canonical(given: str) -> str:
    """The nickname-canonical form of a given name's first word (BOB -> ROBERT).

    Among the name and its canonical forms, the one with the most nicknames wins (the most
    formal name), ties broken alphabetically, so a nickname and its formal name agree.
    """
    first = given.split(" ")[0].lower()
    candidates = {first} | _nicknamer.canonicals_of(first)
    best = min(candidates, key=lambda n: (-len(_nicknamer.nicknames_of(n)), n))
    return best.upper()


def zero_pad_repair(field: str, raw: str) -> str | None:
    """What ``zero_pad=True`` does to this raw value, e.g. "zero-padded 4-digit ZIP to 5
    digits"; None when it pads nothing. Names digit counts only, never the value."""
    if field == "postal_code":
        pad, what = _ZIP_PAD, "ZIP"
    elif field == "national_id":
        pad, what = _SSN_PAD, "SSN"
    else:
        return None
    n = len(_DIGITS.sub("", raw))
    if n not in pad:
        return None
    return f"zero-padded {n}-digit {what}{'+4' if n == 8 and what == 'ZIP' else ''} to {pad[n]} digits"


# Common Spanish hypocoristics the nicknames package does not know (a state agency serves many
# Hispanic residents): nickname -> formal names.
_NICKNAMES_ES: dict[str, tuple[str, ...]] = {
    "pepe": ("jose",), "pepito": ("jose",), "chema": ("jose",), "paco": ("francisco",),
    "pancho": ("francisco",), "paca": ("francisca",), "lupe": ("guadalupe",),
    "chuy": ("jesus",), "chucho": ("jesus",), "nacho": ("ignacio",), "memo": ("guillermo",),
    "lalo": ("eduardo",), "beto": ("alberto", "roberto"), "quique": ("enrique",),
    "tono": ("antonio",), "chela": ("graciela",), "lola": ("dolores",),
    "concha": ("concepcion",), "chayo": ("rosario",), "charo": ("rosario",),
    "pili": ("pilar",), "rafa": ("rafael",), "toni": ("antonio",), "nando": ("fernando",),
    "manolo": ("manuel",), "manny": ("manuel",), "juanito": ("juan",), "lucho": ("luis",),
    "checo": ("sergio",), "pati": ("patricia",), "maru": ("maria",), "mari": ("maria",),
}


@lru_cache(maxsize=1)
def _first_name_popularity() -> dict[str, float]:
    """US first-name frequencies (the weights Faker's en_US provider ships), lower case."""
    from faker.providers.person.en_US import Provider
    pop: dict[str, float] = {}
    for table in (Provider.first_names_male, Provider.first_names_female):
        for name, weight in table.items():
            pop[name.lower()] = pop.get(name.lower(), 0.0) + float(weight)
    return pop


NICKNAME_GROUPS = 3


@lru_cache(maxsize=100_000)
def nickname_groups(given: str) -> tuple[str, ...]:
    """Up to three formal names the first word of a given name may stand for, most common first.

    A name with nicknames of its own stands for itself (WILLIAM -> WILLIAM); a nickname stands
    for its formal names (BILL -> WILLIAM, ROBERT, ...); a name the tables do not know stands for
    itself. A nickname and its formal name therefore share a group whichever way round they come,
    which one canonical form per name cannot do (BILL -> ROBERT but WILLIAM -> WILLIAM).
    """
    first = given.split(" ")[0].lower()
    roots = set(_nicknamer.canonicals_of(first)) | set(_NICKNAMES_ES.get(first, ()))
    if not roots or _nicknamer.nicknames_of(first):
        roots.add(first)
    pop = _first_name_popularity()
    ranked = sorted(roots, key=lambda n: (-pop.get(n, 0.0), n))[:NICKNAME_GROUPS]
    return tuple(n.upper() for n in ranked)


def masked(digits: str, width: int = 1) -> dict[int, str]:
    """The value with each run of ``width`` neighbouring positions in turn replaced by '_'
    (1-based position of the run's first digit -> masked). With width 1 a one-digit typo
    leaves one mask equal; with width 2 a transposition of two neighbouring digits does too."""
    return {i + 1: digits[:i] + "_" * width + digits[i + width:]
            for i in range(len(digits) - width + 1)}


def normalize_field(field: str, raw: str, *, date_formats: Sequence[str] = (),
                    today: dt.date | None = None, zero_pad: bool = False) -> str | None:
    """Normalize one field's raw value (None when missing); raise FieldError when invalid.

    ``zero_pad`` repairs ZIPs and SSNs that lost their leading zeros (see zero_pad_repair).
    """
    if field == "date_of_birth":
        return normalize_date(raw, formats=date_formats, today=today)
    if field == "postal_code":
        return normalize_postal_code(raw, zero_pad=zero_pad)
    if field == "national_id":
        return normalize_national_id(raw, zero_pad=zero_pad)
    return _SIMPLE[field](raw)


def normalize_record(raw: Mapping[str, str | None], *, date_formats: Sequence[str] = (),
                     today: dt.date | None = None,
                     zero_pad: bool = False) -> tuple[dict[str, str], list[FieldError]]:
    """Normalize every schema field present in ``raw``; returns values and field errors."""
    out: dict[str, str] = {}
    errors: list[FieldError] = []
    for field in (*_SIMPLE, "date_of_birth"):
        value = raw.get(field)
        if value is None or value == "":
            continue
        try:
            norm = normalize_field(field, value, date_formats=date_formats, today=today,
                                   zero_pad=zero_pad)
        except FieldError as exc:
            errors.append(exc)
            continue
        if norm is not None:
            out[field] = norm
    return out, errors


_SIMPLE: dict[str, Callable[[str], str | None]] = {
    "given_name": normalize_name,
    "middle_name": normalize_name,
    "family_name": normalize_name,
    "sex": normalize_sex,
    "national_id": normalize_national_id,
    "postal_code": normalize_postal_code,
    "address_line": normalize_address,
    "city": normalize_city,
    "phone": normalize_phone,
    "email": normalize_email,
}


def _swap_day_month(iso: str) -> str | None:
    year, month, day = iso[:4], iso[5:7], iso[8:10]
    if month == day or int(day) > 12:
        return None
    return f"{year}-{day}-{month}"


def _given(v: str) -> dict[str, str]:
    out = {"given_name": v, "given_name.phonetic": phonetic(v), "given_name.prefix3": v[:3],
           "given_name.nickname": nickname_canonical(v), "given_name.bloom": v}
    for i, name in enumerate(nickname_groups(v), start=1):
        out[f"given_name.nick{i}"] = name
    return out


def _middle(v: str) -> dict[str, str]:
    return {"middle_name": v, "middle_name.initial": v[0]}


def _family(v: str) -> dict[str, str]:
    out = {"family_name": v, "family_name.phonetic": phonetic(v), "family_name.prefix3": v[:3],
           "family_name.bloom": v}
    for i, part in enumerate(v.split(" ")[:3], start=1):
        out[f"family_name.part{i}"] = part
    return out


def _dob(v: str) -> dict[str, str]:
    out = {"date_of_birth": v}
    swapped = _swap_day_month(v)
    if swapped:
        out["date_of_birth.swap"] = swapped
    out["date_of_birth.year_month"] = v[:7]
    out["date_of_birth.month_day"] = v[5:]
    out["date_of_birth.year_day"] = v[:4] + v[7:]
    out["date_of_birth.year"] = v[:4]
    for i, m in masked(v.replace("-", "")).items():
        out[f"date_of_birth.mask{i}"] = m
    return out


def _national_id(v: str) -> dict[str, str]:
    out = {"national_id": v, "national_id.last4": v[-4:]}
    for i, m in masked(v[:8], 2).items():  # twins' sequential SSNs differ in the last digit
        out[f"national_id.mask{i}"] = m + v[8]
    return out


_DERIVE: dict[str, Callable[[str], dict[str, str]]] = {
    "given_name": _given, "middle_name": _middle, "family_name": _family,
    "date_of_birth": _dob,
    "national_id": _national_id,
    "address_line": lambda v: {"address_line": v, "address_line.bloom": v},
    "postal_code": lambda v: {"postal_code": v, "postal_code.zip3": v[:3]},
}


def derive_field_variants(field: str, value: str) -> dict[str, str]:
    """Token name -> value for one normalized field: the full value and its derived variants."""
    fn = _DERIVE.get(field)
    return fn(value) if fn else {field: value}


def name_set(given: str, family: str) -> str:
    """The unordered pair of normalized given and family names (swapped names agree)."""
    return "|".join(sorted((given, family)))


def derive_record_variants(values: Mapping[str, str]) -> dict[str, str]:
    """Token name -> value for the variants that combine fields: the unordered name pair and
    its name-order-free similarity token (contract revision 3)."""
    given, family = values.get("given_name"), values.get("family_name")
    if not (given and family):
        return {}
    pair = name_set(given, family)
    return {"family_name.name_set": pair, "family_name.name_set_bloom": pair}


def derive_variants(values: Mapping[str, str]) -> dict[str, str]:
    """Map token name -> value for every full and derived variant of normalized ``values``."""
    out: dict[str, str] = {}
    for field, value in values.items():
        out.update(derive_field_variants(field, value))
    out.update(derive_record_variants(values))
    return out
