"""What every command shares: the connection options, `--json`, output and confirmation.

`--api`, `--token` and `--json` are accepted before the command (`mlops --json repos list`) and
after it (`mlops repos list --json`), as the argparse CLI accepted them; the later one wins.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from mlops_cli.api_client import ApiClient
from mlops_cli.config import DEFAULT_API_URL, Connection, resolve

F = TypeVar("F", bound=Callable[..., Any])
MAX_CELL = 60


@dataclass
class Invocation:
    """The options of one `mlops` command line, wherever they were given."""

    api: str | None = None
    token: str | None = None
    as_json: bool = False

    def connection(self) -> Connection:
        return resolve(self.api, self.token)

    def client(self) -> ApiClient:
        connection = self.connection()
        return ApiClient(connection.api_url, connection.token)

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """One GET on a client of its own (the read-only commands make a single call)."""
        client = self.client()
        try:
            return client.get_json(path, params=params)
        finally:
            client.close()


def _remember(field: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def store(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value not in (None, False):
            setattr(ctx.ensure_object(Invocation), field, value)

    return store


def api_options(command: F) -> F:
    """--api and --token, for every command that calls the backend."""
    command = click.option(
        "--api",
        metavar="URL",
        expose_value=False,
        callback=_remember("api"),
        help=f"backend URL (default: $MLOPS_API_URL, the config file's api_url, else "
        f"{DEFAULT_API_URL})",
    )(command)
    return click.option(
        "--token",
        metavar="TOKEN",
        expose_value=False,
        callback=_remember("token"),
        help="API token (admin, or the read token for reads), sent on every call (default: "
        "$API_TOKEN, else the config file's token)",
    )(command)


def json_option(command: F) -> F:
    """--json, on every command."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        default=False,
        expose_value=False,
        callback=_remember("as_json"),
        help="print JSON (lists and streams: one JSON object a line)",
    )(command)


def invocation() -> Invocation:
    """The current command line's options."""
    return click.get_current_context().ensure_object(Invocation)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value))


def print_json_lines(items: Iterable[Any]) -> None:
    for item in items:
        click.echo(json.dumps(item))


def cell(value: Any) -> str:
    """A value as a table cell: text as it is, anything else as JSON, cut at MAX_CELL."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MAX_CELL else f"{text[: MAX_CELL - 1]}…"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns as wide as their widest cell; the last column is not padded."""
    cells = [[cell(value) for value in row] for row in rows]
    widths = [
        max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)
    ]
    for row in [list(headers), *cells]:
        padded = [value.ljust(width) for value, width in zip(row[:-1], widths, strict=False)]
        click.echo("  ".join([*padded, row[-1]]).rstrip())


def confirm(question: str, yes: bool) -> None:
    """Ask before a change that cannot be undone; without a terminal, --yes must say so."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(f"{question} Pass --yes to confirm without a terminal.")
    click.confirm(question, abort=True)


def yes_option(command: F) -> F:
    return click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")(command)
