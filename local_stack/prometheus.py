"""Prometheus for `make up MONITORING=1`: the shipped scrape config, pointed at local processes.

deploy/monitoring/prometheus.yml is written for compose: DNS discovery of `backend`,
`model-server` and `worker`, rules and token file under /etc/prometheus. The local stack (and
tests/serving/test_monitoring.py) run the same jobs, each with the one local process as its
static target, the alert rules read from the checkout, and METRICS_TOKEN from a private file.
Deriving the local config from the shipped one keeps a job added there from being missed here:
a job this module has no target for is an error, not silently left out.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

MONITORING_DIR = Path(__file__).resolve().parent.parent / "deploy" / "monitoring"
SHIPPED_CONFIG = MONITORING_DIR / "prometheus.yml"
ALERT_RULES = MONITORING_DIR / "alerts.yml"


def local_config(targets: dict[str, str | None], token_file: Path | None) -> dict[str, Any]:
    """The shipped config with `job name → host:port` targets (None: leave that job out).

    `token_file` holds METRICS_TOKEN; None sends no token (the stack sets none).
    Raises KeyError naming a job of the shipped file that `targets` does not mention.
    """
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    config["rule_files"] = [str(ALERT_RULES)]
    jobs = []
    for job in config["scrape_configs"]:
        target = targets[job["job_name"]]
        if target is None:
            continue
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [target]}]
        if token_file is None:
            job.pop("authorization", None)
        else:
            job["authorization"] = {"credentials_file": str(token_file)}
        jobs.append(job)
    config["scrape_configs"] = jobs
    return config


def render(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def prometheus_binary() -> str | None:
    """Debian's `prometheus` (the `prometheus` package), if installed."""
    return shutil.which("prometheus")
