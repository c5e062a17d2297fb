"""Redis and MLflow ask for credentials, and `make up` generates, keeps and hides them.

The session's Redis and MLflow (tests/conftest.py) run with the stack's ACL users and MLflow's
basic-auth app, so every test of the suite signs in; here are the refusals, the model servers'
restricted users, and the plan's handling of the generated passwords.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import mlflow
import mlflow.sklearn
import pytest
import redis
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.linear_model import LogisticRegression
from werkzeug.security import generate_password_hash

from backend.app import create_app
from local_stack.commands import describe
from local_stack.credentials import MLFLOW_ADMIN_USER, stack_secrets
from local_stack.plan import StackPlan, build_plan, without_password
from local_stack.supervisor import render_config, write_files
from mlops_core.launch_commands import MODEL_SERVER_APP, uvicorn_command
from mlops_core.log_events import LOG_CHANNEL_PREFIX
from mlops_core.mlflow_users import MODEL_SERVER_MLFLOW_USER, MlflowUsersError, ensure_user
from mlops_core.model_events import (
    MODEL_EVENTS_CHANNEL,
    MODEL_LOADED_CHANNEL,
    ModelEvent,
    ReplicaReport,
    announce,
    publish_report,
    replica_versions,
    replicas_key,
    wait_until_loaded,
)
from mlops_core.model_registry import set_served_version
from mlops_core.settings import Settings
from mlops_core.task_queue import CANCEL_CHANNEL, PIPELINE_QUEUE
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.processes import ManagedProcess, free_port, wait_http
from tests.support.services import MlflowServer, RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
SEARCH_EXPERIMENTS = "/api/2.0/mlflow/experiments/search?max_results=1"


# --- Redis -----------------------------------------------------------------------------------


def test_redis_refuses_a_client_without_credentials(redis_server: RedisServer) -> None:
    with pytest.raises(redis.AuthenticationError, match="Authentication required"):  # NOAUTH
        redis.Redis(port=redis_server.port).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=redis_server.port, password="not-the-password").ping()
    assert redis.Redis.from_url(redis_server.url).ping()


def test_the_model_servers_redis_user_reaches_model_events_and_nothing_else(
    redis_server: RedisServer,
) -> None:
    alias, model = f"auth{uuid.uuid4().hex[:8]}", "iris"
    server = redis.Redis.from_url(redis_server.model_server_url)
    platform = redis.Redis.from_url(redis_server.url)
    subscription = server.pubsub(ignore_subscribe_messages=True)
    subscription.subscribe(MODEL_EVENTS_CHANNEL)
    try:
        # What model servers do (model_server/registry_sync.py), all through this user.
        report = ReplicaReport(replica="r1", alias=alias, model=model, version="3", status="loaded")
        publish_report(server, report, ttl_seconds=30)
        assert replica_versions(server, alias, model, 30) == {"r1": "3"}
        announce(platform, ModelEvent(action="deploy", model=model, version="3", alias=alias))
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            message = subscription.get_message(timeout=1)
        assert (
            message is not None and ModelEvent.model_validate_json(message["data"]).alias == alias
        )

        # The queue, pipeline logs and cancels are the platform's alone.
        refused = [
            lambda: server.get("celery"),
            lambda: server.lpush(PIPELINE_QUEUE, "{}"),
            lambda: server.publish(CANCEL_CHANNEL, "1"),
            lambda: server.hset("mlops:other", "k", "v"),
            lambda: server.keys("*"),
            lambda: server.flushall(),
            lambda: server.config_get("requirepass"),
            lambda: server.execute_command("ACL", "LIST"),
        ]
        for call in refused:
            with pytest.raises(redis.exceptions.NoPermissionError):
                call()
        logs = server.pubsub()
        logs.subscribe(f"{LOG_CHANNEL_PREFIX}1")  # a pipeline's live log
        with pytest.raises(redis.exceptions.NoPermissionError):
            logs.get_message(timeout=2)  # the refusal arrives as the subscription's answer
        logs.close()
    finally:
        subscription.close()
        platform.delete(replicas_key(alias, model))
        server.close()
        platform.close()


def test_ready_names_a_refused_redis_password_without_showing_it(
    redis_server: RedisServer, database_url: str, tmp_path: Path
) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    redis_url = redis_server.url.replace(redis_server.password, wrong)
    dead = f"http://127.0.0.1:{free_port()}"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        redis_url=redis_url,
        mlops_home=tmp_path,
        encryption_key=TEST_ENCRYPTION_KEY,
        mlflow_tracking_uri=dead,
        model_server_url=dead,
    )
    with TestClient(create_app(settings)) as client:
        response = client.get("/ready")
    assert response.status_code == 503
    assert "redis" in response.json()["down"]
    assert "AuthenticationError" in response.json()["checks"]["redis"]
    assert wrong not in response.text and redis_server.password not in response.text


# --- MLflow ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_mlflow(mlflow_server: MlflowServer) -> MlflowServer:
    """The session's MLflow, which runs MLflow's basic-auth app."""
    assert mlflow_server.admin is not None
    return mlflow_server


@pytest.fixture(scope="module")
def model_server_password(auth_mlflow: MlflowServer) -> str:
    """The model servers' MLflow user, as `make up` and compose's mlflow-users provision it."""
    assert auth_mlflow.admin is not None
    password = uuid.uuid4().hex
    ensure_user(auth_mlflow.uri, auth_mlflow.admin, MODEL_SERVER_MLFLOW_USER, password)
    return password


@contextmanager
def signed_in(server: MlflowServer, user: str, password: str) -> Iterator[MlflowClient]:
    """This process's MLflow client (fluent API included) signed in to `server` as `user`."""
    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    saved = {
        name: os.environ.get(name)
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    }
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user, password
    mlflow.set_tracking_uri(server.uri)
    mlflow.set_registry_uri(server.uri)
    try:
        yield MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def register_iris(server: MlflowServer, name: str) -> str:
    """Log and register a small classifier as the platform (the admin) does; its version."""
    from sklearn.datasets import load_iris

    assert server.admin is not None
    x, y = load_iris(return_X_y=True)
    with signed_in(server, *server.admin), mlflow.start_run():
        info = mlflow.sklearn.log_model(
            LogisticRegression(max_iter=300).fit(x, y),
            name="model",
            pip_requirements=["scikit-learn"],
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        )
        return str(mlflow.register_model(info.model_uri, name).version)


