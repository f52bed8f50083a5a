"""Where the platform's data files (topic catalog, JSON Schemas, dataset contracts) live."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path


@cache
def schemas_dir() -> Path:
    """The ``schemas/`` folder: ``TOLLGATE_SCHEMAS_DIR`` if set, else the one of the source checkout."""
    configured = os.environ.get("TOLLGATE_SCHEMAS_DIR")
    if configured:
        return Path(configured)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "schemas" / "topics"
        if candidate.is_dir():
            return candidate.parent
    raise FileNotFoundError("cannot find the schemas/ folder; set TOLLGATE_SCHEMAS_DIR")


def repo_root() -> Path:
    return schemas_dir().parent
