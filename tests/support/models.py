"""The shipped model versions, so that a test names "the latest default" and not a number."""

from __future__ import annotations

from mpi.linkage.modelfile import default_models_dir, list_versions

SHIPPED_DEFAULTS: tuple[str, ...] = tuple(list_versions(default_models_dir(), name="default"))
"""Every shipped version of the ``default`` model, oldest first (``linkage_models/``)."""

LATEST_DEFAULT: str = SHIPPED_DEFAULTS[-1]
"""The newest shipped default version: what a fresh registry activates."""
