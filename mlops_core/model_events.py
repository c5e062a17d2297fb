"""Model events on Redis: what the control plane announces and what model servers report back.

Two pub/sub channels and one hash per model:

- `MODEL_EVENTS_CHANNEL`: announcements of a served-version change (`ModelEvent`). They are
  hints that make replicas act at once; the registry alias stays the truth, so a replica re-reads
  it on every event and a lost message only delays a change until the next reconcile.
- `MODEL_LOADED_CHANNEL`: each replica publishes a `ReplicaReport` when it has loaded (or failed
  to load, or stopped serving) a version, so a waiting deploy wakes up without polling.
- `replicas_key(alias, model)`: a hash `replica id → ReplicaReport` refreshed by every replica's
  heartbeat (per alias too: fleets following different aliases share Redis without confusion).
  Hash fields cannot expire one by one on Redis < 7.4, so readers drop reports older than the
  staleness window and the whole key expires when no replica refreshes it.

A model server may run several processes on one port (MODEL_SERVER_WORKERS), each loading and
swapping on its own: each reports for itself, naming its server and how many processes that
server runs. A server serves a version once all of its processes report it (`complete_servers`):
until then a request could reach a process still on the old one.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Literal

import redis
from pydantic import BaseModel, Field

from mlops_core.prediction_log import PREDICTION_LOG_STREAM

MODEL_EVENTS_CHANNEL = "mlops:model-events"
MODEL_LOADED_CHANNEL = "mlops:model-loaded"
_REPLICAS_PREFIX = "mlops:model-replicas:"


class DeploymentAction(StrEnum):
    """Why a model's served version changed: the names written to the deployment history
    (`deployments.action`) and to model events, and read back by the models API and the
    dashboard (backend/pages/static/js/model.js keys its labels by these values).
    """

    DEPLOY = "deploy"  # an operator served a version of their choice
    ROLLBACK = "rollback"  # an operator went back to an earlier version
    DELETE = "delete"  # an operator stopped serving the model
    AUTO = "auto"  # a pipeline served the version it registered
    RESTORE = "restore"  # a pipeline's deploy failed and gave the alias back
    # Canary and shadow traffic (mlops_core/canary.py): these change the challenger beside the
    # served version; PROMOTE also makes the challenger the served version.
    CANARY = "canary"  # a challenger started (or its weight, mode or sticky key changed)
    PROMOTE = "promote"  # the challenger became the served version
    ABORT = "abort"  # the challenger stopped; the served version takes every request again


# The actions that do not move the serving alias: `previously_served_version` skips them.
CHALLENGER_ACTIONS = frozenset({DeploymentAction.CANARY, DeploymentAction.ABORT})


ReportStatus = Literal["loaded", "failed", "unloaded"]

# The Redis user model servers connect as where Redis has ACL users (the local stack, compose).
MODEL_SERVER_REDIS_USER = "modelserver"
# Its ACL rules: the two channels and the report hashes above, the prediction log's stream
# (append only), and only the commands this module, model_server/registry_sync.py and
# model_server/prediction_log.py send (a pipeline is MULTI/EXEC). A model server faces the
# network; its Redis password opens no queue, no pipeline log and no cancel channel. redis-py's
# CLIENT SETINFO at connect is refused and ignored by the client. Valid on Redis 6.2 and 7.
MODEL_SERVER_REDIS_ACL: tuple[str, ...] = (
    "resetkeys",
    f"~{_REPLICAS_PREFIX}*",
    f"~{PREDICTION_LOG_STREAM}",
    "resetchannels",
    f"&{MODEL_EVENTS_CHANNEL}",
    f"&{MODEL_LOADED_CHANNEL}",
    "-@all",
    *(
        f"+{command}"
        for command in (
            "ping",
            "select",
            "subscribe",
            "unsubscribe",
            "publish",
            "hset",
            "hdel",
            "hgetall",
            "expire",
            "multi",
            "exec",
            "discard",
            "xadd",
        )
    ),
)


def replicas_key(alias: str, model_name: str) -> str:
    """Hash of replica id → JSON `ReplicaReport` for one model served under one alias."""
    return f"{_REPLICAS_PREFIX}{alias}:{model_name}"


class ModelEvent(BaseModel):
    """A change of the served version of one model (version None: no longer served)."""

    action: DeploymentAction
    model: str
    version: str | None
    alias: str
    actor: str = "system"
    ts: float = Field(default_factory=time.time)


class ReplicaReport(BaseModel):
    """What one model-server replica (one process of a server) holds for one model."""

    replica: str
    # The server this process belongs to and how many processes it runs (None: the replica is a
    # server of one process).
    server: str | None = None
    processes: int = Field(default=1, ge=1)
    alias: str
    model: str
    version: str | None
    status: ReportStatus
    error: str | None = None
    ts: float = Field(default_factory=time.time)


def announce(client: redis.Redis, event: ModelEvent) -> int:
    """Publish a model event; returns how many subscribers (replicas) received it."""
    return int(client.publish(MODEL_EVENTS_CHANNEL, event.model_dump_json()))


def publish_report(client: redis.Redis, report: ReplicaReport, ttl_seconds: float) -> None:
    """Record a replica's state for a model (hash + TTL) and announce it on the loaded channel."""
    key = replicas_key(report.alias, report.model)
    payload = report.model_dump_json()
    pipe = client.pipeline()
    if report.status == "loaded":
        pipe.hset(key, report.replica, payload)
        pipe.expire(key, max(1, int(ttl_seconds)))
    elif report.status == "unloaded":
        pipe.hdel(key, report.replica)
    # "failed" leaves the hash alone: the replica still serves what it had before.
    pipe.publish(MODEL_LOADED_CHANNEL, payload)
    pipe.execute()


