"""The audit trail's compiled hot loops (``libs/audit-native``, Rust): the verifier's ``CopyRows`` and
``accept_rows``, the writer's ``chain_copy`` and the Merkle tree's ``parent_level``. Each does only what the
Python code beside it does, for the rows it takes, and leaves every other row to that code (the reference;
the tests compare the two).

Not built on a machine without a Rust toolchain, nor in the container image: the Python code then does
all the work. ``TOLLGATE_AUDIT_LOG_COMPILED=0`` turns them off (a verifier that must rely on the Python code
alone; worker processes inherit it)."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

COMPILED_ENV = "TOLLGATE_AUDIT_LOG_COMPILED"


def load() -> ModuleType | None:
    """``tollgate_audit_native`` when it is built and not turned off, else None."""
    if os.environ.get(COMPILED_ENV, "1") == "0":
        return None
    try:
        import tollgate_audit_native
    except ImportError:
        return None
    return tollgate_audit_native


def function(name: str) -> Any | None:
    """The compiled ``name`` (a function or class of ``tollgate_audit_native``), or None: the Python code."""
    native = load()
    return getattr(native, name) if native is not None else None
