"""Turns a GitHub webhook delivery into a queued pipeline, exactly once per delivery.

Runs in a worker thread (the route only reads the body): JSON parsing, HMAC over up to 25 MB
and the database round trips stay off the event loop, so a burst of deliveries does not stall
the others.

Order of work, and why:
1. Parse the body and find the repo it names: the signature can only be checked with that
   repo's secret.
2. Check the signature before anything is written, so unsigned requests leave no trace.
3. A redelivery (same X-GitHub-Delivery) answers with the pipeline it created the first time.
   The delivery row's primary key decides, also under concurrency: a second insert fails and
   its transaction (pipeline included) rolls back; no look-up first, which would only cost a
   round trip in the common case and still leave the race. A sender that sets no
   X-GitHub-Delivery (a hand-written script) is identified by a hash of the body instead: the
   same body sent twice is one delivery, and two pushes never share a body (their `after`
   commits differ).
4. The pipeline row is committed before it is sent to the broker; if the send fails the
   re-queue loop sends it later.

A repo may run several notebooks: a push queues one pipeline for each notebook whose watched
paths it touched, all in the transaction that records the delivery, so a redelivery finds them
all and creates none.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qs

from fastapi import HTTPException, status
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.api_models import PipelineAccepted, QueuedNotebook, WebhookIgnored, WebhookPong
from backend.metrics import PIPELINES_CREATED, WEBHOOK_DELIVERIES
from backend.pipeline_queue import PipelineQueue
from backend.pipeline_records import new_pipeline
from backend.push_commit import pushed_commit
from backend.push_rules import MalformedPush, plan_push
from backend.watch_paths import effective_watch_paths
from mlops_core import secrets_box
from mlops_core.database import session_factory
from mlops_core.repo_urls import payload_full_name, payload_repo_urls
from mlops_core.request_limits import JsonTooDeep, check_json_depth
from mlops_core.schema import Pipeline, Repo, WebhookDelivery
from mlops_core.secrets_box import SecretsBoxError
from mlops_core.settings import Settings
from mlops_core.states import PipelineStatus, Trigger

logger = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "x-hub-signature-256"
EVENT_HEADER: Final = "x-github-event"
DELIVERY_HEADER: Final = "x-github-delivery"
_MAX_DELIVERY_ID: Final = 100
# Prefix of the delivery id made from the body when X-GitHub-Delivery is missing.
BODY_HASH_PREFIX: Final = "body-sha256:"


def delivery_key(header: str, body: bytes) -> str:
    """The delivery's id: X-GitHub-Delivery, else a hash of the exact body bytes."""
    return header or BODY_HASH_PREFIX + hashlib.sha256(body).hexdigest()


def _reject(code: int, outcome: str, message: str) -> HTTPException:
    WEBHOOK_DELIVERIES.labels(outcome=outcome).inc()
    return HTTPException(code, message)


def _parse(body: bytes, content_type: str, max_depth: int) -> dict[str, Any]:
    """The payload object; GitHub sends JSON, or form-encoded `payload=<json>` if so configured.

    A JSON body's depth was checked as it arrived (JsonDepthLimit); the JSON inside a form body
    is percent-encoded then, so its depth is checked here.
    """
    try:
        if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
            fields = parse_qs(body.decode("utf-8"), strict_parsing=False)
            if "payload" not in fields:
                raise ValueError("form body has no 'payload' field")
            check_json_depth(fields["payload"][0], max_depth)
            payload = json.loads(fields["payload"][0])
        else:
            payload = json.loads(body)
    except JsonTooDeep as exc:
        raise _reject(status.HTTP_400_BAD_REQUEST, "bad_request", exc.detail) from exc
    except (ValueError, RecursionError) as exc:
        raise _reject(
            status.HTTP_400_BAD_REQUEST, "bad_request", f"body is not valid JSON: {exc}"
        ) from exc
    if not isinstance(payload, dict):
        raise _reject(status.HTTP_400_BAD_REQUEST, "bad_request", "body must be a JSON object")
    return payload


