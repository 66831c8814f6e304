"""The shape the project holds its code to (STYLE.md, issue 26): no function in the packages
is longer than :data:`MAX_LINES` lines, counted from its ``def`` (decorators aside) to its
last line, docstring included."""

from __future__ import annotations

import ast
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("extract", "analyze", "schemas")
MAX_LINES = 80


def long_functions(source: str, limit: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """``(name, first line, length)`` of every function (nested ones and methods too) of
    ``source`` longer than ``limit`` lines."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                out.append((node.name, node.lineno, length))
    return out


def test_long_functions_counts_from_def_to_the_last_line():
    def function(name, lines, indent=""):
        body = "".join(f"{indent}    x{i} = {i}\n" for i in range(lines - 2))
        return f'{indent}def {name}():\n{indent}    """Doc."""\n{body}'

    src = function("fits", MAX_LINES) + function("too_long", MAX_LINES + 1)
    src += "class C:\n" + function("method", MAX_LINES + 2, indent="    ")
    src += "def outer():\n" + function("inner", MAX_LINES + 1, indent="    ")
    found = {name: length for name, _, length in long_functions(src)}
    assert found == {"too_long": MAX_LINES + 1, "method": MAX_LINES + 2, "outer": MAX_LINES + 2,
                     "inner": MAX_LINES + 1}


def test_no_function_is_longer_than_80_lines():
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name, line, length in long_functions(path.read_text(encoding="utf-8")):
                found.append(f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)")
    assert not found, f"functions longer than {MAX_LINES} lines:\n" + "\n".join(found)
