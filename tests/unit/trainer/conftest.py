"""One CPU thread for every trainer test.

OpenMP (HistGradientBoosting) and BLAS threads spin while they wait; on a small machine that is busy with
other work this can make a fit many times slower, and the tests gain nothing from parallelism.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield
