"""No source function is longer than ~80 lines, no module than ~800 (issue 17): nobody reads those in one go.

Every ``def`` under the source folders is measured from its first line
(decorators excluded) to its last, docstring and comments included. The few
allowed over the bound are listed with the reason and the owner; an entry
that is no longer over the bound fails too, so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SOURCE_DIRS = ("app", "streams", "alerts", "detectors", "sim", "bench", "scripts")
MAX_LINES = 80
MAX_MODULE_LINES = 800

#: (file, function) -> why it may be longer for now
ALLOWED: dict[tuple[str, str], str] = {}


def long_functions(root: Path = ROOT, max_lines: int = MAX_LINES) -> dict[tuple[str, str], int]:
    """``(file, qualified name) -> lines`` of every function over ``max_lines``."""

    out: dict[tuple[str, str], int] = {}
    for folder in SOURCE_DIRS:
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node, name in _functions(tree, ""):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > max_lines:
                    out[(path.relative_to(root).as_posix(), name)] = lines
    return out


def _functions(tree: ast.AST, prefix: str) -> list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, str]]:
    found: list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, str]] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append((node, prefix + node.name))
            found.extend(_functions(node, f"{prefix}{node.name}."))
        elif isinstance(node, ast.ClassDef):
            found.extend(_functions(node, f"{prefix}{node.name}."))
    return found


def test_no_source_function_is_over_80_lines_but_the_listed_ones() -> None:
    over = {key: n for key, n in long_functions().items() if key not in ALLOWED}
    assert not over, f"functions over {MAX_LINES} lines (split them): {over}"


def test_every_allowed_long_function_is_still_long() -> None:
    stale = sorted(set(ALLOWED) - set(long_functions()))
    assert not stale, f"no longer over {MAX_LINES} lines: drop them from ALLOWED: {stale}"


def test_no_source_module_is_over_800_lines() -> None:
    long = {
        p.relative_to(ROOT).as_posix(): n
        for folder in SOURCE_DIRS
        for p in (ROOT / folder).rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by job): {long}"


@pytest.mark.parametrize("body_lines", [80, 81])
def test_the_measure_counts_a_function_from_def_to_its_last_line(tmp_path: Path, body_lines: int) -> None:
    (tmp_path / "app").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(body_lines - 1))
    (tmp_path / "app" / "m.py").write_text(f"class C:\n    def f(self) -> None:\n    {body.replace(chr(10), chr(10) + '    ')}\n")
    for folder in SOURCE_DIRS[1:]:
        (tmp_path / folder).mkdir()
    found = long_functions(tmp_path)
    assert found == ({("app/m.py", "C.f"): 81} if body_lines == 81 else {})
