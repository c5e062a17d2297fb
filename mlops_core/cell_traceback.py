"""Where a notebook cell raised: the user's own frames, out of the kernel's traceback.

The kernel reports an error as IPython's structured traceback: one text chunk per frame, a
frame of notebook code headed `Cell In[7], line 4` (`, in helper(v)` inside a function), a
frame of a library headed `File /path/module.py:123, in func(...)`, and the exception last.
A traceback's tail is almost always library frames (pandas' indexing, scikit-learn's
validation), so the line the user wrote, the one to fix, was cut from what the pipeline showed.

This module picks the notebook frames out, maps each `In[N]` (an execution count) to the cell
it ran, and gives the cell's source around the line, so the log and the pipeline page can show
the user's line first and the library frames after it, each once. Cells are numbered from 1,
every cell counted (markdown too), as in every other message of the platform.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

ANSI_ESCAPE: Final = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# IPython 8+ (`Cell In[3], line 4`, `, in f(x)` inside a function) and IPython 7 spellings.
_CELL_FRAME: Final = re.compile(
    r"^\s*(?:Cell In\s*\[(?P<count>\d+)\], line (?P<line>\d+)(?:, in (?P<function>.+))?"
    r"|Input In \[(?P<count7>\d+)\], in (?:<cell line: (?P<line7>\d+)>|(?P<function7>.+))\(\))"
)
_FILE_FRAME: Final = re.compile(r"^\s*File (?P<path>.+?):(?P<line>\d+)(?:, in (?P<function>.+))?$")
_INSTALLED: Final = re.compile(r"^.*/(?:site-packages|dist-packages|lib/python3\.\d+)/")
_CHAINED: Final = (
    "During handling of the above exception",
    "The above exception was the direct cause",
)
# Source lines shown around the line that raised.
LINES_BEFORE: Final = 4
LINES_AFTER: Final = 2
MAX_LINE_CHARS: Final = 300
# Library frames kept: the first ones (what the user's line called) and the last ones (where
# it raised); a deep stack's middle is left out, counted.
LIBRARY_HEAD: Final = 4
LIBRARY_TAIL: Final = 3
# Notebook frames kept (a recursion can stack many): the cell's own, then the deepest ones.
MAX_CELL_FRAMES: Final = 5
MAX_EXCEPTION_CHARS: Final = 2000


@dataclass(frozen=True)
class RanCell:
    """A cell the kernel ran: its number (from 1), tag and source."""

    number: int
    tag: str | None
    source: str


@dataclass(frozen=True)
class SourceLine:
    number: int
    text: str


@dataclass(frozen=True)
class CellFrame:
    """A frame inside a notebook cell: the line that ran, with the cell's source around it."""

    cell: int
    tag: str | None
    line: int
    function: str | None
    source: list[SourceLine]

    @property
    def text(self) -> str:
        """The line itself."""
        return next((s.text for s in self.source if s.number == self.line), "")


@dataclass(frozen=True)
class CellFailure:
    """Where a run stopped (`cell`, `tag`), the exception, the notebook's frames (outermost
    first) and the library frames below the last of them (`path:line in function`)."""

    cell: int | None
    tag: str | None
    exception: str
    frames: list[CellFrame] = field(default_factory=list)
    library_frames: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> CellFailure | None:
        """The failure `as_json` wrote (read back from the runner's pipe), None if malformed."""
        if not isinstance(data, Mapping):
            return None
        try:
            frames = [
                CellFrame(
                    cell=int(frame["cell"]),
                    tag=_optional_text(frame.get("tag")),
                    line=int(frame["line"]),
                    function=_optional_text(frame.get("function")),
                    source=[SourceLine(int(s["number"]), str(s["text"])) for s in frame["source"]],
                )
                for frame in data.get("frames", [])
            ]
            cell = data.get("cell")
            return cls(
                cell=None if cell is None else int(cell),
                tag=_optional_text(data.get("tag")),
                exception=str(data["exception"]),
                frames=frames,
                library_frames=[str(frame) for frame in data.get("library_frames", [])],
            )
        except (KeyError, TypeError, ValueError):
            return None


def _optional_text(value: object) -> str | None:
    return None if value is None else str(value)


