"""supervisord as the stack's process runner: its config, its start, and its XML-RPC interface.

supervisord is started with an environment stripped of every platform setting, so no secret
sits in its environment or config file; programs load theirs from private files through
`local_stack.exec_env`, and Redis reads its passwords from its own config file (secrets never
appear in a process's arguments either).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from xmlrpc.client import Fault, ServerProxy

from supervisor.xmlrpc import SupervisorTransport

from local_stack.credentials import SUPERVISOR_USER, password_file
from local_stack.plan import REPO_ROOT, VENV_BIN, Layout, Program, StackPlan


def _escape(value: str) -> str:
    """supervisord expands `%(name)s` in values, so a literal % is written %%."""
    return value.replace("%", "%%")


def _command(program: Program, layout: Layout) -> str:
    args = program.command
    if program.env_file is not None:
        args = [
            str(VENV_BIN / "python"),
            "-m",
            "local_stack.exec_env",
            str(program.env_file),
            "--",
            *args,
        ]
    return _escape(shlex.join(args))


def render_config(plan: StackPlan) -> str:
    """supervisord.conf for the plan: a private Unix socket, one section per program."""
    layout = plan.layout
    lines = [
        "; Written by `python -m local_stack up`; regenerated at every start.",
        f"; By hand: supervisorctl -c {_escape(str(layout.supervisorctl_conf))}",
        "[unix_http_server]",
        f"file={_escape(str(layout.supervisor_socket))}",
        "chmod=0700",
        # A socket only its owner can reach, and a password on top (its hash only, here).
        f"username={SUPERVISOR_USER}",
        f"password={plan.supervisor_password_hash}",
        "",
        "[supervisord]",
        # Said, so that supervisord does not warn that it keeps the user it was started as.
        f"user={_escape(pwd.getpwuid(os.getuid()).pw_name)}",
        f"logfile={_escape(str(layout.log('supervisord')))}",
        f"pidfile={_escape(str(layout.supervisor_pid))}",
        f"childlogdir={_escape(str(layout.logs))}",
        f"directory={_escape(str(REPO_ROOT))}",
        "logfile_maxbytes=5MB",
        "logfile_backups=2",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
    ]
    for program in plan.programs:
        lines += [
            "",
            f"[program:{program.name}]",
            f"command={_command(program, layout)}",
            f"directory={_escape(str(REPO_ROOT))}",
            # Started by `up` in phases, so the platform never races its infrastructure.
            "autostart=false",
            "autorestart=true",
            "startsecs=1",
            "startretries=3",
            "stopsignal=TERM",
            f"stopwaitsecs={program.stop_wait_seconds}",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={_escape(str(layout.log(program.name)))}",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=2",
        ]
        if program.environment:
            pairs = ",".join(
                f'{key}="{_escape(value)}"' for key, value in program.environment.items()
            )
            lines.append(f"environment={pairs}")
    return "\n".join(lines) + "\n"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, creating it with that mode (no readable window)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)


def write_files(plan: StackPlan) -> None:
    """Create the folders; write supervisord's config, the env files and the secret configs."""
    layout = plan.layout
    for folder in (layout.home, layout.logs, layout.home / "redis", layout.home / "mlflow"):
        folder.mkdir(parents=True, exist_ok=True)
    for private in (layout.run, layout.secrets):
        private.mkdir(parents=True, exist_ok=True, mode=0o700)
        private.chmod(0o700)
    for path, text in plan.private_files.items():
        write_private(path, text)
    write_private(layout.supervisor_conf, render_config(plan))


def supervisord_environment(
    environ: dict[str, str], setting_names: Iterable[str]
) -> dict[str, str]:
    """The caller's environment minus every platform setting, with the venv first on PATH."""
    drop = {name.upper() for name in setting_names}
    env = {key: value for key, value in environ.items() if key.upper() not in drop}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    loopback = "127.0.0.1,localhost"
    for key in ("NO_PROXY", "no_proxy"):
        env[key] = f"{env[key]},{loopback}" if env.get(key) else loopback
    return env


class Supervisor:
    """A handle on the stack's supervisord through its private Unix socket."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    @property
    def _proxy(self) -> Any:
        """A client signing in with the home's password as it is now (`up` generates it after
        making this handle)."""
        secret = password_file(self.layout.home, "supervisor")
        password = secret.read_text().strip() if secret.exists() else None
        transport = SupervisorTransport(
            SUPERVISOR_USER, password, f"unix://{self.layout.supervisor_socket}"
        )
        return ServerProxy("http://127.0.0.1", transport=transport)

    def running(self) -> bool:
        """True when this home's supervisord answers."""
        if not self.layout.supervisor_socket.exists():
            return False
        try:
            return self._proxy.supervisor.getState()["statename"] == "RUNNING"
        except (OSError, Fault):
            return False

    def start_daemon(self, env: dict[str, str], timeout: float = 15.0) -> None:
        """Start supervisord (it daemonizes) and wait until its socket answers."""
        subprocess.run(
            [str(VENV_BIN / "supervisord"), "-c", str(self.layout.supervisor_conf)],
            env=env,
            cwd=REPO_ROOT,
            check=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running():
                return
            time.sleep(0.05)
        raise RuntimeError(f"supervisord did not answer within {timeout:.0f}s")

    def supervisord_pid(self) -> int | None:
        try:
            return int(self._proxy.supervisor.getPID())
        except (OSError, Fault):
            return None

    def infos(self) -> dict[str, dict[str, Any]]:
        """name → supervisord's process info (statename, pid, ...)."""
        return {info["name"]: info for info in self._proxy.supervisor.getAllProcessInfo()}

    def start(self, name: str) -> None:
        """Ask supervisord to start a program without waiting (health checks do the waiting)."""
        try:
            self._proxy.supervisor.startProcess(name, False)
        except Fault as fault:
            if "ALREADY_STARTED" not in fault.faultString:
                raise

    def shutdown(self) -> None:
        """Stop every program (process groups included), then supervisord itself."""
        with contextlib.suppress(OSError, Fault):
            self._proxy.supervisor.shutdown()
