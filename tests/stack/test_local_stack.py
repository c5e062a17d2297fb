"""The local stack (`make up` / `make down`) run for real on free ports in a temporary home.

One expensive test carries the whole life cycle (with the backend's default port taken, as
`make demo` and `make up` both meet it); the port checks are cheap.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from celery import Celery

from local_stack.__main__ import BROKEN_EXIT
from local_stack.commands import StackError, choose_ports, stack_pids
from local_stack.plan import VENV_BIN, Layout
from local_stack.ports import free_port, port_taken
from local_stack.processes import alive
from local_stack.supervisor import Supervisor
from mlops_core.settings import Settings
from mlops_core.stack_state import remembered_api_url
from tests.support.processes import wait_for

SECRET = "webhook-secret-" + os.urandom(8).hex()
PORT_NAMES = (
    "BACKEND_PORT",
    "MODEL_SERVER_PORT",
    "MLFLOW_PORT",
    "REDIS_PORT",
    "WORKER_METRICS_PORT",
)


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment without platform settings, plus free ports and a temp home."""
    settings = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings}
    env.update({name: str(free_port()) for name in PORT_NAMES})
    env["MLOPS_HOME"] = str(tmp_path / "home")
    env["GITHUB_WEBHOOK_SECRET"] = SECRET
    return env


