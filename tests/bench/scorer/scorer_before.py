"""``python tests/bench/scorer/scorer_before.py``: the scorer service exactly as ``python -m tollgate_scorer``
runs it (same settings, same app, one process), served by the HTTP server from before its edges were
hardened (``server_before.py``): the peer of ``tests/bench/bench_scorer_edges.py``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import uvloop

import tollgate_scorer.__main__ as entry
from tests.bench.scorer.server_before import HttpServer as ServerBefore
from tollgate_core.service import configure_logging
from tollgate_scorer.settings import ScorerSettings


def server_before(app: Any, host: str, port: int, *, reuse_port: bool = False, **_limits: Any) -> Any:
    return ServerBefore(app, host, port, reuse_port=reuse_port)


if __name__ == "__main__":
    entry.HttpServer = server_before  # type: ignore[assignment,misc]
    # The server from before answers in the parser's callback only: no request waits for its turn's batch.
    settings = ScorerSettings(coalesce=False)
    configure_logging(settings.log_level)
    uvloop.run(entry.main(settings))
