"""OpenAPI for the scoring routes, which bypass FastAPI: generated from pydantic models, merged into the
operations app's document, so ``/openapi.json`` describes everything the scorer serves.

The models here document the wire format; the hot path builds the same JSON by hand (the end-to-end tests
validate real responses against these schemas).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from tollgate_core.scoring import DecisionExplanation, FieldError, Prediction, Route

REF = "#/components/schemas/{model}"


class ScoreRequest(BaseModel):
    """Exactly one of ``instance`` and ``instances``."""

    model_config = ConfigDict(extra="forbid")

    instance: dict[str, Any] | None = Field(
        None, description="Feature name to value; may carry the contract's entity id and attributes."
    )
    instances: list[dict[str, Any]] | None = Field(
        None, description="A batch: each instance is one inference."
    )
    explain: bool = Field(
        False,
        description="Return every instance's explanation: each feature's contribution to the decision "
        "(exact for linear models, sampled Shapley values for tree ensembles).",
    )


class ScoreResult(BaseModel):
    request_id: str = Field(description="Identifies this inference in the inference log.")
    model: str
    version: str
    route: Route = Field(description="champion (production) or canary (staging); shadow is never returned.")
    prediction: Prediction
    score: float | None = Field(None, description="Positive-class probability (binary classifiers).")
    probabilities: dict[str, float] | None = Field(
        None, description="Class label (JSON text) to probability."
    )
    entity_id: str | None = Field(None, description="The instance's entity id, when it carried one.")
    threshold: float | None = Field(
        None,
        description="Binary classifiers: the positive-class probability from which the prediction is "
        "positive (the catalog's decision threshold, or 0.5), i.e. the threshold this decision used.",
    )
    explanation: DecisionExplanation | None = Field(None, description="When the request asked (explain).")
    explanation_error: str | None = Field(
        None, description="When the request asked but this version cannot be explained: why."
    )


class BatchScoreResponse(BaseModel):
    model: str
    results: list[ScoreResult] = Field(description="One per instance, in request order.")


class ErrorDetail(BaseModel):
    code: str = Field(
        description="invalid_request, invalid_instance, unknown_model, no_version, unavailable, "
        "unauthenticated, forbidden, too_large, model_error, ..."
    )
    message: str
    violations: list[FieldError] | None = Field(None, description="Every broken contract rule, per instance.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class InferTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = Field(None, description="binary_data_size for binary tensor data.")


class RequestedOutput(BaseModel):
    name: Literal["prediction", "score", "probabilities"]
    parameters: dict[str, Any] | None = Field(None, description="binary_data: true for a binary tensor.")


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None,
        description="binary_data_output: true for binary outputs; explain: true for each instance's "
        "explanation (response parameters.explanations).",
    )
    inputs: list[InferTensor] = Field(description="One tensor per contract feature (see the model metadata).")
    outputs: list[RequestedOutput] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] = Field(
        description="route and request_ids (one per instance); explanations (one per instance, shaped like "
        "DecisionExplanation) or explanation_error when the request asked for them."
    )
    outputs: list[InferTensor]


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: dict[str, Any]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool
    error: str | None = None


class ModelReady(BaseModel):
    name: str
    ready: bool
    version: str | None = None
    error: str | None = None


class OipErrorResponse(BaseModel):
    error: str
    violations: list[FieldError] | None = None


_MODELS: list[type[BaseModel]] = [
    ScoreRequest,
    ScoreResult,
    BatchScoreResponse,
    ErrorResponse,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ServerMetadata,
    ServerLive,
    ServerReady,
    ModelReady,
    OipErrorResponse,
]


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF.format(model=name)}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*statuses: int, oip: bool = False) -> dict[str, Any]:
    what = {
        400: "Malformed request",
        401: "Missing, malformed or unknown API key",
        403: "The key's role may not score",
        404: "Unknown model or version",
        413: "Body or batch too large (checked before parsing)",
        422: "Instances break the model's dataset contract: every broken rule is listed",
        503: "No version in production, or the inference log cannot keep more events (spool full)",
    }
    return {str(s): _json("OipErrorResponse" if oip else "ErrorResponse", what[s]) for s in statuses}


NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "Model name",
}
VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
SECURITY: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearer": []}]


def scoring_paths() -> dict[str, Any]:
    infer = {
        "post": {
            "tags": ["open inference protocol"],
            "summary": "Infer (KServe v2 / Triton compatible, binary tensor extension supported)",
            "security": SECURITY,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _ref("InferenceRequest")},
                    "application/octet-stream": {},
                },
            },
            "responses": {
                "200": {
                    **_json("InferenceResponse", "Output tensors"),
                    "headers": {
                        "Inference-Header-Content-Length": {
                            "schema": {"type": "integer"},
                            "description": "Set when binary tensors follow the JSON header.",
                        }
                    },
                },
                **_errors(400, 401, 403, 404, 413, 503, oip=True),
            },
        }
    }
    metadata = {
        "get": {
            "tags": ["open inference protocol"],
            "summary": "Model metadata: inputs, outputs, versions",
            "security": SECURITY,
            "responses": {"200": _json("ModelMetadata", "Metadata"), **_errors(401, 403, 404, oip=True)},
        }
    }
    ready = {
        "get": {
            "tags": ["open inference protocol"],
            "summary": "Whether the model (version) is loaded",
            "responses": {
                "200": _json("ModelReady", "Ready"),
                "400": _json("ModelReady", "Not ready"),
                "404": _json("OipErrorResponse", "Unknown model"),
            },
        }
    }
    with_version = [NAME, VERSION]
    return {
        "/v1/models/{name}/score": {
            "post": {
                "tags": ["scoring"],
                "summary": "Score one instance or a batch",
                "description": "Instances are checked against the model's dataset contract; each answered "
                'instance is one inference-log event. `{"instance": ...}` returns one result, '
                '`{"instances": [...]}` a list.',
                "security": SECURITY,
                "parameters": [
                    NAME,
                    {
                        "name": "traceparent",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "W3C trace context",
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ScoreRequest")}},
                },
                "responses": {
                    "200": {
                        "description": "One result, or a batch of results",
                        "content": {
                            "application/json": {
                                "schema": {"oneOf": [_ref("ScoreResult"), _ref("BatchScoreResponse")]}
                            }
                        },
                    },
                    **_errors(400, 401, 403, 404, 413, 422, 503),
                },
            }
        },
        "/v2": {
            "get": {
                "tags": ["open inference protocol"],
                "summary": "Server metadata",
                "responses": {"200": _json("ServerMetadata", "Metadata")},
            }
        },
        "/v2/health/live": {
            "get": {
                "tags": ["open inference protocol"],
                "summary": "Server live",
                "responses": {"200": _json("ServerLive", "Live")},
            }
        },
        "/v2/health/ready": {
            "get": {
                "tags": ["open inference protocol"],
                "summary": "Server ready: lifecycle caught up, every model has a version",
                "responses": {"200": _json("ServerReady", "Ready"), "400": _json("ServerReady", "Not ready")},
            }
        },
        "/v2/models/{name}": {**{k: {**v, "parameters": [NAME]} for k, v in metadata.items()}},
        "/v2/models/{name}/versions/{version}": {
            **{k: {**v, "parameters": with_version} for k, v in metadata.items()}
        },
        "/v2/models/{name}/ready": {**{k: {**v, "parameters": [NAME]} for k, v in ready.items()}},
        "/v2/models/{name}/versions/{version}/ready": {
            **{k: {**v, "parameters": with_version} for k, v in ready.items()}
        },
        "/v2/models/{name}/infer": {**{k: {**v, "parameters": [NAME]} for k, v in infer.items()}},
        "/v2/models/{name}/versions/{version}/infer": {
            **{k: {**v, "parameters": with_version} for k, v in infer.items()}
        },
    }


def component_schemas() -> dict[str, Any]:
    _, top = models_json_schema([(m, "serialization") for m in _MODELS], ref_template=REF)
    return dict(top.get("$defs", {}))


def add_scoring_routes(document: dict[str, Any]) -> dict[str, Any]:
    """Add the scoring routes, their schemas and the API-key security schemes to an OpenAPI document."""
    document.setdefault("paths", {}).update(scoring_paths())
    components = document.setdefault("components", {})
    components.setdefault("schemas", {}).update(component_schemas())
    components.setdefault("securitySchemes", {}).update(
        {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
        }
    )
    return document
