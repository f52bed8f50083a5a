"""Settings refuse development secrets in production; the signing key is generated once, outside
production only, and its statements verify."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tollgate_audit_log.settings import AuditLogSettings, with_credentials
from tollgate_audit_log.signing import (
    Signer,
    Statement,
    key_id,
    load_or_create_private_key,
    load_public_key,
    verify_statement,
)
from tollgate_audit_log.verify import CheckpointRecord, split_ranges
from tollgate_core.settings import MissingSecrets


def test_defaults_and_writer_dsn() -> None:
    s = AuditLogSettings(database_url="postgresql://tollgate:tollgate@127.0.0.1:5432/tollgate")
    assert s.http_port == 8084 and not s.audit_validated
    assert (
        s.writer_dsn() == "postgresql://tollgate_audit_writer:tollgate-audit-writer@127.0.0.1:5432/tollgate"
    )
    assert with_credentials("postgresql://a:b@[::1]/db?sslmode=require", "u", "p@ss") == (
        "postgresql://u:p%40ss@[::1]/db?sslmode=require"
    )


def test_production_refuses_development_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_PII_KEY", "a-real-pii-key")
    monkeypatch.setenv("TOLLGATE_KAFKA_USERNAME", "audit-log")
    monkeypatch.setenv("TOLLGATE_KAFKA_PASSWORD", "kafka-s3cret")
    monkeypatch.setenv("TOLLGATE_DATABASE_URL", "postgresql://tollgate:db-s3cret@db/tollgate")
    with pytest.raises(MissingSecrets, match="WRITER_PASSWORD"):
        AuditLogSettings(environment="production").require_secrets()
    with pytest.raises(MissingSecrets, match="SIGNING_KEY_PATH"):
        AuditLogSettings(environment="production", writer_password="s3cret").require_secrets()
    s = AuditLogSettings(
        environment="production", writer_password="s3cret", signing_key_path="/keys/audit.pem"
    )
    s.require_secrets()
    assert s.require_writer_role
    assert not AuditLogSettings(environment="test").require_writer_role


def test_connected_as_the_writer_it_needs_no_writer_password_but_a_real_one_in_its_dsn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The DSN of the writer role itself (the local stack, compose, the chart): no separate writer password,
    but the DSN's own password must not be the public development one."""
    for name, value in {
        "TOLLGATE_PII_KEY": "a-real-pii-key",
        "TOLLGATE_KAFKA_USERNAME": "audit-log",
        "TOLLGATE_KAFKA_PASSWORD": "kafka-s3cret",
        "TOLLGATE_AUDIT_LOG_SIGNING_KEY_PATH": "/keys/audit.pem",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TOLLGATE_AUDIT_LOG_WRITER_PASSWORD", raising=False)
    own = AuditLogSettings(
        environment="production", database_url="postgresql://tollgate_audit_writer:w-s3cret@db/tollgate"
    )
    assert own.connects_as_writer()
    own.require_secrets()
    public = AuditLogSettings(
        environment="production",
        database_url="postgresql://tollgate_audit_writer:tollgate-audit-writer@db/tollgate",
    )
    with pytest.raises(MissingSecrets, match=r"TOLLGATE_DATABASE_URL \(its password\)"):
        public.require_secrets()
    owner = AuditLogSettings(
        environment="production", database_url="postgresql://tollgate:o-s3cret@db/tollgate"
    )
    assert not owner.connects_as_writer()
    with pytest.raises(MissingSecrets, match="WRITER_PASSWORD"):
        owner.require_secrets()


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_AUDIT_LOG_CHECKPOINT_ROWS", "7")
    monkeypatch.setenv("TOLLGATE_AUDIT_LOG_AUDIT_VALIDATED", "true")
    s = AuditLogSettings()
    assert s.checkpoint_rows == 7 and s.audit_validated


def test_key_is_generated_once_private_and_refused_in_production(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "ed25519.pem"
    with pytest.raises(FileNotFoundError, match="only outside production"):
        load_or_create_private_key(path, create=False)
    key = load_or_create_private_key(path, create=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = load_or_create_private_key(path, create=False)
    assert key_id(again.public_key()) == key_id(key.public_key())
    assert key_id(load_public_key(path.with_suffix(".pub"))) == key_id(key.public_key())
    assert key_id(load_public_key(path)) == key_id(key.public_key())  # a private key file works too


def test_statement_signature_covers_every_field(tmp_path: Path) -> None:
    signer = Signer(load_or_create_private_key(tmp_path / "k.pem", create=True))
    st = Statement(
        "inference", 1, 100, b"\x01" * 32, b"\x02" * 32, datetime(2026, 1, 1, tzinfo=UTC), signer.key_id
    )
    signature = signer.sign(st)
    assert verify_statement(signer.public_key, st, signature)
    for changed in (
        Statement("alerts", 1, 100, st.merkle_root, st.head_hash, st.created_at, st.key_id),
        Statement("inference", 1, 99, st.merkle_root, st.head_hash, st.created_at, st.key_id),
        Statement("inference", 1, 100, b"\x03" * 32, st.head_hash, st.created_at, st.key_id),
        Statement("inference", 1, 100, st.merkle_root, b"\x03" * 32, st.created_at, st.key_id),
    ):
        assert not verify_statement(signer.public_key, changed, signature)


def _cp(first: int, last: int) -> CheckpointRecord:
    return CheckpointRecord(
        first, Statement("s", first, last, bytes(32), bytes(32), datetime.now(UTC), "k"), bytes(64)
    )


def test_parallel_ranges_never_split_a_checkpoint() -> None:
    cps = [_cp(1, 300), _cp(301, 700), _cp(701, 1000)]
    assert split_ranges(1200, cps, 2) == [(1, 700), (701, None)]
    assert split_ranges(1200, cps, 3) == [(1, 300), (301, 700), (701, None)]
    assert split_ranges(10_000, cps, 2) == [(1, 5000), (5001, None)]  # beyond the last checkpoint: any cut
    assert split_ranges(500, [], 1) == [(1, None)]
    for parts in range(1, 6):
        ranges = split_ranges(1200, cps, parts)
        ends = {cp.statement.last_seq for cp in cps}
        assert all(last is None or last in ends or last >= 1000 for _, last in ranges)
        assert ranges[0][0] == 1 and ranges[-1][1] is None


def test_service_trusts_its_key_and_rotated_ones_never_the_databases(tmp_path: Path) -> None:
    from tollgate_audit_log.app import trusted_keys

    old = load_or_create_private_key(tmp_path / "old.pem", create=True)
    settings = AuditLogSettings(trusted_public_keys=[str(tmp_path / "old.pub")])
    signer = Signer(load_or_create_private_key(tmp_path / "new.pem", create=True))
    assert set(trusted_keys(settings.trusted_public_keys, signer)) == {
        key_id(old.public_key()),
        signer.key_id,
    }


def test_a_key_another_process_is_creating_is_read_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    first = load_or_create_private_key(path, create=True)
    from tollgate_audit_log.signing import _create_private_key

    assert _create_private_key(path) is None  # never over an existing file
    assert key_id(load_or_create_private_key(path, create=True).public_key()) == key_id(first.public_key())