def test_mlflow_refuses_an_api_call_without_credentials_and_keeps_health_open(
    auth_mlflow: MlflowServer,
) -> None:
    assert auth_mlflow.admin is not None
    with httpx.Client(base_url=auth_mlflow.uri, trust_env=False, timeout=10) as http:
        assert http.get(SEARCH_EXPERIMENTS).status_code == 401
        assert http.get(SEARCH_EXPERIMENTS, auth=(MLFLOW_ADMIN_USER, "wrong")).status_code == 401
        assert http.get(SEARCH_EXPERIMENTS, auth=auth_mlflow.admin).status_code == 200
        # The stack's health checks and the backend's /ready probe it without credentials.
        assert http.get("/health").status_code == 200


def test_mlflow_checks_a_password_once_yet_refuses_wrong_changed_and_deleted_ones(
    auth_mlflow: MlflowServer,
) -> None:
    """The platform's sign-in check (mlops_core/mlflow_basic_auth.py) remembers a verified
    password, so a signed-in call skips the scrypt check that each refused one still pays; any
    change of the stored password, even behind MLflow's back (as another worker or replica would
    make it), ends the old password at the next call."""
    admin = auth_mlflow.admin
    assert admin is not None
    user, first, second = f"auth-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex, uuid.uuid4().hex
    assert ensure_user(auth_mlflow.uri, admin, user, first) == "created"
    with httpx.Client(base_url=auth_mlflow.uri, trust_env=False, timeout=30) as http:

        def call(username: str, password: str) -> tuple[int, float]:
            """A signed-in search: its HTTP status and how long it took (s)."""
            started = time.perf_counter()
            status = http.get(SEARCH_EXPERIMENTS, auth=(username, password)).status_code
            return status, time.perf_counter() - started

        # Interleaved, so both see the same load on the machine.
        signed_in_times, refused_times = [], []
        for _ in range(8):
            status, took = call(user, first)
            assert status == 200
            signed_in_times.append(took)
            status, took = call(user, f"wrong-{first}")
            assert status == 401
            refused_times.append(took)
        assert statistics.median(signed_in_times) < statistics.median(refused_times) / 2
        assert call(f"nobody-{user}", first)[0] == 401

        # Through MLflow's API: the old password is refused at once, the new one signs in.
        assert ensure_user(auth_mlflow.uri, admin, user, second) == "password set"
        assert call(user, first)[0] == 401
        assert call(user, second)[0] == 200

        # Straight into MLflow's user store: refused at once too, with no TTL to wait for.
        with closing(sqlite3.connect(auth_mlflow.auth_database)) as store, store:  # commits
            store.execute(
                "UPDATE users SET password_hash = ? WHERE username = ?",
                (generate_password_hash(first), user),
            )
        assert call(user, second)[0] == 401
        assert call(user, first)[0] == 200

        deleted = http.request(
            "DELETE", "/api/2.0/mlflow/users/delete", json={"username": user}, auth=admin
        )
        assert deleted.is_success, deleted.text
        assert call(user, first)[0] == 401


