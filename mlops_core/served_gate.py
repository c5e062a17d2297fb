"""The deploy gate's verdict on a run, held to the version a registry serves now.

The deploy phase judges a registered version with it, and `mlops run --mlflow URI` judges a
local run against that server's registry, so both compare alike: the version the serving alias
names, the metrics its run logged, the tolerance of the config cell (else GATE_TOLERANCE), the
operator's floor, and the same note when the config cell turns the comparison off. The verdict
itself stays the pure function of mlops_core/deploy_gate.py; this module only reads what it is
given from the registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from mlflow import MlflowClient

from mlops_core.deploy_gate import GateResult, ServedVersion, describe_comparison, evaluate_gate
from mlops_core.model_registry import get_version, served_version
from mlops_core.notebook_contract import GateComparison, GateSettings
from mlops_core.settings import Settings


def served_for_comparison(
    client: MlflowClient, name: str, alias: str, version: str | None = None
) -> ServedVersion | None:
    """The version served now with its run's metrics; None when nothing is served, or only
    `version` itself (a redelivered pipeline that had already moved the alias)."""
    current = served_version(client, name, alias)
    if current is None or current == version:
        return None
    return ServedVersion(current, get_version(client, name, current).metrics)


def judge(
    client: MlflowClient,
    name: str,
    gate: GateSettings,
    metrics: Mapping[str, Any],
    *,
    comparison: GateComparison,
    settings: Settings,
    alias: str,
    version: str | None = None,
) -> GateResult:
    """The gate's verdict on `metrics` (its gate, the floor, then the version `alias` serves
    of model `name`, unless that is `version` itself)."""
    tolerance = settings.gate_tolerance if comparison.tolerance is None else comparison.tolerance
    served = served_for_comparison(client, name, alias, version) if comparison.enabled else None
    verdict = evaluate_gate(
        gate, metrics, accuracy_floor=settings.accuracy_floor, served=served, tolerance=tolerance
    )
    if verdict.passed and not comparison.enabled:
        note = describe_comparison(gate, comparison, settings.gate_tolerance)
        verdict = replace(verdict, reason=f"{verdict.reason}; {note}")
    return verdict
