"""docker-compose.yml is a valid Compose file whose services run code and settings that exist.

No Docker engine runs here, so the file is checked against the Compose specification's JSON
schema (vendored by check-jsonschema, offline) and against the project itself.
"""

from __future__ import annotations

import configparser
import importlib.util
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_core.mlflow_users import MLFLOW_AUTHORIZATION_FUNCTION, MODEL_SERVER_MLFLOW_USER
from mlops_core.model_events import MODEL_SERVER_REDIS_ACL, MODEL_SERVER_REDIS_USER
from mlops_core.settings import Settings
from tests.support.processes import VENV_BIN

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PLATFORM_SERVICES = ("backend", "worker", "model-server")


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_specification(tmp_path: Path) -> None:
    result = validate(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    # The validator rejects a misspelt key, so the pass above means something.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    healthcheck:\n", "    healthchek:\n", 1))
    rejected = validate(broken)
    assert rejected.returncode != 0
    assert "healthchek" in rejected.stdout + rejected.stderr


def test_services_of_the_at_scale_shape(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "postgres", "mlflow", *PLATFORM_SERVICES} <= set(services)
    assert services["model-server"]["deploy"]["replicas"] == 2
    assert "replicas" in services["worker"]["deploy"]
    mlflow_args = " ".join(services["mlflow"]["command"])
    assert "--allowed-hosts=mlflow:5000" in mlflow_args


def test_platform_services_set_only_known_settings(compose: dict[str, Any]) -> None:
    known = {name.upper() for name in Settings.model_fields}
    for name in PLATFORM_SERVICES:
        unknown = set(compose["services"][name]["environment"]) - known
        assert not unknown, f"{name} sets variables no setting reads: {unknown}"


def test_model_server_gets_no_database(compose: dict[str, Any]) -> None:
    assert "DATABASE_URL" not in compose["services"]["model-server"]["environment"]


def test_model_server_gets_none_of_the_env_file(compose: dict[str, Any]) -> None:
    """Regression: it inherited `env_file: .env`, so it held every platform secret."""
    model_server = compose["services"]["model-server"]
    assert "env_file" not in model_server
    assert not {"REDIS_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "API_TOKEN"} & set(
        model_server["environment"]
    )


def test_commands_name_modules_that_exist(compose: dict[str, Any]) -> None:
    for name in PLATFORM_SERVICES:
        command = compose["services"][name]["command"]
        targets = [arg for arg in command if re.fullmatch(r"[a-z_]+\.[a-z_]+(:[a-z_]+)?", arg)]
        assert targets, f"{name}: no module in {command}"
        for target in targets:
            module = target.split(":")[0]
            assert importlib.util.find_spec(module) is not None, f"{name}: {module} is missing"


def test_no_secret_is_written_in_the_file() -> None:
    text = COMPOSE.read_text()
    for line in text.splitlines():
        if re.search(r"(PASSWORD|SECRET|TOKEN|ENCRYPTION_KEY)\s*:", line):
            assert "${" in line, f"literal secret in docker-compose.yml: {line.strip()}"
    assert re.search(r"://[^:/\s]+:[^$@\s]+@", text) is None, "a password literally in a URL"


def test_redis_and_mlflow_ask_for_credentials_and_publish_no_port(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name in ("redis", "mlflow"):
        assert "ports" not in services[name], f"{name} is published on the host"

    # Redis: passwords from .env (compose refuses to start without them), through a config
    # file; the model servers' ACL rules are the ones the local stack and the tests use.
    redis_service = services["redis"]
    assert redis_service["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    script = " ".join(redis_service["command"])
    assert f"user {MODEL_SERVER_REDIS_USER} reset on >%s {' '.join(MODEL_SERVER_REDIS_ACL)}" in (
        script
    )
    assert '"$$REDIS_PASSWORD"' in script and "redis-server /tmp/users.conf" in script
    assert "REDISCLI_AUTH" in " ".join(redis_service["healthcheck"]["test"])

    # MLflow: the basic-auth app with the platform's sign-in check (the local stack's too), its
    # admin password from .env, no secret in its ini file.
    mlflow_service = services["mlflow"]
    assert "--app-name=basic-auth" in mlflow_service["command"]
    assert mlflow_service["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith(
        "${MLFLOW_ADMIN_PASSWORD:?"
    )
    ini = configparser.ConfigParser()
    ini.read(ROOT / "deploy" / "mlflow-auth.ini")
    assert ini["mlflow"]["default_permission"] == "READ"
    assert ini["mlflow"]["authorization_function"] == MLFLOW_AUTHORIZATION_FUNCTION
    assert "admin_password" not in ini["mlflow"]

    # The platform signs in as the admin; model servers with their own restricted users.
    platform = services["backend"]["environment"]
    assert platform["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?")
    assert platform["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?")
    model_server = services["model-server"]
    assert model_server["environment"]["REDIS_URL"].startswith(
        f"redis://{MODEL_SERVER_REDIS_USER}:${{REDIS_MODEL_SERVER_PASSWORD:?"
    )
    assert model_server["environment"]["MLFLOW_TRACKING_USERNAME"] == MODEL_SERVER_MLFLOW_USER
    provisioned = model_server["depends_on"]["mlflow-users"]["condition"]
    assert provisioned == "service_completed_successfully"
    assert services["mlflow-users"]["command"][-1] == "mlops_core.mlflow_users"


def test_only_mlflow_holds_the_artifact_stores_credentials(compose: dict[str, Any]) -> None:
    """MLflow serves artifacts (S3 or its volume); the platform never talks to the store."""
    storage = {"MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    mlflow_env = compose["services"]["mlflow"]["environment"]
    # No value: compose passes what .env or the shell sets, and leaves the rest unset (an
    # empty MLFLOW_S3_ENDPOINT_URL would break boto3 on AWS S3).
    assert all(mlflow_env[name] is None for name in storage | {"AWS_DEFAULT_REGION"})
    assert "MLFLOW_ARTIFACTS_DESTINATION" in mlflow_env
    for name in PLATFORM_SERVICES:
        assert not storage & set(compose["services"][name]["environment"]), name


def test_monitoring_profile_runs_prometheus_and_grafana_on_the_shipped_files(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    # Only these two are in a profile: a plain `docker compose up` runs the platform alone.
    assert {name for name, service in services.items() if "profiles" in service} == {
        "prometheus",
        "grafana",
    }
    assert prometheus["profiles"] == grafana["profiles"] == ["monitoring"]
    # Compose interpolates services of inactive profiles too: a `:?` here would stop every `up`.
    assert ":?" not in yaml.safe_dump(prometheus) + yaml.safe_dump(grafana)

    def mounts(service: dict[str, Any]) -> dict[str, str]:
        """Container path → host source of the service's bind mounts (all must exist)."""
        found = {}
        for volume in service["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{volume}: {source} is missing"
                found[target] = source
        return found

    monitoring = "./deploy/monitoring"
    assert mounts(prometheus) == {
        "/etc/prometheus/prometheus.yml": f"{monitoring}/prometheus.yml",
        "/etc/prometheus/alerts.yml": f"{monitoring}/alerts.yml",
    }
    scrape = yaml.safe_load((ROOT / "deploy" / "monitoring" / "prometheus.yml").read_text())
    assert scrape["rule_files"] == ["/etc/prometheus/alerts.yml"]
    # Every job sends METRICS_TOKEN from the file the container writes before Prometheus starts.
    token_files = {job["authorization"]["credentials_file"] for job in scrape["scrape_configs"]}
    assert token_files == {"/etc/prometheus/metrics-token"}
    assert "> /etc/prometheus/metrics-token" in " ".join(prometheus["command"])
    assert prometheus["environment"]["METRICS_TOKEN"] == "${METRICS_TOKEN:-}"
    assert services["model-server"]["environment"]["METRICS_TOKEN"] == "${METRICS_TOKEN:-}"
    # Jobs reach the services by their compose names; the worker listens beyond its loopback.
    discovered = {
        job["job_name"]: config
        for job in scrape["scrape_configs"]
        for config in job.get("dns_sd_configs", [])
    }
    assert discovered["worker"] == {
        "names": ["worker"],
        "type": "A",
        "port": Settings.model_fields["worker_metrics_port"].default,
    }
    assert services["worker"]["environment"]["WORKER_METRICS_HOST"] == "0.0.0.0"
    assert discovered["model-server"]["names"] == ["model-server"]
    assert all(published.startswith("127.0.0.1:") for published in prometheus["ports"])

    provisioning = ROOT / "deploy" / "monitoring" / "grafana" / "provisioning"
    provider = yaml.safe_load((provisioning / "dashboards" / "platform.yml").read_text())
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert mounts(grafana) == {
        "/etc/grafana/provisioning": f"{monitoring}/grafana/provisioning",
        provider["providers"][0]["options"]["path"]: f"{monitoring}/grafana/dashboards",
    }
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert "GRAFANA_ADMIN_PASSWORD" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
