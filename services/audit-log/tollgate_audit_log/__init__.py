"""tollgate audit-log: the append-only, hash-chained, signed audit trail of the platform."""

# The service's name: its Kafka principal, consumer groups, DLQ topic, database role and logs.
SERVICE = "audit-log"
