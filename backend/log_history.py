"""A pipeline's log after a given seq, from Redis's replay list or, where Redis lost it, the DB.

Redis holds the recent lines of every pipeline (capped, with a TTL); the database holds the
whole log once the pipeline has ended. A reader asks for "the lines after seq N" and gets them
from whichever store has them, Redis first, so a running pipeline is served live and a finished
one survives Redis being flushed or expired.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import select

from mlops_core.database import session_factory
from mlops_core.log_archive import stored_events
from mlops_core.log_events import FINISHED_STREAM, LogEvent, history_key
from mlops_core.schema import Pipeline

# Reads the replay list from `after` on atomically: the list is contiguous in seq (the publish
# script appends under one INCR), so the index of seq N is N - first seq; computing it inside
# Redis means a concurrent trim by the cap cannot shift the range between two round-trips.
# Returns the list's first seq (or nothing when the list is gone) followed by the events.
_READ_AFTER_SCRIPT = """
local first = redis.call('LINDEX', KEYS[1], 0)
if not first then return {} end
local first_seq = tonumber(string.match(first, '^{"seq":(%d+),'))
local start = math.max(0, tonumber(ARGV[1]) + 1 - first_seq)
local events = redis.call('LRANGE', KEYS[1], start, start + tonumber(ARGV[2]) - 1)
table.insert(events, 1, tostring(first_seq))
return events
"""

MAX_READ: Final = 1000
# Largest `after` a reader may pass: the replay script computes with Lua numbers (doubles), and
# past 2**53 its LRANGE bounds stop being integers Redis accepts.
MAX_SEQ: Final = 2**53 - 1

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One event as sent to viewers: its raw JSON plus what the server needs to know of it."""

    seq: int
    final: bool
    status: str | None
    raw: str

    @classmethod
    def from_raw(cls, raw: str) -> LogEntry:
        """Parse an event as the publisher wrote it (raises ValueError/KeyError if malformed)."""
        body = json.loads(raw)
        return cls(
            seq=int(body["seq"]),
            final=body.get("stream") == FINISHED_STREAM,
            status=body.get("status"),
            raw=raw,
        )

    @classmethod
    def from_event(cls, event: LogEvent) -> LogEntry:
        raw = event.model_dump_json(exclude={"status"} if event.status is None else None)
        return cls(
            seq=event.seq, final=event.stream == FINISHED_STREAM, status=event.status, raw=raw
        )


class LogHistory:
    """Reads a pipeline's stored log (Redis replay list, then the DB archive) and its status."""

    def __init__(self, client: aioredis.Redis, database_url: str) -> None:
        self._client = client
        self._database_url = database_url
        self._read_after = client.register_script(_READ_AFTER_SCRIPT)

    async def pipeline_status(self, pipeline_id: int) -> str | None:
        """The pipeline's status, or None when there is no such pipeline."""
        return await asyncio.to_thread(self._status_sync, pipeline_id)

    async def read(
        self, pipeline_id: int, after: int, limit: int = MAX_READ, *, status: str | None = None
    ) -> list[LogEntry]:
        """Up to `limit` events with seq > `after`, in seq order.

        `status` is the pipeline's status, given to the final event read from the DB archive.
        """
        limit = min(limit, MAX_READ)
        try:
            first_seq, cached = await self._read_redis(pipeline_id, after, limit)
        except RedisError as exc:
            logger.warning("reading the log of pipeline %s from Redis failed: %s", pipeline_id, exc)
            first_seq, cached = None, []
        if first_seq is not None and first_seq <= after + 1:
            return cached
        # Redis does not hold the lines right after `after` (expired, flushed, trimmed):
        # the archive may, for every seq below the first one Redis still has.
        archived = await asyncio.to_thread(self._archived_sync, pipeline_id, after, limit, status)
        if first_seq is not None:
            archived = [entry for entry in archived if entry.seq < first_seq]
        return (archived + cached)[:limit]

    async def _read_redis(
        self, pipeline_id: int, after: int, limit: int
    ) -> tuple[int | None, list[LogEntry]]:
        reply = await self._read_after(keys=[history_key(pipeline_id)], args=[after, limit])
        if not reply:
            return None, []
        entries = [LogEntry.from_raw(raw.decode()) for raw in reply[1:]]
        return int(reply[0]), [entry for entry in entries if entry.seq > after]

    def _status_sync(self, pipeline_id: int) -> str | None:
        with session_factory(self._database_url)() as session:
            return session.scalar(select(Pipeline.status).where(Pipeline.id == pipeline_id))

    def _archived_sync(
        self, pipeline_id: int, after: int, limit: int, status: str | None
    ) -> list[LogEntry]:
        with session_factory(self._database_url)() as session:
            events = stored_events(
                session, pipeline_id, pipeline_status=status, after=after, limit=limit
            )
        return [LogEntry.from_event(event) for event in events]