def fresh_reports(
    client: redis.Redis, alias: str, model_name: str, stale_after_seconds: float
) -> list[ReplicaReport]:
    """The reports of processes following `alias` that hold a version and beat recently."""
    now = time.time()
    reports = (
        ReplicaReport.model_validate_json(raw)
        for raw in client.hgetall(replicas_key(alias, model_name)).values()
    )
    return [r for r in reports if r.version is not None and now - r.ts <= stale_after_seconds]


def replica_versions(
    client: redis.Redis, alias: str, model_name: str, stale_after_seconds: float
) -> dict[str, str]:
    """Server id → loaded version (`merged_versions`) for servers following `alias`."""
    return merged_versions(fresh_reports(client, alias, model_name, stale_after_seconds))


def merged_versions(reports: list[ReplicaReport]) -> dict[str, str]:
    """One entry per server whose processes all report one version (keyed by the server); the
    processes one by one (keyed by their replica id) for a server mid-swap or still starting."""
    view: dict[str, str] = {}
    for server, group in _by_server(reports).items():
        version = _common_version(group)
        if version is not None:
            view[server] = version
        else:
            view.update({r.replica: r.version for r in group if r.version is not None})
    return view


def complete_servers(reports: list[ReplicaReport]) -> dict[str, str]:
    """Server id → version, for the servers every one of whose processes reports that version."""
    return {
        server: version
        for server, group in _by_server(reports).items()
        if (version := _common_version(group)) is not None
    }


def _by_server(reports: list[ReplicaReport]) -> dict[str, list[ReplicaReport]]:
    groups: dict[str, list[ReplicaReport]] = {}
    for report in reports:
        groups.setdefault(report.server or report.replica, []).append(report)
    return groups


def _common_version(group: list[ReplicaReport]) -> str | None:
    """The version all of a server's processes hold, if each of them has reported it.

    A process that died without withdrawing counts until its report goes stale, so a restarted
    process's server waits that long rather than risk counting a process that never swapped.
    """
    versions = {r.version for r in group}
    if len(versions) != 1 or len(group) < max(r.processes for r in group):
        return None
    return versions.pop()


def prune_stale_reports(
    client: redis.Redis, alias: str, model_name: str, stale_after_seconds: float
) -> list[str]:
    """Drop reports of replicas that stopped refreshing (killed, not shut down); return their ids.

    Live replicas keep the hash's TTL fresh, so without this a crashed replica's report would
    stay forever (ignored by readers, but a slow leak as replica ids change with every restart).
    """
    key = replicas_key(alias, model_name)
    now = time.time()
    stale = [
        replica
        for replica, raw in client.hgetall(key).items()
        if now - ReplicaReport.model_validate_json(raw).ts > stale_after_seconds
    ]
    if stale:
        client.hdel(key, *stale)
    return [r.decode() if isinstance(r, bytes) else r for r in stale]


