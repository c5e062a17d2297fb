"""`mlops predictions`, `mlops drift` and `mlops feedback`: watching a served model from a terminal.

Each reads or writes through the backend's REST API (backend/routes/predictions.py and
backend/routes/drift.py) and returns the command's exit status (mlops_cli/exit_codes.py).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO
from urllib.parse import quote

import click

from mlops_cli.api_client import ApiClient, ApiError
from mlops_cli.bad_input import BadInput
from mlops_cli.exit_codes import EXIT_DRIFT_DETECTED, EXIT_LABELS_NOT_STORED, EXIT_SUCCESS
from mlops_cli.invocation import api_options, cell, invocation, json_option

# The backend answers at most this many predictions a JSON page (more are fetched page by page)
# and takes at most MAX_FEEDBACK_BATCH labels a call.
PREDICTIONS_PAGE = 500
MAX_FEEDBACK_BATCH = 10_000


class IsoTime(click.ParamType):
    """An ISO 8601 time; without an offset it is the terminal's local time."""

    name = "ISO-TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"expected an ISO 8601 time such as 2026-12-01T09:30:00Z, got {value!r}")
        return moment.astimezone() if moment.tzinfo is None else moment


def model_path(name: str, tail: str = "") -> str:
    quoted = f"/models/{quote(name, safe='')}"
    return f"{quoted}/{tail}" if tail else quoted


# --- mlops predictions ----------------------------------------------------------------------


@click.command("predictions")
@click.argument("name")
@click.option("--version", help="only this version's")
@click.option(
    "--since", type=IsoTime(), help="only from this ISO 8601 time (no offset: local time)"
)
@click.option(
    "--size", type=click.IntRange(1, 100_000), default=20, show_default=True, help="how many"
)
@click.option("--csv", "as_csv", is_flag=True, help="print the backend's CSV export")
@api_options
@json_option
def predictions_command(
    name: str, version: str | None, since: datetime | None, size: int, as_csv: bool
) -> int:
    """A model's logged predictions, newest first (a table; --csv: the backend's CSV export)."""
    as_json = invocation().as_json
    if as_csv and as_json:
        raise click.UsageError("--csv and --json cannot be used together")
    client = invocation().client()
    try:
        return predictions(client, name, version, since, size, as_csv=as_csv, as_json=as_json)
    finally:
        client.close()


def predictions(
    client: ApiClient,
    name: str,
    version: str | None,
    since: datetime | None,
    size: int,
    *,
    as_csv: bool,
    as_json: bool,
) -> int:
    """Print a model's latest logged predictions, newest first: a table, JSON lines or CSV."""
    params: dict[str, Any] = {}
    if version is not None:
        params["version"] = version
    if since is not None:
        params["since"] = since.isoformat()
    path = model_path(name, "predictions")
    if as_csv:
        # The backend's own export, columns and all (one call: it pages nothing for CSV).
        sys.stdout.write(client.get_text(path, params={**params, "size": size, "format": "csv"}))
        return EXIT_SUCCESS
    items, total = _latest(client, path, params, size)
    if as_json:
        for item in items:
            print(json.dumps(item))
        return EXIT_SUCCESS
    print(f"{'AT':<32} {'VERSION':<8} {'REQUEST ID':<34} {'MS':>8}  {'PREDICTION':<20} INPUTS")
    for item in items:
        outputs = item["predictions"][0] if len(item["predictions"]) == 1 else item["predictions"]
        inputs = item["inputs"][0] if len(item["inputs"]) == 1 else item["inputs"]
        print(
            f"{item['at']:<32} {item['version']:<8} {item['request_id']:<34} "
            f"{item['latency_ms']:>8.2f}  {cell(outputs):<20} {cell(inputs)}"
        )
    print(f"{len(items)} of {total} logged predictions")
    return EXIT_SUCCESS


def _latest(
    client: ApiClient, path: str, params: dict[str, Any], wanted: int
) -> tuple[list[dict[str, Any]], int]:
    """The `wanted` newest predictions, over as many pages as that takes, and the total."""
    size = min(wanted, PREDICTIONS_PAGE)
    items: list[dict[str, Any]] = []
    page, total = 1, 0
    while len(items) < wanted:
        answer = client.get_json(path, params={**params, "page": page, "size": size})
        total = answer["total"]
        items += answer["items"][: wanted - len(items)]
        if len(answer["items"]) < size:
            break
        page += 1
    return items, total


# --- mlops drift ----------------------------------------------------------------------------


@click.command("drift")
@click.argument("name")
@click.option("--version", help="this version (default: the one that answered last)")
@api_options
@json_option
def drift_command(name: str, version: str | None) -> int:
    """Drift per feature of a served version (exit status 1 when some feature drifted)."""
    client = invocation().client()
    try:
        return drift(client, name, version, as_json=invocation().as_json)
    finally:
        client.close()


def drift(client: ApiClient, name: str, version: str | None, *, as_json: bool) -> int:
    """Print a version's drift per feature; exit 1 when some feature drifted."""
    params = {"version": version} if version is not None else None
    report = client.get_json(model_path(name, "drift"), params=params)
    if as_json:
        print(json.dumps(report))
    else:
        _print_drift(report)
    return EXIT_DRIFT_DETECTED if report["drift_detected"] else EXIT_SUCCESS


