"""tollgate ingest: the HTTP gateway and the stage that turns raw events into ingested ones."""

# The service's name: its Kafka principal, consumer groups, DLQ topic, database role and logs.
SERVICE = "ingest"
