"""The limit of the Kafka scoring path: a raw aiokafka consume → produce loop on the same broker.

``python tests/bench/scorer/raw_loop.py --namespace NS --result FILE [--transactional]`` reads
``scoring.requests.v1`` of the namespace with the scorer's consumer settings (read committed, no auto-commit,
the same batch size) and writes, for every request, one record to ``scoring.results.v1``: the bytes of
``FILE`` (a result event as the scorer writes it, so the same number of records and bytes go out), keyed by
the request's key. Nothing is parsed, validated, scored or logged: what is left is the transport.

* default: the batch's records are sent, then its offsets committed (at least once);
* ``--transactional``: each batch is one transaction with its offsets (exactly once, one producer), the
  delivery the scorer keeps.
* ``--log FILE``: besides, for every request, one record of ``FILE``'s bytes (an ``inference.log.v1`` event
  as the scorer writes it) to ``inference.log.v1``, keyed by model name, through a second, idempotent
  producer with the scorer's inference-log settings, outside the transaction and one batch behind it, as
  the scorer's inference log sends. This is the limit of any path that logs every inference as a record of
  its own: the transport of the requests, the results and the log, and nothing else.

Every record of one batch carries the time the batch was written, as the scorer stamps its results, so
``tests/bench/scorer/tollgate.count_results`` measures both the same way. Runs until terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from tollgate_core.kafka import (  # noqa: E402
    OutRecord,
    PartitionedWriter,
    producer_config,
    read_committed_consumer,
)
from tollgate_core.topics import Topics  # noqa: E402

MAX_RECORDS = 5000  # the scorer's stage reads batches of at most this many (tollgate_scorer.consumers)


async def run(
    bootstrap: str, namespace: str, result: bytes, transactional: bool, log: tuple[bytes, bytes] | None
) -> None:
    topics = Topics(namespace)
    consumer: AIOKafkaConsumer = read_committed_consumer(
        bootstrap, f"raw-loop-{uuid.uuid4().hex}", "raw-loop", max_partition_fetch_bytes=4 * 1024 * 1024
    )
    extra = {"transactional_id": f"raw-loop-{uuid.uuid4().hex}"} if transactional else {}
    producer = AIOKafkaProducer(**producer_config(bootstrap, "raw-loop", **extra))
    # The inference log's producer, configured as tollgate_scorer.inference_log.KafkaLogSink's.
    log_producer = (
        AIOKafkaProducer(**producer_config(bootstrap, "raw-loop-log", linger_ms=2, max_batch_size=512 * 1024))
        if log is not None
        else None
    )
    consumer.subscribe([topics.scoring_requests])
    await consumer.start()
    await producer.start()
    writer = None
    if log_producer is not None:
        await log_producer.start()
        writer = PartitionedWriter(log_producer)
    logged: asyncio.Future[Any] | None = None  # the previous batch's log delivery
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    out = topics.scoring_results
    print("raw loop: ready", flush=True)
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=MAX_RECORDS)
            if not batch:
                continue
            stamp = int(time.time() * 1000)
            offsets = {tp: recs[-1].offset + 1 for tp, recs in batch.items()}
            if transactional:
                await producer.begin_transaction()
            futures = [
                await producer.send(out, result, key=rec.key, timestamp_ms=stamp)
                for recs in batch.values()
                for rec in recs
            ]
            if transactional:
                await producer.send_offsets_to_transaction(offsets, consumer._group_id)
                await producer.commit_transaction()
            else:
                await asyncio.gather(*futures)
                await consumer.commit(offsets)
            if writer is not None and log is not None:
                if logged is not None:
                    await logged
                value, key = log
                n = sum(len(recs) for recs in batch.values())
                sent = await writer.write([OutRecord(topics.inference_log, value, key) for _ in range(n)])
                logged = asyncio.ensure_future(asyncio.gather(*sent))
        if logged is not None:
            await logged
    finally:
        if log_producer is not None:
            await log_producer.stop()
        await producer.stop()
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--result", required=True, type=Path, help="the result event to write per request")
    parser.add_argument("--transactional", action="store_true")
    parser.add_argument("--log", type=Path, help="an inference.log event to write per request as well")
    parser.add_argument("--log-key", default="", help="the log records' key (the model's name)")
    args = parser.parse_args()
    log = (args.log.read_bytes(), args.log_key.encode()) if args.log is not None else None
    asyncio.run(run(args.bootstrap, args.namespace, args.result.read_bytes(), args.transactional, log))


if __name__ == "__main__":
    main()
