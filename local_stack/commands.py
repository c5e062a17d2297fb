"""`up`, `down`, `status` and `logs` of the local stack, usable from code (the demo) and the CLI."""

from __future__ import annotations

import enum
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
from dotenv import dotenv_values

from local_stack.credentials import password_file
from local_stack.health import Failure, checks_for, wait_healthy
from local_stack.plan import (
    LOOPBACK,
    PORT_SETTINGS,
    Layout,
    StackPlan,
    build_plan,
    port_services,
    port_setting_name,
    setting_env_names,
    without_password,
)
from local_stack.ports import free_port, port_taken
from local_stack.processes import (
    kill,
    start_time,
    terminate_groups,
    wait_gone,
    with_descendants,
)
from local_stack.prometheus import prometheus_binary
from local_stack.supervisor import Supervisor, supervisord_environment, write_files
from mlops_core.database import upgrade_database
from mlops_core.mlflow_users import MlflowUsersError, ensure_user
from mlops_core.settings import Settings
from mlops_core.stack_state import StackState, read_state, write_state

Say = Callable[[str], None]

SERVICE_TITLES = {
    "redis": "Redis",
    "mlflow": "MLflow",
    "backend": "backend",
    "model-server": "model server",
    "worker-metrics": "worker metrics",
    "prometheus": "Prometheus",
}


class StackError(RuntimeError):
    """A reason the stack could not start or stop, worded for the person who ran it."""


@dataclass
class UpResult:
    plan: StackPlan
    already_up: bool
    seconds: float
    # program → seconds from the start of `up` until it first answered its health check.
    healthy_after: dict[str, float] = field(default_factory=dict)


def _failure_report(layout: Layout, failures: list[Failure]) -> str:
    parts = []
    for failure in failures:
        parts.append(
            f"{failure.name} is not healthy: {failure.reason}\n"
            f"--- last lines of {layout.log(failure.name)} ---\n{failure.log_tail}\n---"
        )
    return "\n".join(parts)


def up(
    environ: dict[str, str] | None = None,
    *,
    timeout: float = 300.0,
    say: Say = print,
    monitoring: bool = False,
) -> UpResult:
    """Start the stack (or confirm it is up) and wait until every service answers.

    A default port that is taken is replaced by a free one (the one used last time when it is
    free), and said so; a port the user chose explicitly is never replaced. The ports used are
    remembered in MLOPS_HOME (mlops_core/stack_state.py). `monitoring` adds a local Prometheus
    (Debian's `prometheus` package) scraping the stack.
    """
    started = time.monotonic()
    environ = dict(os.environ if environ is None else environ)
    settings = Settings()
    # What `.env` sets travels with the rest, so a changed `.env` is noticed by a later `up`.
    with_dotenv = dotenv_settings() | environ
    layout = Layout(settings.mlops_home.resolve())
    supervisor = Supervisor(layout)
    if supervisor.running():
        plan = _confirm_running(settings, with_dotenv, layout, supervisor, timeout, monitoring)
        return UpResult(plan, True, time.monotonic() - started)

    if monitoring and prometheus_binary() is None:
        raise StackError(
            "MONITORING=1 runs Debian's Prometheus, which is not installed: `apt-get install "
            "prometheus` (`make up MONITORING=1` installs it when root or sudo allows)."
        )
    external_redis = "redis_url" in settings.model_fields_set
    last = read_state(layout.home)
    remembered = last.ports if last is not None else {}
    ports = choose_ports(
        settings, external_redis, say, remembered=remembered, monitoring=monitoring
    )
    plan = build_plan(settings, with_dotenv, ports=ports, monitoring=monitoring)
    if plan.external_redis and (reason := checks_for(plan)["redis"]()) is not None:
        raise StackError(f"REDIS_URL is set but that Redis does not answer ({reason}).")
    write_files(plan)
    upgrade_database(plan.platform_env["DATABASE_URL"])
    supervisor.start_daemon(supervisord_environment(environ, setting_env_names(settings)))
    healthy_at: dict[str, float] = {}
    try:
        for phase in (1, 2):
            names = [p.name for p in plan.programs if p.phase == phase]
            for name in names:
                supervisor.start(name)
            remaining = max(1.0, timeout - (time.monotonic() - started))
            failures = wait_healthy(plan, supervisor, names, remaining, healthy_at)
            if failures:
                raise StackError(_failure_report(layout, failures) + "\nThe stack was stopped.")
        _model_server_mlflow_user(plan)
    except BaseException:
        _stop(supervisor)
        raise
    _write_state(plan, supervisor)
    timings = {name: at - started for name, at in healthy_at.items()}
    return UpResult(plan, False, time.monotonic() - started, timings)


