"""Files of the extract workflow on disk: per-project secrets, built packages, the signing key.

Owns: the project secret of each extract (32 random bytes from ``new_project_secret``, kept in
``<data_dir>/extract-secrets/<extract_id>.key`` with mode 0600, created on the first build and
destroyed by close: overwritten, flushed and unlinked), where each build's signed package lives
(``<data_dir>/extracts/<extract_id>-b<N>.zip``; what a killed build left there is removed at
start-up), and the service's Ed25519 signing key
(``<data_dir>/signing.key``). Must not: decide who may build, download or close (workflow.py),
or ever print or log a secret.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from mpi.errors import Conflict

SECRETS_DIR = "extract-secrets"
PACKAGES_DIR = "extracts"
SIGNING_KEY_FILE = "signing.key"
_ID_RE = re.compile(r"^x_[0-9a-f]{16}$")


def new_extract_id() -> str:
    """A fresh extract id: ``x_`` + 64 random bits in hex."""
    return "x_" + secrets.token_hex(8)


def _checked(extract_id: str) -> str:
    if not _ID_RE.match(extract_id):  # ids reach file names; never trust them blindly
        raise ValueError("malformed extract id")
    return extract_id


def secret_path(data_dir: Path, extract_id: str) -> Path:
    """Where an extract's project secret lives."""
    return data_dir / SECRETS_DIR / f"{_checked(extract_id)}.key"


def load_or_create_project_secret(data_dir: Path, extract_id: str) -> bytes:
    """The extract's project secret, created (0600) on first use."""
    from mpi.extract.pseudonym import new_project_secret
    path = secret_path(data_dir, extract_id)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created concurrently; read theirs
            return read_project_secret(data_dir, extract_id)
        with os.fdopen(fd, "wb") as fh:
            fh.write(new_project_secret().hex().encode())
    return read_project_secret(data_dir, extract_id)


def read_project_secret(data_dir: Path, extract_id: str) -> bytes:
    """The extract's project secret; Conflict when it was destroyed or never made."""
    path = secret_path(data_dir, extract_id)
    try:
        data = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        raise Conflict("this extract's project secret does not exist (closed)") from None
    if len(data) < 32:
        raise Conflict("this extract's project secret is damaged")
    return data


def destroy_project_secret(data_dir: Path, extract_id: str) -> bool:
    """Overwrite and delete the project secret; whether one existed."""
    path = secret_path(data_dir, extract_id)
    if not path.exists():
        return False
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.write(b"\0" * size)
        fh.flush()
        os.fsync(fh.fileno())
    path.unlink()
    return True


def package_path(data_dir: Path, extract_id: str, build_seq: int) -> Path:
    """Where build ``build_seq`` of an extract is stored."""
    return data_dir / PACKAGES_DIR / f"{_checked(extract_id)}-b{build_seq}.zip"


def remove_packages(data_dir: Path, extract_id: str, *, keep: int | None = None) -> None:
    """Delete an extract's stored packages (all, or all but build ``keep``)."""
    folder = data_dir / PACKAGES_DIR
    prefix = f"{_checked(extract_id)}-b"
    if not folder.exists():
        return
    for path in folder.glob(prefix + "*.zip"):
        if keep is None or path.name != f"{prefix}{keep}.zip":
            path.unlink(missing_ok=True)


def remove_stray_packages(data_dir: Path, keep: set[str]) -> list[str]:
    """Delete what killed builds left in the packages folder: temporary files of a package
    write (``.<name>.<pid>.tmp``) and packages no recorded build names (renamed into place, then
    killed before the build's transaction); keep the file names in ``keep`` (each extract's
    latest recorded build). Never served either way, but they hold pseudonymized rows. Call at
    start-up, before any build runs; the names removed."""
    folder = data_dir / PACKAGES_DIR
    if not folder.exists():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.name.endswith(".tmp") or
                               (path.suffix == ".zip" and path.name not in keep)):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def signing_key_path(data_dir: Path) -> Path:
    """The service's Ed25519 signing key file."""
    return data_dir / SIGNING_KEY_FILE
