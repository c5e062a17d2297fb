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
# One pattern subscription per backend process receives every pipeline's channel.
LOG_CHANNEL_PATTERN = f"{LOG_CHANNEL_PREFIX}*"
FINISHED_STREAM = "status"
# Keep-alive messages a viewer may receive between events; they carry no seq.
HEARTBEAT_STREAM = "ping"


def log_channel(pipeline_id: int) -> str:
    """Pub/sub channel carrying a pipeline's live log events."""
    return f"{LOG_CHANNEL_PREFIX}{pipeline_id}"


def pipeline_id_of_channel(channel: str) -> int | None:
    """The pipeline id a log channel belongs to, or None for any other channel."""
    suffix = channel.removeprefix(LOG_CHANNEL_PREFIX)
    return int(suffix) if suffix != channel and suffix.isdigit() else None


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


# ARGV[5] is the last seq this publisher handed out: if Redis lost the counter (FLUSHALL, eviction)
# mid-run, numbering resumes above it instead of restarting at 1, which viewers would skip as
# already seen.
_PUBLISH_SCRIPT = """
local seq = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[5])
if seq <= floor then
  seq = floor + 1
  redis.call('SET', KEYS[1], seq)
end
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
        self._last_seq = 0

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
        self._last_seq = int(
            self._script(
                keys=[seq_key(self._pipeline_id), history_key(self._pipeline_id)],
                args=[
                    payload,
                    self._max_lines,
                    self._ttl,
                    log_channel(self._pipeline_id),
                    self._last_seq,
                ],
            )
        )
        return self._last_seq

    def history(self) -> list[LogEvent]:
        """Every event still kept in Redis for this pipeline, in seq order."""
        raw = self._client.lrange(history_key(self._pipeline_id), 0, -1)
        return [LogEvent.model_validate_json(item) for item in raw]
