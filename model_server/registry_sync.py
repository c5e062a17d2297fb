"""Keeps a replica's ModelStore equal to what the registry's serving aliases name.

Three loops: model events from Redis (act at once), a periodic reconcile against the registry
(heals missed messages, restarts and Redis outages) and a heartbeat that keeps this replica's
"loaded" reports fresh. Events are only triggers: each one re-reads the alias from the registry,
so reordered or duplicated messages cannot make a replica serve the wrong version.

A model's challenger (mlops_core/canary_registry.py) is followed the same way, read in the
same call as its champion, and reported under CHALLENGER_ALIAS. Promoting it loads nothing:
the challenger's loaded version becomes the champion, so no request waits for a load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
import redis.asyncio as aioredis
from mlflow import MlflowClient

from mlops_core.canary import CanaryConfig
from mlops_core.canary_registry import Serving, all_serving, serving_state
from mlops_core.model_events import (
    MODEL_EVENTS_CHANNEL,
    ModelEvent,
    ReplicaReport,
    prune_stale_reports,
    publish_report,
    replicas_key,
)
from mlops_core.model_registry import registry_client
from mlops_core.settings import Settings
from model_server.loaded_model import LoadedModel, load_version
from model_server.metrics import record_load, record_served
from model_server.model_process import SpareProcesses
from model_server.model_store import Challenger, ModelStore
from model_server.process_group import ReplicaIdentity

log = logging.getLogger(__name__)


class RegistrySync:
    """Applies the registry's serving aliases to a ModelStore and reports what it loaded."""

    def __init__(
        self, settings: Settings, store: ModelStore, identity: ReplicaIdentity, cache_dir: Path
    ):
        self.settings = settings
        self.store = store
        self.identity = identity  # which process of which server (model_server/process_group.py)
        self.replica_id = identity.replica
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
        # The champion each model last swapped out, kept loaded for MODEL_STANDBY_SECONDS so
        # that a rollback to it swaps back at once instead of loading it again: name ->
        # (model, monotonic time it was swapped out).
        self._standby: dict[str, tuple[LoadedModel, float]] = {}

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
        for model in [*self.store.loaded(), *(kept for kept, _ in self._standby.values())]:
            await asyncio.to_thread(model.close)
        self._standby.clear()
        await asyncio.to_thread(self._spares.close)

    async def reconcile_all(self) -> None:
        """Make the store match every served alias (and challenger) in the registry."""
        settings = self.settings
        served = await asyncio.to_thread(
            all_serving, self._client, settings.serving_alias, settings.challenger_alias
        )
        changes = [
            *served.items(),
            *((name, Serving(None)) for name in set(self.store.names()) - set(served)),
        ]
        await asyncio.gather(*(self.apply(name, state) for name, state in changes))

    async def refresh(self, name: str) -> None:
        """Re-read one model's aliases from the registry and apply them."""
        settings = self.settings
        state = await asyncio.to_thread(
            serving_state, self._client, name, settings.serving_alias, settings.challenger_alias
        )
        await self.apply(name, state)

    async def apply(self, name: str, state: Serving) -> None:
        """Serve what `state` names for `name` (no champion: stop serving it); one change per
        model at a time."""
        async with self._locks[name]:
            await self._apply_champion(name, state.champion)
            await self._apply_challenger(name, state.canary)

    async def _apply_champion(self, name: str, version: str | None) -> None:
        current = self.store.get(name)
        if version is None:
            self._drop_standby(name)
            if current is not None:
                self.store.remove(name)
                current.retire()
                record_served(name, None, current.version)
                log.info("stopped serving %s (was version %s)", name, current.version)
                await self._report(name, None, "unloaded")
            return
        if current is not None and current.version == version:
            return
        running = self.store.challenger(name)
        if running is not None and running.model.version == version:
            # A promotion: the challenger's loaded version answers everyone from now on.
            self.store.set_challenger(name, None)
            model = running.model
            await self._report(name, None, "unloaded", alias=self.settings.challenger_alias)
        elif (kept := self._take_standby(name, version)) is not None:
            model = kept  # a rollback to the version swapped out last: still loaded
            log.info("%s version %s was kept loaded since it was swapped out", name, version)
        else:
            loaded = await self._load(name, version, self.settings.serving_alias)
            if loaded is None:
                return
            model = loaded
        previous = self.store.swap_in(model)
        record_served(name, version, previous.version if previous else None)
        if previous is not None:
            self._keep_standby(previous)
        log.info(
            "now serving %s version %s (was %s)",
            name,
            version,
            previous.version if previous else "none",
        )
        await self._report(name, version, "loaded")

    def _keep_standby(self, model: LoadedModel) -> None:
        """Keep a swapped-out champion loaded for a quick rollback (one per model), or retire
        it when MODEL_STANDBY_SECONDS is 0."""
        self._drop_standby(model.name)
        if self.settings.model_standby_seconds > 0:
            self._standby[model.name] = (model, time.monotonic())
        else:
            model.retire()

    def _take_standby(self, name: str, version: str) -> LoadedModel | None:
        """The kept champion of `name` if it is `version` (it leaves standby), else None."""
        kept = self._standby.get(name)
        if kept is None or kept[0].version != version:
            return None
        del self._standby[name]
        return kept[0]

    def _drop_standby(self, name: str) -> None:
        kept = self._standby.pop(name, None)
        if kept is not None:
            kept[0].retire()

    def _expire_standby(self) -> None:
        """Retire the kept champions older than MODEL_STANDBY_SECONDS (their memory back)."""
        due = time.monotonic() - self.settings.model_standby_seconds
        for name in [n for n, (_, since) in self._standby.items() if since <= due]:
            self._drop_standby(name)

    async def _apply_challenger(self, name: str, config: CanaryConfig | None) -> None:
        """Run the challenger `config` names beside the champion (None: none)."""
        alias = self.settings.challenger_alias
        running = self.store.challenger(name)
        champion = self.store.get(name)
        if config is None or champion is None or champion.version == config.version:
            if running is not None:
                self.store.set_challenger(name, None)
                if running.model is not champion:
                    running.model.retire()
                log.info("challenger %s version %s stopped", name, running.model.version)
                await self._report(name, None, "unloaded", alias=alias)
            return
        if running is not None and running.model.version == config.version:
            if running.config != config:  # a new weight, mode or sticky key: no reload
                self.store.set_challenger(name, Challenger(running.model, config))
            return
        model = await self._load(name, config.version, alias)
        if model is None:
            if running is not None:  # the registry no longer names the one running
                self.store.set_challenger(name, None)
                running.model.retire()
            return
        previous = self.store.set_challenger(name, Challenger(model, config))
        if previous is not None:
            previous.model.retire()
        log.info(
            "challenger %s version %s beside %s: %s %g%%",
            name,
            config.version,
            champion.version,
            config.mode,
            config.weight,
        )
        await self._report(name, config.version, "loaded", alias=alias)

    async def _load(self, name: str, version: str, alias: str) -> LoadedModel | None:
        """Load and warm a version; None (reported as failed) when it cannot be loaded."""
        try:
            model: LoadedModel = await self._in_loader(
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
            log.exception("failed to load %s version %s; keeping what was served", name, version)
            record_load(name, succeeded=False)
            if alias == self.settings.serving_alias:
                self.store.record_failure(name, version, error[:2000])
            await self._report(name, version, "failed", error[:2000], alias=alias)
            return None
        record_load(name, succeeded=True)
        return model

    async def _in_loader(self, func, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._loader, func, *args)

    async def _report(
        self,
        name: str,
        version: str | None,
        status: str,
        error: str | None = None,
        *,
        alias: str | None = None,
    ) -> None:
        report = ReplicaReport(
            replica=self.replica_id,
            server=self.identity.server,
            processes=self.identity.processes,
            alias=alias or self.settings.serving_alias,
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
            self._expire_standby()
            try:
                await asyncio.to_thread(self._refresh_reports)
            except redis.RedisError as exc:
                log.warning("heartbeat to Redis failed: %s", exc)

    def _held(self) -> list[tuple[str, LoadedModel]]:
        """(alias, model) for every version this replica holds: champions and challengers."""
        held = [(self.settings.serving_alias, self.store.get(name)) for name in self.store.names()]
        held += [
            (self.settings.challenger_alias, running.model)
            for name in self.store.names()
            if (running := self.store.challenger(name)) is not None
        ]
        return [(alias, model) for alias, model in held if model is not None]

    def _refresh_reports(self) -> None:
        pipe = self._redis.pipeline()
        ttl = max(1, int(self.report_ttl))
        held = self._held()
        for alias, model in held:
            report = ReplicaReport(
                replica=self.replica_id,
                server=self.identity.server,
                processes=self.identity.processes,
                alias=alias,
                model=model.name,
                version=model.version,
                status="loaded",
            )
            pipe.hset(replicas_key(alias, model.name), self.replica_id, report.model_dump_json())
            pipe.expire(replicas_key(alias, model.name), ttl)
        pipe.execute()
        for alias, model in held:
            prune_stale_reports(self._redis, alias, model.name, self.report_ttl)

    def _withdraw_reports(self) -> None:
        pipe = self._redis.pipeline()
        for name in self.store.names():
            for alias in (self.settings.serving_alias, self.settings.challenger_alias):
                pipe.hdel(replicas_key(alias, name), self.replica_id)
        pipe.execute()
