"""The MLflow users the platform needs on a tracking server run with `--app-name basic-auth`.

MLflow's basic-auth app creates only its admin user (from its ini file or
MLFLOW_AUTH_ADMIN_PASSWORD). The backend and the worker sign in as that admin: they create
experiments, register versions, move aliases and delete models. A model server only reads, and it
faces the network, so it gets a user of its own: with the server's `default_permission = READ`
that user reads every experiment, version and artifact but changes none of them (MLflow still
lets any signed-in user create new experiments and models, which that user then owns).

`python -m mlops_core.mlflow_users` does it from the environment (docker compose's one-shot
`mlflow-users` service): MLFLOW_TRACKING_URI with the admin's MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD, and MLFLOW_MODEL_SERVER_PASSWORD for the model servers' user.
"""

from __future__ import annotations

import os
import sys

import httpx

from mlops_core.settings import Settings

MODEL_SERVER_MLFLOW_USER = "modelserver"

# The sign-in check the platform's MLflow runs (`authorization_function` of its basic-auth ini):
# MLflow's own, remembered per password (mlops_core/mlflow_basic_auth.py says why). A string, so
# writing the ini does not import MLflow's server.
MLFLOW_AUTHORIZATION_FUNCTION = "mlops_core.mlflow_basic_auth:authenticate_request_basic_auth"

# The basic-auth app's REST API for users (mlflow/server/auth/routes.py).
_USERS_API = "/api/2.0/mlflow/users"


class MlflowUsersError(RuntimeError):
    """MLflow refused to create or update a user; the message says what to check."""


def ensure_user(
    tracking_uri: str,
    admin: tuple[str, str],
    username: str,
    password: str,
    *,
    timeout: float = 10.0,
) -> str:
    """Make `username` sign in with `password`; return "unchanged", "created" or "password set".

    The password given wins over the one MLflow holds, so the caller's copy (a generated file,
    a compose variable) stays the one truth across restarts. Connects directly (no proxy): the
    platform's MLflow is on loopback or on the compose network.
    """
    with httpx.Client(base_url=tracking_uri.rstrip("/"), timeout=timeout, trust_env=False) as http:
        if http.get(f"{_USERS_API}/current", auth=(username, password)).status_code == 200:
            return "unchanged"
        found = http.get(f"{_USERS_API}/get", params={"username": username}, auth=admin)
        if found.status_code in (401, 403):
            raise MlflowUsersError(
                f"MLflow at {tracking_uri} refuses the admin user {admin[0]!r} "
                f"(HTTP {found.status_code}): its user store holds another password than the one "
                "the platform was given"
            )
        body = {"username": username, "password": password}
        if found.status_code == 404:
            answer, done = http.post(f"{_USERS_API}/create", json=body, auth=admin), "created"
        elif found.is_success:
            answer = http.patch(f"{_USERS_API}/update-password", json=body, auth=admin)
            done = "password set"
        else:
            answer, done = found, ""
        if not answer.is_success:
            raise MlflowUsersError(
                f"MLflow at {tracking_uri} answered HTTP {answer.status_code} for user "
                f"{username!r}: {answer.text[:300]}"
            )
        return done


def main() -> int:
    """Create (or re-password) the model servers' user from the environment."""
    settings = Settings()
    password = os.environ.get("MLFLOW_MODEL_SERVER_PASSWORD", "")
    if not (settings.mlflow_tracking_username and settings.mlflow_tracking_password and password):
        print(
            "set MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD (the admin) and "
            "MLFLOW_MODEL_SERVER_PASSWORD",
            file=sys.stderr,
        )
        return 64
    admin = (
        settings.mlflow_tracking_username,
        settings.mlflow_tracking_password.get_secret_value(),
    )
    try:
        done = ensure_user(
            settings.mlflow_tracking_uri, admin, MODEL_SERVER_MLFLOW_USER, password, timeout=30
        )
    except (MlflowUsersError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"MLflow user {MODEL_SERVER_MLFLOW_USER!r}: {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
