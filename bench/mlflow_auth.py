"""What MLflow's basic-auth sign-in costs per request: the platform's setup vs MLflow's default.

Run from the repository root (~1 min; starts two MLflow servers on free loopback ports):

    .venv/bin/python -m bench.mlflow_auth [--requests 50]

Both servers run `mlflow server --app-name basic-auth` with one worker, as the local stack does;
they differ only in the ini's `authorization_function`: the platform's
(mlops_core/mlflow_basic_auth.py) or MLflow's own, which checks the scrypt hash on every call.
Each signs in as the admin (the backend and workers) and as a read-only user (model servers),
and sends `GET /api/2.0/mlflow/experiments/search` `--requests` times, one at a time, the two
servers in turn so that both see the same load on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from mlops_core.mlflow_users import MODEL_SERVER_MLFLOW_USER, ensure_user
from tests.support.services import MlflowServer

SEARCH = "/api/2.0/mlflow/experiments/search"
# MLflow's DEFAULT_AUTHORIZATION_FUNCTION (mlflow/server/auth/config.py), spelled out: importing
# it would build MLflow's whole server app in this process.
MLFLOW_DEFAULT = "mlflow.server.auth:authenticate_request_basic_auth"


def timed_get(client: httpx.Client, auth: tuple[str, str]) -> float:
    """One signed-in search, in milliseconds; anything but 200 stops the benchmark."""
    started = time.perf_counter()
    answer = client.get(SEARCH, params={"max_results": 10}, auth=auth)
    elapsed = (time.perf_counter() - started) * 1000
    if answer.status_code != 200:
        raise RuntimeError(f"{client.base_url}: HTTP {answer.status_code} {answer.text[:200]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50, help="per server and user")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mlops-bench-auth-") as tmp:
        servers = {
            "platform": MlflowServer(Path(tmp) / "platform", auth=True),
            "mlflow default": MlflowServer(
                Path(tmp) / "default", auth=True, authorization_function=MLFLOW_DEFAULT
            ),
        }
        try:
            # Side by side: each start is mostly waiting on MLflow's imports and migrations.
            with ThreadPoolExecutor(len(servers)) as pool:
                list(pool.map(MlflowServer.start, servers.values()))
            reader_password = uuid.uuid4().hex
            users: dict[str, dict[str, tuple[str, str]]] = {}
            for setup, server in servers.items():
                assert server.admin is not None  # auth=True
                ensure_user(server.uri, server.admin, MODEL_SERVER_MLFLOW_USER, reader_password)
                users[setup] = {
                    "admin": server.admin,
                    "read-only": (MODEL_SERVER_MLFLOW_USER, reader_password),
                }
            clients = {
                setup: httpx.Client(base_url=server.uri, trust_env=False, timeout=60)
                for setup, server in servers.items()
            }
            latencies: dict[tuple[str, str], list[float]] = {}
            for setup, client in clients.items():
                for user, auth in users[setup].items():
                    timed_get(client, auth)  # the first sign-in: the full check on both
                    latencies[(setup, user)] = []
            for _ in range(args.requests):
                for (setup, user), found in latencies.items():
                    found.append(timed_get(clients[setup], users[setup][user]))
            for client in clients.values():
                client.close()
        finally:
            for server in servers.values():
                server.stop()

    print(f"GET {SEARCH}, {args.requests} sequential requests per row (ms per request)")
    print(f"{'setup':<16}{'user':<11}{'median':>9}{'p95':>9}{'mean':>9}")
    for (setup, user), found in latencies.items():
        p95 = statistics.quantiles(found, n=20)[-1]
        print(
            f"{setup:<16}{user:<11}{statistics.median(found):>9.1f}{p95:>9.1f}"
            f"{statistics.mean(found):>9.1f}"
        )
    for user in ("admin", "read-only"):
        ratio = statistics.median(latencies[("mlflow default", user)]) / statistics.median(
            latencies[("platform", user)]
        )
        print(f"{user}: MLflow's default costs {ratio:.1f}x the platform's per request (median)")


if __name__ == "__main__":
    main()
