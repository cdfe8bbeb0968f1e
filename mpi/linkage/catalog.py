"""Where model versions live: the shipped (or ``MPI_MODELS_DIR``) directory and the registry's
own ``DATA_DIR/models``, where trained candidates are written.

Owns: the list of model directories of a registry and finding the directory that holds a
version. Must not: read or write model contents (modelfile.py does) or train.
"""

from __future__ import annotations

import re
from pathlib import Path

from mpi.config import Settings
from mpi.errors import InvalidInput, NotFound
from mpi.linkage.modelfile import default_models_dir, list_versions

VERSION_PATTERN = r"^[a-z0-9_]{1,40}-v[0-9]{3}$"
_VERSION = re.compile(VERSION_PATTERN)


def candidates_dir(settings: Settings) -> Path:
    """Where trained candidate versions are written: ``DATA_DIR/models``."""
    return settings.data_dir / "models"


def model_dirs(settings: Settings) -> list[Path]:
    """The shipped (or configured) model directory, then ``DATA_DIR/models``."""
    dirs = [settings.models_dir or default_models_dir(), candidates_dir(settings)]
    out: list[Path] = []
    for d in dirs:
        if d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def check_version_name(version: str) -> str:
    """``version`` if it is a well-formed version id (``name-vNNN``); else InvalidInput."""
    if not _VERSION.match(version):
        raise InvalidInput("a model version looks like name-v001 (lower-case letters, digits, "
                           "underscore, then -v and three digits)")
    return version


def find_version_dir(dirs: list[Path], version: str) -> Path:
    """The first directory holding ``version``; NotFound when none does."""
    check_version_name(version)
    for d in dirs:
        if (d / f"{version}.json").exists():
            return d
    raise NotFound("no such model version")


def list_all(dirs: list[Path]) -> list[tuple[str, Path]]:
    """Every version in ``dirs`` with the directory holding it (first directory wins)."""
    seen: dict[str, Path] = {}
    for d in dirs:
        if d.is_dir():
            for v in list_versions(d):
                seen.setdefault(v, d)
    return sorted(seen.items())
