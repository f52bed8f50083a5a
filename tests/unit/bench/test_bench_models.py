"""The scorer benchmark's models: the scikit-learn twin served by the peers is the model tollgate serves.

``build_models`` refits the trainer's pipeline and checks that it exports to the very artifact
``train_model`` wrote (graph, decision threshold and metadata); the peers (MLServer, the bare endpoint)
serve that twin, so a difference would compare different models. The check once failed for every model
after the artifact started to carry the explanation reference, and ``make bench`` stopped before measuring.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from tests.bench.scorer.models import build_models


@pytest.mark.parametrize("key", ["lr"])
def test_the_twin_exports_to_the_trainers_artifact(key: str, tmp_path: Path) -> None:
    models = build_models([key], tmp_path, threads=1)
    model = models[key]
    assert model.onnx_path.read_bytes() == model.result.onnx
    session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert "tollgate.explanation" in meta