def _find_repo(session: Session, repository: Mapping[str, Any]) -> Repo | None:
    """The registered repo the payload's `repository` names, under any of its spellings."""
    urls = payload_repo_urls(repository)
    if urls:
        repo = session.scalar(select(Repo).where(Repo.github_url.in_(urls)).order_by(Repo.id))
        if repo is not None:
            return repo
    full_name = payload_full_name(repository)
    if full_name is None:
        return None
    return session.scalar(
        select(Repo)
        .where(
            Repo.github_url.startswith("https://"),
            Repo.github_url.endswith(f"/{full_name}", autoescape=True),
        )
        .order_by(Repo.id)
    )


def _verify(settings: Settings, repo: Repo, body: bytes, signature: str | None) -> None:
    """401 unless X-Hub-Signature-256 is the HMAC-SHA256 of the raw body with the repo's secret."""
    if not signature:
        raise _reject(
            status.HTTP_401_UNAUTHORIZED,
            "unauthorized",
            "missing X-Hub-Signature-256 header: set the webhook's secret on GitHub to the one "
            "returned when the repo was registered",
        )
    try:
        secret = secrets_box.decrypt(settings, repo.webhook_secret_encrypted)
    except SecretsBoxError as exc:
        logger.error("repo %s: webhook secret unreadable (%s)", repo.id, exc)
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR,
            "the repo's webhook secret cannot be decrypted: was ENCRYPTION_KEY changed?",
        ) from exc
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise _reject(
            status.HTTP_401_UNAUTHORIZED,
            "unauthorized",
            "X-Hub-Signature-256 does not match the body signed with this repo's webhook secret",
        )


def _queued(pipeline: Pipeline) -> QueuedNotebook:
    return QueuedNotebook(
        pipeline_id=pipeline.id,
        notebook_path=pipeline.notebook_path,
        matched=pipeline.trigger_detail,
    )


