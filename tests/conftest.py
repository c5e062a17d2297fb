"""Session-wide real services shared by every test: one Redis, one MLflow server, databases.

Area-specific fixtures live in each test folder's own conftest.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from mlops_core.database import upgrade_database
from mlops_core.settings import Settings, get_settings
from tests.support.postgres import PrivatePostgres
from tests.support.services import MlflowServer, RedisServer

TEST_ENCRYPTION_KEY = Fernet.generate_key().decode()
# Workers the tests start serve no metrics unless a test gives them a port: many run at once,
# and WORKER_METRICS_PORT's default (9102) would go to whichever started first.
os.environ.setdefault("WORKER_METRICS_PORT", "0")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session (tests namespace their keys by id)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real MLflow tracking server for the session, started only when a test needs it.

    It runs MLflow's basic-auth app, as `make up` and compose do, so every MLflow call of the
    suite signs in: the admin's credentials go into this process's environment, in the variables
    MLflow's client reads, and from there into every process a test starts.
    """
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"), auth=True)
    server.start()
    assert server.admin is not None
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_USERNAME", server.admin[0])
        patch.setenv("MLFLOW_TRACKING_PASSWORD", server.admin[1])
        yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_uri(mlflow_server: MlflowServer) -> str:
    return mlflow_server.uri


def _fresh_sqlite(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'mlops.db'}"
    upgrade_database(url)
    return url


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite database for one test."""
    return _fresh_sqlite(tmp_path)


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A PostgreSQL server the tests may create databases on: TEST_DATABASE_URL when set, else
    a private cluster started for this session (scripts/private_postgres.sh; never the
    machine's own server). Without PostgreSQL's binaries the PostgreSQL variants skip, except
    in CI (CI=true), where they must run.
    """
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    server = PrivatePostgres()
    try:
        url = server.start()
        if url is None:
            message = "no PostgreSQL binaries (Debian: apt-get install postgresql)"
            if os.environ.get("CI") == "true":
                pytest.fail(f"the PostgreSQL variants must run in CI: {message}")
            pytest.skip(message)
        yield url
    finally:
        server.stop()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def any_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database: SQLite, and PostgreSQL (postgres_admin_url) too.

    PostgreSQL gets a database of its own per test.
    """
    if request.param == "sqlite":
        yield _fresh_sqlite(tmp_path)
        return
    admin_url = request.getfixturevalue("postgres_admin_url")
    name = f"mlops_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        make_url(admin_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade_database(url)
        yield url
    finally:
        from mlops_core.database import engine_for

        engine_for(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# The PostgreSQL variant proves what the database takes part in (transactions, locking, the
# SQL of a query). A test of something else (a CLI's output, a worker check, an MLflow outage)
# run on both repeats itself at the cost of a process start: mark it with this.
SQLITE_ONLY = pytest.mark.parametrize("any_database_url", ["sqlite"], indirect=True)


@pytest.fixture
def base_env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    """Environment for platform processes started by a test (extend it per test)."""
    home = tmp_path / "mlops-home"
    home.mkdir(exist_ok=True)
    return {
        "MLOPS_HOME": str(home),
        "REDIS_URL": redis_url,
        "ALLOW_LOCAL_REPOS": "true",
        "ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


@pytest.fixture
def settings_from_env(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Apply an env dict to this process and return fresh Settings read from it."""

    def apply(env: dict[str, str]) -> Settings:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        return get_settings()

    yield apply
    get_settings.cache_clear()
