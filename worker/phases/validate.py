"""validate: the notebook is nbformat and keeps the contract, its gate respects the operator's
floor and its MODEL_NAME belongs to this repository and notebook; record what it declares."""

from __future__ import annotations

from dataclasses import replace

from nbformat import NotebookNode

from mlops_core.deploy_gate import apply_floor, describe_comparison, describe_gates
from mlops_core.model_owners import ModelSource, claim_model, ownership_conflict
from mlops_core.notebook_contract import ContractViolation, check_notebook, read_notebook
from mlops_core.run_parameters import overridden_by_later_cells
from mlops_core.schema import Pipeline
from worker.phases.context import PhaseContext, PhaseFailed


def run(ctx: PhaseContext) -> None:
    """Check the fetched notebook without running it; store model name, version and params."""
    assert ctx.notebook_file is not None
    try:
        notebook = read_notebook(ctx.notebook_file.read_bytes())
        contract = check_notebook(notebook, default_threshold=ctx.settings.min_accuracy_threshold)
    except ContractViolation as exc:
        for violation in exc.violations:
            ctx.log(f"contract: {violation}", stream="error")
        raise PhaseFailed(str(exc)) from exc
    if ctx.parameters:
        _check_parameters(ctx, notebook)
    floor = ctx.settings.accuracy_floor
    if floor is not None:
        gate, note = apply_floor(contract.gate, floor)
        if note:
            ctx.log(note)
            contract = replace(contract, gate=gate)
    _claim_model_name(ctx, contract.model_name)
    ctx.contract = contract
    ctx.model_name = contract.model_name
    ctx.update_pipeline(
        model_name=contract.model_name,
        params={"notebook": contract.params, "gate": contract.gate.as_dict()},
    )
    ctx.log(
        f"model {contract.model_name} version {contract.version}; "
        f"{len(contract.run_cells)} tagged cells will run; "
        f"gate: {describe_gates(contract.gate, floor)}; "
        + describe_comparison(contract.gate, contract.comparison, ctx.settings.gate_tolerance)
    )


def _check_parameters(ctx: PhaseContext, notebook: NotebookNode) -> None:
    """Fail when a trigger's parameter would be reset by a later cell (see run_parameters)."""
    problems = overridden_by_later_cells(notebook, ctx.parameters)
    for problem in problems:
        ctx.log(problem, stream="error")
    if problems:
        raise PhaseFailed("; ".join(problems))
    shown = ", ".join(f"{name}={value!r}" for name, value in ctx.parameters.items())
    ctx.log(f"parameters given by the trigger: {shown}")


def _claim_model_name(ctx: PhaseContext, name: str) -> None:
    """Claim `name` for this pipeline's repository and notebook, or fail naming its owner."""
    with ctx.session() as session:
        pipeline = session.get(Pipeline, ctx.pipeline_id)
        repo_id = pipeline.repo_id if pipeline is not None else None
    claimant = ModelSource(ctx.repo_url, ctx.notebook_path, repo_id)
    ownership, claimed = claim_model(ctx.settings.database_url, name, claimant)
    conflict = ownership_conflict(name, ownership.owner, claimant)
    if conflict:
        raise PhaseFailed(conflict)
    if claimed:
        ctx.log(f"model {name} now belongs to {claimant.describe()}")
