"""Every setting of the platform, read from the environment (and `.env`).

One class for all three deployables keeps the names in `.env.example` the single contract
between an operator and the code; each deployable reads only the fields it needs.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Platform settings; field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Where the local stack keeps its data (DB file, MLflow store, logs, work dirs).
    mlops_home: Path = Path(".mlops")

    # GitHub
    github_webhook_secret: SecretStr | None = None
    github_token: SecretStr | None = None
    allow_local_repos: bool = False
    public_base_url: str = "http://127.0.0.1:8000"

    # Infrastructure
    redis_url: str = "redis://127.0.0.1:6379/0"
    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    # Link shown to users for MLflow runs; defaults to the tracking URI.
    mlflow_ui_url: str | None = None
    model_server_url: str = "http://127.0.0.1:8001"
    # Empty means a SQLite file inside MLOPS_HOME.
    database_url: str = ""

    # Security
    api_token: SecretStr | None = None
    # Fernet key (urlsafe base64, 32 bytes) used to encrypt repo tokens at rest.
    encryption_key: SecretStr | None = None

    # Pipeline behaviour
    auto_deploy_on_success: bool = True
    min_accuracy_threshold: float = 0.8
    serving_alias: str = "production"
    cell_timeout_seconds: int = 600
    pipeline_timeout_seconds: int = 3600
    worker_concurrency: int = 1
    deploy_wait_seconds: float = 60.0
    work_dir: Path | None = None
    # Keep each pipeline's checkout and outputs after it ends (for debugging).
    keep_work_dirs: bool = False
    # Extra worker environment variables copied into the notebook kernel (JSON list);
    # names that look secret (password/secret/token/key/credential) are never copied.
    kernel_env_passthrough: list[str] = Field(default_factory=list)

    # Webhook intake
    webhook_max_body_bytes: int = 25 * 1024 * 1024
    requeue_interval_seconds: float = 5.0

    # Logs
    log_replay_max_lines: int = 20000
    log_replay_ttl_seconds: int = 7 * 24 * 3600
    ws_ping_interval_seconds: float = 20.0

    # Model server
    model_reconcile_interval_seconds: float = 30.0
    predict_max_body_bytes: int = 10 * 1024 * 1024
    predict_threads: int = 4
    # Replicas refresh their "loaded" report this often; reports older than 3x are ignored.
    model_heartbeat_interval_seconds: float = 5.0
    # Stable id of a model-server replica in its reports; empty means hostname:pid.
    model_server_replica_id: str = ""

    # Ports of the local stack (`make up`).
    backend_port: int = 8000
    model_server_port: int = 8001
    mlflow_port: int = 5000
    redis_port: int = 6379

    extra_secret_env: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        """Keep the default database with the rest of the local data (MLOPS_HOME)."""
        if not self.database_url:
            self.database_url = f"sqlite:///{self.mlops_home.resolve() / 'mlops.db'}"
        return self

    @property
    def mlflow_ui(self) -> str:
        """Base URL for links to MLflow's UI."""
        return (self.mlflow_ui_url or self.mlflow_tracking_uri).rstrip("/")


@lru_cache
def get_settings() -> Settings:
    """Settings are read once per process; tests clear the cache after changing the env."""
    return Settings()
