"""Meta-tests: the import rules and model files that match sidecars (docs that cannot drift:
test_reference_docs.py)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from mpi.linkage.modelfile import default_models_dir, list_versions, load_version

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


MPI_FILES = sorted((ROOT / "mpi").rglob("*.py"))


@pytest.mark.parametrize("path", MPI_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_mpi_never_imports_web_frameworks(path: Path) -> None:
    assert not _imports(path) & {"fastapi", "starlette", "uvicorn", "api"}


@pytest.mark.parametrize("path", MPI_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_only_linkage_imports_splink(path: Path) -> None:
    if "linkage" not in path.relative_to(ROOT).parts:
        assert "splink" not in _imports(path)


@pytest.mark.parametrize("path", MPI_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_only_store_runs_sql(path: Path) -> None:
    """SQL runs in mpi/store (registry) and mpi/linkage (Splink's own connection) only."""
    rel = path.relative_to(ROOT).parts
    if "store" in rel or "linkage" in rel:
        return
    text = path.read_text()
    assert not re.search(r"\.(execute|sql)\(", text), "SQL belongs in mpi/store"


@pytest.mark.parametrize("path", MPI_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_has_a_docstring(path: Path) -> None:
    if path.name == "__init__.py" and not path.read_text().strip():
        return
    assert ast.get_docstring(ast.parse(path.read_text())), f"{path.name} needs a module docstring"


@pytest.mark.parametrize("path", MPI_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_public_functions_have_docstrings(path: Path) -> None:
    tree = ast.parse(path.read_text())
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    for cls in tree.body:
        if isinstance(cls, ast.ClassDef) and not cls.name.startswith("_"):
            funcs.extend(n for n in cls.body if isinstance(n, ast.FunctionDef))
    missing = [n.name for n in funcs if not n.name.startswith("_") and not ast.get_docstring(n)]
    assert not missing, f"{path.name}: {missing}"


def test_pure_modules_do_no_io() -> None:
    for name in ("normalize", "tokens", "keys"):
        imports = _imports(next((ROOT / "mpi").rglob(f"{name}.py")))
        assert not imports & {"os", "duckdb", "pathlib", "datetime_now", "requests", "httpx"}


@pytest.mark.parametrize("version", list_versions(default_models_dir()))
def test_model_files_load_and_match_sidecars(version: str) -> None:
    mv = load_version(default_models_dir(), version)
    meta = json.loads((default_models_dir() / f"{version}.meta.json").read_text())
    for key in ("schema_version", "splink_version", "training_data", "thresholds", "accuracy"):
        assert key in meta
    assert meta["training_data"]["fingerprint"].startswith("sha256:")
    assert 0 < mv.thresholds.review < mv.thresholds.link < 1
