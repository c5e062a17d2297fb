"""The backend's periodic passes (re-queue, pipeline watch, commit statuses, drift): one loop.

Each pass is blocking work (database, Redis, GitHub) run on a worker thread every `interval`
seconds while the app runs. A failing pass is logged and the next one runs: a database or
Redis hiccup must not end the loop for the life of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio

logger = logging.getLogger(__name__)


@asynccontextmanager
async def every(interval: float, work: Callable[[], object], *, name: str) -> AsyncIterator[None]:
    """Run `work` now and then every `interval` seconds until the context ends."""

    async def loop() -> None:
        while True:
            try:
                await anyio.to_thread.run_sync(work)
            except Exception:
                logger.exception("%s pass failed; retrying in %.1fs", name, interval)
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop(), name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
