"""Backup and restore of a data directory (Decision 70).

Owns: the backup archive (an uncompressed tar, 0600: ``manifest.json``, ``manifest.sha256``
and ``files/<path>``), which files of the data directory it holds, the manifest (SHA-256 and
size of every file, schema version, record, person and audit counts at the moment of the
copy), and restoring one: refuse a non-empty target unless forced, check every SHA-256 before
anything is moved into place, write 0700/0600, then open the registry and check its counts
and audit chain against the manifest. Must not: run SQL or decide when the registry file is
consistent (mpi/store/backup.py takes the copy under the write lock).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from mpi.errors import ConfigurationError, InvalidInput
from mpi.files import open_private, private_dir, private_file
from mpi.store.backup import registry_counts, snapshot
from mpi.store.journal import segment_paths

if TYPE_CHECKING:
    from mpi.config import Settings
    from mpi.identity.registry import Registry

FORMAT = "mpi-backup/1"
BACKUPS_DIR = "backups"  # in the data dir: where POST /v1/admin/backup writes (never backed up)
# Never copied from the data dir: the registry file and its WAL/journal (copied consistently
# by the snapshot instead), Spark scratch, raw bulk uploads (their jobs end at the next start)
# and earlier backups.
_SKIP_DIRS = frozenset({BACKUPS_DIR, "spark-work", "uploads"})
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Restored:
    """What a restore put back and found."""

    files: int
    records: dict[str, int]
    persons: dict[str, int]
    audit_events: int


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _data_files(settings: Settings) -> Iterator[tuple[str, Path]]:
    """(name in the backup, path) of every data-dir file other than the registry's own."""
    root = settings.data_dir
    db = settings.registry_path.name
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root:
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
        for f in sorted(filenames):
            if here == root and (f.startswith(db) or f.startswith(".")):
                continue
            yield (here / f).relative_to(root).as_posix(), here / f
    secret = settings.secret_path
    if secret.exists() and root not in secret.resolve().parents:
        yield "server.secret", secret  # kept elsewhere: restored into the data dir
    scope = settings.key_scope_secret_path
    if scope.exists() and root not in scope.resolve().parents:
        yield "key-scope.secret", scope  # likewise: scoped person keys depend on it


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True).encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes | Path) -> None:
    info = tarfile.TarInfo(name)
    info.mode = 0o600
    info.mtime = int(dt.datetime.now(dt.UTC).timestamp())
    if isinstance(data, bytes):
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        return
    info.size = data.stat().st_size
    with data.open("rb") as fh:
        tar.addfile(info, fh)


def backup_registry(reg: Registry, out: Path) -> dict[str, Any]:
    """Write a backup of ``reg``'s data directory to ``out`` (0600, must not exist); its
    manifest. Safe while the registry serves: writers wait only for the registry file's copy."""
    if out.exists():
        raise InvalidInput(f"{out} already exists; choose another --out")
    if not out.parent.exists():
        private_dir(out.parent)
    settings = reg.settings
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".mpi-backup-") as tmp:
        staging = Path(tmp)
        snap = snapshot(reg.store, staging)
        files = dict(snap.files)
        for name, path in _data_files(settings):
            files.setdefault(name, path)
        manifest: dict[str, Any] = {
            "format": FORMAT, "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "schema_version": snap.schema_version,
            "counts": {"records": snap.records, "persons": snap.persons,
                       "audit_events": snap.audit_events, "audit_head": snap.audit_head},
            "files": {}}
        present: dict[str, Path] = {}
        for name, path in sorted(files.items()):
            try:  # a file removed meanwhile (e.g. a closed project's secret) is left out
                manifest["files"][name] = {"sha256": _sha256(path), "size": path.stat().st_size}
            except FileNotFoundError:
                continue
            present[name] = path
        body = _manifest_bytes(manifest)
        partial = staging / "archive.tar"
        with open_private(partial, exclusive=True) as fh, tarfile.open(fileobj=fh, mode="w",
                                                                      format=tarfile.PAX_FORMAT) as tar:
            _add(tar, "manifest.json", body)
            _add(tar, "manifest.sha256", hashlib.sha256(body).hexdigest().encode())
            for name, path in present.items():
                _add(tar, f"files/{name}", path)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, out)
    private_file(out)
    return manifest


def backup_stopped(settings: Settings, out: Path) -> dict[str, Any]:
    """Back up the data directory of a stopped service (opens its registry)."""
    from mpi.identity.registry import Registry
    reg = Registry(settings)
    try:
        return backup_registry(reg, out)
    finally:
        reg.close()


