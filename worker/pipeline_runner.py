"""Runs a pipeline's phases in order and records each on the pipeline row."""

from __future__ import annotations

from mlops_core.database import session_scope
from mlops_core.schema import Pipeline, PipelinePhase, utcnow
from mlops_core.settings import get_settings
from mlops_core.states import PHASE_ORDER, PhaseStatus, PipelineStatus


def run_pipeline(pipeline_id: int, *, redelivered: bool = False) -> None:
    """Move the pipeline to running and record its phases (filled in by the pipeline issue)."""
    settings = get_settings()
    with session_scope(settings.database_url) as session:
        pipeline = session.get(Pipeline, pipeline_id)
        if pipeline is None or PipelineStatus(pipeline.status).finished:
            return
        pipeline.status = PipelineStatus.RUNNING
        pipeline.started_at = pipeline.started_at or utcnow()
        pipeline.attempts += 1
        if not pipeline.phases:
            pipeline.phases = [
                PipelinePhase(name=phase.value, position=i, status=PhaseStatus.PENDING)
                for i, phase in enumerate(PHASE_ORDER)
            ]
        fetch = pipeline.phases[0]
        fetch.status = PhaseStatus.RUNNING
        fetch.started_at = utcnow()
