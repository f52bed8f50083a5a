"""Trainer service: builds, evaluates, exports and checks models from a dataset contract."""

# The service's name: its Kafka principal, consumer groups, DLQ topic, database role and logs.
SERVICE = "trainer"
