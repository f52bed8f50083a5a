"""tollgate scorer: serves ONNX model versions that the registry promotes."""
