"""tollgate monitor: drift, performance, staleness and latency of served models, with alerts and a dashboard."""

# The service's name: its Kafka principal, consumer groups, DLQ topic, database role and logs.
SERVICE = "monitor"
