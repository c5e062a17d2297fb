"""`mlops check NOTEBOOK...`: the platform's contract check, before the push.

The same code as a pipeline's validate phase (mlops_core.notebook_contract.check_notebook), so a
notebook that passes here passes validate (ownership of the model name and the operator's
accuracy floor, which only the platform knows, aside). Runs without the platform: no API call.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from mlops_cli.exit_codes import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_SUCCESS
from mlops_cli.invocation import invocation, json_option
from mlops_core.notebook_contract import ContractViolation, check_notebook, read_notebook
from mlops_core.settings import Settings

DEFAULT_THRESHOLD = float(Settings.model_fields["min_accuracy_threshold"].default)


def threshold_from_environment() -> float:
    """MIN_ACCURACY_THRESHOLD as the platform would read it, else the platform's default."""
    raw = os.environ.get("MIN_ACCURACY_THRESHOLD")
    try:
        return float(raw) if raw else DEFAULT_THRESHOLD
    except ValueError:
        return DEFAULT_THRESHOLD


def check_one(path: Path, threshold: float) -> dict[str, Any]:
    """The outcome for one notebook: ok with what a pipeline would run, or its violations."""
    try:
        notebook = read_notebook(path.read_bytes())
    except (FileNotFoundError, IsADirectoryError):
        missing = ["no such notebook file"]
        return {"notebook": str(path), "ok": False, "missing": True, "violations": missing}
    except ContractViolation as exc:  # not a notebook at all
        return {"notebook": str(path), "ok": False, "violations": exc.violations}
    try:
        contract = check_notebook(notebook, default_threshold=threshold)
    except ContractViolation as exc:
        return {"notebook": str(path), "ok": False, "violations": exc.violations}
    return {
        "notebook": str(path),
        "ok": True,
        "model_name": contract.model_name,
        "version": contract.version,
        "tagged_cells": len(contract.run_cells),
        "gate": contract.gate.as_dict(),
    }


@click.command("check")
@click.argument(
    "notebooks", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="NOTEBOOK..."
)
@click.option(
    "--min-accuracy",
    type=float,
    help="the gate threshold a notebook gets when it sets none (default: "
    "$MIN_ACCURACY_THRESHOLD, else the platform's default)",
)
@json_option
def check_command(notebooks: tuple[Path, ...], min_accuracy: float | None) -> int:
    """Check notebooks against the platform's contract before pushing (no API call; exit
    status 1 when one breaks it)."""
    threshold = threshold_from_environment() if min_accuracy is None else min_accuracy
    return check(list(notebooks), threshold, invocation().as_json)


def check(paths: list[Path], threshold: float, as_json: bool) -> int:
    """Check every notebook; exit 1 when any breaks the contract, 3 when one is missing."""
    outcomes = [check_one(path, threshold) for path in paths]
    for outcome in outcomes:
        if as_json:
            print(json.dumps(outcome))
        elif outcome["ok"]:
            gate = outcome["gate"]
            print(
                f"{outcome['notebook']}: ok: model {outcome['model_name']} version "
                f"{outcome['version']}, {outcome['tagged_cells']} tagged cells will run, gate "
                f"{gate.get('metric')} {gate.get('direction', '')} {gate.get('threshold')}"
            )
        else:
            print(f"{outcome['notebook']}: breaks the notebook contract:", file=sys.stderr)
            for violation in outcome["violations"]:
                print(f"  - {violation}", file=sys.stderr)
    if any(outcome.get("missing") for outcome in outcomes):
        return EXIT_NOT_FOUND
    return EXIT_SUCCESS if all(outcome["ok"] for outcome in outcomes) else EXIT_FAILED
