"""The extract package: a deterministic zip with a signed SHA-256 manifest, and its offline check.

Owns: the package format (member order, zip metadata, ``manifest.json``, ``manifest.sig``,
``signing_key.pem``), ``write_package`` and ``verify_package``. Must not: read the registry,
hold extract data beyond the call, or accept member names that could escape a directory.

Format (version 1):
- members in this order: ``manifest.json``, ``manifest.sig``, ``signing_key.pem``, then the data
  files sorted by name; every entry dated 1980-01-01 00:00:00, mode 0644, deflated, no comments;
- ``manifest.json``: canonical JSON (sorted keys, 2-space indent, ASCII, trailing newline) with
  ``format``, ``format_version``, ``hash`` ("sha256"), ``signature`` ("ed25519"),
  ``key_fingerprint``, ``metadata`` and ``files`` (name, bytes, sha256 for every member except
  the manifest and its signature; ``signing_key.pem`` is listed);
- ``manifest.sig``: JSON with ``algorithm``, ``key_fingerprint``, ``manifest_sha256`` and
  ``signature`` (base64 of the 64-byte Ed25519 signature over the exact bytes of manifest.json).
  ``manifest_sha256`` is not a security feature (the signature is); it lets ``verify`` tell an
  edited manifest from an edited signature and name the right file;
- ``signing_key.pem``: the public key (convenience; trust comes from ``--public-key`` or
  ``GET /v1/keys/signing``, whose fingerprint must match).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mpi.errors import InvalidInput
from mpi.extract.signing import key_fingerprint, load_public_key, public_key_pem
from mpi.files import open_private

FORMAT = "mpi-extract-package"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PUBLIC_KEY = "signing_key.pem"
RESERVED = (MANIFEST, SIGNATURE, PUBLIC_KEY)
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
ZIP_MODE = 0o100644 << 16
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,3}")
_SMALL = 1 << 20   # manifest, signature and key members are read whole only below 1 MiB


@dataclass
class PackageCheck:
    """The outcome of ``verify_package``: ok only when every check passed."""

    ok: bool
    signature_ok: bool
    altered: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    fingerprint: str | None = None
    files: int = 0
    problems: list[str] = field(default_factory=list)
    manifest_sha256: str | None = None


def _canonical_json(obj: Any) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode()


def _zipinfo(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = ZIP_MODE
    info.create_system = 3
    return info


def _signature_document(key: Ed25519PublicKey | None, signature: bytes | None, manifest_sha: str) -> bytes:
    """The exact bytes of manifest.sig for this key, signature and manifest digest."""
    return _canonical_json({
        "algorithm": "ed25519", "key_fingerprint": key_fingerprint(key) if key else None,
        "manifest_sha256": manifest_sha,
        "signature": base64.b64encode(signature or b"").decode(),
    })


def check_member_name(name: str) -> None:
    """Refuse a member name that is reserved, absolute, traversing or oddly spelled."""
    if name in RESERVED:
        raise InvalidInput(f"package member name {name!r} is reserved")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidInput("package member names must be relative paths of letters, digits, '.', "
                           "'_' and '-' (no '..')")


def write_package(path: Path, files: Mapping[str, bytes], *, signing_key: Ed25519PrivateKey,
                  metadata: Mapping[str, Any] | None = None) -> str:
    """Write the signed zip to ``path`` (atomically); return the SHA-256 of manifest.json."""
    for name in files:
        check_member_name(name)
    members = {PUBLIC_KEY: public_key_pem(signing_key).encode(), **{n: files[n] for n in sorted(files)}}
    fingerprint = key_fingerprint(signing_key.public_key())
    manifest = _canonical_json({
        "format": FORMAT, "format_version": FORMAT_VERSION, "hash": "sha256", "signature": "ed25519",
        "key_fingerprint": fingerprint, "metadata": dict(metadata or {}),
        "files": [{"name": n, "bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                  for n, b in sorted(members.items())],
    })
    manifest_sha = hashlib.sha256(manifest).hexdigest()
    signature = _signature_document(signing_key.public_key(), signing_key.sign(manifest), manifest_sha)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open_private(tmp) as fh, \
                zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for name, data in ((MANIFEST, manifest), (SIGNATURE, signature), *members.items()):
                zf.writestr(_zipinfo(name), data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return manifest_sha


# ---- verification ---------------------------------------------------------------------------

# What zipfile raises for a member it cannot read: corrupt data or CRC, truncation, and
# header flags turned on by tampering (encrypted: RuntimeError; unsupported: NotImplementedError).
_UNREADABLE = (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError,
               RuntimeError, ValueError)


def _hash_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str | None:
    """SHA-256 of a member's content, or None when it cannot be read (corrupt data or CRC)."""
    h = hashlib.sha256()
    try:
        with zf.open(info) as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    except _UNREADABLE:
        return None
    return h.hexdigest()


