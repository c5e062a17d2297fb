"""Pipeline log events: their shape, their Redis keys, and the publisher the worker uses.

Each line gets a per-pipeline `seq` from Redis (INCR) inside one Lua script that also appends
it to the replay list and publishes it, so the list order, the seq order and the publish order
are the same even with several writers. A viewer subscribes first, reads the list, then skips
by seq what it already sent: no gap, no duplicate.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from pydantic import BaseModel

LOG_CHANNEL_PREFIX = "mlops:logs:"
FINISHED_STREAM = "status"


def log_channel(pipeline_id: int) -> str:
    """Pub/sub channel carrying a pipeline's live log events."""
    return f"{LOG_CHANNEL_PREFIX}{pipeline_id}"


def history_key(pipeline_id: int) -> str:
    """Redis list holding a pipeline's recent log events for replay."""
    return f"mlops:loghist:{pipeline_id}"


def seq_key(pipeline_id: int) -> str:
    """Redis counter of a pipeline's last log sequence number."""
    return f"mlops:logseq:{pipeline_id}"


class LogEvent(BaseModel):
    """One log line; `stream` is stdout, stderr, system, error, or status (the final event)."""

    seq: int
    ts: float
    pipeline_id: int
    phase: str | None = None
    cell: int | None = None
    stream: str = "system"
    text: str
    status: str | None = None


_PUBLISH_SCRIPT = """
local seq = redis.call('INCR', KEYS[1])
local event = '{"seq":' .. seq .. ',' .. string.sub(ARGV[1], 2)
redis.call('RPUSH', KEYS[2], event)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
redis.call('PUBLISH', ARGV[4], event)
return seq
"""


class LogPublisher:
    """Publishes a pipeline's log lines to Redis (live channel + capped replay list)."""

    def __init__(
        self,
        client: redis.Redis,
        pipeline_id: int,
        *,
        max_lines: int = 20000,
        ttl_seconds: int = 7 * 24 * 3600,
    ) -> None:
        self._client = client
        self._pipeline_id = pipeline_id
        self._max_lines = max_lines
        self._ttl = ttl_seconds
        self._script = client.register_script(_PUBLISH_SCRIPT)

    def publish(
        self,
        text: str,
        *,
        phase: str | None = None,
        cell: int | None = None,
        stream: str = "system",
        **extra: Any,
    ) -> int:
        """Publish one line and return its seq."""
        body = {
            "ts": time.time(),
            "pipeline_id": self._pipeline_id,
            "phase": phase,
            "cell": cell,
            "stream": stream,
            "text": text,
            **extra,
        }
        payload = json.dumps(body, separators=(",", ":"))
        return int(
            self._script(
                keys=[seq_key(self._pipeline_id), history_key(self._pipeline_id)],
                args=[payload, self._max_lines, self._ttl, log_channel(self._pipeline_id)],
            )
        )

    def history(self) -> list[LogEvent]:
        """Every event still kept in Redis for this pipeline, in seq order."""
        raw = self._client.lrange(history_key(self._pipeline_id), 0, -1)
        return [LogEvent.model_validate_json(item) for item in raw]