class WebhookIntake:
    """Handles one delivery at a time; safe to call from many threads at once."""

    def __init__(self, settings: Settings, queue: PipelineQueue) -> None:
        self._settings = settings
        self._queue = queue
        self._sessions = session_factory(settings.database_url)

    def handle(self, headers: Mapping[str, str], body: bytes) -> tuple[int, BaseModel]:
        """Return (status code, response body) for a delivery, or raise HTTPException."""
        event = (headers.get(EVENT_HEADER) or "").strip().lower()
        if not event:
            raise _reject(
                status.HTTP_400_BAD_REQUEST,
                "bad_request",
                "missing X-GitHub-Event header: this is not a GitHub webhook delivery",
            )
        delivery_id = delivery_key((headers.get(DELIVERY_HEADER) or "").strip(), body)
        if len(delivery_id) > _MAX_DELIVERY_ID:
            raise _reject(
                status.HTTP_400_BAD_REQUEST, "bad_request", "X-GitHub-Delivery header is too long"
            )
        payload = _parse(body, headers.get("content-type", ""), self._settings.json_max_depth)
        repository = payload.get("repository")
        if not isinstance(repository, Mapping):
            repository = {}

        with self._sessions() as session:
            repo = _find_repo(session, repository)
            if repo is not None:
                _verify(self._settings, repo, body, headers.get(SIGNATURE_HEADER))
            if event == "ping":
                WEBHOOK_DELIVERIES.labels(outcome="ping").inc()
                zen = payload.get("zen")
                return 200, WebhookPong(
                    repo_id=repo.id if repo else None, zen=zen if isinstance(zen, str) else None
                )
            if event != "push":
                reason = f"event '{event}' is not handled; only push events start pipelines"
                if repo is not None:
                    self._record_ignored(session, delivery_id, event, repo, reason)
                WEBHOOK_DELIVERIES.labels(outcome="ignored").inc()
                return 200, WebhookIgnored(reason=reason)
            if repo is None:
                if not repository:
                    raise _reject(
                        status.HTTP_400_BAD_REQUEST,
                        "bad_request",
                        "push payload has no 'repository' object",
                    )
                name = (payload_repo_urls(repository) or [payload_full_name(repository)])[0]
                raise _reject(
                    status.HTTP_404_NOT_FOUND,
                    "unknown_repo",
                    f"repository {name} is not registered; register it with POST /repos",
                )
            return self._push(session, repo, delivery_id, payload)

    def _push(
        self, session: Session, repo: Repo, delivery_id: str, payload: Mapping[str, Any]
    ) -> tuple[int, BaseModel]:
        if not repo.notebooks:  # rows written around the API; the API keeps at least one
            reason = f"repo {repo.id} runs no notebook: add one (POST /repos/{repo.id}/notebooks)"
            WEBHOOK_DELIVERIES.labels(outcome="ignored").inc()
            return 200, WebhookIgnored(reason=reason)
        watched = {
            notebook.notebook_path: effective_watch_paths(
                notebook.notebook_path, notebook.watch_paths
            )
            for notebook in repo.notebooks
        }
        try:
            plan = plan_push(payload, branch=repo.branch, notebooks=watched)
        except MalformedPush as exc:
            raise _reject(status.HTTP_400_BAD_REQUEST, "bad_request", str(exc)) from exc
        if plan.ignore_reason is not None:
            earlier = self._record_ignored(session, delivery_id, "push", repo, plan.ignore_reason)
            if earlier is not None:
                return self._answer_redelivery(session, earlier)
            WEBHOOK_DELIVERIES.labels(outcome="ignored").inc()
            return 200, WebhookIgnored(reason=plan.ignore_reason)

        commit = pushed_commit(payload, plan.commit_sha)
        pipelines = [
            new_pipeline(
                repo,
                trigger=Trigger.PUSH,
                notebook_path=notebook_path,
                commit_sha=plan.commit_sha,
                delivery_id=delivery_id,
                trigger_detail=matched,
                commit=commit,
            )
            for notebook_path, matched in plan.runs
        ]
        session.add_all(pipelines)
        try:
            session.flush()
            session.add(
                WebhookDelivery(
                    delivery_id=delivery_id,
                    event="push",
                    repo_id=repo.id,
                    pipeline_id=pipelines[0].id,
                    outcome="accepted",
                )
            )
            session.commit()
        except IntegrityError:
            session.rollback()
            earlier = session.get(WebhookDelivery, delivery_id)
            if earlier is None:
                raise
            return self._answer_redelivery(session, earlier)
        PIPELINES_CREATED.labels(trigger=Trigger.PUSH).inc(len(pipelines))
        WEBHOOK_DELIVERIES.labels(outcome="accepted").inc()
        for pipeline in pipelines:
            logger.info(
                "delivery %s: pipeline %s queued for repo %s notebook %s at %s (%s)",
                delivery_id,
                pipeline.id,
                repo.id,
                pipeline.notebook_path,
                plan.commit_sha,
                pipeline.trigger_detail,
            )
            self._queue.enqueue(pipeline.id)
        return 202, PipelineAccepted(
            pipeline_id=pipelines[0].id,
            status=PipelineStatus.QUEUED,
            matched=pipelines[0].trigger_detail,
            pipelines=[_queued(pipeline) for pipeline in pipelines],
        )

    def _answer_redelivery(
        self, session: Session, earlier: WebhookDelivery
    ) -> tuple[int, BaseModel]:
        WEBHOOK_DELIVERIES.labels(outcome="redelivered").inc()
        if earlier.pipeline_id is not None:
            current = session.scalar(
                select(Pipeline.status).where(Pipeline.id == earlier.pipeline_id)
            )
            created = session.scalars(
                select(Pipeline)
                .where(Pipeline.delivery_id == earlier.delivery_id)
                .order_by(Pipeline.id)
            ).all()
            return 202, PipelineAccepted(
                pipeline_id=earlier.pipeline_id,
                status=PipelineStatus(current or PipelineStatus.QUEUED),
                pipelines=[_queued(pipeline) for pipeline in created],
            )
        reason = earlier.reason or "this delivery was already processed"
        return 200, WebhookIgnored(reason=f"redelivery of an ignored delivery: {reason}")

    def _record_ignored(
        self, session: Session, delivery_id: str, event: str, repo: Repo, reason: str
    ) -> WebhookDelivery | None:
        """Keep ignored deliveries too, for an audit trail; return the earlier record if any."""
        session.add(
            WebhookDelivery(
                delivery_id=delivery_id,
                event=event,
                repo_id=repo.id,
                pipeline_id=None,
                outcome="ignored",
                reason=reason,
            )
        )
        try:
            session.commit()
        except IntegrityError:  # seen before: a redelivery
            session.rollback()
            return session.get(WebhookDelivery, delivery_id)
        return None
