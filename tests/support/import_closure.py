"""Which modules a deployable's code imports, found by reading it (nothing is imported).

Every `import` and `from ... import` counts, at any depth (imports inside functions too), so a
lazily imported package is found as well as one imported at the top of a module.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The project's own top-level packages (pyproject.toml's wheel packages and the local stack).
PROJECT_PACKAGES = frozenset(
    {"mlops_core", "backend", "worker", "model_server", "mlops_cli", "local_stack"}
)


@dataclass
class Closure:
    """The project modules reached from the start modules, and the other top-level modules
    they import (each with one project module that imports it, for the error message)."""

    project_modules: set[str] = field(default_factory=set)
    third_party: dict[str, str] = field(default_factory=dict)


def module_file(module: str) -> Path | None:
    """The source file of a project module, or None when `module` names no module."""
    base = ROOT / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def package_modules(package: str) -> list[str]:
    """Every module of a project package, by dotted name."""
    return [
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in sorted((ROOT / package).rglob("*.py"))
    ]


def _imported_names(tree: ast.AST, module: str) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # Relative import: resolve against the importing module's package.
                parts = module.split(".")[: -node.level]
                base = ".".join([*parts, node.module] if node.module else parts)
            else:
                base = node.module or ""
            names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return names


def closure(start: list[str]) -> Closure:
    """Follow project imports from the start modules; collect everything else they import."""
    found = Closure()
    pending = list(start)
    while pending:
        module = pending.pop()
        if module in found.project_modules:
            continue
        path = module_file(module)
        if path is None:
            continue
        found.project_modules.add(module)
        for name in _imported_names(ast.parse(path.read_text()), module):
            top = name.split(".")[0]
            if top in PROJECT_PACKAGES:
                if module_file(name) is not None:
                    pending.append(name)
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                found.third_party.setdefault(top, module)
    return found
