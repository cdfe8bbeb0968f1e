"""Architecture tests for the match state's single owner, private members and import cycles.

Each check walks the source with ``ast``; a failure names the file, line and what broke.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "mpi").rglob("*.py"), *(ROOT / "api").rglob("*.py")])
OWNER = ROOT / "mpi" / "identity" / "state.py"
# What MatchState alone may change (the index's own module owns its arrays' internals).
STATE_ATTRS = frozenset({"persons", "person_of", "person_count", "by_sid", "key_ids",
                         "known_agencies", "event_seq", "item_seq", "record_seq"})
INDEX_ARRAYS = frozenset({"label", "active"})
MUTATORS = frozenset({"append", "extend", "pop", "add", "discard", "remove", "update",
                      "setdefault", "clear", "insert", "__setitem__", "__delitem__"})
NAMEDTUPLE_API = frozenset({"_make", "_replace", "_asdict", "_fields"})


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _base(node: ast.expr) -> ast.expr:
    """The object a target assigns into (``a.b[i]`` -> ``a.b``)."""
    while isinstance(node, ast.Subscript):
        node = node.value
    return node


def _is_state(node: ast.expr) -> bool:
    node = _base(node)
    if not isinstance(node, ast.Attribute):
        return False
    if node.attr in STATE_ATTRS:
        return True
    return (node.attr in INDEX_ARRAYS and isinstance(node.value, ast.Attribute)
            and node.value.attr == "index")


def _state_writes(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = list(node.targets)
        for t in targets:
            for part in (t.elts if isinstance(t, ast.Tuple) else [t]):
                if _is_state(part):
                    yield node.lineno, ast.unparse(part)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in MUTATORS and _is_state(node.func.value):
            yield node.lineno, ast.unparse(node.func)


def test_only_the_match_state_changes_the_match_state() -> None:
    """No module but mpi/identity/state.py assigns or mutates persons, counts, by_sid, the
    index's labels and active flags or the sequence counters."""
    found = [f"{_rel(p)}:{line}: {what}" for p in SOURCES if p != OWNER
             for line, what in _state_writes(ast.parse(p.read_text()))]
    assert not found, "change these through MatchState verbs:\n" + "\n".join(found)


def test_the_checker_catches_a_write() -> None:
    """The rule above is not vacuous: each kind of write it looks for is caught."""
    code = ("reg.by_sid[k] = v\nreg.person_count[lab] += 1\nreg.index.label[rows] = 3\n"
            "reg.persons.append(key)\nreg.event_seq += 1\nreg.key_ids.add(k)\n"
            "del reg.by_sid[k]\n")
    assert len(list(_state_writes(ast.parse(code)))) == 7
    assert not list(_state_writes(ast.parse("x = reg.by_sid[k]\nidx.label[r] = 1\n")))


def _defined_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in ("self", "cls"):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def test_no_private_member_is_used_across_modules() -> None:
    """A ``_name`` is used only in the module that defines it (imports and attributes)."""
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        mine = _defined_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                    and not node.attr.startswith("__") and node.attr not in NAMEDTUPLE_API \
                    and node.attr not in mine:
                found.append(f"{_rel(path)}:{node.lineno}: .{node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("mpi", "api")):
                found.extend(f"{_rel(path)}:{node.lineno}: imports {a.name} from {node.module}"
                             for a in node.names if a.name.startswith("_"))
    assert not found, "private members used from another module:\n" + "\n".join(found)


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """mpi modules ``path`` imports at run time (anywhere; not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mpi"):
            module = node.module or ""
            out.update(f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module
                       for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("mpi"))
    return out & modules


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_no_import_cycles_in_mpi() -> None:
    """No two mpi modules import each other, directly or round a loop, even lazily."""
    paths = {_module_name(p): p for p in (ROOT / "mpi").rglob("*.py")}
    graph = {m: _runtime_imports(p, set(paths)) - {m} for m, p in paths.items()}
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    """The cycle check is not vacuous."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_readme_is_an_entry_point() -> None:
    """README stays short and reaches the decisions by topic in one click."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert "docs/decisions/README.md" in text
    for target in ("docs/reference/cli.md", "docs/reference/settings.md", "docs/reference/api.md",
                   "docs/architecture.md", "CONTRIBUTING.md", "CHANGELOG.md"):
        assert target in text and (ROOT / target).exists(), target


def test_every_decision_record_has_the_sections() -> None:
    """docs/decisions/NNNN-*.md: Status, Context, Decision, Consequences, Supersedes; indexed."""
    index = (ROOT / "docs" / "decisions" / "README.md").read_text()
    records = sorted((ROOT / "docs" / "decisions").glob("[0-9][0-9][0-9][0-9]-*.md"))
    assert len(records) >= 62
    for rec in records:
        text = rec.read_text()
        for section in ("Status", "Context", "Decision", "Consequences", "Supersedes"):
            assert f"## {section}" in text or f"**{section}" in text, f"{rec.name}: {section}"
        assert rec.name in index, f"{rec.name} missing from the topic index"


def test_every_module_is_in_the_module_map() -> None:
    """docs/architecture.md names every module of mpi/ and api/ (the map cannot drift)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = [_rel(p) for p in SOURCES if p.name != "__init__.py"
               and f"`{p.name}`" not in text and _rel(p) not in text]
    assert not missing, f"add these to docs/architecture.md's module map: {missing}"
