"""Command line of the local stack: `python -m local_stack up|down|status|logs` (see Makefile)."""

from __future__ import annotations

import argparse
import os
import sys

from local_stack.commands import StackError, StackStatus, describe, down, log_files, status, up

# `status` of a stack partly running; an error (a stack that cannot be read) exits 1.
BROKEN_EXIT = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up_cmd = sub.add_parser(
        "up",
        help="start the stack and wait until every service answers (a taken default port "
        "moves to a free one; a port set explicitly never moves)",
    )
    up_cmd.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for health")
    up_cmd.add_argument(
        "--monitoring",
        action="store_true",
        help="also run a Prometheus scraping the stack (Debian's prometheus package)",
    )
    sub.add_parser("down", help="stop every process of the stack and supervisord")
    sub.add_parser(
        "status",
        help="show the services, their URLs and states; exit 0 when up or down, "
        f"{BROKEN_EXIT} when broken (some services running, some not)",
    )
    logs_cmd = sub.add_parser("logs", help="follow the services' logs")
    logs_cmd.add_argument(
        "programs", nargs="*", help="redis mlflow backend worker model-server prometheus"
    )
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            result = up(timeout=args.timeout, monitoring=args.monitoring)
            if result.already_up:
                print(f"notebook-mlops stack is already up:\n{describe(result.plan)}")
            else:
                timings = ", ".join(f"{k} {v:.1f}s" for k, v in result.healthy_after.items())
                print(
                    f"notebook-mlops stack is up in {result.seconds:.1f}s "
                    f"(healthy after: {timings}):\n{describe(result.plan)}"
                )
        elif args.command == "down":
            down()
        elif args.command == "status":
            return BROKEN_EXIT if status() is StackStatus.BROKEN else 0
        else:
            files = log_files(args.programs)
            if not files:
                print("no logs yet (make up)", file=sys.stderr)
                return 1
            os.execvp("tail", ["tail", "-n", "40", "-F", *files])  # noqa: S606 - argv, no shell
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
