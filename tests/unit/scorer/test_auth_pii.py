"""API keys (hashed, cached, refreshed) and personal data in logs (hashed with a key, masked, dropped)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from tests.unit.scorer.support import CONTRACT
from tollgate_core.apikeys import KeyVerifier, Principal, generate_key, key_hash
from tollgate_core.contracts import DatasetContract
from tollgate_core.pii import MASK, PiiRedactor, pii_hash
from tollgate_core.settings import DEVELOPMENT_PII_KEY, MissingSecrets, ServiceSettings
from tollgate_scorer.auth import Authenticator


class Keys:
    def __init__(self) -> None:
        self.active: dict[str, Principal] = {}
        self.loads = 0

    async def __call__(self) -> Mapping[str, Principal]:
        self.loads += 1
        return dict(self.active)


async def test_verifier_checks_hashes_caches_and_forgets_revoked_keys_on_refresh() -> None:
    key = generate_key()
    assert key.startswith("tgk_") and len(key) > 40 and generate_key() != key
    keys = Keys()
    keys.active[key_hash(key)] = Principal("shop", frozenset({"scorer-client"}))
    verifier = KeyVerifier(keys, cache_size=2)
    await verifier.refresh()
    assert verifier.verify(key) == Principal("shop", frozenset({"scorer-client"}))
    assert verifier.verify("wrong") is None
    assert verifier.verify(key) == Principal("shop", frozenset({"scorer-client"}))  # from the cache now
    verifier.verify("other-1")
    verifier.verify("other-2")  # the cache holds 2: the oldest entries go first
    assert len(verifier._cache) == 2
    keys.active.clear()  # revoked
    await verifier.refresh()
    assert verifier.verify(key) is None and keys.loads == 2


def test_authenticator_statuses() -> None:
    verifier = KeyVerifier(Keys())
    verifier._active = {
        key_hash("k1"): Principal("shop", frozenset({"scorer-client"})),
        key_hash("k2"): Principal("ops", frozenset({"operator"})),
        key_hash("k3"): Principal("audit", frozenset({"compliance-reader"})),
    }
    auth = Authenticator(verifier)
    assert auth.check(None, None) is not None and auth.check(None, None).status == 401  # type: ignore[union-attr]
    assert auth.check(b"Bearer k1", None) is None and auth.check(b"bearer k1", None) is None
    # An operator runs the platform but does not send or see inference payloads: no scoring.
    assert auth.check(b"Bearer k2", None).status == 403  # type: ignore[union-attr]
    assert auth.check(None, b"k1") is None
    assert auth.check(b"Token k1", None).status == 401  # type: ignore[union-attr]
    assert auth.check(b"Bearer nope", None).status == 401  # type: ignore[union-attr]
    denied = auth.check(b"Bearer k3", None)
    assert denied is not None and denied.status == 403 and "compliance-reader" in denied.message


def test_pii_hash_mask_drop() -> None:
    contract = DatasetContract.model_validate(
        {
            **CONTRACT.model_dump(mode="json", exclude_none=True),
            "entity_id": {"name": "customer_id", "type": "string", "pii": "hash"},
            "attributes": [
                {"name": "customer_email", "type": "string", "nullable": True, "pii": "mask"},
                {"name": "phone", "type": "string", "nullable": True, "pii": "drop"},
            ],
        }
    )
    redactor = PiiRedactor(contract, b"key")
    record = {"customer_id": "C1", "customer_email": "a@b.c", "phone": "555", "balance": 1.0}
    out = redactor.redact(record)
    assert out == {"customer_id": pii_hash(b"key", "C1"), "customer_email": MASK, "balance": 1.0}
    assert record["customer_email"] == "a@b.c"  # the request's own data is untouched
    assert pii_hash(b"key", "C1") != pii_hash(b"other", "C1") and len(pii_hash(b"key", "C1")) == 64
    assert redactor.redact({"customer_email": None})["customer_email"] is None
    assert redactor.value("customer_id", "C1") == pii_hash(b"key", "C1")
    plain = PiiRedactor(CONTRACT.model_copy(update={"attributes": ()}), b"key")
    same = {"balance": 1.0}
    assert plain.redact(same) is same  # nothing to protect: no copy


def test_production_refuses_the_development_pii_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_ENV", "production")
    with pytest.raises(MissingSecrets, match="TOLLGATE_PII_KEY"):
        ServiceSettings().require_secrets()
    monkeypatch.setenv("TOLLGATE_PII_KEY", "a-real-secret")
    assert ServiceSettings().pii_key.get_secret_value() == "a-real-secret"
    assert "TOLLGATE_PII_KEY" not in ServiceSettings().missing_secrets()
    monkeypatch.setenv("TOLLGATE_ENV", "development")
    monkeypatch.delenv("TOLLGATE_PII_KEY")
    assert ServiceSettings().pii_key.get_secret_value() == DEVELOPMENT_PII_KEY
    ServiceSettings().require_secrets()