def _print_drift(report: dict[str, Any]) -> None:
    subject = f"{report['model']} v{report['version']}"
    features = report["features"]
    if report["drift_detected"] is None:
        print(f"{subject}: cannot tell yet: {report['detail']}")
    elif report["drift_detected"]:
        drifted = report["drifted_features"]
        dataset = "; dataset drift" if report["dataset_drift"] else ""
        print(
            f"{subject}: drift in {', '.join(drifted)} "
            f"({len(drifted)} of {len(features)} features{dataset})"
        )
    else:
        print(f"{subject}: no drift ({len(features)} features)")
    reference, current = report["reference"], report["current"]
    since = f" since {current['since']}" if current["since"] else ""
    print(
        f"reference: {reference['source'].replace('_', ' ')}, {reference['rows']} rows; "
        f"current: {current['rows']} rows{since}"
    )
    if not features:
        return
    print(f"{'FEATURE':<24} {'TEST':<14} {'STATISTIC':>10} {'P / DISTANCE':>13}  DRIFTED")
    for name, feature in features.items():
        measure = feature["p_value"] if feature["p_value"] is not None else feature["distance"]
        print(
            f"{name:<24} {feature['method']:<14} {feature['statistic']:>10.4g} "
            f"{measure:>13.4g}  {'yes' if feature['drifted'] else 'no'}"
        )


# --- mlops feedback -------------------------------------------------------------------------


@dataclass
class FeedbackTally:
    """What the backend answered for every batch sent, added up."""

    accepted: int = 0
    unknown: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    sent: int = 0

    def add(self, answer: dict[str, Any], sent: int) -> None:
        self.accepted += answer["accepted"]
        self.unknown += answer["unknown"]
        self.rejected.update(answer["rejected"])
        self.sent += sent


@click.command("feedback")
@click.argument("name")
@click.option(
    "--file",
    "source",
    required=True,
    type=click.File("r", encoding="utf-8-sig"),
    help="CSV with the columns request_id,label (a label per row of a many-row request: a JSON "
    'list such as "[0, 1]"), or JSON lines {"request_id": ..., "label": ...}; - reads '
    "standard input",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_FEEDBACK_BATCH),
    default=1000,
    show_default=True,
    help="labels per call",
)
@api_options
@json_option
def feedback_command(name: str, source: TextIO, batch_size: int) -> int:
    """Send the ground truth of logged predictions (exit status 1 when some label was not
    stored)."""
    client = invocation().client()
    try:
        return feedback(client, name, source, batch_size, as_json=invocation().as_json)
    finally:
        client.close()


def feedback(
    client: ApiClient, name: str, source: TextIO, batch_size: int, *, as_json: bool
) -> int:
    """Send a file's labels in batches; exit 1 when any was unknown or rejected."""
    labels = read_labels(source)
    if not labels:
        raise BadInput(f"{getattr(source, 'name', 'the file')}: no labels in it")
    path = model_path(name, "feedback")
    tally = FeedbackTally()
    for start in range(0, len(labels), batch_size):
        batch = labels[start : start + batch_size]
        items = [{"request_id": request_id, "label": label} for request_id, label in batch]
        try:
            tally.add(client.post_json(path, {"items": items}), len(batch))
        except ApiError as exc:  # the same kind (a 404 stays NotFound), saying what was sent
            raise type(exc)(
                f"{exc} ({tally.sent} of {len(labels)} labels were sent before this error; "
                "sending the file again is safe: a label sent again replaces the earlier one)"
            ) from exc
    if as_json:
        print(
            json.dumps(
                {"accepted": tally.accepted, "unknown": tally.unknown, "rejected": tally.rejected}
            )
        )
    else:
        _print_tally(name, tally)
    return EXIT_LABELS_NOT_STORED if tally.unknown or tally.rejected else EXIT_SUCCESS


def _print_tally(model: str, tally: FeedbackTally) -> None:
    print(
        f"accepted {tally.accepted}, unknown {len(tally.unknown)}, "
        f"rejected {len(tally.rejected)} (of {tally.sent} labels)"
    )
    if tally.unknown:
        print(
            f"unknown (no logged prediction of {model} with this request id; a prediction is "
            "logged about a second after it was answered):"
        )
        for request_id in tally.unknown:
            print(f"  {request_id}")
    if tally.rejected:
        print("rejected:")
        for request_id, why in tally.rejected.items():
            print(f"  {request_id}: {why}")


def read_labels(source: TextIO) -> list[tuple[str, Any]]:
    """(request id, label) pairs of a CSV file with `request_id` and `label` columns, or of JSON
    lines `{"request_id": ..., "label": ...}`: JSON lines when the first character that is not
    blank is `{`."""
    text = source.read()
    if text.lstrip().startswith("{"):
        return list(_json_lines(text))
    return list(_csv_rows(text))


def _json_lines(text: str) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise BadInput(f"line {number}: not JSON: {exc}") from None
        if not isinstance(item, dict):
            raise BadInput(f"line {number}: expected an object with request_id and label")
        request_id, label = item.get("request_id"), item.get("label")
        if not isinstance(request_id, str) or not request_id:
            raise BadInput(f"line {number}: request_id must be a non-empty string")
        if label is None:
            raise BadInput(f"line {number}: label is missing")
        yield request_id, label


def _csv_rows(text: str) -> Iterator[tuple[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    missing = {"request_id", "label"} - set(reader.fieldnames or ())
    if missing:
        raise BadInput(
            f"line 1: the CSV header needs the columns request_id and label "
            f"(missing: {', '.join(sorted(missing))})"
        )
    for row in reader:
        request_id, label = (row["request_id"] or "").strip(), (row["label"] or "").strip()
        if not request_id or not label:
            raise BadInput(f"line {reader.line_num}: request_id and label must not be empty")
        yield request_id, csv_label(label)


def csv_label(text: str) -> Any:
    """A CSV cell as a label: a JSON list (one label per row of a many-row request) or a
    number when it reads as one, else the text as it is (`setosa`, `true`)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, list) or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    return text
