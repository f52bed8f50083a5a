"""The Helm chart (infra/helm/tollgate), rendered by the pinned helm (``make deps`` builds it from its Go
module) with the default and a production-like values file: every object validates against the Kubernetes
schemas (``kubernetes-validate``) and the operators' objects against their CRDs (KEDA, CloudNativePG, the
Prometheus operator from their Go modules, Strimzi generated from its Maven artifacts); Strimzi topics and users equal what the topic catalog generates;
pods are locked down; every service has a NetworkPolicy that lets it reach only Kafka, PostgreSQL, DNS and
the trace collector; Prometheus scrapes every service with an operator key the hook Job imports. Strimzi's
CRDs come from no registry as YAML: tools.sh generates them from Strimzi's Maven api jar."""

from __future__ import annotations

import copy
import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.cli_support import exit_status
from tollgate_cli.dev import dev_app
from tollgate_core import kafka_auth
from tollgate_core.auth import METRICS_ROLES
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import SERVICES, catalog
from tollgate_tools import helmgen

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "infra" / "helm" / "tollgate"
CACHE = ROOT / "infra" / ".cache"
TOOLS = (ROOT / "infra" / "helm" / "tools.sh").read_text()
HELM = CACHE / f"helm-{TOOLS.split('HELM_VERSION=')[1].split()[0]}" / "helm"


def pinned(variable: str) -> str:
    return TOOLS.split(f"\n{variable}=")[1].split()[0]


# API group -> the folder holding its operator's CRDs (fetched by infra/helm/tools.sh).
CRDS = {
    "keda.sh": CACHE / "crds" / f"keda-{pinned('KEDA_VERSION')}",
    "postgresql.cnpg.io": CACHE / "crds" / f"cloudnative-pg-{pinned('CNPG_VERSION')}",
    "monitoring.coreos.com": CACHE / "crds" / f"prometheus-operator-{pinned('PROMETHEUS_OPERATOR_VERSION')}",
    # Generated from Strimzi's Maven api jar by its Maven crd-generator (no registry ships the YAML).
    "kafka.strimzi.io": CACHE / "crds" / f"strimzi-{pinned('STRIMZI_VERSION')}",
}
K8S_VERSION = "1.33.0"
VALUES = {"default": None, "production": CHART / "ci" / "production-values.yaml"}
ALLOWED_EGRESS_PORTS = {53, 9092, 5432, 4318}

Obj = dict[str, Any]


def helm_template(*extra: str) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: `make deps` builds it (infra/helm/tools.sh)")
    args = [str(HELM), "template", "tollgate", str(CHART), "--namespace", "tollgate", *extra]
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)


