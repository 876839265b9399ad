"""The package's layout: imports that run one way, small modules, Redis in one place.

Read from the source (the import statements each module runs when it is
imported; those under ``if TYPE_CHECKING:`` only serve the type checker),
and checked for real by importing every module on its own in a fresh
interpreter, as a user's ``from sessionsvc.x import y`` would.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sessionsvc

PACKAGE = Path(sessionsvc.__file__).parent

#: Longest module, in lines: past it a module is doing more than one job.
MAX_MODULE_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run on import (not those under TYPE_CHECKING)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) == "TYPE_CHECKING":
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def imports_of(name: str) -> set[str]:
    """The modules ``name`` imports when it is imported: its own package's and others."""
    path = MODULES[name]
    is_package = path.name == "__init__.py"
    imported: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = name.split(".") if is_package else name.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            # `from . import x` imports the module x when there is one.
            candidate = f"{base}.{alias.name}"
            imported.add(candidate if candidate in MODULES else base)
    return imported


def own_imports(name: str) -> set[str]:
    return {other for other in imports_of(name) if other in MODULES and other != name}


def test_the_reader_sees_what_a_module_imports() -> None:
    # Relative, package-relative, type-only and third-party imports alike.
    assert own_imports("sessionsvc.api") >= {
        "sessionsvc.openapi",
        "sessionsvc.payloads",
        "sessionsvc.state",
        "sessionsvc.tokens",
    }
    assert "sessionsvc.metrics" in own_imports("sessionsvc.store.connections")
    assert "sessionsvc.store.scripts" in own_imports("sessionsvc.store.base")
    assert own_imports("sessionsvc.state") == set()  # the rest only for type checking
    assert "redis" in imports_of("sessionsvc.store.base")


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = {name: own_imports(name) for name in MODULES}
    cycles: list[list[str]] = []

    def walk(path: list[str]) -> None:
        for nxt in sorted(graph[path[-1]]):
            if nxt == path[0]:
                cycles.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:  # each cycle once, from its least module
                walk([*path, nxt])

    for start in sorted(graph):
        walk([start])
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_leaves_import_nothing_of_the_package_above_them() -> None:
    # What views use to reach the manager, and the values everyone shares.
    for leaf in ("sessionsvc.state", "sessionsvc.errors", "sessionsvc.models"):
        assert own_imports(leaf) == set(), leaf
    # The store never reaches up into views, the extension or the app.
    above = {"api", "admin", "auth", "account", "app", "cli", "extension", "openapi", "tokens"}
    for name in MODULES:
        if name.startswith("sessionsvc.store"):
            reached = {other.rsplit(".", 1)[-1] for other in own_imports(name)}
            assert not reached & above, (name, reached & above)


def test_only_the_store_package_imports_redis() -> None:
    importers = sorted(
        name
        for name in MODULES
        if any(m == "redis" or m.startswith("redis.") for m in imports_of(name))
    )
    assert importers
    assert all(name.startswith("sessionsvc.store.") for name in importers), importers


def test_only_the_sql_package_imports_sqlalchemy_and_alembic() -> None:
    importers = sorted(
        name
        for name in MODULES
        if any(m.split(".")[0] in ("sqlalchemy", "alembic") for m in imports_of(name))
    )
    assert "sessionsvc.sql.migrate" in importers
    assert all(name.startswith("sessionsvc.sql.") for name in importers), importers


def test_no_module_is_over_the_line_limit() -> None:
    lines = {name: len(path.read_text("utf-8").splitlines()) for name, path in MODULES.items()}
    assert max(lines.values()) > 100  # it read the modules
    assert {name: n for name, n in lines.items() if n > MAX_MODULE_LINES} == {}


def test_scripts_are_lua_files_each_with_its_header() -> None:
    from sessionsvc.store import scripts

    folder = PACKAGE / "store" / "scripts"
    assert {path.stem for path in folder.glob("*.lua")} == {
        *scripts.NAMES,
        "events",
        "travel",
        "agents",
        "review",
        "known",
    }
    for name in scripts.NAMES:
        text = (folder / f"{name}.lua").read_text("utf-8")
        assert "-- KEYS:" in text and "-- ARGV:" in text, name
        assert "--@include" not in scripts.source(name), name


#: Alembic's scripts, which run only inside a migration (``context`` is
#: Alembic's while it runs them), not as imports.
MIGRATIONS = "sessionsvc.sql.migrations"


@pytest.mark.parametrize(
    "name", sorted(name for name in MODULES if not name.startswith(MIGRATIONS))
)
def test_each_module_imports_on_its_own(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {name}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PACKAGE.parent,
    )
    assert done.returncode == 0, done.stderr
