"""Passwords of the stack's Redis and MLflow: generated once into MLOPS_HOME/secrets and kept.

Redis has two ACL users: `default` (the platform: backend, worker, health checks) and
`modelserver`, which reaches only model events (mlops_core/model_events.py). MLflow runs its
basic-auth app: the platform signs in as its admin, model servers as a read-only user
(mlops_core/mlflow_users.py); supervisord's control socket asks for a user of its own. Each
password is a file of its own (0600 in a 0700 folder), kept across restarts because Redis and
MLflow's user store remember users; the config files built from them (redis.conf,
mlflow-auth.ini, supervisorctl.conf) are rewritten 0600 at every start. No password goes on a
command line: Redis and MLflow read these files, platform processes their private env files.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from mlops_core.mlflow_users import MLFLOW_AUTHORIZATION_FUNCTION
from mlops_core.model_events import MODEL_SERVER_REDIS_ACL, MODEL_SERVER_REDIS_USER
from mlops_core.secrets_box import stored_secret

MLFLOW_ADMIN_USER = "admin"
SUPERVISOR_USER = "mlops"


def new_password() -> str:
    """256 random bits in URL-safe characters: they go into REDIS_URL and config files as is."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class StackSecrets:
    """The generated credentials of one MLOPS_HOME."""

    redis_platform: str
    redis_model_server: str
    mlflow_admin: str
    mlflow_model_server: str
    # Flask's secret key for the CSRF tokens of MLflow's sign-up form (MLflow requires one).
    mlflow_flask_key: str
    # supervisord's control socket: `up`, `down` and `status` sign in with it.
    supervisor: str


def secrets_folder(home: Path) -> Path:
    return home / "secrets"


def password_file(home: Path, name: str) -> Path:
    """Where one generated password is kept."""
    return secrets_folder(home) / f"{name}.password"


def stack_secrets(home: Path) -> StackSecrets:
    """The home's credentials, each generated on first use."""

    def kept(name: str) -> str:
        return stored_secret(password_file(home, name), new_password)

    return StackSecrets(
        redis_platform=kept("redis-platform"),
        redis_model_server=kept("redis-modelserver"),
        mlflow_admin=kept("mlflow-admin"),
        mlflow_model_server=kept("mlflow-modelserver"),
        mlflow_flask_key=stored_secret(secrets_folder(home) / "mlflow-flask.key", new_password),
        supervisor=kept("supervisor"),
    )


def _redis_string(value: str) -> str:
    """A redis.conf string argument (double-quoted, so a path may hold spaces)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def redis_users(platform_password: str, model_server_password: str) -> list[str]:
    """redis.conf `user` lines: the platform may do anything (`requirepass` in ACL form, so
    clients sign in with a password alone), model servers only what MODEL_SERVER_REDIS_ACL lists.
    """
    return [
        f"user default reset on >{platform_password} ~* &* +@all",
        f"user {MODEL_SERVER_REDIS_USER} reset on >{model_server_password} "
        + " ".join(MODEL_SERVER_REDIS_ACL),
    ]


def redis_config(port: int, bind: str, data_dir: Path, creds: StackSecrets) -> str:
    """redis.conf for the stack: the server options and both ACL users with their passwords."""
    return "\n".join(
        [
            "# Written by `python -m local_stack up` from the passwords beside it, at every start.",
            f"port {port}",
            f"bind {bind}",
            f"dir {_redis_string(str(data_dir))}",
            'save ""',
            # Queued pipelines and log replay survive `make down` / `make up`.
            "appendonly yes",
            "daemonize no",
            *redis_users(creds.redis_platform, creds.redis_model_server),
            "",
        ]
    )


def mlflow_auth_config(
    database: Path,
    admin_password: str,
    authorization_function: str = MLFLOW_AUTHORIZATION_FUNCTION,
) -> str:
    """MLflow's basic-auth ini (MLFLOW_AUTH_CONFIG_PATH): its user store, admin and sign-in check.

    The admin password only creates the admin on MLflow's first start; `up` then checks it and
    gives model servers their user. READ as the default permission makes that user read-only.
    The sign-in check is the platform's (mlops_core/mlflow_basic_auth.py); bench/mlflow_auth.py
    passes MLflow's own to compare.
    """

    def value(text: str) -> str:
        return text.replace("%", "%%")  # MLflow's ConfigParser interpolates %

    return "\n".join(
        [
            "# Written by `python -m local_stack up` at every start.",
            "[mlflow]",
            "default_permission = READ",
            f"database_uri = {value(f'sqlite:///{database}')}",
            f"admin_username = {MLFLOW_ADMIN_USER}",
            f"admin_password = {value(admin_password)}",
            f"authorization_function = {authorization_function}",
            "",
        ]
    )


def supervisorctl_config(socket: Path, creds: StackSecrets) -> str:
    """A `supervisorctl -c` file signing in to the stack's supervisord (0600, in secrets/)."""
    return "\n".join(
        [
            "# Written by `python -m local_stack up` at every start.",
            "[supervisorctl]",
            f"serverurl=unix://{socket}",
            f"username={SUPERVISOR_USER}",
            f"password={creds.supervisor}",
            "",
        ]
    )