def dotenv_settings(path: Path = Path(".env")) -> dict[str, str]:
    """The variables a `.env` in the current folder sets (as Settings reads it)."""
    if not path.is_file():
        return {}
    return {key: value for key, value in dotenv_values(path).items() if value is not None}


def choose_ports(
    settings: Settings,
    external_redis: bool,
    say: Say,
    *,
    remembered: dict[str, int] | None = None,
    monitoring: bool = False,
) -> dict[str, int]:
    """service → port: the settings' ports, with each taken default one moved (and said so).

    A moved port goes back to the one `remembered` from the last `up` when that is free, so the
    stack keeps its addresses across restarts. A port set explicitly (environment or `.env`)
    never moves: taken, it stops the start with a message naming its variable.
    """
    remembered = remembered or {}
    ports = {
        svc: int(getattr(settings, PORT_SETTINGS[svc]))
        for svc in port_services(monitoring=monitoring)
    }
    services = [svc for svc in ports if not (svc == "redis" and external_redis)]
    problems: list[str] = []
    seen: dict[int, str] = {}
    for svc in services:
        port, setting = ports[svc], port_setting_name(svc)
        if port in seen:
            problems.append(
                f"{setting} and {port_setting_name(seen[port])} are both {port}: "
                "give each service its own port."
            )
            continue
        seen[port] = svc
        if not port_taken(port):
            continue
        if PORT_SETTINGS[svc] not in settings.model_fields_set:
            last = remembered.get(svc)
            if last is not None and last not in seen and not port_taken(last):
                ports[svc], again = last, " (as last time)"
            else:
                ports[svc], again = free_port(), ""
            seen[ports[svc]] = svc
            say(
                f"port {port} ({setting}) is taken: {SERVICE_TITLES[svc]} uses "
                f"{ports[svc]}{again}; set {setting} to choose its port"
            )
            continue
        hint = f"choose a free one (e.g. `{setting}={port + 1} make up`) or unset {setting}"
        hint += " to let the stack pick one"
        if svc == "redis":
            hint += ", or set REDIS_URL to use a Redis that is already running"
        problems.append(
            f"port {port} for {SERVICE_TITLES[svc]} is already in use by another process, "
            f"and {setting}={port} is set (environment or .env), so it does not move: {hint}."
        )
    if problems:
        raise StackError("cannot start the stack:\n  " + "\n  ".join(problems))
    return ports


def _confirm_running(
    settings: Settings,
    environ: dict[str, str],
    layout: Layout,
    supervisor: Supervisor,
    timeout: float,
    monitoring: bool,
) -> StackPlan:
    """The stack is up: check it runs with the settings asked for now, and is healthy."""
    state = read_state(layout.home) or StackState(ports={})
    if monitoring != state.monitoring:
        now = "with" if state.monitoring else "without"
        raise StackError(
            f"the stack in {layout.home} is already up {now} monitoring (MONITORING=1): "
            "run `make down` first to change that."
        )
    recorded = state.ports
    ports = {
        svc: recorded[svc]
        for svc, name in PORT_SETTINGS.items()
        if svc in recorded and name not in settings.model_fields_set
    }
    plan = build_plan(settings, environ, ports=ports, monitoring=monitoring)
    current = json.loads(layout.platform_env.read_text()) if layout.platform_env.exists() else {}
    # Settings asked for now must match; ones the running stack has beyond them (ALLOW_LOCAL_REPOS
    # from `make demo`, say) do not make a plain `make up` fail.
    changed = sorted(key for key, value in plan.platform_env.items() if current.get(key) != value)
    if changed:
        raise StackError(
            f"the stack in {layout.home} is already up with other settings "
            f"({', '.join(changed)}): run `make down` first to apply them."
        )
    infos = supervisor.infos()
    for program in plan.programs:
        if infos.get(program.name, {}).get("statename") != "RUNNING":
            supervisor.start(program.name)
    failures = wait_healthy(plan, supervisor, [p.name for p in plan.programs], timeout)
    if failures:
        raise StackError(
            f"the stack in {layout.home} is up, but:\n{_failure_report(layout, failures)}\n"
            "(`make down` stops it; `make logs` follows the logs)"
        )
    _model_server_mlflow_user(plan)
    _write_state(plan, supervisor)
    return plan


