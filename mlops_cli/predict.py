"""`mlops predict NAME --row 5.1,3.5,1.4,0.2 | --file rows.csv`: the served version's answers.

Rows go to the backend's `POST /models/{name}/predict` in batches of `--batch-size`, which the
model server splits back per caller; each answer names the version that answered.

A file is CSV or JSON lines (JSON lines when its first character that is not blank is `{` or
`[`). A CSV whose first row holds a value that is not a number is read as a header: each row is
then sent keyed by those names (the model's feature names), else as plain values. A JSON line is
a list of values or an object keyed by feature name.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any, TextIO

import click

from mlops_cli.bad_input import BadInput
from mlops_cli.exit_codes import EXIT_SUCCESS
from mlops_cli.invocation import api_options, invocation, json_option, print_table
from mlops_cli.monitoring import model_path

Row = list[Any] | dict[str, Any]
MAX_BATCH = 10_000


def value_of(text: str) -> Any:
    """A CSV cell: a number when it reads as one, else the text (a categorical feature)."""
    stripped = text.strip()
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        return float(stripped)
    except ValueError:
        return stripped


def _is_number(text: str) -> bool:
    return not isinstance(value_of(text), str)


def parse_row(text: str) -> list[Any]:
    """`5.1,3.5,1.4,0.2` as a row of values."""
    values = next(csv.reader([text]), [])
    if not values or all(not value.strip() for value in values):
        raise BadInput(f"--row {text!r}: no values in it")
    return [value_of(value) for value in values]


def read_rows(source: TextIO) -> list[Row]:
    """Every row of a CSV or JSON-lines file (see the module doc)."""
    text = source.read()
    stripped = text.lstrip()
    rows = list(_json_lines(text) if stripped[:1] in ("{", "[") else _csv_rows(text))
    if not rows:
        raise BadInput(f"{getattr(source, 'name', 'the file')}: no rows in it")
    return rows


def _json_lines(text: str) -> Iterator[Row]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise BadInput(f"line {number}: not JSON: {exc}") from None
        if not isinstance(row, list | dict) or not row:
            raise BadInput(
                f"line {number}: expected a list of values or an object keyed by feature name"
            )
        yield row


def _csv_rows(text: str) -> Iterator[Row]:
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    for values in reader:
        if not any(value.strip() for value in values):
            continue
        if header is None and reader.line_num == 1 and not all(map(_is_number, values)):
            header = [value.strip() for value in values]
            continue
        if header is not None and len(values) != len(header):
            raise BadInput(
                f"line {reader.line_num}: {len(values)} values for the {len(header)} columns "
                "of the header"
            )
        row = [value_of(value) for value in values]
        yield dict(zip(header, row, strict=True)) if header else row


@click.command("predict")
@click.argument("name")
@click.option(
    "--row",
    "rows_given",
    multiple=True,
    metavar="V1,V2,...",
    help="one row of feature values, comma-separated (repeatable)",
)
@click.option(
    "--file",
    "source",
    type=click.File("r", encoding="utf-8-sig"),
    help="rows as CSV (a header row names the features) or JSON lines; - reads standard input",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_BATCH),
    default=100,
    show_default=True,
    help="rows per request",
)
@api_options
@json_option
def predict_command(
    name: str, rows_given: tuple[str, ...], source: TextIO | None, batch_size: int
) -> int:
    """Predictions of the served version of NAME for --row values or the rows of --file."""
    if bool(rows_given) == (source is not None):
        raise click.UsageError("give the rows with --row (repeatable) or --file, not both")
    rows: list[Row] = [parse_row(text) for text in rows_given] if rows_given else []
    if source is not None:
        rows = read_rows(source)
    as_json = invocation().as_json
    client = invocation().client()
    answered: list[dict[str, Any]] = []
    try:
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            answer = client.post_json(model_path(name, "predict"), {"data": batch})
            items = _answered_rows(answer, batch, first=start + 1)
            if as_json:  # streamed: a large file's rows print as their batch comes back
                for item in items:
                    click.echo(json.dumps(item))
            else:
                answered += items
    finally:
        client.close()
    if not as_json:
        print_table(
            ["ROW", "PREDICTION", "VERSION", "PROBABILITIES", "INPUT"],
            [
                [
                    item["row"],
                    item["prediction"],
                    item["model_version"],
                    item.get("probabilities"),
                    item["input"],
                ]
                for item in answered
            ],
        )
    return EXIT_SUCCESS


def _answered_rows(answer: dict[str, Any], batch: list[Row], *, first: int) -> list[dict[str, Any]]:
    """One batch's answer, a dict per row: its number in the input, prediction, version."""
    probabilities = answer.get("probabilities")
    classes = [str(label) for label in answer.get("classes") or []]
    items = []
    for i, prediction in enumerate(answer["predictions"]):
        item: dict[str, Any] = {
            "row": first + i,
            "input": batch[i],
            "prediction": prediction,
            "model_version": answer.get("model_version"),
            "request_id": answer.get("request_id"),
        }
        if probabilities is not None:
            item["probabilities"] = dict(zip(classes, probabilities[i], strict=False))
        items.append(item)
    return items
