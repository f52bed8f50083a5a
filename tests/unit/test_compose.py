"""docker-compose.yml describes the same platform as the local stack (Makefile → infra/stack.sh).

No Docker engine runs here, so this is what keeps the compose file honest: the same services, the same
published ports, environment variables the services really read, the Kafka version the stack pins, and a
health check everywhere. Sources of truth:

- service list, HTTP ports, Kafka/PostgreSQL ports and credentials, uv version: ``infra/stack.sh``
  (the Makefile only forwards ``SERVICES`` to it as ``STACK_SERVICES``); the service list and ports come
  from ``infra/services.env`` instead once that file exists;
- a service's own default ``http_port`` and its environment names: its settings class, the
  ``tollgate_core.settings.ServiceSettings`` subclass in ``tollgate_<svc>.app``;
- the Kafka version: ``<kafka.version>`` in ``infra/kafka/pom.xml``;
- the broker's configuration: ``infra/kafka/server.properties.template``, which the compose broker renders too
  (``infra/kafka/compose-start.sh``); the PostgreSQL roles: ``infra/postgres/roles.sql``;
- the secrets: what ``infra/stack.sh compose-env`` generates into the env file.

Secure by default: HTTP ports bound to 127.0.0.1 unless TOLLGATE_HTTP_BIND says otherwise, Kafka and
PostgreSQL not published, every service its own Kafka principal, no superuser for the services, every secret
from the env file without a default.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from tollgate_core.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
STACK_FILE = ROOT / "infra" / "stack.sh"
SERVICES_FILE = ROOT / "infra" / "services.env"
MAKEFILE = ROOT / "Makefile"
KAFKA_POM = ROOT / "infra" / "kafka" / "pom.xml"
TOPICS_COMMAND = ROOT / "libs" / "cli" / "tollgate_cli" / "admin.py"  # tollgate admin topics|acls apply
KAFKA_AUTH = ROOT / "libs" / "core" / "tollgate_core" / "kafka_auth.py"
KAFKA_TEMPLATE = ROOT / "infra" / "kafka" / "server.properties.template"
KAFKA_START = ROOT / "infra" / "kafka" / "compose-start.sh"
PG_ROLES = ROOT / "infra" / "postgres" / "roles.sql"
PG_INIT = ROOT / "infra" / "postgres" / "compose-init.sh"
# A secret in the compose file: an env-file variable that must be set (no default), e.g. ${NAME:?hint}.
SECRET = re.compile(r"\$\{([A-Z][A-Z0-9_]*):\?[^}]*\}")

INFRA = ("kafka", "postgres", "topics", "migrate")
ARTIFACT_SERVICES = ("trainer", "registry", "scorer")
ARTIFACT_DIR = "/var/lib/tollgate/artifacts"


# -------------------------------------------------------------------------------------------------- sources


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), (
        "docker-compose.yml: no services"
    )
    return data


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    spec = services[name]
    assert isinstance(spec, dict)
    return spec


@cache
def stack_text() -> str:
    return STACK_FILE.read_text()


def stack_default(variable: str, knob: str) -> str:
    """The default of ``VARIABLE=${KNOB:-default}`` in infra/stack.sh."""
    match = re.search(rf"^{variable}=\$\{{{knob}:-([^}}]*)\}}\s*$", stack_text(), re.M)
    assert match, f"infra/stack.sh: no line {variable}=${{{knob}:-...}}"
    return match.group(1)


def stack_literal(variable: str) -> str:
    match = re.search(rf"^{variable}=([^\s$]+)\s*$", stack_text(), re.M)
    assert match, f"infra/stack.sh: no line {variable}=<value>"
    return match.group(1)


@cache
def services_table() -> tuple[tuple[str, int | None], ...] | None:
    """``infra/services.env`` ("service [http-port]" per line, # comments) when the stack reads one."""
    if not SERVICES_FILE.is_file():
        return None
    rows = []
    for line in SERVICES_FILE.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            assert len(fields) <= 2 and (len(fields) == 1 or fields[1].isdigit()), f"services.env: {line!r}"
            rows.append((fields[0], int(fields[1]) if len(fields) == 2 else None))
    assert rows, "infra/services.env lists no services"
    return tuple(rows)


@cache
def stack_services() -> tuple[str, ...]:
    table = services_table()
    if table is not None:
        return tuple(svc for svc, _ in table)
    services = tuple(stack_default("SERVICES", "STACK_SERVICES").split())
    assert services, "infra/stack.sh: the default service list is empty"
    return services


@cache
def stack_ports() -> dict[str, int]:
    """The HTTP ports of the local stack: infra/services.env, else the ``case`` arms of stack.sh's
    ``svc_port()``."""
    table = services_table()
    if table is not None:
        return {svc: port for svc, port in table if port is not None}
    match = re.search(r"^svc_port\(\) \{\n(.*?)^\}", stack_text(), re.M | re.S)
    assert match, "infra/stack.sh: no svc_port() function"
    ports = {
        svc: int(port)
        for svc, port in re.findall(r"^\s*([a-z][a-z0-9-]*)\)\s*echo\s+(\d+)\s*;;", match.group(1), re.M)
    }
    assert ports, "infra/stack.sh: svc_port() lists no ports"
    return ports


def kafka_version_in_pom() -> str:
    root = ET.parse(KAFKA_POM).getroot()
    versions = [el.text for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "kafka.version"]
    assert versions and versions[0], "infra/kafka/pom.xml: no <kafka.version>"
    return versions[0].strip()


def module_of(svc: str) -> str:
    """The Python package of a service, as infra/stack.sh's svc_module() names it."""
    return "tollgate_" + svc.replace("-", "_")


def env_prefix_of(svc: str) -> str:
    return f"TOLLGATE_{svc.upper().replace('-', '_')}_"


def package_dir(svc: str) -> Path:
    return ROOT / "services" / svc / module_of(svc)


def settings_class(svc: str) -> type[ServiceSettings] | None:
    """The service's settings class, or None while its package has neither ``__main__.py`` nor ``app.py``
    (not written yet; infra/stack.sh skips it too). A runnable package without one fails."""
    pkg = package_dir(svc)
    runnable = (pkg / "__main__.py").is_file()
    if not (pkg / "app.py").is_file():
        if runnable:
            pytest.fail(
                f"{svc}: {pkg.relative_to(ROOT)}/__main__.py exists but app.py (its settings class) does not"
            )
        return None
    package = module_of(svc)
    module = importlib.import_module(f"{package}.app")
    # Defined in the service's own package (app.py itself or e.g. its settings.py), not imported from elsewhere.
    candidates = {
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, ServiceSettings)
        and obj is not ServiceSettings
        and (obj.__module__ == package or obj.__module__.startswith(f"{package}."))
    }
    found = [c for c in candidates if not any(o is not c and issubclass(o, c) for o in candidates)]
    if len(found) != 1:
        pytest.fail(
            f"{svc}: {module.__name__} must use exactly one ServiceSettings subclass of {package}, "
            f"found {sorted(c.__name__ for c in found)}"
        )
    return found[0]


