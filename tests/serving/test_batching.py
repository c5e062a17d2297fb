"""Adaptive batching without a model process: each caller gets exactly its own rows back."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_server.batching import Batcher


@dataclass
class Outputs:
    predictions: list[Any]
    probabilities: list[list[float]] | None


class FakeModel:
    """Doubles the first value of each row; refuses negative rows, as a model refuses input."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, rows: list[list[Any]]) -> Outputs:
        with self.lock:
            self.calls.append(len(rows))
        time.sleep(self.seconds)
        if any(row[0] < 0 for row in rows):
            raise ValueError("negative input")
        return Outputs([row[0] * 2 for row in rows], [[row[0], 1 - row[0]] for row in rows])


def share(outputs: Outputs, start: int, end: int) -> Outputs:
    probabilities = outputs.probabilities
    return Outputs(
        outputs.predictions[start:end], probabilities[start:end] if probabilities else None
    )


def batcher(model: FakeModel, max_rows: int = 64, delay: float = 0.0) -> Batcher:
    return Batcher(model, share, max_rows=max_rows, max_delay_seconds=delay, name="test")


@settings(max_examples=30, deadline=None)
@given(
    requests=st.lists(
        st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=20),
        min_size=1,
        max_size=30,
    ),
    max_rows=st.integers(min_value=1, max_value=50),
)
def test_concurrent_requests_of_any_size_get_exactly_their_own_rows(
    requests: list[list[int]], max_rows: int
) -> None:
    model = FakeModel(seconds=0.001)
    batched = batcher(model, max_rows=max_rows)

    async def run() -> list[Any]:
        return await asyncio.gather(
            *(batched.predict([[value] for value in rows]) for rows in requests)
        )

    answers = asyncio.run(run())
    batched.close()
    for rows, answer in zip(requests, answers, strict=True):
        assert answer.predictions == [value * 2 for value in rows]
        assert answer.probabilities == [[value, 1 - value] for value in rows]
    # Batches never exceed the cap, except for a single request larger than it.
    assert all(size <= max(max_rows, max(map(len, requests))) for size in model.calls)


def test_concurrent_requests_share_calls() -> None:
    model = FakeModel(seconds=0.005)
    batched = batcher(model)

    async def run() -> None:
        await asyncio.gather(*(batched.predict([[i]]) for i in range(40)))

    asyncio.run(run())
    batched.close()
    assert sum(model.calls) == 40 and len(model.calls) < 10


def test_a_bad_row_fails_only_its_own_request() -> None:
    model = FakeModel(seconds=0.002)
    batched = batcher(model)

    async def run() -> list[Any]:
        return await asyncio.gather(
            *(batched.predict([[i], [i + 1]]) for i in range(5)),
            batched.predict([[-1]]),
            *(batched.predict([[i]]) for i in range(5)),
            return_exceptions=True,
        )

    answers = asyncio.run(run())
    batched.close()
    failed = [answer for answer in answers if isinstance(answer, Exception)]
    assert len(failed) == 1 and isinstance(failed[0], ValueError)
    assert answers[5] is failed[0]
    assert answers[0].predictions == [0, 2] and answers[-1].predictions == [8]


def test_a_lone_request_waits_at_most_the_configured_delay() -> None:
    model = FakeModel()
    batched = batcher(model, delay=0.05)

    async def run() -> float:
        started = time.perf_counter()
        await batched.predict([[1]])
        return time.perf_counter() - started

    waited = asyncio.run(run())
    batched.close()
    assert model.calls == [1]
    assert waited == pytest.approx(0.05, abs=0.2)