def stack(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Run outside the checkout, so a developer's .env cannot move the test's ports or home.
    return subprocess.run(
        [sys.executable, "-m", "local_stack", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )


DEFAULT_BACKEND_PORT = Settings.model_fields["backend_port"].default


@pytest.fixture
def default_backend_port_taken() -> Iterator[int]:
    """The backend's default port, held by the test (or by another process already)."""
    with socket.socket() as squatter:
        try:
            squatter.bind(("127.0.0.1", DEFAULT_BACKEND_PORT))
            squatter.listen()
        except OSError:
            pass  # someone else's: taken all the same, if it answers on 127.0.0.1
        if not port_taken(DEFAULT_BACKEND_PORT):
            pytest.skip(f"port {DEFAULT_BACKEND_PORT} is held where 127.0.0.1 cannot see it")
        yield DEFAULT_BACKEND_PORT


@pytest.fixture
def running_stack(
    stack_env: dict[str, str], tmp_path: Path, default_backend_port_taken: int
) -> Iterator[dict[str, str]]:
    """`make up` with every port chosen but the backend's, whose default port is taken."""
    del stack_env["BACKEND_PORT"]
    result = stack(stack_env, tmp_path, "up")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        moved = re.search(
            rf"port {default_backend_port_taken} \(BACKEND_PORT\) is taken: backend uses (\d+)",
            result.stdout,
        )
        assert moved, result.stdout
        stack_env["BACKEND_PORT"] = moved[1]
        stack_env["_up_output"] = result.stdout
        yield stack_env
    finally:
        if Supervisor(Layout(Path(stack_env["MLOPS_HOME"]))).running():
            stack(stack_env, tmp_path, "down")


# Five real services start from cold (MLflow migrates a fresh store): minutes on a busy machine.
@pytest.mark.timeout(600)
def test_up_answers_on_every_port_keeps_secrets_out_of_argv_and_down_leaves_nothing(
    running_stack: dict[str, str], tmp_path: Path
) -> None:
    env = running_stack
    port = {name: int(env[name]) for name in PORT_NAMES}
    home = Path(env["MLOPS_HOME"])
    # The backend moved off its taken default port; the stack remembers where, for the CLI.
    backend_url = f"http://127.0.0.1:{port['BACKEND_PORT']}"
    assert remembered_api_url(home) == backend_url

    # Every service answers on the port it was given, and `up` printed where.
    secrets = {path.name: path.read_text().strip() for path in (home / "secrets").iterdir()}
    redis_password = secrets["redis-platform.password"]
    with pytest.raises(redis.AuthenticationError):  # NOAUTH: Redis wants the generated password
        redis.Redis(port=port["REDIS_PORT"]).ping()
    assert redis.Redis(port=port["REDIS_PORT"], password=redis_password).ping()
    for name in ("MLFLOW_PORT", "BACKEND_PORT", "MODEL_SERVER_PORT"):
        url = f"http://127.0.0.1:{port[name]}/health"
        assert httpx.get(url, timeout=5, trust_env=False).is_success, url
        assert f"http://127.0.0.1:{port[name]}" in env["_up_output"]
    celery = Celery(broker=f"redis://:{redis_password}@127.0.0.1:{port['REDIS_PORT']}/0")
    assert celery.control.ping(timeout=5.0), "no Celery worker answered"
    worker_metrics = f"http://127.0.0.1:{port['WORKER_METRICS_PORT']}/metrics"
    assert worker_metrics in env["_up_output"]
    scrape = httpx.get(worker_metrics, timeout=5, trust_env=False)
    assert "mlops_pipelines_finished_total" in scrape.text, scrape.text
    # MLflow runs its basic-auth app: the API wants the generated admin password.
    mlflow = f"http://127.0.0.1:{port['MLFLOW_PORT']}"
    search = f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(search, trust_env=False, timeout=10).status_code == 401
    admin = ("admin", secrets["mlflow-admin.password"])
    assert httpx.get(search, auth=admin, trust_env=False, timeout=10).status_code == 200
    # The model server signs in with its own users and finishes its first registry sync.
    model_server = f"http://127.0.0.1:{port['MODEL_SERVER_PORT']}"
    wait_for(lambda: httpx.get(f"{model_server}/ready", trust_env=False).is_success, 120)
    # The schema was migrated before the backend and the worker started.
    with sqlite3.connect(home / "mlops.db") as db:
        assert db.execute("select version_num from alembic_version").fetchone()

    # The logs say what happened, once, at its level: no banner, no access log of MLflow's
    # internal traffic, no warning about choices the stack makes on purpose.
    logs = {log.stem: log.read_text() for log in (home / "logs").glob("*.log")}
    assert "[tasks]" not in logs["worker"] and " ready." in logs["worker"]
    assert "Uvicorn running" in logs["mlflow"]
    assert "GET /health" not in logs["mlflow"] and "experimental" not in logs["mlflow"]
    assert "Registry store URI not provided" not in logs["mlflow"]
    assert " CRIT " not in logs["supervisord"]

    supervisor = Supervisor(Layout(home))
    pids = stack_pids(supervisor)
    key = secrets["encryption.key"]
    passwords = [v for k, v in secrets.items() if k.endswith((".password", ".key"))]
    assert len(passwords) == 7
    for path in (home / "secrets").iterdir():
        assert path.stat().st_mode & 0o077 == 0, path
    # No secret in any command line, supervisord's environment and config, logs or answers.
    supervisord_env = Path(f"/proc/{supervisor.supervisord_pid()}/environ").read_bytes()
    shown = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids]
    shown += [supervisord_env, (home / "run" / "supervisord.conf").read_bytes()]
    shown += [log.read_bytes() for log in (home / "logs").glob("*.log")]
    shown += [env["_up_output"].encode(), stack(env, tmp_path, "status").stdout.encode()]
    ready = f"http://127.0.0.1:{port['BACKEND_PORT']}/ready"
    shown.append(httpx.get(ready, trust_env=False, timeout=10).content)
    for secret in [SECRET, *passwords]:
        assert not any(secret.encode() in text for text in shown)
    backend_pid = supervisor.infos()["backend"]["pid"]
    backend_env = Path(f"/proc/{backend_pid}/environ").read_bytes().split(b"\0")
    assert f"GITHUB_WEBHOOK_SECRET={SECRET}".encode() in backend_env
    assert f"ENCRYPTION_KEY={key}".encode() in backend_env
    assert f"MLFLOW_TRACKING_PASSWORD={admin[1]}".encode() in backend_env
    model_server_pid = supervisor.infos()["model-server"]["pid"]
    model_server_env = Path(f"/proc/{model_server_pid}/environ").read_bytes()
    assert b"MLFLOW_TRACKING_USERNAME=modelserver" in model_server_env
    assert b"REDIS_URL=redis://modelserver:" in model_server_env
    assert admin[1].encode() not in model_server_env
    assert redis_password.encode() not in model_server_env

    # A later `make up` (its default port still taken) and `make status` find the same stack.
    no_backend_port = {k: v for k, v in env.items() if k != "BACKEND_PORT"}
    again = stack(no_backend_port, tmp_path, "up")
    assert again.returncode == 0 and "already up" in again.stdout, again.stdout + again.stderr
    assert backend_url in again.stdout
    kept = {path.name: path.read_text().strip() for path in (home / "secrets").iterdir()}
    assert kept == secrets
    running = stack(no_backend_port, tmp_path, "status")
    assert running.returncode == 0 and "is running" in running.stdout, running.stderr
    assert f"{backend_url}  (API docs" in running.stdout

    # One service stopped while the rest runs: a broken stack, named, with its own exit code.
    supervisorctl = [
        str(VENV_BIN / "supervisorctl"),
        "-c",
        str(home / "secrets" / "supervisorctl.conf"),
    ]
    subprocess.run([*supervisorctl, "stop", "model-server"], check=True, capture_output=True)
    broken = stack(no_backend_port, tmp_path, "status")
    assert broken.returncode == BROKEN_EXIT, broken.stdout + broken.stderr
    assert "is broken: model-server not running" in broken.stdout

    down = stack(env, tmp_path, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert [pid for pid in pids if alive(pid)] == []
    assert [name for name, p in port.items() if port_taken(p)] == []
    # Simply down is no error; the ports stay remembered for the next `up`.
    stopped = stack(no_backend_port, tmp_path, "status")
    assert stopped.returncode == 0 and "is not running" in stopped.stdout, stopped.stderr
    assert remembered_api_url(home) == backend_url


@pytest.mark.parametrize("set_in", ["environment", ".env"])
def test_a_taken_explicit_port_is_named_with_its_setting_and_nothing_starts(
    stack_env: dict[str, str], tmp_path: Path, set_in: str
) -> None:
    """A port the user chose never moves, whether exported or written in `.env`."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        env = {k: v for k, v in stack_env.items() if k != "MLFLOW_PORT"}
        if set_in == ".env":
            (tmp_path / ".env").write_text(f"MLFLOW_PORT={taken}\n")
        else:
            env["MLFLOW_PORT"] = str(taken)
        result = stack(env, tmp_path, "up")
    assert result.returncode == 1
    assert f"port {taken} for MLflow is already in use" in result.stderr
    assert f"MLFLOW_PORT={taken} is set (environment or .env), so it does not move" in (
        result.stderr
    )
    assert not Layout(Path(stack_env["MLOPS_HOME"])).supervisor_pid.exists()


def test_a_taken_default_port_moves_back_to_the_last_one_and_says_so(tmp_path: Path) -> None:
    with socket.socket() as squatter, socket.socket() as other:
        for sock in (squatter, other):
            sock.bind(("127.0.0.1", 0))
            sock.listen()
        taken, also_taken = squatter.getsockname()[1], other.getsockname()[1]
        ports = {
            "backend_port": taken,
            "model_server_port": free_port(),
            "mlflow_port": free_port(),
            "redis_port": free_port(),
            "worker_metrics_port": 0,  # off: no port to check
        }
        defaults = Settings.model_construct(_fields_set=set(), mlops_home=tmp_path, **ports)
        said: list[str] = []
        chosen = choose_ports(defaults, False, said.append)
        assert chosen["backend"] != taken and not port_taken(chosen["backend"])
        assert chosen["worker-metrics"] == 0
        assert said == [
            f"port {taken} (BACKEND_PORT) is taken: backend uses {chosen['backend']}; "
            "set BACKEND_PORT to choose its port"
        ]

        # The port the last `up` moved to is taken again when free, else another free one.
        last = free_port()
        again = choose_ports(defaults, False, said.append, remembered={"backend": last})
        assert again["backend"] == last
        assert f"backend uses {last} (as last time)" in said[-1]
        elsewhere = choose_ports(defaults, False, said.append, remembered={"backend": also_taken})
        assert elsewhere["backend"] not in (taken, also_taken)

        chosen_by_user = defaults.model_copy(update={"backend_port": taken})  # explicit now
        with pytest.raises(StackError, match=f"BACKEND_PORT={taken} is set .* does not move"):
            choose_ports(chosen_by_user, False, said.append, remembered={"backend": last})


@pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="needs Debian's prometheus package (make test installs it)",
)
@pytest.mark.timeout(600)
def test_up_with_monitoring_runs_a_prometheus_that_scrapes_the_stack(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**stack_env, "PROMETHEUS_PORT": str(free_port()), "METRICS_TOKEN": "metrics-4242"}
    result = stack(env, tmp_path, "up", "--monitoring")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        prometheus = f"http://127.0.0.1:{env['PROMETHEUS_PORT']}"
        assert prometheus in result.stdout

        def scraped_jobs() -> set[str]:
            answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": "up == 1"})
            return {series["metric"]["job"] for series in answer.json()["data"]["result"]}

        # The shipped jobs, each with the token (every service refuses a scrape without it).
        wait_for(lambda: scraped_jobs() == {"backend", "model-server", "worker"}, 90, 0.5)
        rules = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
        assert {rule["name"] for group in rules for rule in group["rules"]} >= {
            "WorkerDown",
            "PipelineFailuresHigh",
            "PipelineQueueBacklog",
        }
        token = Path(env["MLOPS_HOME"]) / "secrets" / "metrics-token"
        assert token.stat().st_mode & 0o077 == 0

        # Monitoring is chosen at the first `up`: a later one without it says how to change.
        again = stack(env, tmp_path, "up")
        assert again.returncode == 1 and "make down" in again.stderr, again.stderr
    finally:
        stack(env, tmp_path, "down")
    assert not port_taken(int(env["PROMETHEUS_PORT"]))
