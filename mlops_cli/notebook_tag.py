"""`mlops tag NOTEBOOK`: make a notebook you already have pass the contract, changing nothing else.

A notebook written for Jupyter or Colab has no platform tags, no literal `MODEL_NAME`, no
`mlflow.log_metric` call for the gate and no export to MODEL_OUTPUT_PATH. This command adds
exactly that: tags on the cells named by number (as `mlops check` and the pipeline count them:
every cell, markdown included, from 1), and up to three small cells of its own (the config cell
first, a cell logging the gate's metrics and the export after the last tagged cell). Every
existing cell keeps its source and outputs, and the file keeps its nbformat version, its key
order and its indentation, so the change reads as a small diff in review. The result is then
checked as `mlops check` checks it.
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from mlops_cli.bad_input import BadInput
from mlops_cli.invocation import invocation, json_option
from mlops_cli.notebook_check import check, threshold_from_environment
from mlops_core.notebook_contract import (
    CONFIG_TAG,
    DATA_TAG,
    EVALUATION_TAG,
    EXPORT_TAG,
    METRIC_NAME_PATTERN,
    PREPROCESSING_TAG,
    TRAINING_TAG,
    cell_tags,
    runs,
)

GATE_PATTERN = re.compile(r"^\s*([A-Za-z0-9_\-. :/]+?)\s*(>=|<=)\s*(\S+)\s*$")
_CELL_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


@dataclass
class TagPlan:
    """What to add: tags per cell number (1-based), and the contents of the cells to add."""

    tags: dict[str, list[int]] = field(default_factory=dict)
    model_name: str | None = None
    version: str = "1"
    # (metric, ">=" or "<=", threshold)
    gate: tuple[str, str, float] | None = None
    metrics: list[tuple[str, str]] = field(default_factory=list)
    export: str | None = None


def parse_cells(text: str) -> list[int]:
    """`3`, `3-5`, `1,3-5`: cell numbers as the contract's messages count them (from 1)."""
    numbers: list[int] = []
    for part in text.split(","):
        match = _CELL_RANGE.match(part.strip())
        if match is None:
            raise BadInput(f"cells {text!r}: expected numbers and ranges, e.g. 2,4-6")
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if last < first:
            raise BadInput(f"cells {text!r}: the range {part.strip()} runs backwards")
        numbers.extend(range(first, last + 1))
    return numbers


def parse_gate(text: str) -> tuple[str, str, float]:
    """`accuracy>=0.9` or `rmse<=60`."""
    match = GATE_PATTERN.match(text)
    if match is None:
        raise BadInput(f"--gate {text!r}: expected METRIC>=THRESHOLD or METRIC<=THRESHOLD")
    try:
        threshold = float(match.group(3))
    except ValueError:
        raise BadInput(f"--gate {text!r}: the threshold is not a number") from None
    return match.group(1), match.group(2), threshold


def parse_metric(text: str) -> tuple[str, str]:
    """`NAME=EXPRESSION`: a metric to log and the notebook's expression that computes it."""
    name, sep, expression = text.partition("=")
    name, expression = name.strip(), expression.strip()
    if not sep or not METRIC_NAME_PATTERN.fullmatch(name) or not expression:
        raise BadInput(f"--metric {text!r}: expected NAME=EXPRESSION, e.g. accuracy=acc")
    return name, _expression(expression, f"--metric {name}")


def _expression(text: str, what: str) -> str:
    try:
        ast.parse(text, mode="eval")
    except SyntaxError:
        raise BadInput(f"{what}: {text!r} is not a Python expression") from None
    return text


def add_tags(text: str, plan: TagPlan) -> str:
    """The notebook file `text` with the plan applied, in the file's own format."""
    try:
        notebook = json.loads(text)
        cells: list[dict[str, Any]] = notebook["cells"]
    except (ValueError, KeyError, TypeError):
        raise BadInput("not a notebook file (no JSON object with a `cells` list)") from None
    if notebook.get("nbformat") != 4:
        raise BadInput(f"nbformat {notebook.get('nbformat')} is not supported (4 only)")
    style = _style(text, notebook)
    has_config = any(CONFIG_TAG in cell_tags(c) for c in cells if c.get("cell_type") == "code")
    if plan.model_name is not None and has_config:
        raise BadInput(f"the notebook already has an {CONFIG_TAG} cell: edit it instead")
    if plan.model_name is None and not has_config:
        raise BadInput(f"--model-name is needed: the notebook has no {CONFIG_TAG} cell")

    for tag, numbers in plan.tags.items():
        for number in numbers:
            if not 1 <= number <= len(cells):
                raise BadInput(f"{tag}: there is no cell {number} (the notebook has {len(cells)})")
            cell = cells[number - 1]
            if cell.get("cell_type") != "code":
                raise BadInput(
                    f"{tag}: cell {number} is a {cell.get('cell_type')} cell; only code cells run"
                )
            metadata = cell.setdefault("metadata", {})
            tags = metadata.get("tags") if isinstance(metadata.get("tags"), list) else []
            metadata["tags"] = tags if tag in tags else [*tags, tag]

    tagged = [i for i, cell in enumerate(cells) if runs(cell)]  # these and earlier tags
    after = max(tagged, default=len(cells) - 1) + 1
    added = []
    if plan.metrics:
        logs = [f"mlflow.log_metric({name!r}, {expr})" for name, expr in plan.metrics]
        added.append(style.cell(EVALUATION_TAG, ["import mlflow", "", *logs]))
    if plan.export is not None:
        export = _expression(plan.export, "--export")
        added.append(
            style.cell(
                EXPORT_TAG, ["import joblib", "", f"joblib.dump({export}, MODEL_OUTPUT_PATH)"]
            )
        )
    cells[after:after] = added
    if plan.model_name is not None:
        cells.insert(0, style.cell(CONFIG_TAG, _config_lines(plan)))
    return style.dumps(notebook)


