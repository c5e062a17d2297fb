"""Names of pipeline and phase states, shared so the worker writes what the API reads."""

from enum import StrEnum


class PipelineStatus(StrEnum):
    """Lifecycle of a pipeline: queued → running → success | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether no further change can happen to a pipeline in this state."""
        return self in {PipelineStatus.SUCCESS, PipelineStatus.FAILED, PipelineStatus.CANCELLED}


class PhaseStatus(StrEnum):
    """Lifecycle of one phase."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class Phase(StrEnum):
    """The phases of a pipeline, in the order they run."""

    FETCH = "fetch"
    VALIDATE = "validate"
    ENVIRONMENT = "environment"
    EXECUTE = "execute"
    REGISTER = "register"
    DEPLOY = "deploy"


PHASE_ORDER: tuple[Phase, ...] = tuple(Phase)


class Trigger(StrEnum):
    """What started a pipeline (its `trigger`), as the API, pages and metrics name it."""

    PUSH = "push"
    MANUAL = "manual"
    RETRY = "retry"
    SCHEDULE = "schedule"
