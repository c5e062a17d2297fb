"""The notebook contract: which cells a pipeline runs and what the `mlops:config` cell declares.

The config cell is read with `ast`, never executed: the platform must know the model's name
and gate before it runs untrusted code, and a notebook that breaks the contract is rejected
with every problem named at once, so a data scientist fixes them in one push, not five.

Cell positions in messages are 1-based ("cell 3" is the third cell, as a reader counts);
the `index` in log events is the 0-based position in the notebook file.
"""

from __future__ import annotations

import ast
import json
import math
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import nbformat
from nbformat import NotebookNode

from mlops_core.canary import DeployStrategy
from mlops_core.notebook_requirements import REQUIREMENTS_FILE, installs_in_cell

CONFIG_TAG = "mlops:config"
DATA_TAG = "mlops:data"
PREPROCESSING_TAG = "mlops:preprocessing"
TRAINING_TAG = "mlops:training"
EVALUATION_TAG = "mlops:evaluation"
EXPORT_TAG = "mlops:export"
PARAMETERS_TAG = "parameters"

REQUIRED_TAGS: tuple[str, ...] = (CONFIG_TAG, PREPROCESSING_TAG, TRAINING_TAG, EXPORT_TAG)
OPTIONAL_TAGS: tuple[str, ...] = (DATA_TAG, EVALUATION_TAG, PARAMETERS_TAG)
RUN_TAGS: frozenset[str] = frozenset(REQUIRED_TAGS + OPTIONAL_TAGS)

# Names papermill injects into every run; a `parameters` cell's defaults for them are not params.
INJECTED_PARAMETERS = frozenset(
    {"MODEL_OUTPUT_PATH", "REFERENCE_DATA_PATH", "PIPELINE_ID", "MLFLOW_TRACKING_URI"}
)
# Private tag put on every code cell that must not run; nbclient skips cells carrying it.
SKIP_TAG = "mlops-internal:skip"
# Cell metadata key holding the cell's index in the pushed notebook (papermill inserts a cell).
INDEX_METADATA_KEY = "mlops_index"

DEFAULT_GATE_METRIC = "accuracy"
# Registry names end up in URLs (`models:/name@alias`, `/predict/{name}`) and file paths.
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# MLflow's rule for metric keys.
METRIC_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_\-. :/]{1,250}$")
# Metric names for which "lower is better" is assumed when GATE_DIRECTION is not given.
_LOWER_IS_BETTER = re.compile(r"(rmse|mse|mae|mape|loss|error|deviance)", re.IGNORECASE)

GateDirection = Literal["max", "min"]
# Names of the config cell the platform reads; each must be a literal when present.
CONFIG_NAMES = (
    "MODEL_NAME",
    "VERSION",
    "GATE_METRIC",
    "GATE_THRESHOLD",
    "GATE_DIRECTION",
    "GATE_COMPARE",
    "GATE_TOLERANCE",
    "DEPLOY_STRATEGY",
)


@dataclass(frozen=True)
class GateSettings:
    """The deploy gate a run must pass: `metric` compared with `threshold` in `direction`."""

    metric: str
    threshold: float
    direction: GateDirection

    def passes(self, value: float) -> bool:
        """Whether a logged metric value passes the gate (the threshold itself passes)."""
        return value >= self.threshold if self.direction == "max" else value <= self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "threshold": self.threshold, "direction": self.direction}


@dataclass(frozen=True)
class GateComparison:
    """Whether a new version must also be no worse than the served one (mlops_core/deploy_gate.py)
    and by how much it may be: `GATE_COMPARE` and `GATE_TOLERANCE` of the config cell.

    `tolerance` None: the operator's GATE_TOLERANCE applies.
    """

    enabled: bool = True
    tolerance: float | None = None


@dataclass(frozen=True)
class NotebookContract:
    """What a valid notebook declares: its model, gate, params and the cells that run."""

    model_name: str
    version: str
    gate: GateSettings
    params: dict[str, Any] = field(default_factory=dict)
    run_cells: tuple[int, ...] = ()
    # The experiment a run cell names with `mlflow.set_experiment("...")`, if any.
    experiment_name: str | None = None
    comparison: GateComparison = GateComparison()
    # The config cell's DEPLOY_STRATEGY; None: the operator's setting applies.
    deploy_strategy: DeployStrategy | None = None


class ContractViolation(ValueError):
    """The notebook breaks the contract; `violations` names each problem."""

    def __init__(self, violations: list[str]) -> None:
        self.violations = violations
        super().__init__("notebook breaks the contract: " + "; ".join(violations))


