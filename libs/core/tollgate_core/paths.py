"""Where the platform's data files (topic catalog, JSON Schemas, dataset contracts, model catalog) live.

They ship inside the ``tollgate_core`` package as ``tollgate_core/schemas`` and are read with
:mod:`importlib.resources`, so an installed wheel finds them anywhere. In the source checkout that folder is a
symbolic link to the repository's ``schemas/`` (the one place people edit them and ``make generate`` writes
them); building the package copies the files into the wheel.
"""

from __future__ import annotations

import os
from functools import cache
from importlib.resources import files
from pathlib import Path


@cache
def schemas_dir() -> Path:
    """The schemas folder: ``TOLLGATE_SCHEMAS_DIR`` if set, else the package data of ``tollgate_core``."""
    configured = os.environ.get("TOLLGATE_SCHEMAS_DIR")
    if configured:
        return Path(configured)
    packaged = Path(str(files("tollgate_core") / "schemas"))
    if not (packaged / "topics").is_dir():
        raise FileNotFoundError(f"{packaged} holds no topic catalog; set TOLLGATE_SCHEMAS_DIR")
    return packaged


def repo_root() -> Path:
    """The source checkout the platform runs from (its ``.local/`` holds development state by default), else
    the working directory (an installed package: the defaults that use it are development defaults)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "libs" / "core" / "pyproject.toml").is_file():
            return parent
    return Path.cwd()
