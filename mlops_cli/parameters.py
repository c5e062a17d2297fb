"""Papermill parameters from the command line: `--param NAME=VALUE` or `-p NAME VALUE`.

A value is JSON when it reads as JSON (`300`, `0.5`, `true`, `[1, 2]`, `"300"`), else the text
as it is (`entropy`), the same for `mlops trigger` (sent to the backend) and `mlops run` (injected
locally).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import click


def parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class NameEqualsValue(click.ParamType):
    """`NAME=VALUE` as (name, value)."""

    name = "NAME=VALUE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        name, sep, raw = str(value).partition("=")
        if not sep or not name.strip():
            self.fail(f"expected NAME=VALUE, got {value!r}")
        return name.strip(), parse_value(raw)


def collect(
    pairs: Iterable[tuple[str, Any]], name_values: Iterable[tuple[str, str]]
) -> dict[str, Any]:
    """`--param` pairs (already parsed) and `-p NAME VALUE` pairs as one dict, later ones
    winning."""
    parameters = dict(pairs)
    for name, raw in name_values:
        parameters[name] = parse_value(raw)
    return parameters


def parameter_options(command: Any) -> Any:
    """`-p NAME VALUE` (papermill's spelling), repeatable."""
    return click.option(
        "-p",
        "--parameter",
        "name_values",
        nargs=2,
        multiple=True,
        metavar="NAME VALUE",
        help="a papermill parameter (repeatable); VALUE is read as JSON (300, 0.5, true, "
        "[1,2]) or else taken as a string",
    )(command)