def cell_tags(cell: NotebookNode) -> list[str]:
    """The tags of a cell (an empty list when it has none)."""
    tags = cell.get("metadata", {}).get("tags", [])
    return [str(tag) for tag in tags] if isinstance(tags, list) else []


def runs(cell: NotebookNode) -> bool:
    """Whether the pipeline runs this cell: a code cell with at least one contract tag."""
    return cell.get("cell_type") == "code" and bool(RUN_TAGS.intersection(cell_tags(cell)))


def read_notebook(text: str | bytes) -> NotebookNode:
    """Parse and validate a notebook as nbformat 4; raise ContractViolation if it is not one."""
    try:
        # Validated below, once the cell ids editors write are accepted: `nbformat.reads`
        # would log every VS Code notebook as "Notebook JSON is invalid" at error level.
        notebook = nbformat.convert(nbformat.reader.reads(text), 4)
    except Exception as exc:  # nbformat raises JSON, reader and validation errors alike
        raise ContractViolation([f"not a valid notebook file: {_first_line(exc)}"]) from exc
    accept_cell_ids(notebook)
    try:
        nbformat.validate(notebook)
    except nbformat.ValidationError as exc:
        raise ContractViolation([f"not valid nbformat: {_first_line(exc)}"]) from exc
    return notebook


def accept_cell_ids(notebook: NotebookNode) -> NotebookNode:
    """Mark a notebook that has cell ids but says nbformat < 4.5 as 4.5 (in place).

    Editors (VS Code, older JupyterLab, tools that copy cells between notebooks) write cell
    `id`s while keeping an older `nbformat_minor`; Jupyter opens such files, but strict schema
    validation refuses the ids. Ids are exactly what 4.5 added, so declaring 4.5 (and giving
    any cell without one an id) makes the file valid without changing a cell.
    """
    minor = notebook.get("nbformat_minor", 0)
    cells = notebook.get("cells", [])
    if notebook.get("nbformat") == 4 and minor < 5 and any("id" in c for c in cells):
        notebook["nbformat_minor"] = 5
        for cell in cells:
            if "id" not in cell:
                cell["id"] = uuid.uuid4().hex[:8]
    return notebook


def check_notebook(notebook: NotebookNode, *, default_threshold: float) -> NotebookContract:
    """Check the contract; return what the notebook declares or raise with every violation."""
    violations: list[str] = []
    cells = list(notebook.cells)

    language = notebook.metadata.get("kernelspec", {}).get("language")
    if language and str(language).lower() != "python":
        violations.append(f"kernel language {language!r} is not supported (Python only)")

    code_tags = [(i, cell_tags(c)) for i, c in enumerate(cells) if c.get("cell_type") == "code"]
    present = {tag for _, tags in code_tags for tag in tags}
    for tag in REQUIRED_TAGS:
        if tag not in present:
            violations.append(f"missing tag {tag} (no code cell carries it)")
    for i, tags in code_tags:
        for tag in tags:
            if tag.startswith("mlops:") and tag not in RUN_TAGS:
                known = ", ".join(sorted(t for t in RUN_TAGS if t.startswith("mlops:")))
                violations.append(f"unknown tag {tag} on cell {i + 1} (known: {known})")

    for i, cell in enumerate(cells):
        installs = installs_in_cell(cell.source) if runs(cell) else []
        if installs:
            violations.append(
                f"cell {i + 1} installs packages itself ({'; '.join(f'`{x}`' for x in installs)}):"
                " a pipeline's kernel cannot (its environment is read-only, with no network); "
                f"list the packages in {REQUIREMENTS_FILE} beside the notebook, one per line, "
                "and remove the line (packages the kernel already has need no entry: see the "
                "README, 'What a notebook can import')"
            )

    config_cells = [i for i, tags in code_tags if CONFIG_TAG in tags]
    if len(config_cells) > 1:
        listed = ", ".join(str(i + 1) for i in config_cells)
        violations.append(f"more than one cell is tagged {CONFIG_TAG} (cells {listed})")

    config: dict[str, Any] = {}
    non_literal: dict[str, str] = {}
    config_unreadable = False
    if config_cells:
        config, non_literal, syntax_error = _literal_assignments(
            cells[config_cells[0]].source, CONFIG_TAG, config_cells[0]
        )
        config_unreadable = syntax_error is not None
        if syntax_error:
            violations.append(syntax_error)
        for name in CONFIG_NAMES:
            if name in non_literal:
                violations.append(f"{name} must be a literal, not {non_literal[name]}")
    params = dict(config)
    for i, tags in code_tags:
        if PARAMETERS_TAG in tags:
            values, _, syntax_error = _literal_assignments(cells[i].source, PARAMETERS_TAG, i)
            params.update(values)
            if syntax_error:
                violations.append(syntax_error)

    model_name = version = None
    gate: GateSettings | None = None
    comparison = GateComparison()
    strategy: DeployStrategy | None = None
    if config_cells and not config_unreadable:
        model_name = _model_name(config, non_literal, violations)
        version = _version(config, non_literal, violations)
        gate = _gate(config, default_threshold, violations)
        comparison = _comparison(config, violations)
        strategy = _deploy_strategy(config, violations)

    if violations:
        raise ContractViolation(violations)
    assert model_name is not None and version is not None and gate is not None
    return NotebookContract(
        model_name=model_name,
        version=version,
        gate=gate,
        params={
            key: _jsonable(value) for key, value in params.items() if key not in INJECTED_PARAMETERS
        },
        run_cells=tuple(i for i, cell in enumerate(cells) if runs(cell)),
        experiment_name=_named_experiment(cell.source for cell in cells if runs(cell)),
        comparison=comparison,
        deploy_strategy=strategy,
    )


