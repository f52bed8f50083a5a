"""tollgate validator: enforces dataset contracts on ingested events."""

# The service's name: its Kafka principal, consumer groups, DLQ topic, database role and logs.
SERVICE = "validator"