@cache
def render(values: str, *sets: str) -> tuple[Obj, ...]:
    args = ["-f", str(VALUES[values])] if VALUES[values] is not None else []
    for setting in sets:
        args += ["--set", setting]
    out = helm_template(*args)
    assert out.returncode == 0, out.stderr
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def of_kind(objects: tuple[Obj, ...], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def component(obj: Obj) -> str:
    labels = obj["metadata"].get("labels", {})
    return str(labels.get("app.kubernetes.io/name") or labels.get("app.kubernetes.io/component"))


def closed(schema: Obj) -> Obj:
    """The schema with every object that lists its properties closed to others: the API server drops an
    unknown field silently (pruning), so a misspelled field would otherwise pass and do nothing."""
    schema = copy.deepcopy(schema)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


class CrdLoader(yaml.CSafeLoader):
    """Safe YAML, plus the lone ``=`` (YAML 1.1's value tag) that CloudNativePG's CRDs list as an operator."""


CrdLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


@cache
def crd_schemas() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> a validator of the (closed) openAPIV3Schema of each version of every operator
    CRD, built once: Strimzi's Kafka schema alone is half a megabyte."""
    schemas: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
    for group, folder in CRDS.items():
        paths = sorted(folder.glob("*.yaml"))
        assert paths, f"no {group} CRDs under {folder}: `make deps` fetches them (infra/helm/tools.sh)"
        for path in paths:
            crd = yaml.load(path.read_text(), Loader=CrdLoader)  # a SafeLoader
            for version in crd["spec"]["versions"]:
                key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                schema = closed(version["schema"]["openAPIV3Schema"])
                schemas[key] = jsonschema.validators.validator_for(schema)(schema)
    return schemas


def test_the_committed_kafka_data_is_generated_from_the_catalog() -> None:
    assert exit_status(dev_app, "helm", "check") == 0


@pytest.mark.parametrize("values", list(VALUES))
def test_every_object_validates_against_its_schema(values: str) -> None:
    objects = render(values)
    schemas = crd_schemas()
    checked: dict[str, int] = {"kubernetes": 0}
    for obj in objects:
        group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
        if group in CRDS:
            validator = schemas.get((obj["apiVersion"], obj["kind"]))
            assert validator is not None, (
                f"{obj['apiVersion']} {obj['kind']}: no such CRD version in {CRDS[group]}"
            )
            validator.validate(obj)
            checked[group] = checked.get(group, 0) + 1
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        checked["kubernetes"] += 1
    assert checked["kubernetes"] > 30 and checked["keda.sh"] >= 4, checked
    assert checked["monitoring.coreos.com"] == len(SERVICES), checked
    assert checked.get("postgresql.cnpg.io", 0) == (1 if values == "default" else 0), checked
    strimzi = len(of_kind(objects, "KafkaTopic")) + len(SERVICES) + 2  # topics, users, Kafka, node pool
    assert checked["kafka.strimzi.io"] == strimzi, checked


def test_operator_schemas_catch_a_misspelled_field() -> None:
    """The CRD check is not vacuous: a field the operator does not know fails, as does a wrong type."""
    schemas = crd_schemas()
    for kind in (
        "ServiceMonitor",
        "Cluster",
        "ScaledObject",
        "Kafka",
        "KafkaNodePool",
        "KafkaTopic",
        "KafkaUser",
    ):
        (obj,) = [o for o in render("default") if o["kind"] == kind][:1]
        typo = copy.deepcopy(obj)
        typo["spec"]["replicass"] = 2
        with pytest.raises(jsonschema.ValidationError, match="replicass"):
            schemas[(obj["apiVersion"], kind)].validate(typo)
    (monitor,) = [o for o in render("default") if o["kind"] == "ServiceMonitor"][:1]
    wrong = copy.deepcopy(monitor)
    wrong["spec"]["endpoints"][0]["authorization"]["credentials"] = "tgk_inline"
    with pytest.raises(jsonschema.ValidationError):
        schemas[(monitor["apiVersion"], "ServiceMonitor")].validate(wrong)


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


def scraped_ports(objects: tuple[Obj, ...]) -> dict[str, Obj]:
    """Service name -> the ServiceMonitor endpoint that scrapes it."""
    found: dict[str, Obj] = {}
    for monitor in of_kind(objects, "ServiceMonitor"):
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["tollgate"]}
        for service in of_kind(objects, "Service"):
            if selects(monitor["spec"]["selector"], service["metadata"]["labels"]):
                assert service["metadata"]["name"] not in found, "scraped twice"
                (endpoint,) = monitor["spec"]["endpoints"]
                assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
                found[service["metadata"]["name"]] = endpoint
    return found


