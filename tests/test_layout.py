"""The house rules of the layout (issue 8), checked so they cannot drift: one owner for SQL,
modules a newcomer can read, tests that stand alone, and a README map true to the tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "daemon"
LONG_MODULE = 500  # lines; a longer module says why in its docstring ("Why it is long: ...")

# Statements, not words: "select ... from", "insert into", "update X set", DDL.
_SQL = re.compile(
    r"\b(select\b.+\bfrom\b|insert\s+(or\s+\w+\s+)?into\b|update\s+\w+\s+set\b|delete\s+from\b"
    r"|(create|drop)\s+(unique\s+)?(table|index)\b|pragma\s+\w+)",
    re.IGNORECASE | re.DOTALL,
)


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal (f-string parts joined) with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(
                v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "?"
                for v in node.values
            )
            found.append((node.lineno, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))
    return found


def test_no_sql_outside_the_ledger() -> None:
    offenders = []
    for path in modules():
        if PACKAGE / "ledger" in path.parents:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("execute", "executemany", "executescript")
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.func.attr}()")
        for line, text in strings(tree):
            if _SQL.search(text) and not any(
                isinstance(n, ast.Constant) and id(n) in docstrings and n.value == text
                for n in ast.walk(tree)
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{line} {text[:60]!r}")
    assert not offenders, "SQL belongs in daemon/ledger/:\n" + "\n".join(offenders)


def test_tasks_are_created_only_by_tasks_spawn() -> None:
    """A task nobody references can vanish mid-run; `daemon.tasks.spawn` keeps each one.
    ruff's TID251 catches ``asyncio.create_task``; this catches ``loop.create_task`` too."""
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in modules()
        if path != PACKAGE / "tasks.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("create_task", "ensure_future")
    ]
    assert not offenders, "use daemon.tasks.spawn:\n" + "\n".join(offenders)


def test_long_modules_say_why() -> None:
    unexplained = []
    for path in modules():
        lines = path.read_text().count("\n")
        if lines <= LONG_MODULE:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if "Why it is long:" not in doc:
            unexplained.append(f"{path.relative_to(ROOT)} ({lines} lines)")
    assert not unexplained, f"over {LONG_MODULE} lines with no reason given: {unexplained}"


def test_every_module_has_a_docstring() -> None:
    bare = [
        str(p.relative_to(ROOT))
        for p in modules()
        if p.name != "__main__.py" and not ast.get_docstring(ast.parse(p.read_text()))
    ]
    assert not bare, f"modules without a docstring: {bare}"


def test_tests_import_no_other_test_module() -> None:
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            offenders += [
                f"{path.relative_to(ROOT)}:{node.lineno} {n}"
                for n in names
                if n == "tests" or n.startswith("tests.") or n == "conftest"
            ]
    assert not offenders, "shared test helpers live in daemon/testing.py:\n" + "\n".join(offenders)


def test_readme_module_map_matches_the_tree() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("| module | owns |", 1)[1].split("\n\n", 1)[0]
    named = set(re.findall(r"`(daemon/[\w/.]*)`", section))
    missing_on_disk = sorted(n for n in named if not (ROOT / n).exists())
    assert not missing_on_disk, f"README names modules that do not exist: {missing_on_disk}"
    unmapped = []
    for path in modules():
        rel = path.relative_to(ROOT)
        candidates = {str(rel)} | {f"{p}/" for p in rel.parents if str(p).startswith("daemon/")}
        if path.name in ("__init__.py", "__main__.py") and rel.parent == Path("daemon"):
            continue
        if not candidates & named:
            unmapped.append(str(rel))
    assert not unmapped, f"modules missing from the README's module map: {unmapped}"
