"""Reading and changing registered models, with no HTTP in it (the routes only translate).

The registry alias is the truth for what is served; each change goes through
`change_served_version`, which records the deployment history and announces the change so
that model servers act at once. Every method blocks on MLflow and the database: callers run
them on the registry gate's threads (backend/registry_gate.py).
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import lru_cache

import redis
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sqlalchemy.orm import Session

from backend.deploy_confirmation import deployment_reason, given_reason
from backend.model_views import (
    DeploymentResult,
    HistoryEntry,
    ModelDetail,
    ModelSummary,
    OwnerTransfer,
    OwnerView,
    VersionView,
)
from backend.notebook_registry import find_notebook
from backend.version_comparison import VersionComparison, compare_versions
from mlops_core.deployments import (
    change_served_version,
    deployment_history,
    previously_served_version,
)
from mlops_core.model_events import DeploymentAction, replica_versions
from mlops_core.model_owners import ModelSource, Ownership, get_ownership, transfer_model
from mlops_core.model_registry import (
    InputFeatures,
    VersionInfo,
    delete_model,
    get_version,
    input_features,
    list_versions,
    model_exists,
    registered_model_names,
    served_version,
    version_exists,
)
from mlops_core.schema import Repo
from mlops_core.settings import Settings

logger = logging.getLogger(__name__)


class ModelNotFound(LookupError):
    """The model, one of its versions, or the repository named for it does not exist."""


class NothingToRollBack(Exception):
    """A rollback without a version found no version served before the current one."""


class PurgeFailed(Exception):
    """The model stopped serving, but MLflow refused to delete it."""


class ModelService:
    """One request's view of the registry, its database session and the replicas' reports."""

    def __init__(
        self, settings: Settings, registry: MlflowClient, announcer: redis.Redis, session: Session
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._redis = announcer
        self._session = session

    def summaries(self) -> list[ModelSummary]:
        """Every registered model with its served version and its versions."""
        return [self._summary(name)[0] for name in registered_model_names(self._registry)]

    def detail(self, name: str) -> ModelDetail:
        """One model, plus which version each live replica has loaded, the feature names of
        the served (else newest) version and the repository owning the name."""
        self._require_model(name)
        summary, current = self._summary(name)
        features = self._features(name, current)
        return ModelDetail(
            **summary.model_dump(),
            owner=_owner_view(get_ownership(self._session, name)),
            replicas=self._replicas(name),
            features_version=current.version if current else None,
            feature_names=features.names,
            n_features=features.count,
        )

    def transfer_owner(
        self, name: str, repo_id: int, notebook_path: str | None = None
    ) -> OwnerTransfer:
        """Give the model name to a repository and one of its notebooks (default: its first):
        from then on only that notebook's pipelines may publish versions of it (the previous
        owner's fail their validate phase)."""
        repo = self._session.get(Repo, repo_id)
        if repo is None:
            raise ModelNotFound(f"repo {repo_id} not found")
        notebook_path = notebook_path or repo.notebook_path
        if find_notebook(repo, notebook_path) is None:
            registered = ", ".join(n.notebook_path for n in repo.notebooks)
            raise ModelNotFound(
                f"notebook_path: {notebook_path} is not a notebook of repo {repo_id} "
                f"(it runs {registered})"
            )
        previous = get_ownership(self._session, name)
        if previous is None:
            self._require_model(name)  # a model registered before it had an owner
        new_owner = ModelSource(repo.github_url, notebook_path, repo.id)
        self._session.close()  # the transfer is its own transaction (mlops_core.model_owners)
        ownership = transfer_model(self._settings.database_url, name, new_owner)
        logger.info(
            "model %s transferred from %s to %s",
            name,
            previous.owner.describe() if previous else "no owner",
            new_owner.describe(),
        )
        return OwnerTransfer(
            name=name, owner=_owner_view(ownership), previous_owner=_owner_view(previous)
        )

    def compare(self, name: str, a: str, b: str) -> VersionComparison:
        """Versions `a` and `b` side by side: parameters, metrics and their runs, differences
        marked (backend/version_comparison.py)."""
        self._require_version(name, a)
        self._require_version(name, b)
        served = served_version(self._registry, name, self._settings.serving_alias)
        return compare_versions(
            name,
            get_version(self._registry, name, a),
            get_version(self._registry, name, b),
            lambda v: _version_view(v, served=v.version == served),
        )

    def history(self, name: str, limit: int) -> list[HistoryEntry]:
        """Every change of the served version, newest first (kept even after a purge)."""
        rows = deployment_history(self._session, name, limit)
        if not rows and not model_exists(self._registry, name):
            raise ModelNotFound(f"model {name!r} is not registered and has no history")
        return [
            HistoryEntry(
                id=row.id,
                action=row.action,
                version=row.version,
                previous_version=row.previous_version,
                pipeline_id=row.pipeline_id,
                actor=row.actor,
                reason=row.reason,
                evidence=row.evidence,
                created_at=row.created_at,
            )
            for row in rows
        ]

    def deploy(
        self,
        name: str,
        version: str,
        *,
        actor: str,
        force: bool = False,
        reason: str | None = None,
    ) -> DeploymentResult:
        """Serve any registered version of the model; one below its gate only with `force` and
        a reason (backend/deploy_confirmation.py raises GateNotConfirmed otherwise)."""
        self._require_version(name, version)
        info = get_version(self._registry, name, version)
        why = deployment_reason(name, info, force=force, reason=reason)
        return self._change(name, version, DeploymentAction.DEPLOY, actor, reason=why)

    def rollback(
        self, name: str, version: str | None, *, actor: str, reason: str | None = None
    ) -> DeploymentResult:
        """Serve `version`, or without one the version served before the current one."""
        self._require_model(name)
        if version is None:
            current = served_version(self._registry, name, self._settings.serving_alias)
            version = previously_served_version(self._session, name, current)
            if version is None:
                raise NothingToRollBack(
                    f"model {name!r} has no previously served version to roll back to"
                )
        self._require_version(name, version)
        return self._change(
            name, version, DeploymentAction.ROLLBACK, actor, reason=given_reason(reason)
        )

    def stop_serving(
        self, name: str, *, purge: bool, actor: str, reason: str | None = None
    ) -> DeploymentResult:
        """Stop serving the model; with `purge` also remove it from the registry."""
        self._require_model(name)
        result = self._change(
            name, None, DeploymentAction.DELETE, actor, reason=given_reason(reason)
        )
        if purge:
            try:
                delete_model(self._registry, name)
            except MlflowException as exc:
                message = f"model {name!r} stopped serving but purge failed: {exc}"
                raise PurgeFailed(message) from None
        return result.model_copy(update={"purged": purge})

    def _change(
        self,
        name: str,
        version: str | None,
        action: DeploymentAction,
        actor: str,
        reason: str | None = None,
    ) -> DeploymentResult:
        pipeline_id = None
        if version is not None:
            pipeline_id = get_version(self._registry, name, version).pipeline_id
        previous, announced = change_served_version(
            self._session,
            self._registry,
            self._redis,
            model_name=name,
            version=version,
            action=action,
            alias=self._settings.serving_alias,
            actor=actor,
            pipeline_id=pipeline_id,
            reason=reason,
        )
        logger.info("%s %s: served version %s -> %s", action, name, previous, version)
        return DeploymentResult(
            name=name,
            action=action,
            served_version=version,
            previous_version=previous,
            announced=announced,
        )

    def _summary(self, name: str) -> tuple[ModelSummary, VersionInfo | None]:
        """The model as the API lists it, and the version it describes: the served one, else
        the newest."""
        versions = list_versions(self._registry, name)
        served = served_version(self._registry, name, self._settings.serving_alias)
        current = next(
            (v for v in versions if v.version == served), versions[0] if versions else None
        )
        summary = ModelSummary(
            name=name,
            alias=self._settings.serving_alias,
            served_version=served,
            latest_version=versions[0].version if versions else None,
            gate=current.gate if current else None,
            versions=[_version_view(v, served=v.version == served) for v in versions],
        )
        return summary, current

    def _features(self, name: str, version: VersionInfo | None) -> InputFeatures:
        """Feature names and count of a version, from its MLflow signature.

        Read from the registry rather than a model server's GET /models so that the prediction
        form is labelled even while no model server answers, and for a version not yet loaded.
        """
        if version is None:
            return InputFeatures(None, None)
        try:
            return _input_features(
                self._settings.mlflow_tracking_uri,
                name,
                version.version,
                version.run_id,
                version.created_at,
            )
        except (MlflowException, OSError) as exc:
            logger.warning("no signature for %s version %s: %s", name, version.version, exc)
            return InputFeatures(None, None)

    def _replicas(self, name: str) -> dict[str, str] | None:
        try:
            return replica_versions(
                self._redis,
                self._settings.serving_alias,
                name,
                self._settings.model_heartbeat_interval_seconds * 3,
            )
        except redis.RedisError:
            return None

    def _require_model(self, name: str) -> None:
        if not model_exists(self._registry, name):
            raise ModelNotFound(f"model {name!r} is not registered")

    def _require_version(self, name: str, version: str) -> None:
        self._require_model(name)
        if not version_exists(self._registry, name, version):
            raise ModelNotFound(f"model {name!r} has no version {version}")


@lru_cache(maxsize=512)
def _input_features(
    tracking_uri: str, name: str, version: str, run_id: str | None, created_at: datetime
) -> InputFeatures:
    """A version's files never change; run id and creation time tell a re-registered one apart."""
    return input_features(tracking_uri, name, version)


def _version_view(version: VersionInfo, *, served: bool) -> VersionView:
    return VersionView(
        version=version.version,
        created_at=version.created_at,
        run_id=version.run_id,
        status=version.status,
        metrics=version.metrics,
        commit=version.commit,
        branch=version.branch,
        repo=version.repo,
        pipeline_id=version.pipeline_id,
        notebook_version=version.notebook_version,
        gate=version.gate,
        verdict=version.verdict,
        served=served,
        params=version.params,
        given_parameters=version.given_parameters,
    )


def _owner_view(ownership: Ownership | None) -> OwnerView | None:
    if ownership is None:
        return None
    owner = ownership.owner
    return OwnerView(
        repo_id=owner.repo_id,
        repo_url=owner.repo_url,
        notebook_path=owner.notebook_path,
        owned_since=ownership.owned_since,
    )
