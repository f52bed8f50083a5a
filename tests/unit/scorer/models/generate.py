"""Writes the scorer tests' model fixtures: ONNX models and what scikit-learn answers for them.

The scorer's unit tests must run where the scorer runs, without scikit-learn or the trainer (``make
test-scorer-alone`` checks this). So the models they serve are trained once, here, with the trainer's own
pipeline and exporter on the ISLP ``Default`` data, and committed beside this script together with the
references the tests compare the scorer with (scikit-learn's probabilities, the trainer's input arrays).

Run from the repository root with the full environment, after a change to the trainer's pipeline or
exporter that the fixtures must follow::

    .venv/bin/python -m tests.unit.scorer.models.generate

What it writes (next to this file):

* ``credit-default-risk-<version>.onnx`` for versions 1, 2 and 3 (different rows and regularisation, so
  visibly different outputs), and ``credit-default-risk-1-threshold.onnx``: version 1's pipeline exported
  with the decision threshold ``THRESHOLD``;
* ``reference-<version>.npy`` (versions 1 and 2): ``predict_proba`` of the fitted pipeline for every ISLP
  row in file order (10,000 x 2, float64; columns in class order False, True), and
  ``reference-1-fp32.npy``: the same for the first ``FP32_ROWS`` rows with ``income`` rounded to float32 (as
  an Open Inference Protocol client sends it);
* ``trainer-inputs.json``: the arrays the trainer feeds its ONNX model for the first ``INPUT_ROWS`` rows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tests.unit.scorer.support import CONTRACT, FP32_ROWS, INPUT_ROWS, MODEL, REFERENCED, THRESHOLD
from tollgate_demo.datasets import load_islp_default
from tollgate_trainer.export import export_onnx
from tollgate_trainer.features import FeatureLayout, LabelEncoding, raw_frame
from tollgate_trainer.pipeline import build_pipeline

HERE = Path(__file__).resolve().parent
# version -> (rows used, inverse regularisation): different data and strength give visibly different outputs.
VERSIONS: dict[str, tuple[slice, float]] = {
    "1": (slice(0, 5000), 1.0),
    "2": (slice(5000, 10000), 0.001),
    "3": (slice(0, 10000), 100.0),
}


def _frame(layout: FeatureLayout, instances: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        {name: pd.Series([i.get(name) for i in instances], dtype=object) for name in layout.columns}
    )


def main() -> None:
    records = load_islp_default()
    label = CONTRACT.label.name
    instances = [{k: v for k, v in r.items() if k != label} for r in records]
    layout = FeatureLayout.from_contract(CONTRACT)
    for version, (rows, strength) in VERSIONS.items():
        raw = raw_frame(CONTRACT, records[rows])
        encoding = LabelEncoding.fit(CONTRACT.label, raw[label].tolist(), CONTRACT.label.positive_class)
        pipeline = build_pipeline(CONTRACT, "logistic_regression", {"C": strength}, seed=0)
        pipeline.fit(layout.model_frame(raw), encoding.encode(raw[label].tolist()))
        (HERE / f"{MODEL}-{version}.onnx").write_bytes(export_onnx(pipeline, CONTRACT, encoding).onnx)
        if version not in REFERENCED:
            continue
        reference = np.asarray(pipeline.predict_proba(layout.model_frame(_frame(layout, instances))))
        np.save(HERE / f"reference-{version}.npy", reference.astype(np.float64))
        if version == "1":
            fp32 = [{**i, "income": float(np.float32(i["income"]))} for i in instances[:FP32_ROWS]]
            np.save(
                HERE / "reference-1-fp32.npy",
                np.asarray(pipeline.predict_proba(layout.model_frame(_frame(layout, fp32)))).astype(
                    np.float64
                ),
            )
            (HERE / f"{MODEL}-1-threshold.onnx").write_bytes(
                export_onnx(pipeline, CONTRACT, encoding, threshold=THRESHOLD).onnx
            )
            feeds = layout.onnx_inputs(layout.model_frame(_frame(layout, instances[:INPUT_ROWS])))
            (HERE / "trainer-inputs.json").write_text(
                json.dumps(
                    {
                        name: {
                            "dtype": str(array.dtype),
                            "values": [
                                [None if isinstance(v, float) and math.isnan(v) else v for v in row]
                                for row in array.tolist()
                            ],
                        }
                        for name, array in feeds.items()
                    }
                )
                + "\n"
            )


if __name__ == "__main__":
    main()
