"""Parameters a trigger gives a run ("run commit abc with N_ESTIMATORS=300"), checked twice.

They reach the notebook as papermill parameters, like the platform's own (MODEL_OUTPUT_PATH...):
papermill injects them in a cell right after the first cell tagged `parameters` (at the top when
there is none), so they override the defaults set before that point. The API checks names and
values (`validate_parameters`); the worker's validate phase checks the notebook itself
(`overridden_by_later_cells`): a literal assignment of the same name in a cell that runs after
the injection point (typically an `mlops:config` cell below the `parameters` cell, or any config
cell in a notebook without one) would silently undo the parameter, and the run would train with
the default while the pipeline says otherwise. That fails validate, naming the cell.

Names the platform reads from the notebook without running it (MODEL_NAME, VERSION, the gate)
or injects itself cannot be given: the pipeline's model name and gate are decided before the
kernel starts.
"""

from __future__ import annotations

import ast
import json
import keyword
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from nbformat import NotebookNode

from mlops_core.notebook_contract import (
    CONFIG_NAMES,
    INJECTED_PARAMETERS,
    PARAMETERS_TAG,
    cell_tags,
    parse_cell,
    runs,
)

MAX_PARAMETERS: Final = 50
MAX_PARAMETERS_JSON_BYTES: Final = 16 * 1024
MAX_NESTING: Final = 5
_FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def validate_commit_sha(value: str) -> str:
    """A full commit sha (git fetches a commit by its full name), in lower case."""
    sha = value.strip().lower()
    if not _FULL_SHA.fullmatch(sha):
        raise ValueError(
            f"commit {value!r} is not a full commit sha (40 hexadecimal characters, or 64 for "
            "a SHA-256 repository): git fetches a commit by its full name"
        )
    return sha


def validate_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters if every name and value can be injected, else ValueError naming the first
    problem."""
    if len(parameters) > MAX_PARAMETERS:
        raise ValueError(f"at most {MAX_PARAMETERS} parameters")
    reserved = INJECTED_PARAMETERS | set(CONFIG_NAMES)
    for name, value in parameters.items():
        if not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"parameter name {name!r} is not a Python identifier")
        if name in reserved:
            raise ValueError(
                f"parameter {name} cannot be given: the platform "
                + (
                    "injects it itself"
                    if name in INJECTED_PARAMETERS
                    else "reads it from the notebook's mlops:config cell before running it"
                )
            )
        problem = _value_problem(value, 0)
        if problem:
            raise ValueError(f"parameter {name}: {problem}")
    size = len(json.dumps(dict(parameters)).encode())
    if size > MAX_PARAMETERS_JSON_BYTES:
        raise ValueError(
            f"parameters take {size} bytes as JSON; at most {MAX_PARAMETERS_JSON_BYTES}"
        )
    return dict(parameters)


def _value_problem(value: Any, depth: int) -> str | None:
    """Why a value cannot become a Python literal in the injected cell, or None."""
    if depth > MAX_NESTING:
        return f"nested deeper than {MAX_NESTING} levels"
    if value is None or isinstance(value, bool | int | str):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a finite number"
    if isinstance(value, list):
        return next(
            (problem for item in value if (problem := _value_problem(item, depth + 1))), None
        )
    if isinstance(value, dict):
        return next(
            (problem for item in value.values() if (problem := _value_problem(item, depth + 1))),
            None,
        )
    return f"{type(value).__name__} is not a JSON value"


def _injection_point(notebook: NotebookNode) -> int:
    """Index of the cell papermill injects after (-1: it injects at the top)."""
    for i, cell in enumerate(notebook.cells):
        if cell.get("cell_type") == "code" and PARAMETERS_TAG in cell_tags(cell):
            return i
    return -1


def _literal_names(source: str) -> set[str]:
    """Names a cell assigns a literal to at its top level (`N_ESTIMATORS = 100`)."""
    try:
        tree = parse_cell(source)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        try:
            ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        names.update(target.id for target in targets if isinstance(target, ast.Name))
    return names


def overridden_by_later_cells(notebook: NotebookNode, names: Iterable[str]) -> list[str]:
    """For each parameter a cell running after the injection point resets to a literal, a
    sentence naming the cell and what to do; empty when every parameter takes effect."""
    wanted = set(names)
    point = _injection_point(notebook)
    problems = []
    for i, cell in enumerate(notebook.cells):
        if i <= point or cell.get("cell_type") != "code" or not runs(cell):
            continue
        for name in sorted(wanted & _literal_names(cell.source)):
            where = f"cell {i + 1} ({', '.join(cell_tags(cell))})"
            if point >= 0:
                fix = (
                    f"papermill injects them below cell {point + 1}, tagged parameters: define "
                    f"{name} in cell {point + 1} instead, or move that cell below {where}"
                )
            else:
                fix = (
                    "the notebook has no cell tagged parameters, so papermill injects them at "
                    f"the top: add a cell tagged parameters below {where}"
                )
            problems.append(
                f"parameter {name} would not take effect: {where} sets it after the parameters "
                f"are injected ({fix})"
            )
    return problems
