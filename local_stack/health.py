"""Health checks of the stack's services and the wait until they all answer.

Each check returns None when the service answers, else a short reason; the wait fails fast
when supervisord reports a program dead, and names the service with the tail of its log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from local_stack.plan import StackPlan
from local_stack.supervisor import Supervisor

Check = Callable[[], str | None]
DEAD_STATES = {"FATAL", "EXITED", "STOPPED", "UNKNOWN"}


def http_check(url: str) -> Check:
    def check() -> str | None:
        try:
            response = httpx.get(url, timeout=2.0, trust_env=False)
        except httpx.HTTPError as exc:
            return f"GET {url}: {type(exc).__name__}"
        return None if response.is_success else f"GET {url} answered {response.status_code}"

    return check


def redis_check(url: str) -> Check:
    def check() -> str | None:
        client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        try:
            client.ping()
        except redis.RedisError as exc:
            return f"PING: {type(exc).__name__}: {exc}"
        finally:
            client.close()
        return None

    return check


def worker_check(plan: StackPlan) -> Check:
    """The worker answers a Celery control request addressed to its node name."""
    from celery import Celery

    from mlops_core.task_queue import answering_workers

    app = Celery("local-stack-health", broker=plan.redis_url)
    app.conf.broker_connection_retry_on_startup = False

    def check() -> str | None:
        try:
            replies = answering_workers(app, timeout=1.0, destination=[plan.worker_hostname])
        except Exception as exc:  # kombu raises several unrelated types when Redis is away
            return f"celery ping: {type(exc).__name__}: {exc}"
        return None if replies else f"no reply from {plan.worker_hostname}"

    return check


def checks_for(plan: StackPlan) -> dict[str, Check]:
    """program name → its health check (an external Redis is checked too, under "redis")."""
    checks = {
        "redis": redis_check(plan.redis_url),
        "mlflow": http_check(f"{plan.mlflow_url}/health"),
        "backend": http_check(f"{plan.backend_url}/health"),
        "model-server": http_check(f"{plan.model_server_url}/health"),
        "worker": worker_check(plan),
    }
    if plan.monitoring:
        checks["prometheus"] = http_check(f"{plan.prometheus_url}/-/ready")
    return checks


@dataclass
class Failure:
    name: str
    reason: str
    log_tail: str


def log_tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return "(no log yet)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def wait_healthy(
    plan: StackPlan,
    supervisor: Supervisor,
    names: list[str],
    timeout: float,
    healthy_at: dict[str, float] | None = None,
) -> list[Failure]:
    """Poll until every named program answers; return the dead or late ones (empty: all up).

    `healthy_at` receives, per program, the monotonic time it first answered.
    """
    checks = checks_for(plan)
    healthy_at = {} if healthy_at is None else healthy_at
    pending = list(names)
    reasons: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        infos = supervisor.infos()
        dead = [name for name in pending if infos.get(name, {}).get("statename") in DEAD_STATES]
        if dead:
            return [_dead(plan, name, infos[name]) for name in dead]
        for name in list(pending):
            reason = checks[name]()
            if reason is None:
                pending.remove(name)
                healthy_at[name] = time.monotonic()
            else:
                reasons[name] = reason
        if not pending:
            return []
        if time.monotonic() > deadline:
            return [
                Failure(
                    name,
                    f"no healthy answer within {timeout:.0f}s (last: {reasons.get(name)})",
                    log_tail(plan.layout.log(name)),
                )
                for name in pending
            ]
        time.sleep(0.2)


def _dead(plan: StackPlan, name: str, info: dict[str, str]) -> Failure:
    detail = info.get("spawnerr") or info.get("description", "")
    return Failure(
        name, f"the process is {info['statename']} ({detail})", log_tail(plan.layout.log(name))
    )
