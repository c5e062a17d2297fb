"""Every setting of the platform, read from the environment (and `.env`).

One class for all three deployables keeps the names in `.env.example` the single contract
between an operator and the code; each deployable reads only the fields it needs.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import ByteSize, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlops_core.access_tokens import parse_named_tokens
from mlops_core.canary import DeployStrategy

# A host name or IP address with an optional port, as GITHUB_TOKEN_HOSTS lists them.
TOKEN_HOST = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$")


class Settings(BaseSettings):
    """Platform settings; field names map to upper-case environment variables."""

    # A refused value is not repeated in the error: several settings hold secrets.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", hide_input_in_errors=True)

    # Where the local stack keeps its data (DB file, MLflow store, logs, work dirs).
    mlops_home: Path = Path(".mlops")

    # GitHub
    github_webhook_secret: SecretStr | None = None
    github_token: SecretStr | None = None
    # Hosts (host, or host:port when not 443) GITHUB_TOKEN may be sent to, over https only.
    # A repo on any other host is fetched without it; a repo's own token goes to its own host.
    github_token_hosts: list[str] = Field(default_factory=lambda: ["github.com"])
    allow_local_repos: bool = False
    # Accept repo URLs on loopback, link-local or private addresses, IP literals and
    # localhost-like names (a backend inside a private network with its own git server).
    allow_private_repo_hosts: bool = False
    public_base_url: str = "http://127.0.0.1:8000"
    # GitHub's REST API (GitHub Enterprise: https://<host>/api/v3). It serves the repositories of
    # one host: github.com for api.github.com, else its own host (backend/github_api.py). Used
    # to create webhooks and to post commit statuses, with a token only over https.
    github_api_url: str = "https://api.github.com"
    # How often the backend brings GitHub's commit statuses up to date with its pipelines.
    commit_status_interval_seconds: float = Field(default=2.0, gt=0)
    # How often the backend fires notebooks' cron schedules that have come due (one backend
    # at a time, under a lease): a slot's run starts at most this long after the slot.
    schedule_interval_seconds: float = Field(default=15.0, gt=0)

    # Infrastructure
    redis_url: str = "redis://127.0.0.1:6379/0"
    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    # Sign-in to an MLflow run with basic-auth. MLflow's client reads these two from the process
    # environment itself (a value only in `.env` does not reach it): `make up` and compose put
    # them there. Model servers get a read-only user of their own (mlops_core/mlflow_users.py).
    mlflow_tracking_username: str | None = None
    mlflow_tracking_password: SecretStr | None = None
    # Link shown to users for MLflow runs; defaults to the tracking URI.
    mlflow_ui_url: str | None = None
    # The local stack's MLflow server keeps its runs and registry here (SQLite in MLOPS_HOME
    # when unset). Read only by `make up`, which hands it to MLflow alone: the platform's
    # processes talk to MLflow over HTTP and never hold its database password.
    mlflow_backend_store_uri: SecretStr | None = None
    # One model-server replica, or several separated by commas: the backend spreads predictions
    # over them and retries one on another replica when the first is unreachable or answers 503.
    model_server_url: str = "http://127.0.0.1:8001"
    # Empty means a SQLite file inside MLOPS_HOME.
    database_url: str = ""

    # Security: scoped bearer tokens (mlops_core/access_tokens.py); API_TOKEN is the admin one.
    api_token: SecretStr | None = None
    # Admin tokens with names, `name:token` pairs separated by commas: a deploy, rollback or
    # delete records the name of the token used (API_TOKEN's is "api").
    api_tokens: SecretStr | None = None
    api_read_token: SecretStr | None = None
    predict_token: SecretStr | None = None
    metrics_token: SecretStr | None = None
    # Fernet key (urlsafe base64, 32 bytes) used to encrypt repo tokens at rest.
    encryption_key: SecretStr | None = None

    # Pipeline behaviour
    auto_deploy_on_success: bool = True
    min_accuracy_threshold: float = 0.8
    # MIN_ACCURACY_THRESHOLD is a floor no notebook can lower (mlops_core/deploy_gate.py).
    gate_floor_enforced: bool = True
    # A version passing its gate is still not served when its gate metric is worse than the
    # served version's by more than this (a config cell may set GATE_TOLERANCE, or turn the
    # comparison off with GATE_COMPARE = False; mlops_core/deploy_gate.py).
    gate_tolerance: float = Field(default=0.01, ge=0)
    serving_alias: str = "production"
    # Progressive delivery (mlops_core/canary.py, mlops_core/canary_policy.py): how a version
    # passing its gate is served ("direct": at once; "canary"/"shadow": as the challenger,
    # answering or shadowing CANARY_WEIGHT % of requests; a config cell may set
    # DEPLOY_STRATEGY), the registry alias naming the challenger, and the promotion policy's
    # evidence and tolerances. The policy runs every CANARY_CHECK_INTERVAL_SECONDS.
    deploy_strategy: DeployStrategy = DeployStrategy.DIRECT
    challenger_alias: str = "challenger"
    canary_weight: float = Field(default=10.0, gt=0, le=100)
    canary_min_requests: int = Field(default=100, ge=1)
    canary_min_seconds: float = Field(default=300.0, ge=0)
    canary_max_seconds: float = Field(default=3600.0, gt=0)
    canary_error_rate_tolerance: float = Field(default=0.01, ge=0)
    canary_latency_tolerance: float = Field(default=0.5, ge=0)
    canary_latency_slack_ms: float = Field(default=20.0, ge=0)
    canary_quality_tolerance: float = Field(default=0.05, ge=0, le=1)
    canary_min_feedback: int = Field(default=30, ge=1)
    canary_drift_tolerance: float = Field(default=0.25, ge=0, le=1)
    canary_check_interval_seconds: float = Field(default=15.0, gt=0)
    cell_timeout_seconds: int = 600
    pipeline_timeout_seconds: int = 3600
    worker_concurrency: int = 1
    # The worker's Prometheus metrics (worker/metrics_server.py) on this address; port 0: none.
    worker_metrics_port: int = Field(default=9102, ge=0, le=65535)
    worker_metrics_host: str = "127.0.0.1"
    deploy_wait_seconds: float = 60.0
    # Recovery (mlops_core/pipeline_lease.py): a pipeline whose worker died is queued again
    # within PIPELINE_RECOVERY_SECONDS, and failed once MAX_PIPELINE_ATTEMPTS attempts were lost.
    pipeline_recovery_seconds: float = Field(default=120.0, gt=0)
    max_pipeline_attempts: int = Field(default=3, ge=1)
    # Register and deploy ride out an MLflow outage this long, then fail naming MLflow.
    mlflow_retry_seconds: float = Field(default=120.0, ge=0)
    work_dir: Path | None = None
    # Keep each pipeline's checkout and outputs after it ends (for debugging).
    keep_work_dirs: bool = False
    # Extra worker environment variables copied into the notebook kernel (JSON list);
    # names that look secret (password/secret/token/key/credential) are never copied.
    kernel_env_passthrough: list[str] = Field(default_factory=list)

    # Kernel sandbox (mlops_core/sandbox.py): every process that runs repository code.
    # "on" refuses to run notebooks when the sandbox is unavailable; "off" runs them
    # unconfined as the worker's own user (only for machines where bubblewrap cannot run).
    kernel_sandbox: Literal["on", "off"] = "on"
    # "none": no network at all in the sandbox; "egress": the host's network (weaker: the
    # notebook can then reach anything the worker can, the platform's own services included).
    kernel_network: Literal["none", "egress"] = "none"
    # The package index a notebook's requirements.txt is installed from (worker/
    # requirements_install.py: pip in the sandbox, wheels only, with network for that step
    # alone). Empty: requirements.txt is refused, and only the kernel's own packages exist.
    requirements_index_url: str = "https://pypi.org/simple"
    # Where the worker keeps the environments it installed for requirements.txt files, one per
    # hash of the file, Python and platform (worker/environment_cache.py); empty: the folder
    # `environments` in MLOPS_HOME. Removing an environment's folder makes the next run install.
    requirements_cache_dir: Path | None = None
    kernel_memory_limit: ByteSize = ByteSize(4 * 1024**3)
    kernel_cpu_seconds: int = Field(default=3600, gt=0)
    kernel_max_processes: int = Field(default=256, gt=0)
    kernel_max_file_size: ByteSize = ByteSize(1024**3)
    # Sandboxed processes run as uid/gid KERNEL_UID_BASE + (worker process id mod 100000):
    # a uid no other process uses, so process limits and signals never cross pipelines.
    kernel_uid_base: int = Field(default=200_000, ge=1000)

    # Request bodies (backend and model server): JSON nested deeper than this is refused (400).
    json_max_depth: int = Field(default=64, gt=0)

    # Webhook intake
    webhook_max_body_bytes: int = 25 * 1024 * 1024
    requeue_interval_seconds: float = 5.0
    # The backend asks the Celery workers this often in the background; /ready shows the answer.
    worker_check_interval_seconds: float = Field(default=5.0, gt=0)

    # Logs
    log_replay_max_lines: int = 20000
    log_replay_ttl_seconds: int = 7 * 24 * 3600
    ws_ping_interval_seconds: float = 20.0

    # Model server
    model_reconcile_interval_seconds: float = 30.0
    # A swapped-out served version stays loaded this long, so a rollback to it is instant
    # (0: stopped at the swap; the price is its model process's memory meanwhile).
    model_standby_seconds: float = Field(default=300.0, ge=0)
    predict_max_body_bytes: int = 10 * 1024 * 1024
    # Each served version runs in a sandboxed model process (model_server/model_process.py):
    # a prediction it does not answer in PREDICT_TIMEOUT_SECONDS fails (503) and the process is
    # restarted; loading (unpickling and warming) a version may take MODEL_LOAD_TIMEOUT_SECONDS.
    predict_timeout_seconds: float = Field(default=30.0, gt=0)
    model_load_timeout_seconds: float = Field(default=300.0, gt=0)
    # Adaptive batching (model_server/batching.py): concurrent requests for one version share
    # one call of its model process, up to MAX_BATCH_SIZE rows, waiting at most
    # MAX_BATCH_DELAY_MS for more (0: no added wait; batches form while a call runs).
    max_batch_size: int = Field(default=64, gt=0)
    max_batch_delay_ms: float = Field(default=0.0, ge=0)
    # Prediction log (mlops_core/prediction_log.py): the share of answered predictions (and of
    # failed requests) recorded (1.0: all), the records a model server buffers while Redis is
    # slow (more are dropped and counted), the stream's length cap, and how long (and how many
    # of each kind) the backend keeps.
    prediction_log_sample_rate: float = Field(default=1.0, ge=0, le=1)
    prediction_log_buffer: int = Field(default=10_000, gt=0)
    prediction_log_stream_max: int = Field(default=100_000, gt=0)
    prediction_log_retention_days: int = Field(default=30, gt=0)
    prediction_log_max_rows: int = Field(default=1_000_000, gt=0)
    # Drift (backend/drift.py): the latest DRIFT_WINDOW logged input rows of a version against
    # its reference (the notebook's training rows, else its first REFERENCE_WINDOW logged rows),
    # each side needing DRIFT_MIN_ROWS; re-checked every DRIFT_CHECK_INTERVAL_SECONDS.
    drift_window: int = Field(default=500, gt=0)
    reference_window: int = Field(default=500, gt=0)
    drift_min_rows: int = Field(default=30, gt=0)
    drift_check_interval_seconds: float = Field(default=300.0, gt=0)
    # Rows of a notebook's REFERENCE_DATA_PATH file kept for the drift check (a seeded sample).
    reference_max_rows: int = Field(default=5000, gt=0)
    # Replicas refresh their "loaded" report this often; reports older than 3x are ignored.
    model_heartbeat_interval_seconds: float = 5.0
    # Stable id of a model-server replica in its reports; empty means hostname:pid.
    model_server_replica_id: str = ""
    # Processes of one model server sharing its port (`python -m model_server.serve`), each
    # following the registry with model processes of its own; 0: one per CPU it may use.
    model_server_workers: int = Field(default=0, ge=0)

    # Backend request handlers' calls to MLflow (backend/registry_gate.py): they run on threads
    # of their own, never on those of webhook intake and pipeline reads. Each HTTP call to MLflow
    # gives up after REGISTRY_TIMEOUT_SECONDS (no retry), and so does a wait for a free thread.
    # After REGISTRY_BREAKER_FAILURES calls in a row found MLflow unreachable, model endpoints
    # answer 503 at once for REGISTRY_BREAKER_RESET_SECONDS, then one call tries MLflow again.
    registry_timeout_seconds: int = Field(default=5, gt=0)
    registry_threads: int = Field(default=8, gt=0)
    registry_breaker_failures: int = Field(default=3, gt=0)
    registry_breaker_reset_seconds: float = Field(default=10.0, gt=0)
    # The backend's wait for a model server's prediction answer; longer than the replicas'
    # own prediction timeout, so that their 503 (which the forwarder retries) arrives first.
    model_server_timeout_seconds: float = Field(default=35.0, gt=0)

    # Ports of the local stack (`make up`).
    backend_port: int = 8000
    model_server_port: int = 8001
    mlflow_port: int = 5000
    redis_port: int = 6379
    # Prometheus of `make up MONITORING=1` (not 9090: Debian's prometheus package starts a
    # system Prometheus there).
    prometheus_port: int = 9190

    extra_secret_env: list[str] = Field(default_factory=list)

    @field_validator("github_token_hosts")
    @classmethod
    def _token_hosts(cls, hosts: list[str]) -> list[str]:
        """`host` or `host:port`, lower case, 443 dropped: what git's per-URL config matches."""
        clean = []
        for host in hosts:
            text = host.strip().lower().removesuffix(":443")
            if not TOKEN_HOST.fullmatch(text):
                raise ValueError(
                    f"GITHUB_TOKEN_HOSTS entry {host!r} is not a host or host:port "
                    "(no scheme, path or wildcard), e.g. github.com or ghe.example.com:8443"
                )
            clean.append(text)
        return clean

    @field_validator("api_tokens")
    @classmethod
    def _named_tokens(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_named_tokens(value.get_secret_value())  # a faulty pair stops the start
        return value

    @field_validator("model_server_url")
    @classmethod
    def _replica_urls(cls, value: str) -> str:
        """Every comma-separated entry an http(s) URL, so a typo fails at start, not per request."""
        urls = [url.strip() for url in value.split(",")]
        bad = [url for url in urls if not url.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(
                f"MODEL_SERVER_URL entries must be http:// or https:// URLs, got {bad!r}"
            )
        return value

    @model_validator(mode="after")
    def _canary_bounds(self) -> Settings:
        """A challenger alias that is the serving alias would serve one version as both."""
        if self.challenger_alias == self.serving_alias:
            raise ValueError("CHALLENGER_ALIAS must differ from SERVING_ALIAS")
        if self.canary_max_seconds <= self.canary_min_seconds:
            raise ValueError("CANARY_MAX_SECONDS must be more than CANARY_MIN_SECONDS")
        return self

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        """Keep the default database with the rest of the local data (MLOPS_HOME)."""
        if not self.database_url:
            self.database_url = f"sqlite:///{self.mlops_home.resolve() / 'mlops.db'}"
        return self

    @property
    def accuracy_floor(self) -> float | None:
        """The floor no notebook's gate can go below (mlops_core/deploy_gate.py), if enforced."""
        return self.min_accuracy_threshold if self.gate_floor_enforced else None

    @property
    def model_server_urls(self) -> list[str]:
        """The model-server replicas MODEL_SERVER_URL lists, in order, without trailing '/'."""
        return [url.strip().rstrip("/") for url in self.model_server_url.split(",")]

    @property
    def mlflow_ui(self) -> str:
        """Base URL for links to MLflow's UI."""
        return (self.mlflow_ui_url or self.mlflow_tracking_uri).rstrip("/")


@lru_cache
def get_settings() -> Settings:
    """Settings are read once per process; tests clear the cache after changing the env."""
    return Settings()
