"""The layering contract of ``docs/architecture.md``, checked on the source's imports.

Two rules, read from the syntax tree (no module is imported):

1. Which top-level subpackages of ``inspection`` may import which, counting every import,
   also those inside functions: a lazy import still couples the packages.
2. The station's hot path and the web stack import no training stack at module level,
   following module-level imports through the package (an import inside a function or under
   ``if TYPE_CHECKING`` runs only when called, so a lean install stays importable).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "inspection"

#: subpackage -> subpackages it must never import (directly, lazily or not).
FORBIDDEN: dict[str, frozenset[str]] = {
    "services": frozenset({"api", "loop", "station", "bench", "cli", "demo", "train"}),
    "db": frozenset(
        {"services", "api", "loop", "station", "bench", "training", "detectors", "cli", "demo"}
    ),
    "loop": frozenset({"api", "bench", "cli", "demo"}),
    "station": frozenset({"api", "bench", "loop", "cli", "demo"}),
    "api": frozenset({"loop", "station", "bench", "training", "detectors", "train", "cli"}),
    "detectors": frozenset({"db", "api", "station", "loop", "services", "bench", "cli"}),
    "runtime": frozenset(
        {"db", "api", "station", "loop", "services", "bench", "detectors", "training", "data"}
    ),
    "storage": frozenset({"db", "api", "services", "loop", "station", "bench"}),
    "openset": frozenset(
        {"db", "api", "station", "loop", "services", "bench", "training", "cli", "demo"}
    ),
}
#: Third-party training stack a station or the web server never loads at import.
TRAINING_STACK = frozenset({"torch", "torchvision", "anomalib", "timm", "lightning", "nncf"})
#: Modules whose import (with everything it imports at module level) stays torch-free.
LEAN_ROOTS = (
    "inspection.station",
    "inspection.api",
    "inspection.services",
    "inspection.runtime",
    "inspection.geometry",
    "inspection.storage",
    "inspection.db",
    "inspection.openset.typer_runtime",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imported(node: ast.AST, module: str) -> Iterator[str]:
    """Absolute names one import statement brings in (``from x import y`` yields x and x.y)."""
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
        # the package uses absolute imports only (ruff's TID252 would flag relative ones)
        assert not node.level, f"{module}: relative import of {node.module}"
        prefix = node.module or ""
        yield prefix
        yield from (f"{prefix}.{a.name}" for a in node.names)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level(tree: ast.Module) -> Iterator[ast.stmt]:
    """Statements run when the module is imported (not inside defs or TYPE_CHECKING blocks)."""
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if isinstance(node, ast.ClassDef):
                stack.extend(node.body)
            continue
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            stack.extend(getattr(node, field, []) or [])


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse(_modules()[module].read_text())


def _all_imports(module: str) -> set[str]:
    return {name for n in ast.walk(_tree(module)) for name in _imported(n, module)}


def _top_imports(module: str) -> set[str]:
    return {name for n in _module_level(_tree(module)) for name in _imported(n, module)}


def _subpackage(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "inspection" and len(parts) > 1 else None


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_the_architecture_allows(layer: str) -> None:
    broken = sorted(
        f"{module} imports {name}"
        for module in _modules()
        if _subpackage(module) == layer
        for name in _all_imports(module)
        if _subpackage(name) in FORBIDDEN[layer]
    )
    assert not broken, "layering contract (docs/architecture.md) broken:\n" + "\n".join(broken)


def _load_chain(root: str) -> dict[str, str]:
    """Every inspection module imported at module level from ``root`` -> who imported it."""
    seen: dict[str, str] = {}
    todo = [m for m in _modules() if m == root or m.startswith(root + ".")]
    for m in todo:
        seen.setdefault(m, "(root)")
    while todo:
        module = todo.pop()
        for name in _top_imports(module):
            # ``from inspection.x import y``: y may be a module or a name inside x
            target = name if name in _modules() else name.rpartition(".")[0]
            if target in _modules() and target not in seen:
                seen[target] = module
                todo.append(target)
            parent = target.rpartition(".")[0]
            while parent and parent in _modules() and parent not in seen:  # package __init__
                seen[parent] = module
                todo.append(parent)
                parent = parent.rpartition(".")[0]
    return seen


@pytest.mark.parametrize("root", LEAN_ROOTS)
def test_lean_modules_import_no_training_stack(root: str) -> None:
    chain = _load_chain(root)
    broken = sorted(
        f"{module} (via {chain[module]}) imports {name}"
        for module in chain
        for name in _top_imports(module)
        if name.split(".")[0] in TRAINING_STACK
    )
    assert not broken, f"importing {root} would load the training stack:\n" + "\n".join(broken)


def test_checker_sees_imports() -> None:
    """The contract is not vacuous: the checker finds known edges."""
    assert any(_subpackage(n) == "db" for n in _all_imports("inspection.services.models"))
    assert "torch" in _top_imports("inspection.detectors.base")