def _safe_name(name: str) -> str | None:
    """The data-dir path of an archive member ``files/<path>``, or None for anything else."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or len(p.parts) < 2 or p.parts[0] != "files":
        return None
    return PurePosixPath(*p.parts[1:]).as_posix()


def _read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    def member(name: str) -> bytes:
        try:
            fh = tar.extractfile(name)
        except KeyError:
            fh = None
        if fh is None:
            raise InvalidInput(f"not an mpi backup: no {name}")
        return fh.read()
    body, digest = member("manifest.json"), member("manifest.sha256").decode().strip()
    if hashlib.sha256(body).hexdigest() != digest:
        raise InvalidInput("backup refused: manifest.json fails its SHA-256 (altered)")
    manifest: dict[str, Any] = json.loads(body)
    if manifest.get("format") != FORMAT:
        raise InvalidInput(f"backup refused: format {manifest.get('format')!r}, expected {FORMAT}")
    return manifest


def _extract_verified(tar: tarfile.TarFile, manifest: dict[str, Any], staging: Path) -> None:
    """Extract every listed file into ``staging`` (0700/0600), checking each SHA-256."""
    expected: dict[str, dict[str, Any]] = manifest["files"]
    seen: set[str] = set()
    for info in tar:
        if info.name in ("manifest.json", "manifest.sha256"):
            continue
        name = _safe_name(info.name)
        if name is None or name not in expected or not info.isfile() or name in seen:
            raise InvalidInput(f"backup refused: unexpected member {info.name!r}")
        fh = tar.extractfile(info)
        if fh is None:
            raise InvalidInput(f"backup refused: unreadable member {info.name!r}")
        dest = staging / name
        private_dir(dest.parent)
        h = hashlib.sha256()
        with open_private(dest, exclusive=True) as out:
            while block := fh.read(_CHUNK):
                h.update(block)
                out.write(block)
        if h.hexdigest() != expected[name]["sha256"]:
            raise InvalidInput(f"backup refused: {name} fails its SHA-256 (altered or damaged)")
        seen.add(name)
    missing = sorted(set(expected) - seen)
    if missing:
        raise InvalidInput(f"backup refused: missing {', '.join(missing)}")


def _open_archive(src: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(src, mode="r:")
    except (tarfile.TarError, OSError) as exc:
        raise InvalidInput(f"backup refused: {src.name} is not a readable archive ({exc})") from None


def _clear_stale(target: Path, registry_name: str) -> None:
    """With --force: what belonged to the old registry and would be replayed against the new."""
    registry = target / registry_name
    for stale in [registry.with_name(registry_name + ".wal"), *segment_paths(registry)]:
        stale.unlink(missing_ok=True)


def _move_into_place(staging: Path, target: Path) -> int:
    n = 0
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        dest = target / path.relative_to(staging)
        private_dir(dest.parent)
        os.replace(path, dest)
        private_file(dest)
        n += 1
    return n


def restore(src: Path, settings: Settings, *, force: bool = False) -> Restored:
    """Restore the backup ``src`` into ``settings.data_dir`` and verify it (see module doc)."""
    target = settings.data_dir
    if target.exists() and any(target.iterdir()) and not force:
        raise InvalidInput(f"{target} is not empty; restore into an empty directory or pass "
                           "--force (files of the backup are replaced, the old journal removed)")
    private_dir(target)
    with _open_archive(src) as tar:
        try:
            manifest = _read_manifest(tar)
            with tempfile.TemporaryDirectory(dir=target, prefix=".mpi-restore-") as tmp:
                _extract_verified(tar, manifest, Path(tmp))
                _clear_stale(target, settings.registry_path.name)
                files = _move_into_place(Path(tmp), target)
        except (tarfile.TarError, EOFError, ValueError, KeyError) as exc:
            raise InvalidInput(f"backup refused: damaged archive ({exc})") from None
    return verify_restored(settings, manifest, files)


def verify_restored(settings: Settings, manifest: dict[str, Any], files: int) -> Restored:
    """Open the restored registry; its counts must equal the manifest's, its audit chain verify."""
    from mpi.identity.registry import Registry
    reg = Registry(settings)
    try:
        records, persons, events, head = registry_counts(reg.store)
        verification = reg.verify_audit()
    finally:
        reg.close()
    want = manifest["counts"]
    got = {"records": records, "persons": persons, "audit_events": events, "audit_head": head}
    if got != want:
        raise ConfigurationError(f"restored registry differs from the backup's manifest: "
                                 f"expected {want}, found {got}")
    if not verification.ok:
        raise ConfigurationError(f"restored registry's audit chain is broken at event "
                                 f"{verification.first_bad_seq}: {verification.reason}")
    return Restored(files, records, persons, events)

