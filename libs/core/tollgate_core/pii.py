"""Personal data out of logs: the dataset contract marks PII fields, this applies what it says.

``hash`` is HMAC-SHA256 under the platform's ``TOLLGATE_PII_KEY`` (hex): stable, so joins and counts by
the field still work across services, and keyed, so a value cannot be recovered by hashing guesses without
the key. ``mask`` replaces the value by ``***``; ``drop`` removes the field. A null stays null: there is
nothing to protect and the monitor counts nulls.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import orjson

from tollgate_core.contracts import DatasetContract, PiiAction

MASK = "***"


def _text(value: Any) -> str:
    """The text a value is hashed as: scalars as before (``True`` as ``true``, like its JSON), lists and
    objects as canonical JSON (keys sorted, no spaces), so equal values hash equally whatever their order
    of keys."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | dict):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    return str(value)


def pii_hash(key: bytes, value: Any) -> str:
    """Keyed hash of any JSON value's text form (see ``_text``)."""
    return hmac.digest(key, _text(value).encode("utf-8"), "sha256").hex()


class PiiRedactor:
    """Applies one contract's PII actions to records; built once per contract, cheap per record.

    Hashes of recently seen values are remembered (entities recur), so a repeated value costs a dict lookup
    instead of an HMAC; the memory holds only what the process already held in its requests.
    """

    def __init__(self, contract: DatasetContract, key: bytes, cache_size: int = 65_536) -> None:
        self._key = key
        self.actions: dict[str, PiiAction] = dict(contract.pii_fields)
        self._hashes: dict[Any, str] = {}
        self._cache_size = cache_size

    def redact(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        """``record`` with every PII field hashed, masked or dropped: a copy when the contract marks any PII
        field, else the record itself (never modified)."""
        if not self.actions:
            return record
        out = dict(record)
        for name, action in self.actions.items():
            if name not in out:
                continue
            if action is PiiAction.DROP:
                del out[name]
            else:
                out[name] = self.value(name, out[name])
        return out

    def value(self, name: str, value: Any) -> Any:
        """One field's value as it may be logged (None when dropped)."""
        action = self.actions.get(name)
        if action is None or value is None:
            return value
        if action is PiiAction.HASH:
            return self._hash(value)
        return MASK if action is PiiAction.MASK else None

    def _hash(self, value: Any) -> str:
        if isinstance(value, list | tuple | dict):  # not hashable: keyed by its canonical text
            cache_key: Any = (list, _text(value))
        else:
            cache_key = (type(value), value) if isinstance(value, bool | int | float) else value
        hashed = self._hashes.get(cache_key)
        if hashed is None:
            hashed = pii_hash(self._key, value)
            if len(self._hashes) >= self._cache_size:
                self._hashes.clear()
            self._hashes[cache_key] = hashed
        return hashed
