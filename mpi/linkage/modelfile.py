"""Versioned, immutable model files: ``<name>-v<NNN>.json`` (Splink model) + ``.meta.json``.

Owns: reading, listing and writing model versions and their sidecars (schema version, Splink
version, training-data fingerprint, thresholds, measured accuracy). Must not: train or score.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mpi.errors import ConfigurationError, NotFound
from mpi.files import DIR_MODE, write_private
from mpi.linkage.definition import DEFAULT_DEFINITION, ModelDefinition, definition_named
from mpi.linkage.params import ModelParams, params_from_splink, weight_for_probability

_NAME = re.compile(r"^(?P<name>[a-z0-9_]+)-v(?P<num>\d{3})\.json$")


@dataclass(frozen=True)
class Thresholds:
    """Match-probability thresholds: link at or above ``link``, review band from ``review``."""

    link: float
    review: float

    @property
    def link_weight(self) -> float:
        """The link threshold as a match weight."""
        return weight_for_probability(self.link)

    @property
    def review_weight(self) -> float:
        """The review threshold as a match weight."""
        return weight_for_probability(self.review)


@dataclass(frozen=True)
class ModelVersion:
    """One immutable model version."""

    version: str            # e.g. "default-v001"
    model: dict[str, Any]   # Splink model JSON
    meta: dict[str, Any]
    params: ModelParams
    thresholds: Thresholds
    definition: ModelDefinition = DEFAULT_DEFINITION  # the one its sidecar names


def default_models_dir() -> Path:
    """The model directory shipped with mpi (``linkage_models/``)."""
    return Path(str(resources.files("linkage_models")))


def list_versions(models_dir: Path, *, name: str | None = None) -> list[str]:
    """Model versions present, oldest first."""
    out = []
    for p in sorted(models_dir.glob("*-v[0-9][0-9][0-9].json")):
        m = _NAME.match(p.name)
        if m and (name is None or m["name"] == name):
            out.append(p.stem)
    return out


def fingerprint_bytes(data: bytes) -> str:
    """SHA-256 fingerprint used for model files and training data."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def load_version(models_dir: Path, version: str, *,
                 definition: ModelDefinition | None = None) -> ModelVersion:
    """Load and check one version; raise NotFound or ConfigurationError.

    The model follows the definition its sidecar names (``definition``: v1 when absent), unless
    ``definition`` is given."""
    path = models_dir / f"{version}.json"
    meta_path = models_dir / f"{version}.meta.json"
    if not path.exists():
        raise NotFound(f"no model version {version!r}")
    if not meta_path.exists():
        raise ConfigurationError(f"model {version} has no .meta.json sidecar")
    raw = path.read_bytes()
    meta = json.loads(meta_path.read_text())
    if meta.get("model_sha256") != fingerprint_bytes(raw):
        raise ConfigurationError(f"model {version} does not match its sidecar checksum")
    model = json.loads(raw)
    th = meta["thresholds"]
    if definition is None:
        try:
            definition = definition_named(meta.get("definition"))
        except ValueError as exc:
            raise ConfigurationError(f"model {version}: {exc}") from None
    return ModelVersion(version, model, meta, params_from_splink(model, definition),
                        Thresholds(link=float(th["link"]), review=float(th["review"])),
                        definition)


def latest_version(models_dir: Path, *, name: str) -> str:
    """Newest version of a model name."""
    versions = list_versions(models_dir, name=name)
    if not versions:
        raise ConfigurationError(f"no model named {name!r} in {models_dir}")
    return versions[-1]


def save_version(models_dir: Path, *, name: str, model: dict[str, Any],
                 meta: dict[str, Any]) -> str:
    """Write the next version of ``name`` (never overwrites) and return its version id."""
    existing = list_versions(models_dir, name=name)
    num = int(existing[-1].rsplit("-v", 1)[1]) + 1 if existing else 1
    version = f"{name}-v{num:03d}"
    raw = (json.dumps(model, indent=2, sort_keys=True) + "\n").encode()
    meta = {**meta, "version": version, "model_sha256": fingerprint_bytes(raw)}
    models_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)  # an existing one is the user's
    write_private(models_dir / f"{version}.json", raw, exclusive=True)  # 0600: decision 0066
    write_private(models_dir / f"{version}.meta.json",
                  json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return version
