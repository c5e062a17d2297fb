"""Writes a Kubernetes overlay's secrets.env (deploy/k8s/overlays/<overlay>/secrets.env).

    .venv/bin/python scripts/k8s_secrets.py local deploy/k8s/overlays/local/secrets.env
    .venv/bin/python scripts/k8s_secrets.py production deploy/k8s/overlays/production/secrets.env

Every password and token is random, and each appears in the URLs that carry it (REDIS_URL holds
REDIS_PASSWORD, ...), so the file is consistent by construction. For `local` the database and
the S3 store run in the cluster and get random credentials too; for `production` the database
URLs (and, unless the cloud gives pods an identity, the S3 credentials) are read from this
script's environment: DATABASE_URL, MLFLOW_BACKEND_STORE_URI, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, never from its arguments. The file is written 0600 and never overwritten;
the kustomization turns it into the Secret `platform-secrets`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from mlops_core.model_events import MODEL_SERVER_REDIS_USER


def _token() -> str:
    """URL-safe, so it goes into a URL or an env file as it is."""
    return secrets.token_urlsafe(32)


def secret_values(overlay: str, environ: dict[str, str]) -> dict[str, str]:
    """The Secret's keys and values for an overlay; raises SystemExit naming what is missing."""
    redis_password, model_server_redis_password = _token(), _token()
    values = {
        "REDIS_PASSWORD": redis_password,
        "REDIS_MODEL_SERVER_PASSWORD": model_server_redis_password,
        "REDIS_URL": f"redis://:{redis_password}@redis:6379/0",
        "MODEL_SERVER_REDIS_URL": (
            f"redis://{MODEL_SERVER_REDIS_USER}:{model_server_redis_password}@redis:6379/0"
        ),
        "MLFLOW_ADMIN_PASSWORD": _token(),
        "MLFLOW_MODEL_SERVER_PASSWORD": _token(),
        "MLFLOW_FLASK_SECRET_KEY": _token(),
        "ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "GITHUB_WEBHOOK_SECRET": _token(),
        "API_TOKEN": _token(),
        "PREDICT_TOKEN": _token(),
        "METRICS_TOKEN": _token(),
    }
    if overlay == "local":
        postgres_password = _token()
        return values | {
            "POSTGRES_PASSWORD": postgres_password,
            "DATABASE_URL": f"postgresql://mlops:{postgres_password}@postgres:5432/mlops",
            "MLFLOW_BACKEND_STORE_URI": (
                f"postgresql+psycopg://mlops:{postgres_password}@postgres:5432/mlflow"
            ),
            # MinIO's root user (deploy/k8s/overlays/local/minio.yaml).
            "AWS_ACCESS_KEY_ID": f"mlflow-{secrets.token_hex(4)}",
            "AWS_SECRET_ACCESS_KEY": _token(),
        }
    missing = [
        name for name in ("DATABASE_URL", "MLFLOW_BACKEND_STORE_URI") if not environ.get(name)
    ]
    if missing:
        raise SystemExit(
            f"set {' and '.join(missing)} in the environment: the managed PostgreSQL's URLs "
            "(postgresql://user:password@host:5432/mlops, "
            "postgresql+psycopg://user:password@host:5432/mlflow)"
        )
    storage = {
        name: environ[name]
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        if environ.get(name)
    }
    return values | {
        "DATABASE_URL": environ["DATABASE_URL"],
        "MLFLOW_BACKEND_STORE_URI": environ["MLFLOW_BACKEND_STORE_URI"],
        **storage,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overlay", choices=["local", "production"])
    parser.add_argument("path", type=Path, help="where to write it (the overlay's secrets.env)")
    args = parser.parse_args(argv)
    values = secret_values(args.overlay, dict(os.environ))
    body = "".join(f"{name}={value}\n" for name, value in values.items())
    try:
        descriptor = os.open(args.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"{args.path} exists: not overwritten (delete it to start anew)", file=sys.stderr)
        return 1
    with os.fdopen(descriptor, "w") as stream:
        stream.write(body)
    print(f"wrote {args.path} ({len(values)} keys, mode 0600)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
