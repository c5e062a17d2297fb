"""What the models API answers: the typed shapes of models, versions, owners and changes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from backend.api_models import UtcDatetime
from mlops_core.model_events import DeploymentAction


class VersionView(BaseModel):
    """One registered version with what a person needs to choose it."""

    version: str
    created_at: UtcDatetime
    run_id: str | None
    status: str
    metrics: dict[str, float]
    commit: str | None
    branch: str | None
    repo: str | None
    pipeline_id: int | None
    notebook_version: str | None
    gate: dict[str, Any] | None
    # The deploy phase's gate verdict (mlops_core/deploy_gate.py: passed, failed_rule, reason,
    # value, served_version, served_value, tolerance); None when no pipeline judged it.
    verdict: dict[str, Any] | None = None
    served: bool
    # Hyperparameters: the run's params (config and `parameters` cells' values as they ran,
    # plus what the notebook logged), and which of them the trigger gave (None: none).
    params: dict[str, str] = {}
    given_parameters: dict[str, Any] | None = None


class ModelSummary(BaseModel):
    """A registered model, its served version and every version, newest first."""

    name: str
    alias: str
    served_version: str | None
    latest_version: str | None
    gate: dict[str, Any] | None  # the described version's (served, else newest)
    versions: list[VersionView]


class OwnerView(BaseModel):
    """The repository and notebook that alone may publish versions of a model name."""

    repo_id: int | None
    repo_url: str
    notebook_path: str
    owned_since: UtcDatetime


class ModelDetail(ModelSummary):
    """One model as its page shows it."""

    owner: OwnerView | None
    # Version loaded by each live model-server replica; None when Redis did not answer.
    replicas: dict[str, str] | None
    # From the described version's MLflow signature, so a form can be labelled while no
    # model server answers.
    features_version: str | None
    feature_names: list[str] | None
    n_features: int | None


class OwnerTransfer(BaseModel):
    """Answer of an owner transfer."""

    name: str
    owner: OwnerView | None
    previous_owner: OwnerView | None


class HistoryEntry(BaseModel):
    """One change of the served version."""

    id: int
    action: str
    version: str | None
    previous_version: str | None
    pipeline_id: int | None
    actor: str
    # Why: the gate verdict of a pipeline's deploy, or the reason given for a forced one.
    reason: str | None = None
    # A canary change's numbers: its weight and mode when started, both versions' live figures
    # and the policy's checks when promoted or aborted (mlops_core/canary_policy.py).
    evidence: dict[str, Any] | None = None
    created_at: UtcDatetime


class DeploymentResult(BaseModel):
    """Answer of deploy, rollback and delete: what serves now, what served before."""

    name: str
    action: DeploymentAction
    served_version: str | None
    previous_version: str | None
    # False when the replicas could not be told at once (they pick it up at their next reconcile).
    announced: bool
    purged: bool | None = None  # delete only
