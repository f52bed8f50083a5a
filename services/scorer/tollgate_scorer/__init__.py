"""tollgate scorer: serves ONNX model versions that the registry promotes."""

# The service's name: its Kafka principal, consumer groups, DLQ topic and logs.
SERVICE = "scorer"