def require_settings(svc: str) -> type[ServiceSettings]:
    cls = settings_class(svc)
    if cls is None:
        pytest.skip(
            f"{svc}: services/{svc}/{module_of(svc)} has no __main__.py or app.py yet, no settings to check"
        )
    return cls


def env_names(cls: type[ServiceSettings]) -> set[str]:
    """Every environment variable name pydantic-settings reads for ``cls`` (aliases are not prefixed)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for name, field in cls.model_fields.items():
        alias = field.validation_alias or field.alias
        if alias is None:
            names.add(prefix + name)
        elif isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
    if cls.model_config.get("case_sensitive", False):
        return names
    return {n.upper() for n in names}


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment") or {}
    if isinstance(env, list):  # the KEY=value list form
        env = dict(item.split("=", 1) for item in env)
    assert isinstance(env, dict), f"{name}: environment must be a mapping or a KEY=value list"
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in env.items()}


def published_ports(name: str) -> list[tuple[int, int]]:
    """(host port, container port) pairs; every mapping must name both."""
    pairs = []
    for entry in service(name).get("ports") or []:
        if isinstance(entry, dict):
            host, container = entry.get("published"), entry.get("target")
        else:
            parts = str(entry).split("/")[0].split(":")
            assert len(parts) in (2, 3), f"{name}: port {entry!r} must be HOST:CONTAINER"
            host, container = parts[-2], parts[-1]
        assert host is not None and container is not None, f"{name}: port {entry!r} must publish a host port"
        pairs.append((int(host), int(container)))
    return pairs


def _default_of(value: str) -> str:
    """``${VAR:-default}`` → default (what compose uses when VAR is unset); other values as they are."""
    match = re.fullmatch(r"\$\{[A-Z0-9_]+:?-([^}]*)\}", value)
    return match.group(1) if match else value


def published_host_ips(name: str) -> list[str]:
    """The host address of every published port, as compose resolves it with no variable set."""
    ips = []
    for entry in service(name).get("ports") or []:
        if isinstance(entry, dict):
            ips.append(_default_of(str(entry.get("host_ip", ""))))
        else:
            parts = str(entry).split("/")[0].split(":")
            ips.append(parts[0] if len(parts) == 3 else "")
    return ips


def healthcheck_command(name: str) -> list[str]:
    check = service(name).get("healthcheck")
    assert isinstance(check, dict), f"{name}: no healthcheck"
    assert not check.get("disable"), f"{name}: healthcheck disabled"
    test = check.get("test")
    assert isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL"), (
        f"{name}: healthcheck.test must be a [CMD, ...] or [CMD-SHELL, ...] list, got {test!r}"
    )
    assert len(test) > 1, f"{name}: healthcheck.test runs nothing"
    return [str(t) for t in test]


SERVICES = stack_services()
# Platform-wide names, read by every service without its own prefix: the aliased fields of ServiceSettings.
PLATFORM_ENV = {
    name.upper()
    for field in ServiceSettings.model_fields.values()
    if isinstance(field.validation_alias, AliasChoices)
    for name in field.validation_alias.choices
    if isinstance(name, str) and name.upper().startswith("TOLLGATE_")
}


# ------------------------------------------------------------------------------------------------- services


def test_compose_has_exactly_the_stack_services() -> None:
    in_compose = set(compose()["services"]) - set(INFRA)
    missing = set(SERVICES) - in_compose
    extra = in_compose - set(SERVICES)
    assert not missing, f"services in infra/stack.sh but not in docker-compose.yml: {sorted(missing)}"
    assert not extra, f"services in docker-compose.yml but not in infra/stack.sh: {sorted(extra)}"
    for name in INFRA:
        service(name)


def test_stack_list_is_the_platform_list() -> None:
    from tollgate_core.topics import SERVICES as CATALOG_SERVICES  # one DLQ topic per service

    assert set(SERVICES) == set(CATALOG_SERVICES), (
        f"infra/stack.sh starts {sorted(SERVICES)}, "
        f"tollgate_core.topics.SERVICES has {sorted(CATALOG_SERVICES)}"
    )


def test_makefile_runs_the_stack_script() -> None:
    makefile = MAKEFILE.read_text()
    assert "infra/stack.sh" in makefile and "STACK_SERVICES" in makefile, (
        "the Makefile no longer delegates to infra/stack.sh (STACK_SERVICES): "
        "point this test at the new source"
    )


@pytest.mark.parametrize("svc", SERVICES)
def test_command_runs_the_service_package(svc: str) -> None:
    assert service(svc).get("command") == ["python", "-m", module_of(svc)]
    pyproject = ROOT / "services" / svc / "pyproject.toml"
    if pyproject.is_file():
        assert f'packages = ["{module_of(svc)}"]' in pyproject.read_text(), (
            f"{pyproject.relative_to(ROOT)} does not build the package {module_of(svc)}"
        )


@pytest.mark.parametrize("svc", SERVICES)
def test_service_port_is_consistent(svc: str) -> None:
    env = environment(svc)
    ports = published_ports(svc)
    assert len(ports) == 1, f"{svc}: publish exactly one port (its HTTP port), got {ports}"
    host, container = ports[0]
    assert host == container, f"{svc}: host port {host} != container port {container}"
    assert env.get(f"{env_prefix_of(svc)}HTTP_PORT") == str(container), (
        f"{svc}: {env_prefix_of(svc)}HTTP_PORT must be the published port {container}"
    )
    assert env.get(f"{env_prefix_of(svc)}HTTP_HOST") == "0.0.0.0", (
        f"{svc}: {env_prefix_of(svc)}HTTP_HOST must be 0.0.0.0 or the published port is unreachable"
    )


@pytest.mark.parametrize("svc", SERVICES)
def test_published_port_matches_local_stack(svc: str) -> None:
    host, _ = published_ports(svc)[0]
    expected: dict[str, int] = {}
    if svc in stack_ports():
        source = "infra/services.env" if services_table() is not None else "infra/stack.sh svc_port()"
        expected[source] = stack_ports()[svc]
    cls = settings_class(svc)
    if cls is not None and "http_port" in cls.model_fields:
        default = cls.model_fields["http_port"].default
        assert isinstance(default, int), f"{svc}: {cls.__name__}.http_port has no integer default"
        expected[f"{cls.__name__}.http_port default"] = default
    if not expected:
        pytest.skip(f"{svc}: no port in the local stack and no settings class yet; compose uses {host}")
    wrong = {source: port for source, port in expected.items() if port != host}
    assert not wrong, f"{svc}: docker-compose.yml publishes {host}, the local stack uses {wrong}"


def test_published_ports_are_unique() -> None:
    seen: dict[int, str] = {}
    for name in compose()["services"]:
        for host, _ in published_ports(name):
            assert host not in seen, f"host port {host} published by both {seen[host]} and {name}"
            seen[host] = name


@pytest.mark.parametrize("svc", SERVICES)
def test_environment_points_at_compose_infrastructure(svc: str) -> None:
    env = environment(svc)
    assert env.get("TOLLGATE_KAFKA_BOOTSTRAP") == internal_bootstrap()
    assert env.get("TOLLGATE_DATABASE_URL") == compose_database_url(svc)
    for name in env:
        assert name in PLATFORM_ENV or name.startswith(env_prefix_of(svc)), (
            f"{svc}: {name} is neither platform-wide ({sorted(PLATFORM_ENV)}) "
            f"nor prefixed {env_prefix_of(svc)}"
        )


@pytest.mark.parametrize("svc", SERVICES)
def test_environment_names_are_settings_fields(svc: str) -> None:
    cls = require_settings(svc)
    prefix = str(cls.model_config.get("env_prefix", ""))
    assert prefix.upper() == env_prefix_of(svc), f"{svc}: {cls.__name__} env_prefix is {prefix!r}"
    known = env_names(cls)
    unknown = sorted(name for name in environment(svc) if name.upper() not in known)
    assert not unknown, f"{svc}: docker-compose.yml sets {unknown}, which {cls.__name__} does not read"


@pytest.mark.parametrize("svc", SERVICES)
def test_settings_load_from_compose_environment(svc: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the container would read: nothing required is missing and the values land where meant."""
    cls = require_settings(svc)
    for name in list(os.environ):
        if name.upper().startswith("TOLLGATE_"):
            monkeypatch.delenv(name)
    env = environment(svc)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = cls()
    _, container = published_ports(svc)[0]
    assert getattr(settings, "http_port", None) == container
    assert settings.http_host == "0.0.0.0"
    assert settings.kafka_bootstrap == env["TOLLGATE_KAFKA_BOOTSTRAP"]
    assert settings.database_url == env["TOLLGATE_DATABASE_URL"]
    if "TOLLGATE_ARTIFACT_DIR" in env:
        assert settings.artifact_dir == env["TOLLGATE_ARTIFACT_DIR"]


