"""The serving benchmark's tables: figures per server, ours against each anchor, memory.

Printed as Markdown so that the README can quote a run as it is. Each figure is the median over
the rounds (with two rounds, their mean); errors are summed over the rounds.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.serving.wrk import WrkSummary

MIB = 1024 * 1024


@dataclass(frozen=True)
class Load:
    """Requests of `rows` rows from `connections` connections at once."""

    rows: int
    connections: int

    @property
    def label(self) -> str:
        rows = "1 row" if self.rows == 1 else f"{self.rows:,} rows"
        return f"{rows}, {self.connections} conn"


@dataclass(frozen=True)
class Memory:
    """Resident memory of a server's process tree and how many processes it has."""

    rss_bytes: int
    processes: int


@dataclass(frozen=True)
class Figures:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def combine(runs: Sequence[WrkSummary]) -> Figures:
    """One line of the table from the rounds' runs of one server, model and load."""
    return Figures(
        requests_per_second=statistics.median(r.requests_per_second for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        errors=sum(r.error_count for r in runs),
    )


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, columns padded to line up in a terminal; numbers right-aligned."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    right = [bool(rows) and all(_numeric(row[i]) for row in rows) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    rule = (
        "| "
        + " | ".join(
            ("-" * (w - 1) + ":") if r else "-" * w for w, r in zip(widths, right, strict=True)
        )
        + " |"
    )
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def _numeric(cell: str) -> bool:
    return cell.replace(",", "").replace(".", "").replace("x", "").replace("-", "").isdigit()


def figures_table(
    figures: dict[tuple[str, str], Figures],
    servers: Sequence[tuple[str, str]],
    loads: Sequence[Load],
) -> str:
    """One row per load and server (key, title); `figures` keyed by (load label, server key)."""
    rows = []
    for load in loads:
        for key, title in servers:
            f = figures[(load.label, key)]
            rows.append(
                [
                    load.label,
                    title,
                    f"{f.requests_per_second:,.0f}",
                    f"{f.p50_ms:.1f}",
                    f"{f.p99_ms:.1f}",
                    str(f.errors),
                ]
            )
    return markdown(["load", "server", "req/s", "p50 ms", "p99 ms", "errors"], rows)


def ratio_table(
    figures: dict[tuple[str, str], Figures],
    ours: str,
    anchors: Sequence[tuple[str, str]],
    loads: Sequence[Load],
) -> str:
    """Ours' requests/s divided by each anchor's, per load (above 1: ours serves more)."""
    rows = []
    for load in loads:
        mine = figures[(load.label, ours)].requests_per_second
        cells = []
        for key, _ in anchors:
            theirs = figures[(load.label, key)].requests_per_second
            cells.append(f"{mine / theirs:.2f}x" if theirs else "-")
        rows.append([load.label, *cells])
    return markdown(["load", *(f"vs {title}" for _, title in anchors)], rows)


def memory_table(
    peaks: dict[tuple[str, str], Memory],
    servers: Sequence[tuple[str, str]],
    models: Sequence[tuple[str, str]],
) -> str:
    """Peak RSS of each server's process tree while it served each model, and its processes."""
    rows = []
    for key, title in servers:
        cells = []
        for model, _ in models:
            peak = peaks.get((key, model), Memory(0, 0))
            cells.append(f"{peak.rss_bytes / MIB:,.0f} MiB in {peak.processes}")
        rows.append([title, *cells])
    return markdown(["server", *(f"during {title}" for _, title in models)], rows)