def plain(chunks: Sequence[str]) -> list[str]:
    """The traceback's chunks without terminal colours."""
    return [ANSI_ESCAPE.sub("", chunk) for chunk in chunks]


def _last_traceback(chunks: list[str]) -> list[str]:
    """The chunks of the last exception of a chain (the one that stopped the cell)."""
    start = 0
    for i, chunk in enumerate(chunks):
        if any(marker in chunk for marker in _CHAINED):
            start = i + 1
    return chunks[start:]


def _excerpt(source: str, line: int) -> list[SourceLine]:
    lines = source.splitlines()
    first = max(1, line - LINES_BEFORE)
    last = min(len(lines), line + LINES_AFTER)
    return [
        SourceLine(number, lines[number - 1][:MAX_LINE_CHARS]) for number in range(first, last + 1)
    ]


def _library_frame(match: re.Match[str]) -> str:
    # Installed packages' paths are long and the same for everyone: keep the package's part.
    path = _INSTALLED.sub("", match["path"])
    function = f" in {match['function'].split('(', 1)[0]}" if match["function"] else ""
    return f"{path}:{match['line']}{function}"


def cell_failure(
    chunks: Sequence[str],
    exception: str,
    ran: Mapping[int, RanCell],
    *,
    cell: int | None,
    tag: str | None,
) -> CellFailure:
    """The failure of a run stopped at `cell`: `chunks` is the kernel's traceback, `ran` the
    cells run so far by execution count (frames of code the kernel ran otherwise, such as
    the injected parameters, keep their line but show no source)."""
    frames: list[CellFrame] = []
    library: list[str] = []
    for chunk in _last_traceback(plain(chunks)):
        head = chunk.lstrip("\n").split("\n", 1)[0]
        match = _CELL_FRAME.match(head)
        if match is not None:
            count = int(match["count"] or match["count7"])
            line = int(match["line"] or match["line7"] or 0)
            function = match["function"] or match["function7"]
            source = ran.get(count)
            frames.append(
                CellFrame(
                    cell=source.number if source else cell or 0,
                    tag=source.tag if source else tag,
                    line=line,
                    function=function.split("(", 1)[0] if function else None,
                    source=_excerpt(source.source, line) if source and line else [],
                )
            )
            library = []  # only the library frames below the user's last one matter
            continue
        file_match = _FILE_FRAME.match(head)
        if file_match is not None:
            library.append(_library_frame(file_match))
    if len(frames) > MAX_CELL_FRAMES:
        frames = [frames[0], *frames[1 - MAX_CELL_FRAMES :]]
    return CellFailure(
        cell=cell,
        tag=tag,
        exception=exception[:MAX_EXCEPTION_CHARS],
        frames=frames,
        library_frames=_bounded(library),
    )


def _bounded(frames: list[str]) -> list[str]:
    if len(frames) <= LIBRARY_HEAD + LIBRARY_TAIL + 1:
        return frames
    left_out = len(frames) - LIBRARY_HEAD - LIBRARY_TAIL
    return [*frames[:LIBRARY_HEAD], f"... {left_out} more", *frames[-LIBRARY_TAIL:]]


def failure_lines(failure: CellFailure) -> list[str]:
    """The failure as log lines: each notebook frame with its source (the line that ran marked
    `-->`), the library frames under it, then the exception."""
    lines: list[str] = []
    for frame in failure.frames:
        where = f"cell {frame.cell}, line {frame.line}" + (
            f", in {frame.function}" if frame.function else ""
        )
        lines.append(f"{where}:")
        width = len(str(frame.source[-1].number)) if frame.source else 1
        lines.extend(
            f"{'-->' if s.number == frame.line else '   '} {s.number:>{width}} | {s.text}"
            for s in frame.source
        )
    if failure.library_frames:
        lines.append("called into:" if failure.frames else "raised in:")
        lines.extend(f"    {frame}" for frame in failure.library_frames)
    lines.append(failure.exception)
    return lines


def user_line(failure: CellFailure) -> str | None:
    """`cell 3, line 4: df["missing"]`: the deepest line of the user's own code, if known."""
    for frame in reversed(failure.frames):
        if frame.text.strip():
            return f"cell {frame.cell}, line {frame.line}: {frame.text.strip()}"
    return None