@pytest.mark.parametrize("svc", SERVICES)
def test_service_waits_for_infrastructure(svc: str) -> None:
    depends = service(svc).get("depends_on")
    assert isinstance(depends, dict), f"{svc}: depends_on must use the long form with conditions"
    assert depends.get("kafka", {}).get("condition") == "service_healthy"
    assert depends.get("postgres", {}).get("condition") == "service_healthy"
    assert depends.get("topics", {}).get("condition") == "service_completed_successfully"
    assert depends.get("migrate", {}).get("condition") == "service_completed_successfully", (
        f"{svc}: its own database role may create nothing; start it after migrate applied the migrations"
    )


@pytest.mark.parametrize("svc", SERVICES)
def test_service_healthcheck_hits_healthz(svc: str) -> None:
    test = healthcheck_command(svc)
    _, container = published_ports(svc)[0]
    joined = " ".join(test)
    assert test[:3] == ["CMD", "python", "-c"], f"{svc}: the slim image has no curl; check with python -c"
    assert f"http://127.0.0.1:{container}/healthz" in joined, (
        f"{svc}: healthcheck must GET :{container}/healthz"
    )


@pytest.mark.parametrize("name", ["kafka", "postgres"])
def test_infrastructure_has_healthcheck(name: str) -> None:
    healthcheck_command(name)


