"""Size limits of issue #21: no module over 600 lines and no function over 100 lines in
``inspection/``, except the ones listed here with the reason they are still long.

Shrinking one of them means deleting its entry (the test fails on stale entries, so the list
only ever gets shorter).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "inspection"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100

#: module path (relative to ``inspection/``) -> why it is longer than MAX_MODULE_LINES
#: (empty: every module is within the limit).
LONG_MODULES: dict[str, str] = {}
#: ``module path::function`` -> why it is longer than MAX_FUNCTION_LINES (empty: none is).
LONG_FUNCTIONS: dict[str, str] = {}


def _offenders() -> tuple[dict[str, int], dict[str, int]]:
    modules: dict[str, int] = {}
    functions: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        source = path.read_text()
        n_lines = len(source.splitlines())
        if n_lines > MAX_MODULE_LINES:
            modules[rel] = n_lines
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    functions[f"{rel}::{node.name}"] = length
    return modules, functions


def test_no_module_or_function_is_longer_than_allowed() -> None:
    modules, functions = _offenders()
    new = [f"{m}: {n} lines" for m, n in modules.items() if m not in LONG_MODULES]
    new += [f"{f}: {n} lines" for f, n in functions.items() if f not in LONG_FUNCTIONS]
    assert not new, (
        f"over {MAX_MODULE_LINES} lines per module / {MAX_FUNCTION_LINES} per function "
        "(split it into named steps, or add it to the allow-list with the reason):\n"
        + "\n".join(new)
    )


def test_allow_list_has_no_stale_entries() -> None:
    modules, functions = _offenders()
    stale = sorted(set(LONG_MODULES) - set(modules)) + sorted(set(LONG_FUNCTIONS) - set(functions))
    assert not stale, "no longer too long; delete from the allow-list:\n" + "\n".join(stale)
