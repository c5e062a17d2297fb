"""`python -m local_stack.exec_env FILE -- COMMAND...`: become COMMAND with FILE's settings.

Settings (secrets included) travel from a private 0600 JSON file into the process's own
environment, so they never appear in a command line or in supervisord's environment.
`exec` keeps the pid, so supervisord still signals the real process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[1] != "--":
        sys.exit("usage: python -m local_stack.exec_env ENV_FILE -- COMMAND [ARG...]")
    env_file, command = Path(args[0]), args[2:]
    values = json.loads(env_file.read_text())
    os.environ.update({str(key): str(value) for key, value in values.items()})
    os.execvp(command[0], command)  # noqa: S606 - argv, no shell


if __name__ == "__main__":
    main()
