"""What the canary API answers and accepts: a running canary, its live comparison, its end."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from backend.api_models import UtcDatetime
from mlops_core.canary import CanaryMode, StickyKey
from mlops_core.canary_policy import Verdict
from mlops_core.model_events import DeploymentAction


class CanaryRequest(BaseModel):
    """Body of POST /models/{name}/canary."""

    version: str = Field(pattern=r"^[0-9]{1,18}$", description='a registered version, e.g. "3"')
    # Share of requests (percent) the challenger answers (split) or gets a copy of (shadow);
    # CANARY_WEIGHT when left out.
    weight: float | None = Field(default=None, gt=0, le=100)
    mode: CanaryMode = CanaryMode.SPLIT
    # "header:X-User-Id" or "field:user_id": one user, one version, on every replica.
    sticky_key: str | None = Field(default=None, max_length=120)

    @field_validator("version", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("sticky_key")
    @classmethod
    def _sticky(cls, value: str | None) -> str | None:
        return None if value is None else str(StickyKey.parse(value))


class VersionFiguresView(BaseModel):
    """One version's live figures since the canary started."""

    version: str
    role: Literal["champion", "challenger"]
    requests: int
    errors: int
    error_rate: float
    p50_ms: float | None
    p95_ms: float | None
    quality_metric: str | None
    quality: float | None
    quality_rows: int
    drift_share: float | None  # share of features drifted; null: too few rows to tell


class CheckView(BaseModel):
    """One comparison of the policy: both values, the challenger's bound, the outcome."""

    name: str
    champion: float | None
    challenger: float | None
    bound: float | None
    outcome: Literal["ok", "worse", "unknown"]
    detail: str


class PolicyView(BaseModel):
    """What the promotion policy decides on the figures shown (it acts on its own schedule)."""

    verdict: Verdict
    reason: str
    checks: list[CheckView]


class CanaryStatus(BaseModel):
    """A model's canary: what runs beside the served version, and how both do live."""

    name: str
    active: bool
    champion: str | None
    challenger: str | None = None
    weight: float | None = None
    mode: CanaryMode | None = None
    sticky_key: str | None = None
    started_at: UtcDatetime | None = None
    started_by: str | None = None
    elapsed_seconds: float | None = None
    versions: list[VersionFiguresView] = []
    # Shadow mode: share of compared rows where both versions answered alike.
    agreement: float | None = None
    compared: int = 0
    policy: PolicyView | None = None
    # Replica id → challenger version it has loaded; null when Redis did not answer.
    replicas: dict[str, str] | None = None


class CanaryOutcome(BaseModel):
    """Answer of promote and abort: what serves now, which challenger ended, and why."""

    name: str
    action: DeploymentAction
    served_version: str
    challenger: str
    previous_version: str
    announced: bool
    evidence: dict[str, Any] | None
