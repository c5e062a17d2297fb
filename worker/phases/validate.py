"""validate: the notebook is nbformat and keeps the contract; record what it declares."""

from __future__ import annotations

from mlops_core.notebook_contract import ContractViolation, check_notebook, read_notebook
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
    ctx.contract = contract
    ctx.model_name = contract.model_name
    ctx.update_pipeline(
        model_name=contract.model_name,
        params={"notebook": contract.params, "gate": contract.gate.as_dict()},
    )
    gate = contract.gate
    ctx.log(
        f"model {contract.model_name} version {contract.version}; "
        f"{len(contract.run_cells)} tagged cells will run; "
        f"gate: {gate.metric} {'>=' if gate.direction == 'max' else '<='} {gate.threshold}"
    )
