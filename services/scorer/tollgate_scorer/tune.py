"""``tollgate scorer tune MODEL.onnx [...]``: measure onnxruntime session options for artifacts.

For each artifact: one session per combination of intra-op threads (1 / the default pool), graph
optimisation (disable / basic / all) and CPU memory arena (on / off), fed contract-made rows through the
scorer's own input reader; one row and 1,000 rows per call, rounds interleaved so that drift on a shared
machine hits every option alike; the best round is kept (``tollgate scorer tune`` prints it). This is how the defaults in
:mod:`tollgate_scorer.model` were chosen.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from tollgate_core.contracts import ContractRegistry
from tollgate_scorer.instances import InstanceReader, example_instance
from tollgate_scorer.model import GraphOptimization, SessionConfig
from tollgate_scorer.signature import read_signature


@dataclass(frozen=True, slots=True)
class Timing:
    """The best round of one session option: microseconds per call of one row and of 1,000 rows."""

    threads: int  # intra-op threads (0: onnxruntime's default pool)
    level: GraphOptimization
    arena: bool
    one_row_us: float
    thousand_rows_us: float


def measure(path: Path, contracts: ContractRegistry, rounds: int = 15) -> tuple[str, list[Timing]]:
    """The contract the artifact at ``path`` serves, and the best of ``rounds`` for every session option."""
    data = path.read_bytes()
    signature = read_signature(ort.InferenceSession(data, providers=["CPUExecutionProvider"]))
    contract = contracts.get(signature.contract)
    if contract is None:
        raise LookupError(f"{path}: contract {signature.contract} not found")
    example = example_instance(contract)
    one = InstanceReader(contract, signature).read([example])
    one = {k: v.copy() for k, v in one.items()}
    many = InstanceReader(contract, signature).read([example] * 1000)
    outputs = signature.output_names()
    sessions: dict[tuple[int, GraphOptimization, bool], tuple[ort.InferenceSession, list[float], list[float]]]
    sessions = {}
    levels: tuple[GraphOptimization, ...] = ("disable", "basic", "all")
    for threads, level, arena in itertools.product((1, 0), levels, (True, False)):
        config = SessionConfig(intra_op_threads=threads, graph_optimization=level, cpu_mem_arena=arena)
        session = ort.InferenceSession(data, config.options(), providers=["CPUExecutionProvider"])
        for _ in range(200):
            session.run(outputs, one)
        sessions[(threads, level, arena)] = (session, [], [])
    for _ in range(rounds):
        for session, single, batch in sessions.values():
            start = time.perf_counter()
            for _ in range(300):
                session.run(outputs, one)
            single.append((time.perf_counter() - start) / 300 * 1e6)
            start = time.perf_counter()
            for _ in range(5):
                session.run(outputs, many)
            batch.append((time.perf_counter() - start) / 5 * 1e6)
    timings = [
        Timing(threads, level, arena, min(single), min(batch))
        for (threads, level, arena), (_, single, batch) in sessions.items()
    ]
    return signature.contract, timings
