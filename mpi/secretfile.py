"""Linkage secret files (agency side): create with 0600 permissions and read back.

Owns: the on-disk format of a linkage secret. Must not: print or log the secret.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mpi.agency.tokens import SECRET_BYTES, key_id, new_secret
from mpi.errors import ConfigurationError


def write_secret(path: Path) -> str:
    """Create a new linkage secret file (refuses to overwrite); returns its key id."""
    secret = new_secret()
    kid = key_id(secret)
    body = json.dumps({"kind": "mpi-linkage-secret", "key_id": kid, "secret": secret.hex()})
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(f"{path} already exists; refusing to overwrite a secret") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(body + "\n")
    return kid


def read_secret(path: Path) -> bytes:
    """Read a linkage secret file written by ``write_secret``."""
    try:
        data = json.loads(path.read_text())
        secret = bytes.fromhex(data["secret"])
    except FileNotFoundError:
        raise ConfigurationError(f"secret file {path} not found") from None
    except (ValueError, KeyError, TypeError):
        raise ConfigurationError(f"{path} is not an mpi linkage secret file") from None
    if len(secret) != SECRET_BYTES or data.get("key_id") != key_id(secret):
        raise ConfigurationError(f"{path} is damaged (length or key id mismatch)")
    return secret
