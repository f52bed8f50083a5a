"""Shared fixtures. Integration and e2e tests need the real Kafka and PostgreSQL that ``make test`` starts
(``infra/stack.sh infra-up``); each test run gets its own topic namespace and database, so runs never see
each other's data."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.auth_support import RoleKeys, make_keys
from tests.db_support import ADMIN_DSN, STATE_DIR, drop_database
from tests.polling import eventually
from tollgate_core import db_roles, kafka_auth
from tollgate_core.acls import apply_acls
from tollgate_core.migrate import migrate_all
from tollgate_core.settings import DEFAULT_KAFKA_BOOTSTRAP
from tollgate_core.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[1]
# Services refuse to start without their secrets outside development and test; the suite runs as test
# (tests of that refusal set TOLLGATE_ENV themselves).
os.environ.setdefault("TOLLGATE_ENV", "test")
BOOTSTRAP = os.environ.get("TOLLGATE_KAFKA_BOOTSTRAP", DEFAULT_KAFKA_BOOTSTRAP)
SECRETS_FILE = STATE_DIR / "secrets.env"


def local_secrets() -> dict[str, str]:
    """What infra/stack.sh generated into .local/secrets.env (empty when there is no local stack)."""
    if not SECRETS_FILE.is_file():
        return {}
    pairs = (line.split("=", 1) for line in SECRETS_FILE.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


def kafka_principal_env(principal: str) -> dict[str, str]:
    """The Kafka client settings of one principal of the local stack (``{}`` when the broker is not the local
    stack's, whose credentials come from the environment as they are)."""
    password = local_secrets().get(f"TOLLGATE_KAFKA_PASSWORD_{principal.upper().replace('-', '_')}")
    if ("TOLLGATE_KAFKA_BOOTSTRAP" in os.environ and kafka_auth.ENV_USERNAME in os.environ) or not password:
        return {}
    return {
        kafka_auth.ENV_SECURITY_PROTOCOL: "SASL_PLAINTEXT",
        kafka_auth.ENV_SASL_MECHANISM: kafka_auth.DEFAULT_MECHANISM,
        kafka_auth.ENV_USERNAME: principal,
        kafka_auth.ENV_PASSWORD: password,
    }


# The suite's own clients (topic and ACL set-up, test producers and readers) are the broker's super user;
# every service process it starts runs as its own principal (see ``services``).
if kafka_auth.ENV_USERNAME not in os.environ:
    os.environ.update(kafka_principal_env("admin"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        if f"{os.sep}integration{os.sep}" in path:
            item.add_marker(pytest.mark.integration)
        elif f"{os.sep}e2e{os.sep}" in path:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def bootstrap() -> str:
    return BOOTSTRAP


def _dsn_with_database(dsn: str, database: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{database}"


def with_credentials(dsn: str, user: str, password: str) -> str:
    from urllib.parse import quote, urlunsplit

    parts = urlsplit(dsn)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}" + (
        f":{parts.port}" if parts.port else ""
    )
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def role_password(service: str) -> str | None:
    """The password of ``service``'s own PostgreSQL role in the local stack (None without one)."""
    if service == "audit-log":
        from tollgate_audit_log.settings import DEVELOPMENT_WRITER_PASSWORD

        return os.environ.get("TOLLGATE_AUDIT_LOG_WRITER_PASSWORD", DEVELOPMENT_WRITER_PASSWORD)
    return local_secrets().get(f"TOLLGATE_PG_PASSWORD_{service.upper().replace('-', '_')}")


def service_dsn(service: str, owner_dsn: str) -> str:
    """The DSN ``service`` connects with: its own role (``tollgate_core.db_roles``) on ``owner_dsn``'s
    database when the local stack made that role, else ``owner_dsn`` itself (the service then migrates)."""
    password = role_password(service)
    if service not in db_roles.ROLES_BY_SERVICE or not password or "TOLLGATE_DATABASE_URL" in os.environ:
        return owner_dsn
    return with_credentials(owner_dsn, db_roles.role_of(service).role, password)


@contextlib.asynccontextmanager
async def fresh_database(prefix: str) -> AsyncIterator[str]:
    """Create a database with a unique name, yield its DSN, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield _dsn_with_database(ADMIN_DSN, name)
    finally:
        await drop_database(name)


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """A fresh database for this test run (the owner's DSN), dropped afterwards. Every migration and every
    service role's grants are applied, as ``python -m tollgate_core.migrate`` does before services start."""
    async with fresh_database("tollgate_test") as dsn:
        await migrate_all(dsn)
        yield dsn


@pytest.fixture(scope="session")
async def api_keys(database_url: str) -> RoleKeys:
    """Keys in the session database: one per role, and ``"all-roles"`` with every role
    (``tests.auth_support``)."""
    return await make_keys(database_url)


@pytest.fixture
async def own_database() -> AsyncIterator[str]:
    """A database for one test alone (for tests whose rows would change what other tests' services see)."""
    async with fresh_database("tollgate_own") as dsn:
        yield dsn


@pytest.fixture
async def namespace(bootstrap: str) -> str:
    """A topic namespace of its own for one test, with every catalog topic created (3 partitions each)."""
    ns = f"t{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, ns, partitions_override=3)
    if kafka_auth.kafka_security():
        await apply_acls(bootstrap, ns)
    return ns


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """A service run as its own OS process (``python -m tollgate_<name>``), as in production."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        self.module = module
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module], env={**os.environ, **self.env}, stdout=log, stderr=log
            )
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


async def wait_http_ok(url: str, timeout: float = 60, proc: ServiceProcess | None = None) -> None:
    import httpx

    async with httpx.AsyncClient() as client:

        async def ready() -> bool:
            if proc is not None and proc.proc is not None and proc.proc.poll() is not None:
                raise AssertionError(f"{proc.module} exited early:\n{proc.log()}")
            try:
                return (await client.get(url, timeout=2)).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(
            ready,
            timeout=timeout,
            interval=0.2,
            what=f"{url} ready",
            seen=(lambda: f"not ready:\n{proc.log()}") if proc is not None else None,
        )


_MIGRATED: set[str] = set()


@pytest.fixture
async def services(tmp_path: Path, namespace: str, database_url: str, bootstrap: str) -> AsyncIterator[Any]:
    # Services connect as their own roles, which may create nothing: the database (a module's own one too)
    # is migrated and granted as the owner first, as `python -m tollgate_core.migrate` does before a rollout.
    if database_url not in _MIGRATED:
        await migrate_all(database_url)
        _MIGRATED.add(database_url)
    started: list[ServiceProcess] = []

    def launch(name: str, env_extra: dict[str, str] | None = None, **extra: str) -> ServiceProcess:
        """Start ``tollgate_<name>``; ``extra`` are its own settings (prefix added), ``env_extra`` raw env vars.
        The service connects to the session database as its own role (``service_dsn``)."""
        prefix = f"TOLLGATE_{name.upper().replace('-', '_')}_"
        env = {
            **kafka_principal_env(name),
            "TOLLGATE_KAFKA_BOOTSTRAP": bootstrap,
            "TOLLGATE_DATABASE_URL": service_dsn(name, database_url),
            "TOLLGATE_TOPIC_NAMESPACE": namespace,
            f"{prefix}HTTP_PORT": str(free_port()),
            **{f"{prefix}{k.upper()}": v for k, v in extra.items()},
            **(env_extra or {}),
        }
        proc = ServiceProcess(f"tollgate_{name.replace('-', '_')}", env, tmp_path / f"{name}.log").start()
        proc.port = int(env[f"{prefix}HTTP_PORT"])  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield launch
    for proc in started:
        proc.stop()
