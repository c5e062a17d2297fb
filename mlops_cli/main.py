"""`mlops`: the platform from a terminal.

    mlops logs <pipeline-id> [--follow] [--json]   print a pipeline's log (live with --follow)
    mlops pipelines [--repo-id N] [--status S]     list pipelines, newest first
    mlops trigger <repo-id> [--follow]             run a repo's notebook now (and watch it)
          [--commit SHA] [--param NAME=VALUE ...]  at that commit, with papermill parameters
    mlops predictions <model> [--version V]        a model's logged predictions, newest first
          [--since ISO] [--size N] [--csv|--json]  (a table; CSV as the backend exports it)
    mlops drift <model> [--version V] [--json]     drift per feature of a served version
    mlops feedback <model> --file labels.csv       send ground truth: CSV with the columns
          [--batch-size N] [--json]                request_id,label, or JSON lines (- : stdin)
    mlops check NOTEBOOK... [--min-accuracy X]     the platform's contract check, locally (the
          [--json]                                 validate phase's code; no API call)

Options before or after the command: --api URL (default $MLOPS_API_URL, else
http://127.0.0.1:8000) and --token TOKEN (default $API_TOKEN), sent as a bearer token on every
call, the log WebSocket included: the admin token, or the read token (API_READ_TOKEN) for
`logs`, `pipelines`, `predictions` and `drift`.

Exit status, so that scripts and CI can act on a run's outcome:
    0  success (or, without --follow, the request itself succeeded; `drift`: no drift, or too
       few rows to tell yet)
    1  the followed pipeline failed; `drift`: some feature drifted; `feedback`: some request id
       was unknown or some label rejected (the others were stored); `check`: a notebook
       breaks the contract
    2  the followed pipeline was cancelled
    3  no such pipeline or repo; `drift`: the model has no logged prediction; `check`: no
       such notebook file
    4  the API could not be reached or answered with an error
    64 bad command-line usage, or a labels file that cannot be read
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

from mlops_cli.api_client import ApiClient, ApiError, NotFound
from mlops_cli.exit_codes import (
    EXIT_API_ERROR,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_SUCCESS,
    EXIT_USAGE,
)
from mlops_cli.log_follow import StreamLost, follow, make_printer, print_stored
from mlops_cli.monitoring import (
    MAX_FEEDBACK_BATCH,
    BadInput,
    drift,
    feedback,
    iso_time,
    predictions,
)
from mlops_cli.notebook_check import check, threshold_from_environment

OUTCOME_EXIT_CODES: Final = {
    "success": EXIT_SUCCESS,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
}
DEFAULT_API_URL: Final = "http://127.0.0.1:8000"


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad usage, which here means "cancelled": use 64 (EX_USAGE)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api",
        default=argparse.SUPPRESS,
        help=f"backend URL (default: $MLOPS_API_URL or {DEFAULT_API_URL})",
    )
    common.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="API token, admin or read, sent on every call (default: $API_TOKEN)",
    )
    parser = _Parser(
        prog="mlops",
        description="Command-line client of the notebook-mlops platform.",
        epilog="Exit status: 0 success, 1 failed (drift: drift detected; feedback: some label "
        "not stored), 2 cancelled, 3 not found, 4 API error, 64 usage.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    logs = commands.add_parser(
        "logs", parents=[common], help="print a pipeline's log", description=__doc__
    )
    logs.add_argument("pipeline_id", type=int)
    logs.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="stream the log live and exit with the pipeline's outcome",
    )
    logs.add_argument("--json", action="store_true", help="print events as JSON lines")

    pipelines = commands.add_parser("pipelines", parents=[common], help="list pipelines")
    pipelines.add_argument("--repo-id", type=int)
    pipelines.add_argument("--status", choices=sorted({"queued", "running", *OUTCOME_EXIT_CODES}))
    pipelines.add_argument("--page", type=int, default=1)
    pipelines.add_argument("--size", type=int, default=20)

    trigger = commands.add_parser("trigger", parents=[common], help="run a repo's notebook now")
    trigger.add_argument("repo_id", type=int)
    trigger.add_argument(
        "-f", "--follow", action="store_true", help="then follow its log to the end"
    )
    trigger.add_argument("--json", action="store_true", help="print log events as JSON lines")
    trigger.add_argument("--commit", help="the full sha of the commit to run (default: the head)")
    trigger.add_argument(
        "--param",
        action="append",
        type=parse_param,
        default=[],
        metavar="NAME=VALUE",
        help="a papermill parameter; VALUE is read as JSON (300, 0.5, true, [1,2]) or else "
        "taken as a string",
    )

    logged = commands.add_parser(
        "predictions", parents=[common], help="list a model's logged predictions, newest first"
    )
    logged.add_argument("name", help="the model's name")
    logged.add_argument("--version", help="only this version's")
    logged.add_argument(
        "--since", type=iso_time, help="only from this ISO 8601 time (no offset: local time)"
    )
    logged.add_argument(
        "--size", type=bounded_int(1, 100_000), default=20, help="how many (default 20)"
    )
    output = logged.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="print the backend's CSV export")
    output.add_argument("--json", action="store_true", help="print predictions as JSON lines")

    drifted = commands.add_parser(
        "drift",
        parents=[common],
        help="drift per feature of a served version (exit status 1 when some feature drifted)",
    )
    drifted.add_argument("name", help="the model's name")
    drifted.add_argument("--version", help="this version (default: the one that answered last)")
    drifted.add_argument("--json", action="store_true", help="print the report as JSON")

    labels = commands.add_parser(
        "feedback",
        parents=[common],
        help="send the ground truth of logged predictions (exit status 1 when some label was "
        "not stored)",
    )
    labels.add_argument("name", help="the model's name")
    labels.add_argument(
        "--file",
        required=True,
        type=argparse.FileType("r", encoding="utf-8-sig"),
        help="CSV with the columns request_id,label (a label per row of a many-row request: "
        'a JSON list such as "[0, 1]"), or JSON lines {"request_id": ..., "label": ...}; '
        "- reads standard input",
    )
    labels.add_argument(
        "--batch-size",
        type=bounded_int(1, MAX_FEEDBACK_BATCH),
        default=1000,
        help="labels per call (default 1000)",
    )
    labels.add_argument("--json", action="store_true", help="print the outcome as JSON")

    checked = commands.add_parser(
        "check",
        help="check notebooks against the platform's contract, before pushing (no API call; "
        "exit status 1 when one breaks it)",
    )
    checked.add_argument("notebooks", nargs="+", type=Path, metavar="NOTEBOOK")
    checked.add_argument(
        "--min-accuracy",
        type=float,
        default=None,
        help="the gate threshold a notebook gets when it sets none (default: "
        "$MIN_ACCURACY_THRESHOLD, else the platform's default)",
    )
    checked.add_argument("--json", action="store_true", help="print one JSON line per notebook")
    return parser


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from `low` to `high`, refused as bad usage otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    return parse


def parse_param(text: str) -> tuple[str, Any]:
    """`NAME=VALUE` with VALUE as JSON when it is JSON (`N=300` is a number), else a string."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return name.strip(), value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check":
        threshold = args.min_accuracy
        if threshold is None:
            threshold = threshold_from_environment()
        return check(args.notebooks, threshold, args.json)
    api_url = getattr(args, "api", None) or os.environ.get("MLOPS_API_URL") or DEFAULT_API_URL
    token = getattr(args, "token", None) or os.environ.get("API_TOKEN") or None
    client = ApiClient(api_url, token)
    try:
        if args.command == "logs":
            return _logs(client, api_url, token, args.pipeline_id, args.follow, args.json)
        if args.command == "pipelines":
            return _pipelines(client, args)
        if args.command == "predictions":
            return predictions(client, args)
        if args.command == "drift":
            return drift(client, args)
        if args.command == "feedback":
            with args.file:
                return feedback(client, args)
        return _trigger(client, api_url, token, args)
    except BadInput as exc:
        print(f"mlops: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NotFound as exc:
        print(f"mlops: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except (ApiError, StreamLost) as exc:
        print(f"mlops: {exc}", file=sys.stderr)
        return EXIT_API_ERROR
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


def _logs(
    client: ApiClient,
    api_url: str,
    token: str | None,
    pipeline_id: int,
    live: bool,
    as_json: bool,
) -> int:
    printer = make_printer(sys.stdout, as_json=as_json)
    if not live:
        print_stored(client, pipeline_id, printer)
        return EXIT_SUCCESS
    status = follow(api_url, pipeline_id, printer, token=token)
    return OUTCOME_EXIT_CODES.get(status, EXIT_FAILED)


def _pipelines(client: ApiClient, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"page": args.page, "size": args.size}
    if args.repo_id is not None:
        params["repo_id"] = args.repo_id
    if args.status:
        params["status"] = args.status
    page = client.get_json("/pipelines", params=params)
    print(f"{'ID':>6}  {'STATUS':<10} {'TRIGGER':<8} {'COMMIT':<10} {'MODEL':<24} CREATED")
    for item in page["items"]:
        model = f"{item.get('model_name') or '-'}:{item.get('model_version') or '-'}"
        print(
            f"{item['id']:>6}  {item['status']:<10} {item.get('trigger') or '-':<8} "
            f"{(item.get('commit_sha') or '-')[:10]:<10} {model:<24} {item.get('created_at')}"
        )
    pages = max(1, -(-page["total"] // page["size"]))
    print(f"page {page['page']} of {pages}, {page['total']} in all")
    return EXIT_SUCCESS


def _trigger(client: ApiClient, api_url: str, token: str | None, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"parameters": dict(args.param)}
    if args.commit:
        body["commit"] = args.commit
    queued = client.post_json(f"/repos/{args.repo_id}/trigger", body)
    pipeline_id = int(queued["pipeline_id"])
    # Following keeps stdout for the log itself (`--json` output stays parseable).
    out = sys.stderr if args.follow else sys.stdout
    print(f"pipeline {pipeline_id} {queued.get('status', 'queued')}", file=out)
    if not args.follow:
        return EXIT_SUCCESS
    return _logs(client, api_url, token, pipeline_id, True, args.json)


if __name__ == "__main__":
    sys.exit(main())
