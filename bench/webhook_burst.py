"""Webhook intake under a burst: N signed push deliveries at once against a real backend.

GitHub gives up on a delivery not answered within 10 s, so what matters is the slowest answer
of a burst. The baseline is the same burst of `GET /health` against the same process (the cost
of HTTP and the event loop alone); the push figures are also given as a ratio to it.

Run: .venv/bin/python -m bench.webhook_burst [--deliveries 200] [--postgres ADMIN_URL]
(a fresh SQLite file by default; with --postgres, e.g. postgresql://postgres@127.0.0.1:5432/test,
a database of its own is created there for the run and dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.support.github import delivery, push_payload, random_sha
from tests.support.processes import VENV_BIN, ManagedProcess, free_port, wait_http
from tests.support.services import RedisServer

NOTEBOOK = "notebooks/train.ipynb"
Request = tuple[str, bytes | None, dict[str, str]]


async def burst(url: str, requests: list[Request]) -> list[float]:
    """Send every request at once, each on its own connection; return each latency (s)."""
    limits = httpx.Limits(max_connections=len(requests))
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(path: str, body: bytes | None, headers: dict[str, str]) -> float:
            started = time.monotonic()
            if body is None:
                response = await client.get(path)
            else:
                response = await client.post(path, content=body, headers=headers)
            assert response.status_code in (200, 202), response.text
            return time.monotonic() - started

        return await asyncio.gather(*(one(*request) for request in requests))


def describe(name: str, latencies: list[float], wall: float) -> dict[str, float]:
    """Print and return p50, p95, max latency and throughput of one burst."""
    ordered = sorted(latencies)
    figures = {
        "p50": statistics.median(ordered),
        "p95": ordered[max(0, int(0.95 * len(ordered)) - 1)],
        "max": ordered[-1],
        "per_second": len(ordered) / wall,
    }
    print(
        f"{name:>8}: p50 {figures['p50']:.3f}s  p95 {figures['p95']:.3f}s  "
        f"max {figures['max']:.3f}s  {figures['per_second']:.0f}/s"
    )
    return figures


@contextmanager
def scratch_database(admin_url: str, work: Path) -> Iterator[str]:
    """A fresh SQLite file, or a fresh PostgreSQL database dropped afterwards."""
    if not admin_url:
        yield f"sqlite:///{work / 'mlops.db'}"
        return
    name = f"bench_webhook_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        make_url(admin_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def backend_process(database_url: str, redis_url: str, work: Path) -> Iterator[str]:
    """`uvicorn backend.app:create_app --factory` as deployed; yields its base URL."""
    port = free_port()
    process = ManagedProcess(
        [str(VENV_BIN / "uvicorn"), "backend.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env={
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "MLOPS_HOME": str(work),
            "ALLOW_LOCAL_REPOS": "true",
            "ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "NO_PROXY": "127.0.0.1,localhost",
        },
        log_path=work / "backend.log",
        cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", 60, process)
        yield url
    finally:
        process.stop()


def measure(url: str, deliveries: int, work: Path) -> None:
    """The baseline burst, then the push burst, and their ratio."""
    repo_url = (work / "repo").as_uri()
    created = httpx.post(f"{url}/repos", json={"github_url": repo_url}).json()
    pushes = [
        delivery(
            push_payload(repo_url, after=random_sha(), modified=[NOTEBOOK]),
            created["webhook_secret"],
        )
        for _ in range(deliveries)
    ]
    started = time.monotonic()
    health = asyncio.run(burst(url, [("/health", None, {})] * deliveries))
    base = describe("health", health, time.monotonic() - started)
    started = time.monotonic()
    pushed = asyncio.run(
        burst(url, [("/webhook/github", item.body, item.headers) for item in pushes])
    )
    push = describe("push", pushed, time.monotonic() - started)
    print(
        f"push/health: max x{push['max'] / base['max']:.1f}, "
        f"throughput x{push['per_second'] / base['per_second']:.2f}; "
        f"slowest push answered in {push['max']:.2f}s of GitHub's 10s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Webhook intake under a burst")
    parser.add_argument("--deliveries", type=int, default=200)
    parser.add_argument("--postgres", default="", help="admin URL of a PostgreSQL server")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-webhook-"))
    redis_server = RedisServer(work)
    redis_server.start()
    try:
        with (
            scratch_database(args.postgres, work) as database_url,
            backend_process(database_url, redis_server.url, work) as url,
        ):
            print(f"{args.deliveries} concurrent requests, {database_url.split(':')[0]}")
            measure(url, args.deliveries, work)
    finally:
        redis_server.stop()


if __name__ == "__main__":
    main()
