"""The serving signature an artifact carries in its ONNX metadata (``tollgate.signature``).

The trainer writes it; the scorer reads it with onnxruntime alone, so serving needs neither scikit-learn
nor the trainer. Unknown keys are ignored: a newer trainer may describe more without breaking the scorer.
"""

from __future__ import annotations

from typing import Any

import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field

SIGNATURE_METADATA_KEY = "tollgate.signature"
NUMERIC_INPUT = "numeric"
CATEGORY_INPUT = "category"


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    dtype: str
    shape: list[int | None]
    columns: list[str] = Field(default_factory=list)


class Signature(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    contract: str
    contract_digest: str
    task: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    classes: list[bool | int | str] | None = None
    positive_index: int | None = None
    decision_threshold: float | None = None

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]


class SignatureError(ValueError):
    """The artifact does not describe itself in a way the scorer can serve."""


def read_signature(session: ort.InferenceSession) -> Signature:
    metadata: dict[str, Any] = session.get_modelmeta().custom_metadata_map
    text = metadata.get(SIGNATURE_METADATA_KEY)
    if text is None:
        raise SignatureError(
            f"the ONNX model has no {SIGNATURE_METADATA_KEY!r} metadata: not a tollgate artifact"
        )
    signature = Signature.model_validate_json(text)
    names = {i.name for i in session.get_inputs()}
    declared = {spec.name for spec in signature.inputs}
    if names != declared:
        raise SignatureError(f"the signature names inputs {sorted(declared)}, the graph has {sorted(names)}")
    unknown = declared - {NUMERIC_INPUT, CATEGORY_INPUT}
    if unknown:
        raise SignatureError(
            f"unsupported model inputs {sorted(unknown)}; expected 'numeric' and/or 'category'"
        )
    outputs = {o.name for o in session.get_outputs()}
    wanted = {"label", "probabilities"} if signature.task == "classification" else {"prediction"}
    if not wanted <= outputs:
        raise SignatureError(
            f"a {signature.task} model needs outputs {sorted(wanted)}, has {sorted(outputs)}"
        )
    if signature.task == "classification" and not signature.classes:
        raise SignatureError("a classifier's signature lists its classes")
    return signature
