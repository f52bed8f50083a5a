"""The poison policy's classification, tested both ways, and the dead letter's headers."""

from __future__ import annotations

import asyncpg
import orjson
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NodeNotReadyError,
    RequestTimedOutError,
)
from aiokafka.structs import ConsumerRecord
from pydantic import BaseModel, ValidationError

from tollgate_core.kafka import (
    DLQ_ATTEMPT,
    DLQ_ERROR,
    DLQ_ERROR_TYPE,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION,
    DLQ_SOURCE_TOPIC,
    OutputTooLarge,
    RetryPolicy,
    TransientError,
    dead_letter,
    is_transient,
)


class _Model(BaseModel):
    n: int


def _validation_error() -> ValidationError:
    try:
        _Model.model_validate({"n": "x"})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


def _json_error() -> Exception:
    try:
        orjson.loads(b"{not json")
    except orjson.JSONDecodeError as exc:
        return exc
    raise AssertionError("unreachable")


TRANSIENT = [
    TransientError("dependency down"),
    TimeoutError(),
    TimeoutError(),
    ConnectionRefusedError(),
    OSError("network unreachable"),
    KafkaConnectionError(),
    KafkaTimeoutError(),
    NodeNotReadyError(),
    RequestTimedOutError(),
    asyncpg.CannotConnectNowError("starting up"),
    asyncpg.TooManyConnectionsError("too many"),
    asyncpg.InterfaceError("connection closed"),
    asyncpg.SerializationError("could not serialize"),
    asyncpg.DeadlockDetectedError("deadlock"),
    asyncpg.UndefinedTableError("relation does not exist"),
    asyncpg.InsufficientPrivilegeError("permission denied"),
]
POISON = [
    ValueError("bad value"),
    TypeError("unhashable type: 'list'"),
    KeyError("payload"),
    _json_error(),
    _validation_error(),
    OutputTooLarge("too big"),
    MessageSizeTooLargeError(),
    asyncpg.DataError("invalid input"),
    asyncpg.UniqueViolationError("duplicate"),
    RuntimeError("handler bug"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_infrastructure_failures_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)
    assert RetryPolicy().is_transient(exc)


@pytest.mark.parametrize("exc", POISON, ids=lambda e: type(e).__name__)
def test_record_failures_are_poison(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_a_consumer_may_narrow_the_classification() -> None:
    policy = RetryPolicy(classify=lambda exc: isinstance(exc, TransientError))
    assert policy.is_transient(TransientError())
    assert not policy.is_transient(TimeoutError())


def _record(headers: list[tuple[str, bytes]]) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="src",
        partition=2,
        offset=41,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=b"v",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=1,
        headers=headers,
    )


def test_dead_letter_names_source_error_and_attempt() -> None:
    out = dead_letter(_record([("traceparent", b"00-x")]), "dlq", "svc", ValueError("e" * 5000))
    headers = dict(out.headers)
    assert (out.topic, out.key, out.value) == ("dlq", b"k", b"v")
    assert headers["traceparent"] == b"00-x"
    assert headers[DLQ_SOURCE_TOPIC] == b"src"
    assert headers[DLQ_SOURCE_PARTITION] == b"2"
    assert headers[DLQ_SOURCE_OFFSET] == b"41"
    assert headers[DLQ_ERROR_TYPE] == b"ValueError"
    assert len(headers[DLQ_ERROR]) == 2000  # bounded
    assert headers[DLQ_ATTEMPT] == b"1"


def test_a_redriven_record_that_fails_again_counts_its_attempts_and_keeps_one_set_of_headers() -> None:
    first = dead_letter(_record([]), "dlq", "svc", ValueError("first"))
    again = dead_letter(_record(first.headers), "dlq", "svc", ValueError("second"))
    names = [k for k, _ in again.headers]
    assert len(names) == len(set(names))
    assert dict(again.headers)[DLQ_ATTEMPT] == b"2"
    assert dict(again.headers)[DLQ_ERROR] == b"second"
