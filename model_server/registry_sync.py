"""Keeps a replica's ModelStore equal to what the registry's serving aliases name.

Three loops: model events from Redis (act at once), a periodic reconcile against the registry
(heals missed messages, restarts and Redis outages) and a heartbeat that keeps this replica's
"loaded" reports fresh. Events are only triggers: each one re-reads the alias from the registry,
so reordered or duplicated messages cannot make a replica serve the wrong version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
import redis.asyncio as aioredis
from mlflow import MlflowClient

from mlops_core.model_events import (
    MODEL_EVENTS_CHANNEL,
    ModelEvent,
    ReplicaReport,
    prune_stale_reports,
    publish_report,
    replicas_key,
)
from mlops_core.model_registry import all_served_versions, registry_client, served_version
from mlops_core.settings import Settings
from model_server.loaded_model import load_version
from model_server.metrics import record_load, record_served
from model_server.model_process import SpareProcesses
from model_server.model_store import ModelStore

log = logging.getLogger(__name__)


class RegistrySync:
    """Applies the registry's serving aliases to a ModelStore and reports what it loaded."""

    def __init__(self, settings: Settings, store: ModelStore, replica_id: str, cache_dir: Path):
        self.settings = settings
        self.store = store
        self.replica_id = replica_id
        self.cache_dir = cache_dir
        self.ready = asyncio.Event()
        self._client: MlflowClient = registry_client(settings.mlflow_tracking_uri)
        self._redis = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Loading is slow and blocking: a thread of its own keeps it off the predict threads. One
        # thread, not more: unpickling two models at once imports the same modules from two
        # threads, which Python can abort with an import deadlock error.
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        self._spares = SpareProcesses(settings, cache_dir)
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def report_ttl(self) -> float:
        return self.settings.model_heartbeat_interval_seconds * 3

    async def start(self) -> None:
        """Start the loops; readiness is set after the first full reconcile."""
        self._tasks = [
            asyncio.create_task(self._initial_then_periodic(), name="reconcile"),
            asyncio.create_task(self._listen(), name="model-events"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
        ]

    async def stop(self) -> None:
        """Stop the loops and withdraw this replica's reports."""
        tasks = [*self._tasks, *self._pending]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(redis.RedisError):
            await asyncio.to_thread(self._withdraw_reports)
        self._redis.close()
        self._loader.shutdown(wait=False, cancel_futures=True)
        for model in self.store.loaded():
            await asyncio.to_thread(model.close)
        await asyncio.to_thread(self._spares.close)

    async def reconcile_all(self) -> None:
        """Make the store match every served alias in the registry."""
        served = await asyncio.to_thread(
            all_served_versions, self._client, self.settings.serving_alias
        )
        changes = [
            *served.items(),
            *((name, None) for name in set(self.store.names()) - set(served)),
        ]
        await asyncio.gather(*(self.apply(name, version) for name, version in changes))

    async def refresh(self, name: str) -> None:
        """Re-read one model's alias from the registry and apply it."""
        version = await asyncio.to_thread(
            served_version, self._client, name, self.settings.serving_alias
        )
        await self.apply(name, version)

    async def apply(self, name: str, version: str | None) -> None:
        """Serve `version` of `name` (None: stop serving it); one change per model at a time."""
        async with self._locks[name]:
            current = self.store.get(name)
            if version is None:
                if current is not None:
                    self.store.remove(name)
                    current.retire()
                    record_served(name, None, current.version)
                    log.info("stopped serving %s (was version %s)", name, current.version)
                    await self._report(name, None, "unloaded")
                return
            if current is not None and current.version == version:
                return
            try:
                model = await self._in_loader(
                    load_version,
                    name,
                    version,
                    self.settings.mlflow_tracking_uri,
                    self.cache_dir,
                    self.settings,
                    self._spares,
                )
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.exception(
                    "failed to load %s version %s; keeping what was served", name, version
                )
                record_load(name, succeeded=False)
                self.store.record_failure(name, version, error[:2000])
                await self._report(name, version, "failed", error[:2000])
                return
            previous = self.store.swap_in(model)
            record_load(name, succeeded=True)
            record_served(name, version, previous.version if previous else None)
            if previous is not None:
                previous.retire()
            log.info(
                "now serving %s version %s (was %s)",
                name,
                version,
                previous.version if previous else "none",
            )
            await self._report(name, version, "loaded")

    async def _in_loader(self, func, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._loader, func, *args)

    async def _report(
        self, name: str, version: str | None, status: str, error: str | None = None
    ) -> None:
        report = ReplicaReport(
            replica=self.replica_id,
            alias=self.settings.serving_alias,
            model=name,
            version=version if status != "unloaded" else None,
            status=status,  # type: ignore[arg-type]
            error=error,
        )
        try:
            await asyncio.to_thread(publish_report, self._redis, report, self.report_ttl)
        except redis.RedisError as exc:  # the heartbeat re-reports once Redis is back
            log.warning("could not report %s %s to Redis: %s", name, status, exc)

    async def _initial_then_periodic(self) -> None:
        interval = self.settings.model_reconcile_interval_seconds
        while True:
            try:
                await self.reconcile_all()
                self.ready.set()
            except Exception:
                log.exception("reconcile against the registry failed; retrying")
                if not self.ready.is_set():
                    await asyncio.sleep(min(interval, 2.0))
                    continue
            await asyncio.sleep(interval)

    async def _listen(self) -> None:
        """Follow model events; after a lost connection, reconcile (messages may be missed)."""
        backoff = 0.5
        first = True
        while True:
            client = aioredis.Redis.from_url(self.settings.redis_url, health_check_interval=15)
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(MODEL_EVENTS_CHANNEL)
                    if not first:
                        self._spawn(self._safe_reconcile())
                    first = False
                    backoff = 0.5
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        try:
                            event = ModelEvent.model_validate_json(message["data"])
                        except ValueError:
                            log.warning("ignoring malformed model event: %r", message["data"])
                            continue
                        log.info(
                            "model event: %s %s -> %s", event.action, event.model, event.version
                        )
                        self._spawn(self._safe_refresh(event.model))
            except (redis.RedisError, OSError) as exc:
                log.warning("model events subscription lost (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        """Run `coro` in the background, holding a reference until it ends."""
        task = asyncio.create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _safe_refresh(self, name: str) -> None:
        try:
            await self.refresh(name)
        except Exception:
            log.exception("applying the registry alias of %s failed; reconcile will retry", name)

    async def _safe_reconcile(self) -> None:
        try:
            await self.reconcile_all()
        except Exception:
            log.exception("reconcile after reconnect failed; the periodic one will retry")

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.model_heartbeat_interval_seconds)
            try:
                await asyncio.to_thread(self._refresh_reports)
            except redis.RedisError as exc:
                log.warning("heartbeat to Redis failed: %s", exc)

    def _refresh_reports(self) -> None:
        pipe = self._redis.pipeline()
        ttl = max(1, int(self.report_ttl))
        alias = self.settings.serving_alias
        for model in self.store.loaded():
            report = ReplicaReport(
                replica=self.replica_id,
                alias=alias,
                model=model.name,
                version=model.version,
                status="loaded",
            )
            pipe.hset(replicas_key(alias, model.name), self.replica_id, report.model_dump_json())
            pipe.expire(replicas_key(alias, model.name), ttl)
        pipe.execute()
        for model in self.store.loaded():
            prune_stale_reports(self._redis, alias, model.name, self.report_ttl)

    def _withdraw_reports(self) -> None:
        pipe = self._redis.pipeline()
        for name in self.store.names():
            pipe.hdel(replicas_key(self.settings.serving_alias, name), self.replica_id)
        pipe.execute()
