"""A cell's output reaches the log as whole lines, however the kernel cut it into chunks.

The kernel flushes its output buffer when it fills or on a timer, so the same `print` arrives as
one chunk on one run and as two on another (seen on a loaded machine: "trained " then the
model's repr, each shown as a line of its own). Pure: the runner's stream objects on a string.
"""

from __future__ import annotations

import io
import json

from nbformat import NotebookNode

from mlops_core.notebook_contract import INDEX_METADATA_KEY
from mlops_core.notebook_runner import MAX_HELD_CHARACTERS, CellTracker, EventWriter


def tracked() -> tuple[CellTracker, io.StringIO]:
    sink = io.StringIO()
    tracker = CellTracker(EventWriter(sink))
    cell = NotebookNode(source="", metadata={"tags": ["mlops:training"], INDEX_METADATA_KEY: 4})
    tracker.on_cell_execute(cell, 4)
    return tracker, sink


def outputs(sink: io.StringIO) -> list[tuple[str, str]]:
    events = [json.loads(line) for line in sink.getvalue().splitlines()]
    return [(e["stream"], e["text"]) for e in events if e["type"] == "output"]


def end_cell(tracker: CellTracker) -> None:
    tracker.on_cell_executed(NotebookNode(source=""), 4, {"content": {"status": "ok"}})


def test_a_line_cut_into_chunks_is_sent_once_it_ends() -> None:
    tracker, sink = tracked()
    stdout = tracker.stream("stdout")
    stdout.write("trained ")
    assert outputs(sink) == []
    stdout.write("RandomForestClassifier(max_depth=5)\nloss 0.1")
    assert outputs(sink) == [("stdout", "trained RandomForestClassifier(max_depth=5)\n")]
    stdout.write("\n\n")
    assert outputs(sink)[1:] == [("stdout", "loss 0.1\n\n")]  # the empty line is kept


def test_the_cell_end_sends_an_unfinished_line_before_the_cell_is_marked_finished() -> None:
    tracker, sink = tracked()
    tracker.stream("stdout").write("no newline")
    tracker.stream("stderr").write("warning: x\npartial")
    end_cell(tracker)
    events = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert [(e["type"], e.get("text")) for e in events[1:]] == [
        ("output", "warning: x\n"),
        ("output", "no newline"),
        ("output", "partial"),
        ("cell_end", None),
    ]
    assert tracker.stream("stdout") is tracker.stream("stdout")  # papermill's object, kept


def test_a_progress_bar_rewriting_its_line_shows_each_step_and_a_huge_line_is_not_held() -> None:
    tracker, sink = tracked()
    stderr = tracker.stream("stderr")
    for step in (10, 20, 30):
        stderr.write(f"\r{step}%|")
    assert [text for _, text in outputs(sink)] == ["10%|\r", "20%|\r"]
    stderr.write("x" * (MAX_HELD_CHARACTERS + 10))
    assert outputs(sink)[-1][1].endswith("x" * (MAX_HELD_CHARACTERS + 10))