class DeployWaitError(RuntimeError):
    """No replica reported the version loaded in time, or one reported it failed to load."""


def wait_until_loaded(
    client: redis.Redis,
    alias: str,
    model_name: str,
    version: str,
    *,
    timeout_seconds: float,
    stale_after_seconds: float,
    subscription: redis.client.PubSub | None = None,
    check: Callable[[], None] | None = None,
    fallback: Callable[[], str | None] | None = None,
) -> str:
    """Block until a model server serves `version` of `model_name`; return that server's id.

    A server serves it once every one of its processes reports it loaded (`complete_servers`).
    Pass a `subscription` already subscribed to MODEL_LOADED_CHANNEL *before* the alias moved, so
    that a report published in between is not missed; the hash is checked as well, which covers
    replicas that loaded the version through their periodic reconcile. A replica reporting that
    the version failed to load ends the wait at once: every replica loads the same artifact.
    `check` is called about once a second and may raise to abandon the wait (a cancel).

    Redis may fail mid-wait (or be down from the start: pass no subscription). The wait then
    polls once a second: the reports hash whenever Redis answers, and `fallback` (the replicas
    asked directly; it returns the id of one serving the version, or None) while it does not.
    Replicas follow the registry alias on their own, so the version still gets loaded.
    """
    pubsub = subscription
    owned = False
    reports: list[ReplicaReport] = []
    if pubsub is None:
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(MODEL_LOADED_CHANNEL)
            owned = True
        except redis.RedisError:
            pubsub = None
    deadline = time.monotonic() + timeout_seconds
    try:
        while True:
            if check is not None:
                check()
            try:
                reports = fresh_reports(client, alias, model_name, stale_after_seconds)
                for server, loaded in complete_servers(reports).items():
                    if loaded == version:
                        return server
            except redis.RedisError:
                found = fallback() if fallback is not None else None
                if found is not None:
                    return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeployWaitError(
                    f"no model server reported {model_name} version {version} loaded "
                    f"within {timeout_seconds:g}s{_partly_loaded(reports, version)}"
                )
            report = None
            if pubsub is not None:
                try:
                    report = _next_report(pubsub, min(remaining, 1.0))
                except redis.RedisError:
                    _close_quietly(pubsub)
                    pubsub, owned = None, False
            else:
                time.sleep(min(remaining, 1.0))
            if report is None or (report.alias, report.model, report.version) != (
                alias,
                model_name,
                version,
            ):
                continue
            # "loaded": the hash holds it already (one transaction); back to the top, which
            # tells whether the reporter's server is now complete.
            if report.status == "failed":
                raise DeployWaitError(
                    f"model server {report.replica} failed to load {model_name} version "
                    f"{version}: {report.error}"
                )
    finally:
        if owned and pubsub is not None:
            _close_quietly(pubsub)


def _partly_loaded(reports: list[ReplicaReport], version: str) -> str:
    """Which servers had `version` in only some of their processes (for the wait's error)."""
    parts = []
    for server, group in _by_server(reports).items():
        having = sum(1 for r in group if r.version == version)
        processes = max(r.processes for r in group)
        if 0 < having < processes or (having and len(group) > having):
            parts.append(f"{server} in {having} of {max(processes, len(group))} processes")
    return f" (only partly: {', '.join(parts)})" if parts else ""


def _next_report(pubsub: redis.client.PubSub, timeout: float) -> ReplicaReport | None:
    """The next replica report on the subscription within `timeout`, if one comes."""
    message = pubsub.get_message(timeout=timeout)
    if not message or message.get("type") != "message":
        return None
    return ReplicaReport.model_validate(json.loads(message["data"]))


def _close_quietly(pubsub: redis.client.PubSub) -> None:
    with contextlib.suppress(redis.RedisError, OSError):
        pubsub.close()
