"""A verification worker process: ``python -m tollgate_audit_log.verify_worker``.

Reads range jobs from stdin and writes each one's result to stdout, both as length-prefixed pickles (a
4-byte big-endian length, then the pickle), until stdin closes. Each job is verified in the snapshot the
parent exported, over a connection of its own (:func:`tollgate_audit_log.verify.verify_range`).

Started by :class:`tollgate_audit_log.verify.WorkerPool` as a plain child process rather than through
``multiprocessing``'s spawn, which imports the parent's main module again in every child (the whole CLI,
or a service with its Kafka client: seconds on a loaded machine); this one imports only what
verification needs. Only the parent writes to its stdin: the pickles come from the same program.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
import sys
import traceback

from tollgate_audit_log.verify import RangeJob, verify_range

HEADER = struct.Struct(">I")


def main() -> None:
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the result stream
    while header := source.read(HEADER.size):
        (size,) = HEADER.unpack(header)
        job = pickle.loads(source.read(size))
        if not isinstance(job, RangeJob):
            raise TypeError(f"not a range job: {type(job).__name__}")
        result: object
        try:
            result = asyncio.run(verify_range(job))
        except Exception as exc:  # reported to the parent, which raises it there
            result = RuntimeError(f"verification worker: {exc!r}\n{traceback.format_exc()}")
        data = pickle.dumps(result)
        sink.write(HEADER.pack(len(data)) + data)
        sink.flush()


if __name__ == "__main__":
    main()