def _named_experiment(sources: Iterable[str]) -> str | None:
    """The literal experiment name of the first `set_experiment(...)` call in the run cells.

    MLflow refuses to resume the pipeline's run (MLFLOW_RUN_ID) once a notebook has switched to
    another experiment, so the pipeline creates its run in the experiment the notebook names.
    Cells that do not parse (IPython magics) are passed over: the kernel will judge them.
    """
    for source in sources:
        try:
            tree = parse_cell(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called != "set_experiment":
                continue
            candidates = [*node.args[:1]] + [
                k.value for k in node.keywords if k.arg == "experiment_name"
            ]
            for candidate in candidates:
                if isinstance(candidate, ast.Constant) and isinstance(candidate.value, str):
                    return candidate.value
    return None


def skipped_cells_defining(notebook: NotebookNode, name: str) -> list[int]:
    """Indexes of the code cells the pipeline skips (untagged) that define or import `name`.

    A notebook that runs top to bottom in Jupyter often imports or defines something in an
    untagged cell; in the pipeline that cell is skipped and a tagged cell fails with a
    NameError. Pointing at the skipped cell turns a puzzling error into a one-line fix.
    """
    found = []
    for i, cell in enumerate(notebook.cells):
        if cell.get("cell_type") != "code" or runs(cell):
            continue
        try:
            tree = parse_cell(cell.source)
        except SyntaxError:
            continue
        if name in _defined_names(tree):
            found.append(i)
    return found


def _defined_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
    return names


def prepare_for_execution(notebook: NotebookNode) -> NotebookNode:
    """A copy in which every code cell that must not run carries SKIP_TAG and every cell its index.

    Skipped cells stay in the notebook (unexecuted), so the executed notebook still shows
    the exploration a data scientist wrote.
    """
    prepared = accept_cell_ids(nbformat.from_dict(json.loads(json.dumps(notebook))))
    for i, cell in enumerate(prepared.cells):
        cell.metadata[INDEX_METADATA_KEY] = i
        if cell.cell_type == "code" and not runs(cell):
            cell.metadata["tags"] = [*cell_tags(cell), SKIP_TAG]
    return prepared


def strip_execution_marks(notebook: NotebookNode) -> NotebookNode:
    """Undo `prepare_for_execution`, so the stored notebook reads like the pushed one."""
    for cell in notebook.cells:
        cell.metadata.pop(INDEX_METADATA_KEY, None)
        tags = cell.metadata.get("tags")
        if isinstance(tags, list) and SKIP_TAG in tags:
            kept = [tag for tag in tags if tag != SKIP_TAG]
            if kept:
                cell.metadata["tags"] = kept
            else:
                del cell.metadata["tags"]
    return notebook


def parse_cell(source: str) -> ast.Module:
    """Parse a code cell as the kernel will run it: IPython syntax (`%magic`, `!cmd`) included.

    Plain Python is parsed directly; only a cell that does not parse is passed through
    IPython's own input transformer (`%matplotlib inline` becomes a `run_line_magic` call), so
    a config cell starting with a magic is read like Jupyter reads it. Raises SyntaxError when
    the cell is not valid IPython either.
    """
    try:
        return ast.parse(source)
    except SyntaxError as error:
        try:
            from IPython.core.inputtransformer2 import TransformerManager
        except ImportError:  # a deployable without IPython: plain Python only
            raise error from None
        # A genuine syntax error is then reported where it is, past any magic lines.
        return ast.parse(TransformerManager().transform_cell(source))


def _literal_assignments(
    source: str, tag: str, index: int
) -> tuple[dict[str, Any], dict[str, str], str | None]:
    """Top-level `NAME = <literal>` assignments of a cell, without running it.

    Returns the literal values, the names assigned something else (with the kind of
    expression, for the message) and a syntax error message if the cell does not parse.
    """
    try:
        tree = parse_cell(source)
    except SyntaxError as exc:
        return (
            {},
            {},
            f"syntax error in the {tag} cell (cell {index + 1}, line {exc.lineno}): {exc.msg}",
        )
    values: dict[str, Any] = {}
    non_literal: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if not isinstance(target, ast.Name):
                continue
            try:
                values[target.id] = ast.literal_eval(value)
                non_literal.pop(target.id, None)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                values.pop(target.id, None)
                non_literal[target.id] = _describe(value)
    return values, non_literal, None


def _describe(node: ast.expr) -> str:
    kinds = {ast.Call: "a function call", ast.Name: "a variable", ast.JoinedStr: "an f-string"}
    return kinds.get(type(node), "an expression")


def _model_name(
    config: dict[str, Any], non_literal: dict[str, str], violations: list[str]
) -> str | None:
    if "MODEL_NAME" not in config:
        if "MODEL_NAME" not in non_literal:
            violations.append(f"MODEL_NAME is not set in the {CONFIG_TAG} cell")
        return None
    name = config["MODEL_NAME"]
    if not isinstance(name, str):
        violations.append(f"MODEL_NAME must be a string, not {type(name).__name__}")
        return None
    if not MODEL_NAME_PATTERN.fullmatch(name):
        violations.append(
            f"MODEL_NAME {name!r} is not a safe registry name (letters, digits, '.', '_', '-'; "
            "starting with a letter or digit; at most 128 characters)"
        )
        return None
    return name


def _version(
    config: dict[str, Any], non_literal: dict[str, str], violations: list[str]
) -> str | None:
    if "VERSION" not in config:
        if "VERSION" not in non_literal:
            violations.append(f"VERSION is not set in the {CONFIG_TAG} cell")
        return None
    version = config["VERSION"]
    if isinstance(version, bool) or not isinstance(version, str | int | float) or version == "":
        violations.append("VERSION must be a non-empty string or number")
        return None
    return str(version)


def _gate(config: dict[str, Any], default_threshold: float, violations: list[str]) -> GateSettings:
    metric = config.get("GATE_METRIC", DEFAULT_GATE_METRIC)
    if not isinstance(metric, str) or not METRIC_NAME_PATTERN.fullmatch(metric):
        violations.append(f"GATE_METRIC must be a metric name string, not {metric!r}")
        metric = DEFAULT_GATE_METRIC
    threshold = config.get("GATE_THRESHOLD", default_threshold)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        violations.append(f"GATE_THRESHOLD must be a number, not {threshold!r}")
        threshold = default_threshold
    elif not math.isfinite(threshold):
        violations.append("GATE_THRESHOLD must be a finite number")
        threshold = default_threshold
    if "GATE_DIRECTION" in config:
        direction = config["GATE_DIRECTION"]
        if direction not in ("max", "min"):
            violations.append(f'GATE_DIRECTION must be "max" or "min", not {direction!r}')
            direction = "max"
    else:
        direction = "min" if _LOWER_IS_BETTER.search(metric) else "max"
    return GateSettings(metric=metric, threshold=float(threshold), direction=direction)


def _comparison(config: dict[str, Any], violations: list[str]) -> GateComparison:
    enabled = config.get("GATE_COMPARE", True)
    if not isinstance(enabled, bool):
        violations.append(f"GATE_COMPARE must be True or False, not {enabled!r}")
        enabled = True
    tolerance = config.get("GATE_TOLERANCE")
    if tolerance is None:
        return GateComparison(enabled, None)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
        violations.append(f"GATE_TOLERANCE must be a number, not {tolerance!r}")
        return GateComparison(enabled, None)
    if not math.isfinite(tolerance) or tolerance < 0:
        violations.append(f"GATE_TOLERANCE must be a finite number >= 0, not {tolerance!r}")
        return GateComparison(enabled, None)
    return GateComparison(enabled, float(tolerance))


def _deploy_strategy(config: dict[str, Any], violations: list[str]) -> DeployStrategy | None:
    strategy = config.get("DEPLOY_STRATEGY")
    if strategy is None:
        return None
    if strategy not in {s.value for s in DeployStrategy}:
        names = ", ".join(f'"{s.value}"' for s in DeployStrategy)
        violations.append(f"DEPLOY_STRATEGY must be one of {names}, not {strategy!r}")
        return None
    return DeployStrategy(strategy)


def _jsonable(value: Any) -> Any:
    """Keep JSON-representable literals as they are (NaN excluded); describe the rest."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
