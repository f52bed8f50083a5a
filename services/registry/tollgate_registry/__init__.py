"""tollgate registry: model versions, promotion gates, approvals, rollbacks and registrations."""

# The service's name: its Kafka principal, consumer groups, DLQ topic, database role and logs.
SERVICE = "registry"
