"""The frames between the model server and its model processes (model_server/model_channel.py),
over a real pipe: rows attached as raw bytes arrive as the same numbers, and a frame that
describes its arrays wrongly is refused rather than read past its bytes."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import numpy as np
import orjson
import pytest

from model_server.model_channel import ARRAY_KEY, ChannelClosed, encode, receive, send


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    os.close(read)
    os.close(write)


@pytest.mark.parametrize(
    "rows",
    [
        np.random.default_rng(3).normal(size=(1000, 4)),
        np.arange(12, dtype=np.int64).reshape(3, 4),
        np.array([[True, False]]),
        np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),  # not C-contiguous
        np.zeros((0, 4)),
    ],
)
def test_attached_rows_arrive_as_the_same_array(pipe: tuple[int, int], rows: np.ndarray) -> None:
    read, write = pipe
    send(write, {"op": "predict", "rows": rows, "probabilities": False}, None, ("rows",))
    message = receive(read)
    assert message["op"] == "predict" and message["probabilities"] is False
    assert isinstance(message["rows"], np.ndarray)
    assert message["rows"].dtype == rows.dtype and message["rows"].shape == rows.shape
    assert np.array_equal(message["rows"], rows)


def test_rows_that_cannot_go_raw_go_as_json(pipe: tuple[int, int]) -> None:
    """Strings (object arrays) and plain lists stay JSON; unattached keys are never raw."""
    read, write = pipe
    strings = np.array([["a", 1]], dtype=object)
    send(write, {"rows": strings, "other": np.ones(2)}, None, ("rows",))
    assert receive(read) == {"rows": [["a", 1]], "other": [1.0, 1.0]}
    send(write, {"rows": [[1.5, 2.5]]}, None, ("rows",))
    assert receive(read) == {"rows": [[1.5, 2.5]]}


def frame(message: object, tail: bytes) -> bytes:
    body = orjson.dumps(message)
    return struct.pack(">II", len(body), len(tail)) + body + tail


@pytest.mark.parametrize(
    "description",
    [
        {ARRAY_KEY: [0, 16], "dtype": "|O", "shape": [2]},  # objects: never from bytes
        {ARRAY_KEY: [0, 24], "dtype": "<f8", "shape": [3]},  # longer than what was sent
        {ARRAY_KEY: [8, 16], "dtype": "<f8", "shape": [2]},  # runs past the end
        {ARRAY_KEY: [0, 16], "dtype": "<f8", "shape": [3]},  # shape and length disagree
        {ARRAY_KEY: [-8, 16], "dtype": "<f8", "shape": [2]},
        {ARRAY_KEY: [0, 16], "dtype": "<f8", "shape": "2"},
    ],
)
def test_an_array_described_wrongly_closes_the_channel(
    pipe: tuple[int, int], description: dict[str, object]
) -> None:
    read, write = pipe
    os.write(write, frame({"rows": description}, np.ones(2).tobytes()))
    with pytest.raises(ChannelClosed):
        receive(read)


def test_frames_over_the_cap_are_refused_before_reading(pipe: tuple[int, int]) -> None:
    read, write = pipe
    os.write(write, struct.pack(">II", 400 * 1024 * 1024, 200 * 1024 * 1024))
    with pytest.raises(ChannelClosed, match="over the"):
        receive(read)


def test_a_plain_message_is_one_json_frame() -> None:
    data = encode({"ok": True, "predictions": np.array([1, 2])})
    length, attached = struct.unpack(">II", data[:8])
    assert attached == 0 and orjson.loads(data[8:]) == {"ok": True, "predictions": [1, 2]}
    assert length == len(data) - 8
