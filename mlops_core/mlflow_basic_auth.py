"""The platform's MLflow sign-in: MLflow's basic-auth check, paid once per password, not per call.

Runs inside the MLflow server, never in the platform's processes: the basic-auth ini names
`authenticate_request_basic_auth` below as its `authorization_function` (MLflow's hook for it;
local_stack/credentials.py and deploy/mlflow-auth.ini). Everything else stays MLflow's basic-auth
app (`--app-name basic-auth`): user store, permissions, admin bootstrap, UI.

Why: MLflow's own function verifies the password with werkzeug's `check_password_hash` against a
scrypt hash (~70 ms of CPU here), and MLflow calls it two or three times per request (its
before-request hook, then `sender_is_admin` and the permission validators again), so each call of
the backend, workers and model servers cost ~200 ms of MLflow's CPU (bench/mlflow_auth.py).

How: the first request with a password runs MLflow's full check; a success is remembered as
an HMAC of (user, password, the user's stored hash) under a key that exists only in this
process's memory. Later requests read the stored hash (one indexed query, as MLflow's check
does) and need that HMAC to match. So:
- a wrong password, an unknown or deleted user, and MLflow's refused legacy admin password are
  never remembered: each attempt pays MLflow's full check and gets MLflow's own 401;
- a password change (API, UI, SQL, from any worker or replica) writes a new salted hash, so
  the old password stops matching on every worker at the next request; nothing waits on a TTL;
- memory holds no password and nothing usable offline: without the key the digests cannot be
  tested against guesses.

Rejected: MLflow's own credential cache (`auth_cache_ttl_seconds`) forgets a changed password
only on the worker that changed it; compose runs two workers and several replicas at scale,
which would accept the old password until the TTL ends. Storing a cheap hash (pbkdf2 with few
rounds) would be safe for the generated 256-bit passwords only: compose's admin password is the
operator's, and a leaked user store would give a weak one up quickly.

Cost: MLflow's UI shows its sign-out link and change-password dialog only when its own function
is configured; passwords still change through MLflow's users API (mlops_core/mlflow_users.py),
which is also how the platform's own copies must follow a change.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading

from flask import Response, request
from mlflow.exceptions import MlflowException
from mlflow.server import auth as mlflow_server_auth
from werkzeug.datastructures import Authorization

# Verified credentials are few (one entry per user and password), but stale ones (old hashes)
# never match again: the oldest go first past this bound.
_MAX_VERIFIED = 1024
_KEY = secrets.token_bytes(32)
_verified: dict[bytes, None] = {}
_verified_lock = threading.Lock()


def _stored_hash(username: str) -> str | None:
    """The user's password hash as MLflow stores it now; None for an unknown user."""
    try:
        return mlflow_server_auth.store.get_user(username).password_hash
    except MlflowException:
        return None


def _digest(username: str, password: str, stored_hash: str) -> bytes:
    """What is remembered of a verified credential (JSON keeps the three parts apart)."""
    message = json.dumps([username, password, stored_hash]).encode()
    return hmac.new(_KEY, message, hashlib.sha256).digest()


def authenticate_request_basic_auth() -> Authorization | Response:
    """MLflow's `authorization_function` contract: the request's credentials, or a 401."""
    credentials = request.authorization
    if (
        credentials is None
        or credentials.type != "basic"
        or credentials.username is None
        or credentials.password is None
    ):
        return mlflow_server_auth.authenticate_request_basic_auth()
    username, password = credentials.username, credentials.password
    stored = _stored_hash(username)
    if stored is None:
        return mlflow_server_auth.authenticate_request_basic_auth()
    digest = _digest(username, password, stored)
    with _verified_lock:
        if digest in _verified:
            return credentials
    answer = mlflow_server_auth.authenticate_request_basic_auth()
    # Remembered only if the hash MLflow just checked is still the one read before it.
    if isinstance(answer, Authorization) and _stored_hash(username) == stored:
        with _verified_lock:
            if len(_verified) >= _MAX_VERIFIED:
                del _verified[next(iter(_verified))]
            _verified[digest] = None
    return answer
