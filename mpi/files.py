"""Private files at rest: directories 0700 and files 0600, whatever the process umask.

Owns: the modes of what the service writes (the data directory, the registry and its WAL,
uploads, model versions, extract packages, secrets, TLS material, Spark work) and the helpers
that create them so (decision 0066). Must not: decide where files live or what they hold.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) if needed and make it 0700; ``path``."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


def private_file(path: Path, *, missing_ok: bool = False) -> None:
    """Make an existing file 0600 (with ``missing_ok``, a file that is not there is skipped)."""
    if missing_ok:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path, FILE_MODE)
    else:
        os.chmod(path, FILE_MODE)


def open_private(path: Path, *, exclusive: bool = False) -> BinaryIO:
    """Open ``path`` for binary writing as a 0600 file (truncated; FileExistsError if it exists
    and ``exclusive``)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC),
                 FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an existing file keeps its old mode otherwise
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb")


def write_private(path: Path, data: bytes | str, *, exclusive: bool = False) -> None:
    """Write ``data`` (str as UTF-8) to ``path`` as a 0600 file."""
    with open_private(path, exclusive=exclusive) as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
