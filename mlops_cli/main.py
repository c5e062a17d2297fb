"""`mlops`: the platform from a terminal.

    mlops logs <pipeline-id> [--follow] [--json]   print a pipeline's log (live with --follow)
    mlops pipelines [--repo-id N] [--status S]     list pipelines, newest first
    mlops trigger <repo-id> [--follow]             run a repo's notebook now (and watch it)
          [--commit SHA] [--param NAME=VALUE ...]  at that commit, with papermill parameters

Options before or after the command: --api URL (default $MLOPS_API_URL, else
http://127.0.0.1:8000) and --token TOKEN (default $API_TOKEN), sent as a bearer token on every
call, the log WebSocket included: the admin token, or the read token (API_READ_TOKEN) for
`logs` and `pipelines`.

Exit status, so that scripts and CI can act on a run's outcome:
    0  success (or, without --follow, the request itself succeeded)
    1  the followed pipeline failed
    2  the followed pipeline was cancelled
    3  no such pipeline or repo
    4  the API could not be reached or answered with an error
    64 bad command-line usage
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, Final, NoReturn

from mlops_cli.api_client import ApiClient, ApiError, NotFound
from mlops_cli.log_follow import StreamLost, follow, make_printer, print_stored

EXIT_SUCCESS: Final = 0
EXIT_FAILED: Final = 1
EXIT_CANCELLED: Final = 2
EXIT_NOT_FOUND: Final = 3
EXIT_API_ERROR: Final = 4
EXIT_USAGE: Final = 64

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
        epilog="Exit status: 0 success, 1 failed, 2 cancelled, 3 not found, 4 API error, 64 usage.",
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
    return parser


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
    api_url = getattr(args, "api", None) or os.environ.get("MLOPS_API_URL") or DEFAULT_API_URL
    token = getattr(args, "token", None) or os.environ.get("API_TOKEN") or None
    client = ApiClient(api_url, token)
    try:
        if args.command == "logs":
            return _logs(client, api_url, token, args.pipeline_id, args.follow, args.json)
        if args.command == "pipelines":
            return _pipelines(client, args)
        return _trigger(client, api_url, token, args)
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
