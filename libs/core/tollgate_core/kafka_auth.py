"""How every Kafka client of the platform authenticates: SASL settings from the environment.

Each service runs as its own Kafka principal (its name: ``registry``, ``scorer``, ...) and reads its credentials
from ``TOLLGATE_KAFKA_USERNAME`` / ``TOLLGATE_KAFKA_PASSWORD``; ``TOLLGATE_KAFKA_SASL_MECHANISM`` defaults to
``SCRAM-SHA-512`` and ``TOLLGATE_KAFKA_SECURITY_PROTOCOL`` to ``SASL_PLAINTEXT`` when a username is set,
``PLAINTEXT`` otherwise. The environment is read when a client is built, never at import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faststream.security import BaseSecurity

ENV_SECURITY_PROTOCOL = "TOLLGATE_KAFKA_SECURITY_PROTOCOL"
ENV_SASL_MECHANISM = "TOLLGATE_KAFKA_SASL_MECHANISM"
ENV_USERNAME = "TOLLGATE_KAFKA_USERNAME"
ENV_PASSWORD = "TOLLGATE_KAFKA_PASSWORD"

DEFAULT_MECHANISM = "SCRAM-SHA-512"
PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


class KafkaAuthError(ValueError):
    """The Kafka security settings in the environment are incomplete or unknown."""


def kafka_security(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """aiokafka keyword arguments (``security_protocol``, ``sasl_*``) for the principal named in ``env``
    (default ``os.environ``); ``{}`` for an unauthenticated PLAINTEXT connection."""
    env = os.environ if env is None else env
    username = env.get(ENV_USERNAME, "")
    protocol = env.get(ENV_SECURITY_PROTOCOL) or ("SASL_PLAINTEXT" if username else "PLAINTEXT")
    if protocol not in PROTOCOLS:
        raise KafkaAuthError(f"{ENV_SECURITY_PROTOCOL}={protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    if protocol == "PLAINTEXT":
        return {}
    mechanism = env.get(ENV_SASL_MECHANISM) or DEFAULT_MECHANISM
    if mechanism not in MECHANISMS:
        raise KafkaAuthError(f"{ENV_SASL_MECHANISM}={mechanism!r}: expected one of {', '.join(MECHANISMS)}")
    password = env.get(ENV_PASSWORD, "")
    if not username or not password:
        raise KafkaAuthError(
            f"{protocol} needs {ENV_USERNAME} and {ENV_PASSWORD} (the service's own principal)"
        )
    args: dict[str, Any] = {
        "security_protocol": protocol,
        "sasl_mechanism": mechanism,
        "sasl_plain_username": username,
        "sasl_plain_password": password,
    }
    if protocol == "SASL_SSL":
        from aiokafka.helpers import create_ssl_context

        args["ssl_context"] = create_ssl_context()
    return args


def faststream_security(env: Mapping[str, str] | None = None) -> BaseSecurity | None:
    """The same settings as a faststream ``security`` object (``None`` for PLAINTEXT)."""
    from faststream.security import SASLPlaintext, SASLScram256, SASLScram512

    args = kafka_security(env)
    if not args:
        return None
    kind = {"SCRAM-SHA-512": SASLScram512, "SCRAM-SHA-256": SASLScram256, "PLAIN": SASLPlaintext}[
        args["sasl_mechanism"]
    ]
    return kind(
        args["sasl_plain_username"],
        args["sasl_plain_password"],
        ssl_context=args.get("ssl_context"),
        use_ssl=args["security_protocol"] == "SASL_SSL",
    )


def principal(env: Mapping[str, str] | None = None) -> str | None:
    """The Kafka principal the environment names, if any."""
    env = os.environ if env is None else env
    return env.get(ENV_USERNAME) or None
