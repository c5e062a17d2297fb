"""A real S3-compatible HTTP server for tests: moto's server mode on a free loopback port.

It speaks S3's REST protocol over HTTP (path-style buckets, SigV4 signatures), so boto3 and
MLflow's S3 artifact store talk to it exactly as to an S3-compatible store in production.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import boto3

from tests.support.processes import VENV_BIN, ManagedProcess, free_port, wait_http


class S3Server:
    """`moto_server` with one set of credentials; `env` is what an S3 client is given."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.access_key = f"AKIA{secrets.token_hex(8).upper()}"
        self.secret_key = secrets.token_urlsafe(30)
        self.process: ManagedProcess | None = None

    @property
    def env(self) -> dict[str, str]:
        """The settings MLflow's S3 store (boto3) reads: endpoint, credentials, region."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self) -> S3Server:
        self.process = ManagedProcess(
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            log_path=self.workdir / "moto.log",
        )
        wait_http(f"{self.endpoint}/moto-api/", timeout=60, process=self.process)
        return self

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def keys(self, bucket: str) -> list[str]:
        """Every object key in the bucket."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