def _model_server_mlflow_user(plan: StackPlan) -> None:
    """Give model servers their read-only MLflow user once MLflow answers.

    MLflow's basic-auth app creates only its admin, on its first start; model servers retry
    their first sync until this user exists (a second or so).
    """
    admin = plan.platform_env
    model_server = plan.model_server_env
    try:
        ensure_user(
            plan.mlflow_url,
            (admin["MLFLOW_TRACKING_USERNAME"], admin["MLFLOW_TRACKING_PASSWORD"]),
            model_server["MLFLOW_TRACKING_USERNAME"],
            model_server["MLFLOW_TRACKING_PASSWORD"],
        )
    except (MlflowUsersError, httpx.HTTPError) as exc:
        raise StackError(
            f"{exc}.\nMLflow keeps its users in {plan.layout.mlflow_auth_db} and the stack its "
            f"passwords in {plan.layout.secrets}: if one was deleted without the other, delete "
            f"{plan.layout.mlflow_auth_db.name} too (runs and models are kept) and `make up` again."
        ) from exc


def _write_state(plan: StackPlan, supervisor: Supervisor) -> None:
    """Ports actually used, so a later `up` or `status` finds the same stack; and the programs'
    pids, so `down` can still stop them if supervisord itself was killed."""
    programs = {
        name: (info["pid"], start_time(info["pid"]))
        for name, info in supervisor.infos().items()
        if info["pid"]
    }
    state = StackState(plan.ports, plan.external_redis, plan.monitoring, programs)
    write_state(plan.layout.home, state)


def _orphans(layout: Layout) -> dict[str, int]:
    """Programs recorded at `up` that still run (same pid, same start time) without supervisord."""
    state = read_state(layout.home)
    programs = state.programs if state is not None else {}
    return {
        name: pid
        for name, (pid, started) in programs.items()
        if started is not None and start_time(pid) == started
    }


def stack_pids(supervisor: Supervisor) -> set[int]:
    """supervisord and every process below it."""
    roots = [info["pid"] for info in supervisor.infos().values() if info["pid"]]
    pid = supervisor.supervisord_pid()
    return with_descendants([*roots, *([pid] if pid else [])])


def _stop(supervisor: Supervisor, timeout: float = 60.0) -> set[int]:
    """Shut supervisord down; SIGKILL any process of the stack still alive after `timeout`."""
    pids = stack_pids(supervisor)
    supervisor.shutdown()
    left = wait_gone(pids, timeout)
    if left:
        kill(left)
        left = wait_gone(left, 5.0)
    return left


def down(say: Say = print) -> bool:
    """Stop exactly the processes this home's stack started; False when it was not running."""
    layout = Layout(Settings().mlops_home.resolve())
    supervisor = Supervisor(layout)
    if not supervisor.running():
        orphans = _orphans(layout)
        if not orphans:
            say(f"the stack in {layout.home} is not running")
            return False
        say(f"supervisord is gone; stopping what it had started: {', '.join(sorted(orphans))}")
        left = terminate_groups(with_descendants(orphans.values()), 20.0)
        if left:
            raise StackError(f"processes still alive after SIGKILL: {sorted(left)}")
        state = read_state(layout.home)
        if state is not None:  # keep its ports for the next `up`
            write_state(layout.home, replace(state, programs={}))
        return True
    names = sorted(supervisor.infos())
    left = _stop(supervisor)
    if left:
        raise StackError(f"processes still alive after SIGKILL: {sorted(left)}")
    say(f"stopped {', '.join(names)} and supervisord ({layout.home})")
    return True


