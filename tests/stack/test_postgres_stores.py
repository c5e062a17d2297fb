"""The local stack on PostgreSQL: DATABASE_URL for the platform, MLFLOW_BACKEND_STORE_URI for
the MLflow server `make up` starts, each password reaching only the processes that use it."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from local_stack.commands import describe
from local_stack.credentials import MLFLOW_ADMIN_USER, stack_secrets
from local_stack.plan import StackPlan, build_plan
from local_stack.supervisor import render_config, write_files
from mlops_core.database import upgrade_database
from tests.stack.test_authenticated_stores import stack_settings
from tests.support.processes import ManagedProcess, wait_http

STORE_PASSWORD = "mlflow-db-" + uuid.uuid4().hex


def mlflow_env(plan: StackPlan) -> dict[str, str]:
    """What the stack's MLflow server loads before it starts (local_stack.exec_env)."""
    env_file = plan.program("mlflow").env_file
    assert env_file is not None
    return json.loads(env_file.read_text())


def test_mlflows_store_reaches_mlflow_alone_and_never_a_command_line(tmp_path: Path) -> None:
    given = f"postgresql://mlflow:{STORE_PASSWORD}@db.internal:5432/mlflow"
    settings = stack_settings(tmp_path / "home", mlflow_backend_store_uri=SecretStr(given))
    # Exported as well: the platform's env passes exported settings on, but not this one.
    plan = build_plan(settings, {"MLFLOW_BACKEND_STORE_URI": given})
    write_files(plan)

    # MLflow gets it with the driver that is installed (psycopg 3), for runs and registry alike.
    stored = f"postgresql+psycopg://mlflow:{STORE_PASSWORD}@db.internal:5432/mlflow"
    env = mlflow_env(plan)
    assert env["MLFLOW_BACKEND_STORE_URI"] == env["MLFLOW_REGISTRY_STORE_URI"] == stored
    # The backend, worker and model server reach MLflow over HTTP: its database is not theirs.
    assert STORE_PASSWORD not in json.dumps(plan.platform_env)
    assert STORE_PASSWORD not in json.dumps(plan.model_server_env)
    shown = [render_config(plan), describe(plan)]
    shown += [" ".join(program.command) for program in plan.programs]
    assert not any(STORE_PASSWORD in text for text in shown)


def test_without_a_store_uri_mlflow_keeps_sqlite_in_the_home(tmp_path: Path) -> None:
    plan = build_plan(stack_settings(tmp_path / "home"), {})
    write_files(plan)
    store = f"sqlite:///{plan.layout.home / 'mlflow' / 'mlflow.db'}"
    assert mlflow_env(plan)["MLFLOW_BACKEND_STORE_URI"] == store
    assert mlflow_env(plan)["MLFLOW_REGISTRY_STORE_URI"] == store


@pytest.fixture
def two_databases(postgres_admin_url: str) -> Iterator[tuple[str, str]]:
    """Fresh `mlops` and `mlflow` databases, URLs with a password (trust auth ignores it)."""
    names = [f"stack_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("mlops", "mlflow")]
    admin_url = make_url(postgres_admin_url).set(drivername="postgresql+psycopg")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    plain = make_url(postgres_admin_url).set(password=STORE_PASSWORD)
    urls = [plain.set(database=name).render_as_string(hide_password=False) for name in names]
    try:
        yield urls[0], urls[1]
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_the_stacks_database_and_mlflow_run_on_postgresql(
    tmp_path: Path, two_databases: tuple[str, str]
) -> None:
    """The plan's migration and its MLflow program, started as supervisord starts it."""
    database_url, mlflow_store = two_databases
    settings = stack_settings(
        tmp_path / "home", mlflow_backend_store_uri=SecretStr(mlflow_store)
    ).model_copy(update={"database_url": database_url})
    plan = build_plan(settings, {})
    write_files(plan)
    upgrade_database(plan.platform_env["DATABASE_URL"])
    platform = create_engine(make_url(database_url).set(drivername="postgresql+psycopg"))
    with platform.connect() as conn:
        assert conn.execute(text("select version_num from alembic_version")).scalar()
    platform.dispose()

    program = plan.program("mlflow")
    assert program.env_file is not None
    process = ManagedProcess(
        [
            sys.executable,
            "-m",
            "local_stack.exec_env",
            str(program.env_file),
            "--",
            *program.command,
        ],
        env=program.environment,
        log_path=tmp_path / "mlflow.log",
    )
    try:
        wait_http(f"{plan.mlflow_url}/health", timeout=240, process=process)
        admin = (MLFLOW_ADMIN_USER, stack_secrets(plan.layout.home).mlflow_admin)
        created = httpx.post(
            f"{plan.mlflow_url}/api/2.0/mlflow/experiments/create",
            json={"name": "kept-in-postgresql"},
            auth=admin,
            trust_env=False,
            timeout=30,
        )
        assert created.is_success, created.text
        tree = psutil.Process(process.pid)
        cmdlines = [" ".join(p.cmdline()) for p in [tree, *tree.children(recursive=True)]]
    finally:
        process.stop()
    assert not any(STORE_PASSWORD in cmdline for cmdline in cmdlines)
    store = create_engine(make_url(mlflow_store).set(drivername="postgresql+psycopg"))
    with store.connect() as conn:
        names = conn.execute(text("select name from experiments")).scalars().all()
    store.dispose()
    assert "kept-in-postgresql" in names
