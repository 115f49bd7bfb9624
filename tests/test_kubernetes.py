"""deploy/kubernetes, checked offline: every manifest validates against the current Kubernetes schema
(kubernetes-validate, strict), every environment variable it sets is one the service reads, the
commands and probes name what the service really has, and the pods run as non-root with limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.cli import build_parser
from service.settings import Settings
from tests.variables import variables_the_service_reads

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "kubernetes"
SECRET_EXAMPLE = BASE / "secret.example.yaml"
WORKLOADS = {"Deployment", "Job"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def base_resources() -> list[dict[str, Any]]:
    kustomization = documents(BASE / "kustomization.yaml")[0]
    return [doc for name in kustomization["resources"] for doc in documents(BASE / name)]


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    return [
        (doc["metadata"]["name"], doc["spec"]["template"]["spec"])
        for doc in base_resources()
        if doc["kind"] in WORKLOADS
    ]


def test_the_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = set(documents(BASE / "kustomization.yaml")[0]["resources"])
    on_disk = {path.name for path in BASE.glob("*.yaml")} - {"kustomization.yaml", SECRET_EXAMPLE.name}
    assert listed == on_disk


MANIFESTS = sorted(path for path in BASE.glob("*.yaml") if path.name != "kustomization.yaml")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_every_manifest_validates_against_the_current_kubernetes_schema(path: Path) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_every_variable_the_manifests_set_is_one_the_service_reads() -> None:
    config = next(doc for doc in base_resources() if doc["kind"] == "ConfigMap")
    secret = documents(SECRET_EXAMPLE)[0]
    names = set(config["data"]) | set(secret["stringData"])
    for _, spec in pod_specs():
        for container in spec["containers"]:
            names |= {variable["name"] for variable in container.get("env", [])}
    unknown = names - variables_the_service_reads()
    assert not unknown, f"set but read by nothing: {sorted(unknown)}"
    # ...and the ConfigMap's values pass the settings' validation.
    Settings(**{name.lower(): value for name, value in config["data"].items()}, secret_key="k" * 32)


def test_secrets_come_only_from_the_secret_and_config_only_from_the_config_map() -> None:
    secret_names = set(documents(SECRET_EXAMPLE)[0]["stringData"])
    config = next(doc for doc in base_resources() if doc["kind"] == "ConfigMap")
    assert not secret_names & set(config["data"])
    assert not any(doc["kind"] == "Secret" for doc in base_resources()), "never commit a Secret"
    for name, spec in pod_specs():
        for container in spec["containers"]:
            sources = {
                next(iter(source)): next(iter(source.values()))["name"] for source in container["envFrom"]
            }
            assert sources == {"configMapRef": "claimcheck-config", "secretRef": "claimcheck-secrets"}, name
            inline = {variable["name"] for variable in container.get("env", [])}
            assert not inline & secret_names, f"{name} sets a secret inline"


def test_pods_run_as_non_root_with_resources_and_no_privilege() -> None:
    for name, spec in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name  # the Dockerfile's claimcheck user
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["requests"]["cpu"], name
            assert container["resources"]["limits"]["memory"], name


def test_commands_are_claimcheck_subcommands_and_probes_hit_health_endpoints() -> None:
    parser = build_parser()
    config = next(doc for doc in base_resources() if doc["kind"] == "ConfigMap")
    metrics_port = int(config["data"]["METRICS_PORT"])
    for name, spec in pod_specs():
        for container in spec["containers"]:
            program, *args = container["command"]
            assert program == "claimcheck", name
            parsed = parser.parse_args(args)
            ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe not in container:
                    continue
                target = container[probe]["httpGet"]
                port = ports[target["port"]]
                if parsed.command == "api" and port == parsed.port:
                    assert target["path"] == "/healthz", name
                else:  # the metrics server the worker and scheduler (and the API) start on METRICS_PORT
                    assert (port, target["path"]) == (metrics_port, "/metrics"), name
    kinds = {spec["containers"][0]["command"][1] for _, spec in pod_specs()}
    assert kinds == {"api", "worker", "scheduler", "migrate"}


def test_workers_autoscale_and_every_deployment_has_a_disruption_budget() -> None:
    resources = base_resources()
    deployments = {doc["metadata"]["name"] for doc in resources if doc["kind"] == "Deployment"}
    budgets = {doc["metadata"]["name"] for doc in resources if doc["kind"] == "PodDisruptionBudget"}
    assert budgets == deployments
    (autoscaler,) = [doc for doc in resources if doc["kind"] == "HorizontalPodAutoscaler"]
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "claimcheck-worker"


def test_services_and_disruption_budgets_select_a_deployments_pods_and_name_their_ports() -> None:
    resources = base_resources()
    pods = {
        doc["metadata"]["name"]: (
            doc["spec"]["template"]["metadata"]["labels"],
            {
                port["name"]
                for container in doc["spec"]["template"]["spec"]["containers"]
                for port in container.get("ports", [])
            },
        )
        for doc in resources
        if doc["kind"] == "Deployment"
    }
    for doc in resources:
        if doc["kind"] not in ("Service", "PodDisruptionBudget"):
            continue
        selector = doc["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        matched = [name for name, (labels, _) in pods.items() if selector.items() <= labels.items()]
        assert len(matched) == 1, f"{doc['kind']} {doc['metadata']['name']} selects {matched}"
        if doc["kind"] == "Service":
            for port in doc["spec"]["ports"]:
                assert port["targetPort"] in pods[matched[0]][1], (doc["metadata"]["name"], port)