def describe(plan: StackPlan, infos: dict[str, dict[str, object]] | None = None) -> str:
    """The services' addresses, one line each (with supervisord's state when given)."""

    def state(name: str) -> str:
        if infos is None:
            return ""
        return f"  [{infos.get(name, {}).get('statename', 'external')}]"

    home = plan.layout.home
    redis_note = (
        " (external, REDIS_URL)"
        if plan.external_redis
        else f"  (password: {password_file(home, 'redis-platform')})"
    )
    worker_metrics = (
        f", metrics http://{LOOPBACK}:{plan.worker_metrics_port}/metrics"
        if plan.worker_metrics_port
        else ""
    )
    lines = [
        f"  backend       {plan.backend_url}  (API docs {plan.backend_url}/docs){state('backend')}",
        f"  model server  {plan.model_server_url}{state('model-server')}",
        f"  MLflow        {plan.mlflow_url}  (user {plan.platform_env['MLFLOW_TRACKING_USERNAME']},"
        f" password: {password_file(home, 'mlflow-admin')}){state('mlflow')}",
        f"  Redis         {without_password(plan.redis_url)}{redis_note}{state('redis')}",
        f"  worker        {plan.worker_hostname}, queue pipelines, "
        f"concurrency {plan.worker_concurrency}{worker_metrics}{state('worker')}",
    ]
    if plan.monitoring:
        lines.append(
            f"  Prometheus    {plan.prometheus_url}  (alerts {plan.prometheus_url}/alerts)"
            f"{state('prometheus')}"
        )
    lines.append(f"  data          {plan.layout.home}  (logs: make logs)")
    return "\n".join(lines)


class StackStatus(enum.Enum):
    UP = "up"
    # Nothing of the stack runs: a normal state, not an error.
    DOWN = "down"
    # Some of it runs and some does not: a program died, or supervisord did.
    BROKEN = "broken"


# supervisord's states of a program that is, or is about to be, running.
LIVE_STATES = frozenset({"RUNNING", "STARTING"})


def status(say: Say = print) -> StackStatus:
    """Print the services, their addresses and states; tell up, down and broken apart."""
    settings = Settings()
    layout = Layout(settings.mlops_home.resolve())
    supervisor = Supervisor(layout)
    if not supervisor.running():
        orphans = _orphans(layout)
        if orphans:
            say(
                f"the stack in {layout.home} is broken: supervisord is gone but "
                f"{', '.join(sorted(orphans))} still run (`make down` stops them)"
            )
            return StackStatus.BROKEN
        say(f"the stack in {layout.home} is not running (make up)")
        return StackStatus.DOWN
    state = read_state(layout.home)
    plan = build_plan(
        settings,
        dotenv_settings() | dict(os.environ),
        ports=state.ports if state is not None else None,
        monitoring=state.monitoring if state is not None else False,
    )
    infos = supervisor.infos()
    stopped = sorted(
        name
        for name in (p.name for p in plan.programs)
        if infos.get(name, {}).get("statename") not in LIVE_STATES
    )
    if len(stopped) == len(plan.programs):
        say(
            f"the stack in {layout.home} is not running: supervisord is up but none of its "
            "services (make up starts them, make down stops supervisord)"
        )
        return StackStatus.DOWN
    if stopped:
        say(
            f"the stack in {layout.home} is broken: {', '.join(stopped)} not running "
            f"(`make logs` shows why; `make down` then `make up` restarts it):\n"
            f"{describe(plan, infos)}"
        )
        return StackStatus.BROKEN
    say(f"the stack in {layout.home} is running:\n{describe(plan, infos)}")
    return StackStatus.UP


def log_files(names: list[str] | None = None) -> list[str]:
    """The stack's log files (all, or those of the named programs)."""
    layout = Layout(Settings().mlops_home.resolve())
    if names:
        return [str(layout.log(name)) for name in names]
    return sorted(str(path) for path in layout.logs.glob("*.log"))
