"""Messages between the model server and a model process: length-prefixed JSON frames.

JSON both ways, never pickle: the server must not unpickle anything a model process sends
(the process runs code from a pushed repository). Frames are capped, so a process cannot make
the server allocate without bound. orjson writes numpy arrays directly (rows one way,
predictions and probabilities the other), so no side makes Python lists only to encode them.
orjson writes NaN as null: both sides send finite numbers only (requests are checked by the
server, outputs by the model process).
"""

from __future__ import annotations

import os
import select
import struct
import time
from typing import Any

import numpy as np
import orjson

_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 512 * 1024 * 1024


class ChannelClosed(Exception):
    """The other side closed its end (the process exited)."""


class ChannelTimeout(Exception):
    """The other side did not answer in time."""


def encode(message: Any) -> bytes:
    body = orjson.dumps(message, default=_as_lists, option=orjson.OPT_SERIALIZE_NUMPY)
    return _HEADER.pack(len(body)) + body


def _as_lists(value: Any) -> Any:
    """What orjson cannot write itself: arrays of objects or strings, strided arrays."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def send(fd: int, message: Any, deadline: float | None = None) -> None:
    """Write one message; waits for room in the pipe at most until `deadline` (monotonic)."""
    write_frame(fd, encode(message), deadline)


def write_frame(fd: int, frame: bytes, deadline: float | None = None) -> None:
    """Write a frame made by `encode`."""
    view = memoryview(frame)
    while view:
        _wait(fd, deadline, writing=True)
        written = os.write(fd, view[: 1 << 20])
        view = view[written:]


def receive(fd: int, deadline: float | None = None) -> Any:
    """Read one frame and decode it."""
    (length,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    if length > MAX_FRAME_BYTES:
        raise ChannelClosed(f"frame of {length} bytes is over the {MAX_FRAME_BYTES} cap")
    return orjson.loads(_read_exact(fd, length, deadline))


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    while size:
        _wait(fd, deadline, writing=False)
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise ChannelClosed("the other side closed the channel")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _wait(fd: int, deadline: float | None, *, writing: bool) -> None:
    """Block until `fd` is ready or the deadline passes (poll: descriptors may be past 1024)."""
    if deadline is None:
        return
    poller = select.poll()
    poller.register(fd, select.POLLOUT if writing else select.POLLIN)
    remaining_ms = max(deadline - time.monotonic(), 0) * 1000
    if not poller.poll(remaining_ms):
        raise ChannelTimeout("no answer in time")