@pytest.mark.parametrize("values", list(VALUES))
def test_prometheus_scrapes_every_service_with_the_operator_key_the_hook_job_imports(values: str) -> None:
    """/metrics needs the operator role: each ServiceMonitor sends the key of the metrics Secret as a bearer
    token, and the hook Job stores that same key with a role /metrics accepts. No pod invites an
    annotation-driven scrape, which would carry no key and only collect 401s."""
    objects = render(values)
    endpoints = scraped_ports(objects)
    assert sorted(endpoints) == sorted(f"tollgate-{s}" for s in SERVICES)
    secrets = set()
    for endpoint in endpoints.values():
        assert endpoint["path"] == "/metrics" and endpoint["authorization"]["type"] == "Bearer"
        secrets.add(
            (
                endpoint["authorization"]["credentials"]["name"],
                endpoint["authorization"]["credentials"]["key"],
            )
        )
    ((secret, secret_key),) = secrets
    (job,) = of_kind(objects, "Job")
    pod = job["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["migrate"], "the key's table comes first"
    (importer,) = pod["containers"]
    command = importer["command"]
    assert command[:4] == ["python", "-m", "tollgate_cli.keys", "import"]
    principal, role, flag, path = command[4:]
    assert principal == "prometheus" and role in METRICS_ROLES and flag == "--key-file"
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == secret
    assert volume["secret"]["items"] == [{"key": secret_key, "path": Path(path).name}]
    (mount,) = [m for m in importer["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True and Path(mount["mountPath"]) / Path(path).name == Path(path)
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            annotations = obj["spec"]["template"]["metadata"].get("annotations", {})
            assert not any(k.startswith("prometheus.io/") for k in annotations), obj["metadata"]["name"]


def test_without_a_metrics_key_nothing_scrapes_and_nothing_is_imported() -> None:
    objects = render("default", "metrics.serviceMonitor.enabled=false", "metrics.apiKeySecret=")
    assert of_kind(objects, "ServiceMonitor") == []
    (job,) = of_kind(objects, "Job")
    pod = job["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["migrate"] and "initContainers" not in pod
    assert not any("secret" in v for v in pod["volumes"])
    # ServiceMonitors without a key would only collect 401s: the chart refuses to render them.
    out = helm_template("--set", "metrics.apiKeySecret=")
    assert out.returncode != 0 and "metrics.apiKeySecret is required" in out.stderr


@pytest.mark.parametrize("values", sorted(VALUES))
def test_services_run_in_production_with_every_secret_they_need_from_secrets(
    values: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside development and test a service refuses to start without its secrets: the chart runs them
    in production and passes each one from a Secret (never a plain value)."""
    from tests.unit.test_compose import settings_class

    for name in list(os.environ):
        if name.startswith("TOLLGATE_") or name == "PGPASSWORD":
            monkeypatch.delenv(name)

    for deployment in of_kind(render(values), "Deployment"):
        svc = component(deployment)
        cls = settings_class(svc)
        assert cls is not None, svc
        needed = {name.split()[0] for name in cls(environment="production").missing_secrets()}
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["TOLLGATE_ENV"].get("value") == "production", f"{svc}: TOLLGATE_ENV"
            for name in sorted(needed):
                if name == "TOLLGATE_KAFKA_USERNAME" or name.endswith("_PATH"):
                    # a principal's name, not a secret; a file the pod mounts from a Secret
                    assert name in env, f"{svc}: {name} missing"
                    continue
                assert "secretKeyRef" in env.get(name, {}).get("valueFrom", {}), (
                    f"{svc}: {name} is not passed from a Secret: {env.get(name)}"
                )


@pytest.mark.parametrize("values", VALUES)
def test_audit_log_replicas_share_one_witness_directory(values: str) -> None:
    """Every audit-log replica mounts the same ReadWriteMany claim where TOLLGATE_AUDIT_LOG_WITNESS_DIR
    points (published heads, the journal of unsealed heads, key rotations): a standby that takes a stream
    over reads what the last writer journaled. Without the volume the default directory would sit on the
    read-only root file system."""
    objects = render(values)
    (deployment,) = [o for o in of_kind(objects, "Deployment") if component(o) == "audit-log"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert env["TOLLGATE_AUDIT_LOG_WITNESS_DIR"] == mounts["witness"]["mountPath"]
    assert not mounts["witness"].get("readOnly")
    (volume,) = [v for v in pod["volumes"] if v["name"] == "witness"]
    claim = volume["persistentVolumeClaim"]["claimName"]
    (pvc,) = [o for o in of_kind(objects, "PersistentVolumeClaim") if o["metadata"]["name"] == claim]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # the replicas may run on different nodes
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"  # outlives an uninstall
    if deployment["spec"].get("replicas") is not None:
        assert deployment["spec"]["replicas"] >= 2


def test_an_existing_witness_claim_is_mounted_and_none_is_created() -> None:
    objects = render("default", "auditWitness.existingClaim=witness-on-another-host")
    (deployment,) = [o for o in of_kind(objects, "Deployment") if component(o) == "audit-log"]
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "witness"]
    assert volume["persistentVolumeClaim"]["claimName"] == "witness-on-another-host"
    assert not [o for o in of_kind(objects, "PersistentVolumeClaim") if "witness" in o["metadata"]["name"]]


@pytest.mark.parametrize("values", sorted(VALUES))
def test_each_service_connects_as_its_own_database_role_and_only_the_job_as_the_owner(values: str) -> None:
    """One Secret entry per service DSN (its own role, tollgate_core.db_roles); the owner's DSN goes to the
    migration Job alone; with CloudNativePG every service role is a managed role with no dangerous attribute."""
    from tollgate_core import db_roles

    objects = render(values)
    url_secret = "tollgate-prod-db-services" if values != "default" else "tollgate-db-services"
    for deployment in of_kind(objects, "Deployment"):
        svc = component(deployment)
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container.get("env", [])}
        ref = env["TOLLGATE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (url_secret, svc), svc
    (job,) = of_kind(objects, "Job")
    pod = job["spec"]["template"]["spec"]
    (migrate,) = [c for c in pod["containers"] + pod.get("initContainers", []) if c["name"] == "migrate"]
    owner = {e["name"]: e for e in migrate["env"]}["TOLLGATE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert owner["name"] != url_secret
    clusters = of_kind(objects, "Cluster")
    if values == "default":
        (cluster,) = clusters
        managed = {r["name"]: r for r in cluster["spec"]["managed"]["roles"]}
        assert set(managed) == {r.role for r in db_roles.SERVICE_ROLES}
        for role in managed.values():
            assert role["login"] is True and role["passwordSecret"]["name"]
            for attribute in ("superuser", "createdb", "createrole", "replication", "bypassrls", "inherit"):
                assert role[attribute] is False, (role["name"], attribute)
    else:
        assert not clusters


def test_helm_check_fails_on_drift_until_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(helmgen, "chart_file", lambda: tmp_path / "files" / "kafka.yaml")
    assert exit_status(dev_app, "helm", "check") == 1
    assert "differs from the topic catalog; run `tollgate dev helm write`" in capsys.readouterr().out
    assert exit_status(dev_app, "helm", "write") == 0
    assert (tmp_path / "files" / "kafka.yaml").read_text() == helmgen.render()
    assert exit_status(dev_app, "helm", "check") == 0
