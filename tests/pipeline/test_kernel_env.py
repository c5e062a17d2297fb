"""The environments given to notebooks and to git: secrets stay with the worker."""

from __future__ import annotations

import base64
from pathlib import Path

from mlops_core.kernel_env import git_environment, kernel_environment
from mlops_core.settings import Settings
from worker.phases.fetch import add_config, auth_header, origin

WORKER_ENV = {
    "PATH": "/usr/bin",
    "LANG": "C.UTF-8",
    "HTTPS_PROXY": "http://proxy:3128",
    "HTTP_PROXY": "http://user:pw@proxy:3128",
    "GITHUB_TOKEN": "ghp_x",
    "GITHUB_WEBHOOK_SECRET": "s",
    "API_TOKEN": "a",
    "ENCRYPTION_KEY": "k",
    "DATABASE_URL": "postgresql://u:pw@db/x",
    "REDIS_URL": "redis://:pw@r/0",
    "AWS_SECRET_ACCESS_KEY": "aws",
    "MY_DB_PASSWORD": "pw",
    "COMPANY_VAULT": "vault-value",
    "OMP_NUM_THREADS": "2",
    "GIT_SSH_COMMAND": "ssh -i key",
}


def test_the_kernel_gets_an_allow_list_plus_what_the_platform_injects(tmp_path: Path) -> None:
    settings = Settings(kernel_env_passthrough=["COMPANY_VAULT", "MY_DB_PASSWORD"])
    env = kernel_environment(
        settings, home=tmp_path, extra={"MLFLOW_RUN_ID": "r1"}, source=WORKER_ENV
    )
    assert env["LANG"] == "C.UTF-8" and env["OMP_NUM_THREADS"] == "2"
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    assert "HTTP_PROXY" not in env  # a proxy URL carrying a password is a credential
    assert env["COMPANY_VAULT"] == "vault-value"  # passed through on request
    assert "MY_DB_PASSWORD" not in env  # never, even when asked for
    assert env["HOME"] == str(tmp_path) and env["MLFLOW_RUN_ID"] == "r1"
    for value in ("ghp_x", "postgresql://u:pw@db/x", "redis://:pw@r/0", "aws", "pw", "k"):
        assert value not in env.values()


def test_git_keeps_the_operators_setup_but_not_the_platform_secrets() -> None:
    settings = Settings(extra_secret_env=["COMPANY_VAULT"])
    env = git_environment(settings, source=WORKER_ENV)
    assert env["GIT_SSH_COMMAND"] == "ssh -i key" and env["HTTP_PROXY"].endswith("proxy:3128")
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    for name in ("GITHUB_TOKEN", "API_TOKEN", "ENCRYPTION_KEY", "DATABASE_URL", "COMPANY_VAULT"):
        assert name not in env


def test_the_token_header_is_appended_to_the_operators_git_config_entries() -> None:
    env = {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "url.x.insteadOf",
        "GIT_CONFIG_VALUE_0": "y",
    }
    add_config(env, f"http.{origin('https://github.com/o/r.git')}/.extraHeader", auth_header("tok"))
    assert env["GIT_CONFIG_COUNT"] == "2" and env["GIT_CONFIG_KEY_0"] == "url.x.insteadOf"
    assert env["GIT_CONFIG_KEY_1"] == "http.https://github.com/.extraHeader"
    expected = base64.b64encode(b"x-access-token:tok").decode()
    assert env["GIT_CONFIG_VALUE_1"] == f"Authorization: Basic {expected}"