def _config_lines(plan: TagPlan) -> list[str]:
    lines = [f"MODEL_NAME = {json.dumps(plan.model_name)}", f"VERSION = {json.dumps(plan.version)}"]
    if plan.gate is not None:
        metric, op, threshold = plan.gate
        direction = "max" if op == ">=" else "min"
        lines += [
            f"GATE_METRIC = {json.dumps(metric)}",
            f"GATE_THRESHOLD = {threshold!r}",
            f"GATE_DIRECTION = {json.dumps(direction)}",
        ]
    return lines


@dataclass(frozen=True)
class _CellStyle:
    """How the file writes itself, so that added cells and the rewrite look like the rest."""

    indent: int | None
    sort_keys: bool
    source_as_list: bool
    with_ids: bool
    trailing_newline: bool

    def cell(self, tag: str, lines: list[str]) -> dict[str, Any]:
        source: Any = "\n".join(lines)
        if self.source_as_list:
            source = [line + "\n" for line in lines[:-1]] + lines[-1:]
        cell: dict[str, Any] = {
            "cell_type": "code",
            "execution_count": None,
            "metadata": {"tags": [tag]},
            "outputs": [],
            "source": source,
        }
        if self.with_ids:
            cell["id"] = uuid.uuid4().hex[:8]
        return dict(sorted(cell.items())) if self.sort_keys else cell

    def dumps(self, notebook: dict[str, Any]) -> str:
        text = json.dumps(notebook, indent=self.indent, ensure_ascii=False)
        return text + ("\n" if self.trailing_newline else "")


def _style(text: str, notebook: dict[str, Any]) -> _CellStyle:
    indent = re.match(r"\{\r?\n( +)\S", text)
    cells = notebook["cells"]
    code = [c for c in cells if c.get("cell_type") == "code"]
    minor = notebook.get("nbformat_minor", 0)
    return _CellStyle(
        indent=len(indent.group(1)) if indent else None,
        sort_keys=list(notebook) == sorted(notebook),
        source_as_list=any(isinstance(c.get("source"), list) for c in code) or not code,
        with_ids=(isinstance(minor, int) and minor >= 5) or any("id" in c for c in cells),
        trailing_newline=text.endswith("\n"),
    )


def _cells_option(tag: str) -> Any:
    return click.option(
        f"--{tag.split(':')[1]}",
        "cells_" + tag.split(":")[1],
        metavar="CELLS",
        help=f"cells to tag {tag}: numbers and ranges as `mlops check` counts them (2,4-6)",
    )


@click.command("tag")
@click.argument("notebook", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--model-name", help="MODEL_NAME of the config cell this adds at the top")
@click.option("--version", "model_version", default="1", show_default=True, help="its VERSION")
@_cells_option(DATA_TAG)
@_cells_option(PREPROCESSING_TAG)
@_cells_option(TRAINING_TAG)
@_cells_option(EVALUATION_TAG)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="NAME=EXPRESSION",
    help="log a metric the notebook computes (a cell after the last tagged one), e.g. "
    "accuracy=acc; repeatable",
)
@click.option("--gate", metavar="METRIC>=X", help="the deploy gate, e.g. r2>=0.3 or rmse<=60")
@click.option(
    "--export",
    metavar="EXPRESSION",
    help="the fitted model to export (adds `joblib.dump(EXPRESSION, MODEL_OUTPUT_PATH)`)",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="write here (default: rewrite NOTEBOOK in place)",
)
@json_option
def tag_command(
    notebook: Path,
    model_name: str | None,
    model_version: str,
    cells_data: str | None,
    cells_preprocessing: str | None,
    cells_training: str | None,
    cells_evaluation: str | None,
    metrics: tuple[str, ...],
    gate: str | None,
    export: str | None,
    output: Path | None,
) -> int:
    """Tag the cells of a notebook you already have and add the contract's cells, then check it.

    Example: mlops tag wine.ipynb --model-name wine-rf --data 2-3 --preprocessing 7
    --training 8 --metric accuracy=acc --export rfc
    """
    chosen = {
        DATA_TAG: cells_data,
        PREPROCESSING_TAG: cells_preprocessing,
        TRAINING_TAG: cells_training,
        EVALUATION_TAG: cells_evaluation,
    }
    plan = TagPlan(
        tags={tag: parse_cells(cells) for tag, cells in chosen.items() if cells},
        model_name=model_name,
        version=model_version,
        gate=parse_gate(gate) if gate else None,
        metrics=[parse_metric(metric) for metric in metrics],
        export=export,
    )
    target = output or notebook
    target.write_text(add_tags(notebook.read_text(encoding="utf-8"), plan), encoding="utf-8")
    return check([target], threshold_from_environment(), invocation().as_json)
