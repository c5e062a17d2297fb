"""`mlops predictions`, `mlops drift` and `mlops feedback`: watching a served model from a terminal.

Each reads or writes through the backend's REST API (backend/routes/predictions.py and
backend/routes/drift.py) and returns the command's exit status (mlops_cli/exit_codes.py).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO
from urllib.parse import quote

from mlops_cli.api_client import ApiClient, ApiError
from mlops_cli.exit_codes import EXIT_DRIFT_DETECTED, EXIT_LABELS_NOT_STORED, EXIT_SUCCESS

# The backend answers at most this many predictions a JSON page (more are fetched page by page)
# and takes at most MAX_FEEDBACK_BATCH labels a call.
PREDICTIONS_PAGE = 500
MAX_FEEDBACK_BATCH = 10_000
MAX_CELL = 60


class BadInput(ValueError):
    """A labels file the command cannot read: the message names the line."""


def iso_time(text: str) -> datetime:
    """An ISO 8601 time for argparse; without an offset it is the terminal's local time."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2026-12-01T09:30:00Z, got {text!r}"
        ) from None
    return moment.astimezone() if moment.tzinfo is None else moment


def model_path(name: str, tail: str) -> str:
    return f"/models/{quote(name, safe='')}/{tail}"


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MAX_CELL else f"{text[: MAX_CELL - 1]}…"


# --- mlops predictions ----------------------------------------------------------------------


def predictions(client: ApiClient, args: argparse.Namespace) -> int:
    """Print a model's latest logged predictions, newest first: a table, JSON lines or CSV."""
    params: dict[str, Any] = {}
    if args.version is not None:
        params["version"] = args.version
    if args.since is not None:
        params["since"] = args.since.isoformat()
    path = model_path(args.name, "predictions")
    if args.csv:
        # The backend's own export, columns and all (one call: it pages nothing for CSV).
        sys.stdout.write(
            client.get_text(path, params={**params, "size": args.size, "format": "csv"})
        )
        return EXIT_SUCCESS
    items, total = _latest(client, path, params, args.size)
    if args.json:
        for item in items:
            print(json.dumps(item))
        return EXIT_SUCCESS
    print(f"{'AT':<32} {'VERSION':<8} {'REQUEST ID':<34} {'MS':>8}  {'PREDICTION':<20} INPUTS")
    for item in items:
        outputs = item["predictions"][0] if len(item["predictions"]) == 1 else item["predictions"]
        inputs = item["inputs"][0] if len(item["inputs"]) == 1 else item["inputs"]
        print(
            f"{item['at']:<32} {item['version']:<8} {item['request_id']:<34} "
            f"{item['latency_ms']:>8.2f}  {_cell(outputs):<20} {_cell(inputs)}"
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


def drift(client: ApiClient, args: argparse.Namespace) -> int:
    """Print a version's drift per feature; exit 1 when some feature drifted."""
    params = {"version": args.version} if args.version is not None else None
    report = client.get_json(model_path(args.name, "drift"), params=params)
    if args.json:
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


def feedback(client: ApiClient, args: argparse.Namespace) -> int:
    """Send a file's labels in batches; exit 1 when any was unknown or rejected."""
    labels = read_labels(args.file)
    if not labels:
        raise BadInput(f"{args.file.name}: no labels in it")
    path = model_path(args.name, "feedback")
    tally = FeedbackTally()
    for start in range(0, len(labels), args.batch_size):
        batch = labels[start : start + args.batch_size]
        items = [{"request_id": request_id, "label": label} for request_id, label in batch]
        try:
            tally.add(client.post_json(path, {"items": items}), len(batch))
        except ApiError as exc:  # the same kind (a 404 stays NotFound), saying what was sent
            raise type(exc)(
                f"{exc} ({tally.sent} of {len(labels)} labels were sent before this error; "
                "sending the file again is safe: a label sent again replaces the earlier one)"
            ) from exc
    if args.json:
        print(
            json.dumps(
                {"accepted": tally.accepted, "unknown": tally.unknown, "rejected": tally.rejected}
            )
        )
    else:
        _print_tally(args.name, tally)
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