def test_artifact_store_is_shared() -> None:
    volumes = compose().get("volumes") or {}
    mounts = set()
    for svc in ARTIFACT_SERVICES:
        assert environment(svc).get("TOLLGATE_ARTIFACT_DIR") == ARTIFACT_DIR, f"{svc}: TOLLGATE_ARTIFACT_DIR"
        mine = [str(v) for v in service(svc).get("volumes") or [] if str(v).endswith(f":{ARTIFACT_DIR}")]
        assert len(mine) == 1, f"{svc}: mount the artifact volume at {ARTIFACT_DIR}"
        mounts.add(mine[0].split(":")[0])
    assert len(mounts) == 1, (
        f"trainer, registry and scorer must share one artifact volume, got {sorted(mounts)}"
    )
    assert mounts <= set(volumes), f"artifact volume {mounts} is not declared under top-level volumes"


# ------------------------------------------------------------------------------------------- infrastructure


def template_properties() -> dict[str, str]:
    props = {}
    for line in KAFKA_TEMPLATE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


def compose_render(placeholder: str) -> str:
    """What infra/kafka/compose-start.sh substitutes for ``@PLACEHOLDER@`` in the broker template."""
    match = re.search(rf"s\|@{placeholder}@\|([^|]+)\|g", KAFKA_START.read_text())
    assert match, f"infra/kafka/compose-start.sh does not render @{placeholder}@"
    return match.group(1)