def test_model_servers_mlflow_user_is_kept_in_step_and_reads_without_changing(
    auth_mlflow: MlflowServer, model_server_password: str
) -> None:
    admin = auth_mlflow.admin
    assert admin is not None
    user = MODEL_SERVER_MLFLOW_USER
    assert ensure_user(auth_mlflow.uri, admin, user, model_server_password) == "unchanged"
    renewed = uuid.uuid4().hex
    assert ensure_user(auth_mlflow.uri, admin, user, renewed) == "password set"
    assert ensure_user(auth_mlflow.uri, admin, user, model_server_password) == "password set"
    with pytest.raises(MlflowUsersError, match="refuses the admin user"):
        ensure_user(auth_mlflow.uri, (admin[0], "not-the-admin-password"), "someone", renewed)

    name = f"auth-iris-{uuid.uuid4().hex[:8]}"
    version = register_iris(auth_mlflow, name)
    with signed_in(auth_mlflow, user, model_server_password) as reader:
        assert reader.get_model_version(name, version).status == "READY"
        with pytest.raises(MlflowException, match="403"):
            reader.set_registered_model_alias(name, "production", version)
        with pytest.raises(MlflowException, match="403"):
            reader.delete_registered_model(name)


@pytest.mark.timeout(600)
def test_a_model_server_serves_with_its_restricted_redis_and_mlflow_users(
    auth_mlflow: MlflowServer,
    model_server_password: str,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """A deploy end to end while the model server holds only its own, restricted credentials."""
    assert auth_mlflow.admin is not None
    name, alias = f"auth-served-{uuid.uuid4().hex[:8]}", f"auth{uuid.uuid4().hex[:8]}"
    version = register_iris(auth_mlflow, name)
    port = free_port()
    server = ManagedProcess(
        uvicorn_command(MODEL_SERVER_APP, port, log_level="warning"),
        env={
            "REDIS_URL": redis_server.model_server_url,
            "MLFLOW_TRACKING_URI": auth_mlflow.uri,
            "MLFLOW_TRACKING_USERNAME": MODEL_SERVER_MLFLOW_USER,
            "MLFLOW_TRACKING_PASSWORD": model_server_password,
            "SERVING_ALIAS": alias,
            "MODEL_SERVER_REPLICA_ID": "restricted",
            "MODEL_HEARTBEAT_INTERVAL_SECONDS": "1",
            "MLOPS_HOME": str(tmp_path / "home"),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        },
        log_path=tmp_path / "model-server.log",
        cwd=REPO_ROOT,
    )
    platform = redis.Redis.from_url(redis_server.url)
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", timeout=300, process=server)
        subscription = platform.pubsub(ignore_subscribe_messages=True)
        subscription.subscribe(MODEL_LOADED_CHANNEL)
        with signed_in(auth_mlflow, *auth_mlflow.admin) as registry:
            set_served_version(registry, name, version, alias)
        announce(platform, ModelEvent(action="deploy", model=name, version=version, alias=alias))
        replica = wait_until_loaded(
            platform,
            alias,
            name,
            version,
            timeout_seconds=120,
            stale_after_seconds=30,
            subscription=subscription,
        )
        subscription.close()
        assert replica == "restricted"
        answer = httpx.post(
            f"http://127.0.0.1:{port}/predict/{name}",
            json={"data": [[5.1, 3.5, 1.4, 0.2]]},
            timeout=30,
            trust_env=False,
        )
        assert answer.status_code == 200, answer.text
        time.sleep(2.5)  # heartbeats (HSET, EXPIRE, HGETALL in a MULTI) run under the ACL
        assert replica_versions(platform, alias, name, 30) == {"restricted": version}
        server.stop()
        # Its reports were withdrawn at shutdown (HDEL), also under the ACL.
        assert replica_versions(platform, alias, name, 30) == {}
        log = server.log_text()
        assert "NOPERM" not in log and "no permissions" not in log, log[-3000:]
        assert " 401" not in log and " 403" not in log, log[-3000:]
    finally:
        server.stop()
        platform.delete(replicas_key(alias, name))
        platform.close()


# --- The local stack's plan ------------------------------------------------------------------


def stack_settings(home: Path, **fields: object) -> Settings:
    """Settings as `make up` reads them with nothing set but the home and free ports."""
    ports = {
        "redis_port": free_port(),
        "mlflow_port": free_port(),
        "backend_port": free_port(),
        "model_server_port": free_port(),
    }
    return Settings.model_construct(
        _fields_set=set(fields),
        mlops_home=home,
        database_url=f"sqlite:///{home / 'mlops.db'}",
        **(ports | fields),
    )


def secret_values(plan: StackPlan) -> list[str]:
    creds = stack_secrets(plan.layout.home)
    return [*vars(creds).values(), plan.platform_env["ENCRYPTION_KEY"]]


def test_the_plan_generates_credentials_once_keeps_them_private_and_off_command_lines(
    tmp_path: Path,
) -> None:
    github_token = "ghp_" + uuid.uuid4().hex
    plan = build_plan(stack_settings(tmp_path / "home"), {"GITHUB_TOKEN": github_token})
    write_files(plan)
    layout = plan.layout
    secrets = secret_values(plan)
    assert len(set(secrets)) == len(secrets) and all(len(s) >= 32 for s in secrets)

    # Every file holding a secret is the owner's alone, in folders that are too.
    for folder in (layout.secrets, layout.run):
        assert folder.stat().st_mode & 0o777 == 0o700
        for path in folder.iterdir():
            assert path.stat().st_mode & 0o077 == 0, path
    for path in plan.private_files:
        assert path.parent in (layout.secrets, layout.run), path

    # No password in any program's command line, supervisord's config or what `up` prints.
    shown = [render_config(plan), describe(plan)]
    shown += [" ".join(program.command) for program in plan.programs]
    for secret in [*secrets, github_token]:
        assert not any(secret in text for text in shown)
    assert "redis://:***@127.0.0.1" in describe(plan)
    assert str(layout.secrets / "mlflow-admin.password") in describe(plan)

    # Clients get them from the private env files; model servers get users of their own.
    creds = stack_secrets(layout.home)
    assert plan.platform_env["REDIS_URL"] == (
        f"redis://:{creds.redis_platform}@127.0.0.1:{plan.ports['redis']}/0"
    )
    assert plan.platform_env["MLFLOW_TRACKING_USERNAME"] == MLFLOW_ADMIN_USER
    assert plan.platform_env["MLFLOW_TRACKING_PASSWORD"] == creds.mlflow_admin
    model_server = plan.model_server_env
    assert model_server["REDIS_URL"].startswith(f"redis://modelserver:{creds.redis_model_server}@")
    assert model_server["MLFLOW_TRACKING_USERNAME"] == MODEL_SERVER_MLFLOW_USER
    assert creds.redis_platform not in str(model_server)
    assert creds.mlflow_admin not in str(model_server)
    # Nor any platform secret it never reads (it runs registry code and faces the network).
    assert plan.platform_env["GITHUB_TOKEN"] == github_token
    assert {"ENCRYPTION_KEY", "DATABASE_URL"} <= set(plan.platform_env)
    assert not {"GITHUB_TOKEN", "ENCRYPTION_KEY", "DATABASE_URL"} & set(model_server)
    assert plan.program("model-server").env_file == layout.env_file("model-server")
    assert plan.program("mlflow").env_file == layout.env_file("mlflow")
    assert plan.program("redis").command[1:] == [str(layout.redis_conf)]
    assert f"admin_password = {creds.mlflow_admin}" in layout.mlflow_auth_config.read_text()
    assert f">{creds.redis_model_server}" in layout.redis_conf.read_text()

    # A later `up` (a restart) finds the same credentials: Redis and MLflow remember them.
    again = build_plan(stack_settings(layout.home), {})
    write_files(again)
    assert secret_values(again) == secrets
    assert again.platform_env["MLFLOW_TRACKING_PASSWORD"] == creds.mlflow_admin


def test_an_external_redis_url_is_used_as_given_and_no_redis_is_configured(
    tmp_path: Path,
) -> None:
    external = "redis://:their-password@127.0.0.1:6390/2"
    plan = build_plan(stack_settings(tmp_path / "home", redis_url=external), {})
    assert plan.external_redis and "redis" not in [p.name for p in plan.programs]
    assert plan.platform_env["REDIS_URL"] == plan.model_server_env["REDIS_URL"] == external
    assert plan.layout.redis_conf not in plan.private_files
    assert without_password(external) == "redis://:***@127.0.0.1:6390/2"
    assert "their-password" not in describe(plan)
