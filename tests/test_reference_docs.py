"""docs/reference/ matches the code: regenerated in memory, compared byte for byte, and every
setting, command and route is named in it."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mpi.config import Settings

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference"
FIX = "run python scripts/gen_reference.py"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "scripts" / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _doc(name: str) -> str:
    path = REFERENCE / name
    assert path.exists(), f"{path.relative_to(ROOT)} is missing: {FIX}"
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return gen.render_all()  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["cli.md", "settings.md", "api.md"])
def test_reference_file_is_current(rendered: dict[str, str], name: str) -> None:
    assert rendered[name].startswith(gen.HEADER + "\n")
    assert _doc(name) == rendered[name], f"docs/reference/{name} is stale: {FIX}"


def test_rendering_is_stable(rendered: dict[str, str]) -> None:
    assert gen.render_all() == rendered
    for name, text in rendered.items():
        assert str(ROOT) not in text, f"{name} holds a machine path"


def test_every_setting_is_documented() -> None:
    doc = _doc("settings.md")
    for name, field in Settings.model_fields.items():
        assert f"`MPI_{name.upper()}`" in doc, f"MPI_{name.upper()} missing from settings.md: {FIX}"
        assert field.description, f"Settings.{name} needs a Field(description=...) in mpi/config.py"


def test_every_command_is_documented() -> None:
    doc = _doc("cli.md")
    names = [path for path, _ in gen.iter_commands(gen.root_command())]
    assert len(names) > 20
    for n in names:
        assert f"`{n}`" in doc, f"`{n}` missing from cli.md: {FIX}"


def _flat_routes(routes: Sequence[Any]) -> list[Any]:
    """Every route, with included routers expanded (FastAPI >= 0.16x includes them lazily)."""
    import fastapi.routing
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(iterate(routes)) if iterate is not None else list(routes)


def test_every_route_is_documented() -> None:
    from api.main import create_app
    app = create_app(Settings())
    doc = _doc("api.md")
    routes = _flat_routes(app.routes)
    assert len(routes) > 15
    for route in routes:
        path = getattr(route, "path", "")
        if path.startswith(("/docs", "/redoc", "/openapi")):
            continue
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD":
                assert f"`{method} {path}`" in doc, f"route {method} {path} missing from api.md: {FIX}"
