"""The Helm chart (infra/helm/tollgate), rendered by the pinned helm (``make deps`` builds it from its Go
module) with the default and a production-like values file: every object validates against the Kubernetes
schemas (``kubernetes-validate``) and KEDA's objects against KEDA's CRDs; Strimzi topics and users equal
what the topic catalog generates; pods are locked down; every service has a NetworkPolicy that lets it
reach only Kafka, PostgreSQL, DNS and the trace collector."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tollgate_core import helmgen, kafka_auth
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import SERVICES, catalog

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "infra" / "helm" / "tollgate"
CACHE = ROOT / "infra" / ".cache"
TOOLS = (ROOT / "infra" / "helm" / "tools.sh").read_text()
HELM = CACHE / f"helm-{TOOLS.split('HELM_VERSION=')[1].split()[0]}" / "helm"
KEDA_CRDS = CACHE / "crds" / f"keda-{TOOLS.split('KEDA_VERSION=')[1].split()[0]}"
K8S_VERSION = "1.33.0"
VALUES = {"default": None, "production": CHART / "ci" / "production-values.yaml"}
ALLOWED_EGRESS_PORTS = {53, 9092, 5432, 4318}

Obj = dict[str, Any]


@cache
def render(values: str) -> tuple[Obj, ...]:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: `make deps` builds it (infra/helm/tools.sh)")
    args = [str(HELM), "template", "tollgate", str(CHART), "--namespace", "tollgate"]
    if VALUES[values] is not None:
        args += ["-f", str(VALUES[values])]
    out = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def of_kind(objects: tuple[Obj, ...], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def component(obj: Obj) -> str:
    labels = obj["metadata"].get("labels", {})
    return str(labels.get("app.kubernetes.io/name") or labels.get("app.kubernetes.io/component"))


@cache
def crd_schemas() -> dict[tuple[str, str], Obj]:
    """(apiVersion, kind) -> openAPIV3Schema of each KEDA CRD version."""
    schemas: dict[tuple[str, str], Obj] = {}
    for path in sorted(KEDA_CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def test_the_committed_kafka_data_is_generated_from_the_catalog() -> None:
    assert helmgen.main(["check"]) == 0


@pytest.mark.parametrize("values", list(VALUES))
def test_every_object_validates_against_its_schema(values: str) -> None:
    objects = render(values)
    keda = crd_schemas()
    assert keda, f"no KEDA CRDs under {KEDA_CRDS}: `make deps` fetches them"
    checked = {"kubernetes": 0, "keda": 0}
    for obj in objects:
        group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
        if group in ("kafka.strimzi.io", "postgresql.cnpg.io"):
            continue  # no registry ships these operators' CRDs; their content is checked below
        if group == "keda.sh":
            jsonschema.validate(obj, keda[(obj["apiVersion"], obj["kind"])])
            checked["keda"] += 1
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        checked["kubernetes"] += 1
    assert checked["kubernetes"] > 30 and checked["keda"] >= 4, checked


@pytest.mark.parametrize("values", list(VALUES))
def test_every_service_has_its_objects(values: str) -> None:
    objects = render(values)
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"):
        assert sorted(component(o) for o in of_kind(objects, kind) if component(o) != "migrate") == sorted(
            SERVICES
        ), kind
    assert len(of_kind(objects, "Job")) == 1
    assert [o["metadata"]["name"] for o in of_kind(objects, "HorizontalPodAutoscaler")] == ["tollgate-scorer"]
    assert of_kind(objects, "Secret") == [], "the chart must not render secrets"


def test_kafka_users_carry_exactly_the_catalogs_acls() -> None:
    objects = render("default")
    users = {component(u): u for u in of_kind(objects, "KafkaUser")}
    expected = helmgen.kafka_acls(catalog(), "tollgate")
    assert sorted(users) == sorted(SERVICES) == sorted(expected)
    for service, user in users.items():
        acls = user["spec"]["authorization"]["acls"]
        assert all(acl.pop("host") == "*" for acl in acls)
        assert acls == expected[service], service
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"


def test_kafka_topics_follow_the_catalog() -> None:
    objects = render("default")
    topics = {t["spec"]["topicName"]: t["spec"] for t in of_kind(objects, "KafkaTopic")}
    wanted = {
        spec.full_name(v.version): spec
        for spec in catalog().values()
        for v in spec.versions
        if v.status != "deprecated"
    }
    assert sorted(topics) == sorted(wanted)
    for name, spec in wanted.items():
        assert topics[name]["partitions"] == spec.partitions
        assert {k: v for k, v in topics[name]["config"].items() if k != "min.insync.replicas"} == spec.configs
    (kafka,) = of_kind(objects, "Kafka")
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"
    assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False


@pytest.mark.parametrize("values", list(VALUES))
def test_autoscalers_follow_the_real_consumer_groups(values: str) -> None:
    objects = render(values)
    settings = ServiceSettings()
    live = {spec.full_name(v.version) for spec in catalog().values() for v in spec.versions}
    scaled = of_kind(objects, "ScaledObject")
    assert scaled
    for obj in scaled:
        service = obj["spec"]["scaleTargetRef"]["name"].removeprefix("tollgate-")
        for trigger in obj["spec"]["triggers"]:
            group = trigger["metadata"]["consumerGroup"]
            assert group.startswith(settings.consumer_group(service)), group
            assert trigger["metadata"]["topic"] in live
            spec = catalog()[trigger["metadata"]["topic"].removeprefix("tollgate.").rsplit(".v", 1)[0]]
            assert service in spec.consumers
            assert obj["spec"]["maxReplicaCount"] <= spec.partitions, "more replicas than partitions"


def pod_specs(objects: tuple[Obj, ...]) -> list[tuple[str, Obj]]:
    return [
        (o["metadata"]["name"], o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet")
    ]


@pytest.mark.parametrize("values", list(VALUES))
def test_no_container_runs_as_root_or_can_write_its_image(values: str) -> None:
    pods = pod_specs(render(values))
    assert len(pods) == len(SERVICES) + 1
    for name, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"].get("runAsUser", 1) != 0, name
        assert pod.get("hostNetwork") is not True and pod.get("automountServiceAccountToken") is False
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True and sc.get("runAsUser", 1) != 0, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc.get("privileged") is not True and sc["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
            for env in container.get("env", []):
                secret = ("KEY", "PASSWORD", "DATABASE_URL", "SECRET")
                if any(word in env["name"] for word in secret) and not env["name"].endswith("_PATH"):
                    assert "valueFrom" in env and "value" not in env, f"{name}: {env['name']} baked in"


@pytest.mark.parametrize("values", list(VALUES))
def test_services_have_health_and_readiness_probes(values: str) -> None:
    for deployment in of_kind(render(values), "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


@pytest.mark.parametrize("values", list(VALUES))
def test_every_service_has_a_network_policy_allowing_only_the_architectures_traffic(values: str) -> None:
    objects = render(values)
    policies = of_kind(objects, "NetworkPolicy")
    tollgate_pods = [
        (o["metadata"]["name"], o["spec"]["template"]["metadata"]["labels"], o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in ("Deployment", "Job")
    ]
    for name, labels, pod in tollgate_pods:
        mine = [p for p in policies if selects(p["spec"]["podSelector"], labels)]
        assert len(mine) == 1, f"{name}: {len(mine)} policies"
        spec = mine[0]["spec"]
        assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
        ports = {port["port"] for rule in spec["egress"] for port in rule["ports"]}
        assert ports <= ALLOWED_EGRESS_PORTS, (name, ports)
        uses_db = any(e["name"] == "TOLLGATE_DATABASE_URL" for e in pod["containers"][0].get("env", []))
        assert (5432 in ports) == uses_db, name
        for rule in spec["egress"]:
            for peer in rule["to"]:
                # No egress to any tollgate pod (services talk only through Kafka), nor to anywhere at all.
                if "podSelector" in peer:
                    assert not any(selects(peer["podSelector"], other) for _, other, _ in tollgate_pods)
                else:
                    assert peer["ipBlock"]["cidr"] != "0.0.0.0/0", (name, peer)
        for rule in spec.get("ingress", []):
            assert rule.get("from"), f"{name}: an ingress rule without sources admits everyone"
            assert [p["port"] for p in rule["ports"]] == [
                c["containerPort"] for c in pod["containers"][0].get("ports", [])
            ]
            for peer in rule["from"]:
                assert "ipBlock" not in peer and "namespaceSelector" in peer, (name, peer)
                assert not any(
                    selects(peer.get("podSelector", {"matchLabels": {"x": "y"}}), other)
                    for _, other, _ in tollgate_pods
                )


@pytest.mark.parametrize("values", list(VALUES))
def test_helm_lint_passes(values: str) -> None:
    render(values)  # fails clearly when helm is missing
    args = [str(HELM), "lint", "--strict", str(CHART)]
    if VALUES[values] is not None:
        args += ["-f", str(VALUES[values])]
    out = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("values", VALUES)
def test_services_get_kafka_credentials_under_the_names_the_clients_read(values: str) -> None:
    wanted = {kafka_auth.ENV_USERNAME, kafka_auth.ENV_PASSWORD, kafka_auth.ENV_SASL_MECHANISM}
    for deployment in of_kind(render(values), "Deployment"):
        name = deployment["metadata"]["name"]
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            names = {env["name"] for env in container.get("env", [])}
            assert wanted <= names, f"{name}/{container['name']}: missing {sorted(wanted - names)}"