def _read_small(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes | None:
    if info.file_size > _SMALL:
        return None
    try:
        return zf.read(info)
    except _UNREADABLE:
        return None


def _container_problems(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> list[str]:
    """Differences from the canonical zip layout (entry metadata, order, comments)."""
    problems = []
    if zf.comment:
        problems.append("the zip archive has a comment (not written by mpi)")
    for info in infos:
        if (info.date_time != ZIP_DATE or info.comment or info.external_attr != ZIP_MODE
                or info.compress_type != zipfile.ZIP_DEFLATED):
            problems.append(f"zip entry {info.filename!r}: metadata differs from the canonical form")
    order = [i.filename for i in infos]
    expected = [n for n in RESERVED if n in order] + sorted(n for n in order if n not in RESERVED)
    if order != expected and sorted(order) == sorted(set(order)):
        problems.append("zip entries are not in the canonical order")
    return problems


def _parse_json(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _listed_files(manifest: dict[str, Any] | None) -> dict[str, str] | None:
    """name -> sha256 from a parsed manifest, or None when its shape is wrong."""
    if manifest is None or manifest.get("format") != FORMAT:
        return None
    entries = manifest.get("files")
    if not isinstance(entries, list):
        return None
    out: dict[str, str] = {}
    for e in entries:
        if not (isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("sha256"), str)):
            return None
        out[e["name"]] = e["sha256"]
    return out


def _signature_bytes(sig: dict[str, Any] | None) -> bytes | None:
    if sig is None or not isinstance(sig.get("signature"), str):
        return None
    try:
        raw = base64.b64decode(sig["signature"], validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 64 else None


def _verifies(key: Ed25519PublicKey | None, signature: bytes | None, message: bytes | None) -> bool:
    if key is None or signature is None or message is None:
        return False
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def verify_package(path: Path, *, public_key_pem: str | None = None) -> PackageCheck:
    """Check a package offline: signature over the manifest, every file's SHA-256, the layout."""
    trusted = load_public_key(public_key_pem) if public_key_pem is not None else None
    check = PackageCheck(ok=False, signature_ok=False)
    try:
        zf = zipfile.ZipFile(path)
    except _UNREADABLE:  # e.g. a tampered "version needed" field: NotImplementedError
        check.problems.append("not a readable zip archive")
        return check
    with zf:
        _verify_open(zf, trusted, check)
    check.ok = (check.signature_ok and not check.altered and not check.missing
                and not check.unexpected and not check.problems)
    return check


def _verify_open(zf: zipfile.ZipFile, trusted: Ed25519PublicKey | None, check: PackageCheck) -> None:
    infos = zf.infolist()
    by_name = _index_members(infos, check)
    manifest_bytes = _read_small(zf, by_name[MANIFEST]) if MANIFEST in by_name else None
    sig_bytes = _read_small(zf, by_name[SIGNATURE]) if SIGNATURE in by_name else None
    manifest = _parse_json(manifest_bytes)
    sig = _parse_json(sig_bytes)
    listed = _listed_files(manifest)
    altered: set[str] = set()
    for name, present, parsed in ((MANIFEST, manifest_bytes, listed), (SIGNATURE, sig_bytes, sig)):
        if name not in by_name:
            check.missing.append(name)
        elif present is None or parsed is None:
            altered.add(name)
    hashes = _hash_listed(zf, by_name, listed, check, altered)
    if listed is not None:
        extra = {n for n in by_name if n not in listed and n not in (MANIFEST, SIGNATURE)}
        check.unexpected.extend(sorted(extra - set(check.unexpected)))
    check.files = sum(1 for n, h in hashes.items() if h is not None and n not in altered)
    package_key = _package_key(zf, by_name, trusted, check, altered)
    key = trusted or package_key
    check.fingerprint = key_fingerprint(key) if key is not None else None
    signature = _signature_bytes(sig)
    if sig is not None and signature is None:
        altered.add(SIGNATURE)
    check.signature_ok = _verifies(key, signature, manifest_bytes)
    if manifest_bytes is not None:
        check.manifest_sha256 = hashlib.sha256(manifest_bytes).hexdigest()
    _blame_signature(check, sig, signature, key, package_key, trusted, altered, manifest_bytes, sig_bytes)
    if MANIFEST in altered:
        _excuse_listed_files(check, hashes, altered)
    check.altered = sorted(altered)
    check.problems.extend(_container_problems(zf, infos))


def _index_members(infos: list[zipfile.ZipInfo], check: PackageCheck) -> dict[str, zipfile.ZipInfo]:
    """name -> entry (the last of duplicates); each duplicate name is reported as unexpected."""
    by_name: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        if info.filename in by_name:
            check.unexpected.append(info.filename)
            check.problems.append(f"zip entry {info.filename!r} appears more than once")
        by_name[info.filename] = info
    return by_name


def _hash_listed(zf: zipfile.ZipFile, by_name: dict[str, zipfile.ZipInfo],
                 listed: dict[str, str] | None, check: PackageCheck,
                 altered: set[str]) -> dict[str, str | None]:
    """Every listed file: present (else missing) and unchanged (else altered); name -> digest."""
    hashes: dict[str, str | None] = {}
    for name, expected in (listed or {}).items():
        if name not in by_name:
            check.missing.append(name)
            continue
        hashes[name] = _hash_member(zf, by_name[name])
        if hashes[name] != expected:
            altered.add(name)
    return hashes


def _package_key(zf: zipfile.ZipFile, by_name: dict[str, zipfile.ZipInfo],
                 trusted: Ed25519PublicKey | None, check: PackageCheck,
                 altered: set[str]) -> Ed25519PublicKey | None:
    """The package's own public key (None if absent or unreadable); flag a mismatch with the trusted one."""
    package_key: Ed25519PublicKey | None = None
    pem = _read_small(zf, by_name[PUBLIC_KEY]) if PUBLIC_KEY in by_name else None
    if pem is not None:
        try:
            package_key = load_public_key(pem)
        except InvalidInput:
            altered.add(PUBLIC_KEY)
    if trusted is not None and package_key is not None and PUBLIC_KEY not in altered and (
            key_fingerprint(package_key) != key_fingerprint(trusted)):
        check.problems.append("signing_key.pem in the package is not the trusted public key")
    return package_key


def _excuse_listed_files(check: PackageCheck, hashes: dict[str, str | None], altered: set[str]) -> None:
    """The listing itself is altered: a digest mismatch may be the listing's fault, not the file's."""
    for name, digest in sorted(hashes.items()):
        if name in altered and digest is not None:
            altered.discard(name)
            check.problems.append(f"{name} does not match manifest.json, which is itself altered")


def _blame_signature(check: PackageCheck, sig: dict[str, Any] | None, signature: bytes | None,
                     key: Ed25519PublicKey | None, package_key: Ed25519PublicKey | None,
                     trusted: Ed25519PublicKey | None, altered: set[str],
                     manifest_bytes: bytes | None, sig_bytes: bytes | None) -> None:
    """Name the file a signature failure points at: the manifest, the signature or the key."""
    if sig is None or check.manifest_sha256 is None:
        return
    recorded = sig.get("manifest_sha256")
    fingerprint_ok = key is not None and sig.get("key_fingerprint") == key_fingerprint(key)
    if check.signature_ok:
        if recorded != check.manifest_sha256 or not fingerprint_ok or sig_bytes != _signature_document(
                key, signature, check.manifest_sha256):
            altered.add(SIGNATURE)      # the signature verifies, so its other bytes were edited
        return
    if recorded != check.manifest_sha256:
        if MANIFEST not in altered and SIGNATURE not in altered:
            altered.add(MANIFEST)       # manifest.json is not the document that was signed
        return
    if trusted is None and PUBLIC_KEY in altered:
        return                          # the package's own key was edited; already named
    if trusted is not None and _verifies(package_key, signature, manifest_bytes):
        return                          # signed, but by the package's key, not the trusted one
    altered.add(SIGNATURE)
