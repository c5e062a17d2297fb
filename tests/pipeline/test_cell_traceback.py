"""The user's own frames picked out of IPython's tracebacks, as the kernel formats them.

The tracebacks come from IPython's own formatter (an in-process shell: the same VerboseTB the
kernel sends), so a change of IPython's layout fails here rather than on a pipeline page.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from IPython.core.interactiveshell import InteractiveShell

from mlops_core.cell_traceback import (
    LIBRARY_HEAD,
    LIBRARY_TAIL,
    CellFailure,
    RanCell,
    cell_failure,
    failure_lines,
    user_line,
)


class Kernelish:
    """Runs cells in an IPython shell and keeps the structured traceback of the last error."""

    def __init__(self) -> None:
        self.shell = InteractiveShell.instance()
        self.shell.execution_count = 1
        self.traceback: list[str] = []
        self.exception = ""
        self.ran: dict[int, RanCell] = {}

        def keep(etype: type, evalue: BaseException, stb: list[str]) -> None:
            self.traceback = stb
            self.exception = f"{etype.__name__}: {evalue}"

        self.shell._showtraceback = keep  # what ipykernel overrides to send the traceback

    def run(self, number: int, source: str) -> bool:
        result = self.shell.run_cell(source, store_history=True)
        self.ran[result.execution_count] = RanCell(number, f"tag-{number}", source)
        return result.success

    def failure(self, number: int) -> CellFailure:
        return cell_failure(
            self.traceback, self.exception, self.ran, cell=number, tag=f"tag-{number}"
        )


@pytest.fixture
def kernel() -> Iterator[Kernelish]:
    yield Kernelish()
    InteractiveShell.clear_instance()


def test_a_library_error_names_the_users_line_with_its_cell_source(kernel: Kernelish) -> None:
    assert kernel.run(2, "import json\ntext = '{'")
    source = (
        "rows = 3\n# parse it\n\n\nparsed = json.loads(text)\nprint(parsed)\nrows += 1\nend = 1"
    )
    assert not kernel.run(4, source)
    failure = kernel.failure(4)

    assert failure.exception.startswith("JSONDecodeError: Expecting property name")
    [frame] = failure.frames
    assert (frame.cell, frame.line, frame.tag, frame.function) == (4, 5, "tag-4", None)
    assert frame.text == "parsed = json.loads(text)"
    # Four lines before, two after, numbered as in the cell.
    assert [s.number for s in frame.source] == [1, 2, 3, 4, 5, 6, 7]
    assert any(entry.startswith("json/decoder.py:") for entry in failure.library_frames)
    assert user_line(failure) == "cell 4, line 5: parsed = json.loads(text)"

    lines = failure_lines(failure)
    assert lines[0] == "cell 4, line 5:"
    assert "--> 5 | parsed = json.loads(text)" in lines
    assert lines[-1] == failure.exception
    # Stored as JSON and read back unchanged.
    assert CellFailure.from_json(failure.as_json()) == failure


def test_a_helper_from_an_earlier_cell_is_shown_in_its_own_cell(kernel: Kernelish) -> None:
    assert kernel.run(3, "def ratio(v):\n    scale = 1\n    return scale / v")
    assert not kernel.run(6, "values = [1, 0]\nout = [ratio(v) for v in values]")
    failure = kernel.failure(6)

    assert failure.exception == "ZeroDivisionError: division by zero"
    cells = [(frame.cell, frame.line, frame.text.strip()) for frame in failure.frames]
    assert cells[0] == (6, 2, "out = [ratio(v) for v in values]")
    assert cells[-1] == (3, 3, "return scale / v")
    assert failure.frames[-1].function == "ratio"
    assert failure.library_frames == []
    assert user_line(failure) == "cell 3, line 3: return scale / v"


def test_the_last_exception_of_a_chain_is_the_one_placed(kernel: Kernelish) -> None:
    source = (
        "try:\n    {}['key']\nexcept KeyError as exc:\n"
        "    raise ValueError('no key in the config') from exc"
    )
    assert not kernel.run(1, source)
    failure = kernel.failure(1)

    [frame] = failure.frames
    assert (frame.line, frame.text.strip()) == (
        4,
        "raise ValueError('no key in the config') from exc",
    )


def test_a_deep_library_stack_keeps_its_ends(kernel: Kernelish) -> None:
    assert kernel.run(1, "import sys\nsys.path.insert(0, '.')")
    depth = LIBRARY_HEAD + LIBRARY_TAIL + 5
    # A module of its own: its frames are not the notebook's.
    assert kernel.run(
        2,
        "import types, linecache\n"
        'code = \'def down(n):\\n    if n == 0:\\n        raise RuntimeError("bottom")\\n'
        "    return down(n - 1)\\n'\n"
        "linecache.cache['/srv/lib/deep.py'] = (len(code), None, code.splitlines(True), "
        "'/srv/lib/deep.py')\n"
        "deep = types.ModuleType('deep')\n"
        "exec(compile(code, '/srv/lib/deep.py', 'exec'), deep.__dict__)",
    )
    assert not kernel.run(3, f"deep.down({depth})")
    failure = kernel.failure(3)

    assert [frame.cell for frame in failure.frames] == [3]
    frames = failure.library_frames
    assert len(frames) == LIBRARY_HEAD + LIBRARY_TAIL + 1
    assert frames[LIBRARY_HEAD] == f"... {depth + 1 - LIBRARY_HEAD - LIBRARY_TAIL} more"
    assert all(f.startswith("/srv/lib/deep.py:") for i, f in enumerate(frames) if i != LIBRARY_HEAD)


def test_malformed_failures_read_back_as_none() -> None:
    assert CellFailure.from_json(None) is None
    assert CellFailure.from_json({"frames": []}) is None
    assert CellFailure.from_json({"exception": "E", "frames": [{"cell": "x"}]}) is None