def internal_bootstrap() -> str:
    return f"{compose_render('ADVERTISED_HOST')}:{compose_render('KAFKA_PORT')}"


def compose_database_url(svc: str | None = None) -> str:
    """The owner's DSN (svc None: the migrate job's), else the service's own role with its own password."""
    from tollgate_core import db_roles

    owner, database = stack_literal("PG_ROLE"), stack_literal("PG_DB")
    user, password = owner, "TOLLGATE_PG_PASSWORD"
    if svc == "audit-log":
        user, password = db_roles.role_of(svc).role, "TOLLGATE_AUDIT_LOG_WRITER_PASSWORD"
    elif svc is not None:
        user, password = db_roles.role_of(svc).role, f"TOLLGATE_PG_PASSWORD_{svc.upper().replace('-', '_')}"
    return f"postgresql://{user}:${{{password}:?run infra/stack.sh compose-env}}@postgres:5432/{database}"


def test_kafka_image_matches_pom() -> None:
    assert service("kafka").get("image") == f"apache/kafka:{kafka_version_in_pom()}", (
        "the kafka image must be the official apache/kafka image of infra/kafka/pom.xml's <kafka.version>"
    )


def test_kafka_runs_the_stacks_broker_configuration() -> None:
    """One broker configuration for the local stack and compose: single-node KRaft, SASL/SCRAM-SHA-512 only,
    the standard authorizer with nothing allowed without an ACL, topics never created on first use."""
    spec = service("kafka")
    assert spec.get("command") == ["bash", "/tollgate/kafka/compose-start.sh"]
    assert "./infra/kafka:/tollgate/kafka:ro" in spec.get("volumes", [])
    assert "server.properties.template" in KAFKA_START.read_text()
    props = template_properties()
    assert props["process.roles"] == "broker,controller"
    assert props["auto.create.topics.enable"] == "false", "topics are created by the topics service only"
    for name in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor"):
        assert props[name] == "1", f"{name} must be 1 on a single broker"
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    protocols = dict(item.split(":") for item in props["listener.security.protocol.map"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}, "no listener without authentication"
    assert compose_render("LISTEN_HOST") == "0.0.0.0" and compose_render("ADVERTISED_HOST") == "kafka"
    test = healthcheck_command("kafka")
    assert any(t.endswith("kafka-broker-api-versions.sh") for t in test)
    assert f"localhost:{compose_render('KAFKA_PORT')}" in test and "--command-config" in test


def test_kafka_has_a_scram_user_per_principal() -> None:
    from tollgate_core.acls import PRINCIPALS

    env = environment("kafka")
    users = env.get("KAFKA_USERS", "").split()
    assert set(users) == {"admin", *PRINCIPALS}, "one SCRAM user per ACL principal, plus the super user"
    for user in (*users, "controller"):
        variable = f"TOLLGATE_KAFKA_PASSWORD_{user.upper().replace('-', '_')}"
        assert SECRET.fullmatch(env.get(variable, "")), f"kafka: {variable} must come from the env file"
    stack_users = re.search(r'^KAFKA_USERS="([^"$]*)\$\(svc_table', stack_text(), re.M)
    assert stack_users and stack_users.group(1).split() == users[:3], "the local stack's users, in order"


@pytest.mark.parametrize("svc", SERVICES)
def test_each_service_is_its_own_kafka_principal(svc: str) -> None:
    env = environment(svc)
    own = f"TOLLGATE_KAFKA_PASSWORD_{svc.upper().replace('-', '_')}"
    assert env.get("TOLLGATE_KAFKA_USERNAME") == svc
    match = SECRET.fullmatch(env.get("TOLLGATE_KAFKA_PASSWORD", ""))
    assert match and match.group(1) == own, f"{svc}: its own password, {own}, from the env file"
    assert env.get("TOLLGATE_KAFKA_SECURITY_PROTOCOL") == "SASL_PLAINTEXT"
    assert env.get("TOLLGATE_KAFKA_SASL_MECHANISM") == "SCRAM-SHA-512"
    others = [v for v in SECRET.findall(" ".join(env.values())) if v.startswith("TOLLGATE_KAFKA_PASSWORD_")]
    assert others == [own], f"{svc} sees another principal's password: {others}"


def test_infrastructure_ports_are_not_published() -> None:
    for name in INFRA:
        assert not service(name).get("ports"), f"{name}: not published (the services reach it in the network)"


@pytest.mark.parametrize("svc", SERVICES)
def test_http_ports_bind_to_loopback_by_default(svc: str) -> None:
    assert published_host_ips(svc) == ["127.0.0.1"], (
        f"{svc}: publish on 127.0.0.1 (host_ip: ${{TOLLGATE_HTTP_BIND:-127.0.0.1}}), not on every interface"
    )


def test_postgres_roles_are_not_superusers() -> None:
    env = environment("postgres")
    spec = service("postgres")
    assert str(spec.get("image", "")).startswith("postgres:"), "use the official postgres image"
    assert SECRET.fullmatch(env.get("POSTGRES_PASSWORD", "")), "the superuser's password from the env file"
    assert (
        "./infra/postgres/compose-init.sh:/docker-entrypoint-initdb.d/10-tollgate-roles.sh:ro"
        in spec["volumes"]
    )
    assert "./infra/postgres/roles.sql:/tollgate/roles.sql:ro" in spec["volumes"]
    assert "/tollgate/roles.sql" in PG_INIT.read_text()
    roles = PG_ROLES.read_text()
    owner = stack_literal("PG_ROLE")
    assert re.search(rf"^ALTER ROLE {owner} WITH [^;]*\bNOSUPERUSER\b", roles, re.M)
    from tollgate_core import db_roles

    assert "infra/postgres/roles.sql" in stack_text(), "the local stack creates the same roles"
    for svc in SERVICES:
        role = db_roles.role_of(svc).role
        for attribute in ("NOSUPERUSER", "NOCREATEDB", "NOCREATEROLE", "NOBYPASSRLS", "NOINHERIT"):
            assert re.search(rf"^ALTER ROLE {role} WITH [^;]*\b{attribute}\b", roles, re.M), (role, attribute)
        url = environment(svc)["TOLLGATE_DATABASE_URL"]
        assert url.startswith(f"postgresql://{role}:"), f"{svc}: connects as its own role {role}"
        password = SECRET.search(url)
        assert password is not None and password.group(1) in env, f"{svc}: roles.sql needs its password"
        assert f":'{role.removeprefix('tollgate_').replace('audit_writer', 'writer')}_password'" in roles
    migrate = service("migrate")
    assert migrate.get("command") == ["python", "-m", "tollgate_core.migrate"]
    assert migrate.get("restart") == "no", "migrate is one-shot"
    assert environment("migrate")["TOLLGATE_DATABASE_URL"] == compose_database_url(), (
        "migrate runs as the owner"
    )
    test = healthcheck_command("postgres")
    assert "pg_isready" in " ".join(test) and owner in test


def test_every_secret_comes_from_the_env_file_that_stack_sh_generates(tmp_path: Path) -> None:
    """Passwords and keys are ${VAR:?...} interpolations (no default, no literal), and `infra/stack.sh
    compose-env` generates every one of them."""
    referenced: set[str] = set()
    for name in compose()["services"]:
        for variable, value in environment(name).items():
            referenced.update(SECRET.findall(value))
            if re.search(r"PASSWORD|_KEY$", variable) and not variable.endswith("_PATH"):
                assert SECRET.fullmatch(value), f"{name}: {variable} must be ${{VAR:?...}} from the env file"
            assert not re.search(r"://[^:/]+:(?!\$\{)[^@]*@", value), (
                f"{name}: {variable} has a literal password"
            )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLGATE_", "STACK_"))}
    done = subprocess.run(
        ["bash", str(STACK_FILE), "compose-env"],
        env={**env, "STACK_STATE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    env_file = tmp_path / "compose.env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    generated = {line.split("=", 1)[0] for line in env_file.read_text().splitlines() if "=" in line}
    assert referenced - generated == set(), "compose needs secrets that compose-env does not generate"
    key = tmp_path / "compose" / "audit-ed25519.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    secrets = compose().get("secrets") or {}
    assert secrets.get("audit-signing-key", {}).get("file") == ".local/compose/audit-ed25519.pem"


def test_services_run_in_production_mode() -> None:
    for svc in SERVICES:
        assert environment(svc).get("TOLLGATE_ENV") == "production", f"{svc}: production refuses dev secrets"


@pytest.mark.parametrize("svc", SERVICES)
def test_each_service_gets_every_secret_it_needs_to_start(svc: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """In production a service refuses to start without its secrets; compose passes every one, each from
    the env file (here filled in as ``compose-env`` would)."""
    cls = require_settings(svc)
    for name in list(os.environ):
        if name.upper().startswith("TOLLGATE_") or name == "PGPASSWORD":
            monkeypatch.delenv(name)
    for name, value in environment(svc).items():
        monkeypatch.setenv(name, SECRET.sub(lambda m: f"generated-{m.group(1).lower()}", value))
    settings = cls()
    assert settings.environment == "production"
    assert settings.missing_secrets() == [], f"{svc}: compose does not pass {settings.missing_secrets()}"
    settings.require_secrets()


def test_topics_service_creates_the_catalog_and_its_acls() -> None:
    spec = service("topics")
    assert spec.get("command") == [
        "sh",
        "-c",
        "tollgate admin topics apply && tollgate admin acls apply",
    ]
    assert spec.get("restart") == "no", "topics is one-shot: it must not be restarted after it exits"
    assert spec.get("depends_on", {}).get("kafka", {}).get("condition") == "service_healthy"
    env = environment("topics")
    assert env.get("TOLLGATE_KAFKA_BOOTSTRAP") == internal_bootstrap()
    assert env.get("TOLLGATE_KAFKA_USERNAME") == "admin", "topics and ACLs are the super user's"
    source = TOPICS_COMMAND.read_text() + KAFKA_AUTH.read_text()
    unread = [name for name in env if name not in source and f'"{name}"' not in source]
    assert not unread, f"topics: {unread} are not read by tollgate admin or kafka_auth"


# ---------------------------------------------------------------------------------------------------- image


def test_services_run_the_project_image() -> None:
    image = service("topics").get("image")
    for name in (*SERVICES, "topics"):
        spec = service(name)
        assert spec.get("image") == image, f"{name}: every service runs the one project image {image!r}"
        build = spec.get("build")
        context = build.get("context") if isinstance(build, dict) else build
        dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
        assert context == "." and dockerfile == "Dockerfile", f"{name}: build the image from ./Dockerfile"


def test_dockerfile_installs_the_locked_workspace() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM\s+python:3\.11-slim\b|^ARG\s+PYTHON_IMAGE=python:3\.11-slim\b", text, re.M)
    uv = re.search(r"^ARG UV_VERSION=(\S+)", text, re.M)
    assert uv and uv.group(1) == stack_literal("UV_VERSION"), (
        "Dockerfile and infra/stack.sh must pin the same uv"
    )
    assert "uv sync --frozen --all-packages --no-dev" in text
    for folder in ("libs", "services", "schemas"):
        assert re.search(rf"^COPY {folder} {folder}$", text, re.M), f"Dockerfile: COPY {folder} {folder}"
