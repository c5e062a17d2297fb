"""Adaptive batching without a model process: each caller gets exactly its own rows back."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
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
        self.asked: list[bool] = []  # whether each call was asked for probabilities
        self.lock = threading.Lock()

    def __call__(self, rows: Any, probabilities: bool) -> Outputs:
        with self.lock:
            self.calls.append(len(rows))
            self.asked.append(probabilities)
        time.sleep(self.seconds)
        if any(row[0] < 0 for row in rows):
            raise ValueError("negative input")
        values = [row[0] for row in rows]
        return Outputs(
            [value * 2 for value in values],
            [[value, 1 - value] for value in values] if probabilities else None,
        )


def share(outputs: Outputs, start: int, end: int, probabilities: bool) -> Outputs:
    batch = outputs.probabilities
    return Outputs(
        outputs.predictions[start:end],
        batch[start:end] if batch is not None and probabilities else None,
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


def test_probabilities_are_computed_only_for_batches_that_ask_and_given_only_to_who_asked() -> None:
    model = FakeModel(seconds=0.005)
    batched = batcher(model)

    async def run() -> list[Any]:
        return await asyncio.gather(
            *(batched.predict([[i]], probabilities=i % 2 == 0) for i in range(20))
        )

    answers = asyncio.run(run())
    batched.close()
    for i, answer in enumerate(answers):
        assert answer.predictions == [i * 2]
        assert answer.probabilities == ([[i, 1 - i]] if i % 2 == 0 else None)

    alone = FakeModel()
    batched = batcher(alone)
    answer = asyncio.run(batched.predict([[3]], probabilities=False))
    batched.close()
    assert alone.asked == [False] and answer.probabilities is None


def test_matrices_of_concurrent_requests_are_joined_into_one_matrix() -> None:
    model = FakeModel(seconds=0.005)
    seen: list[Any] = []

    def call(rows: Any, probabilities: bool) -> Outputs:
        seen.append(rows)
        return model(rows, probabilities)

    batched = Batcher(call, share, max_rows=64, max_delay_seconds=0.0, name="test")

    async def run(lists: int) -> list[Any]:
        return await asyncio.gather(
            *(batched.predict(np.array([[float(i)], [float(i + 1)]])) for i in range(10)),
            # Rows as lists (a model of string features) join the others as lists.
            *(batched.predict([[100.0]]) for _ in range(lists)),
        )

    async def both() -> tuple[list[Any], list[Any], list[Any]]:
        matrices = await run(lists=0)
        joined = list(seen)
        seen.clear()
        return matrices, joined, await run(lists=1)

    matrices, joined, mixed = asyncio.run(both())
    batched.close()
    assert [a.predictions for a in matrices] == [[i * 2, (i + 1) * 2] for i in range(10)]
    assert any(isinstance(rows, np.ndarray) and len(rows) > 2 for rows in joined)
    assert [a.predictions for a in mixed] == [[i * 2, (i + 1) * 2] for i in range(10)] + [[200.0]]
    assert any(isinstance(rows, list) and len(rows) > 2 for rows in seen)
