"""The limit: the leanest honest HTTP endpoint over onnxruntime, with no validation and no logging.

It takes the same request as the tollgate scorer (``{"instances": [{feature: value, ...}, ...]}``), builds
the model's two input blocks from the column lists in the ONNX file's own signature, runs the session on
the event loop (no thread hop: one row takes tens of microseconds) and answers with the positive-class
probability and label per row. Starlette on uvicorn with uvloop and httptools, one worker, orjson.

Run: ``python tests/bench/scorer/bare_app.py --port 18100 risk-lr=path/to/model.onnx [name=path ...]``;
routes ``POST /v1/models/<name>/score`` and ``GET /healthz``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SIGNATURE_KEY = "tollgate.signature"


class Model:
    def __init__(self, path: str) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        signature = json.loads(self.session.get_modelmeta().custom_metadata_map[SIGNATURE_KEY])
        columns = {spec["name"]: spec["columns"] for spec in signature["inputs"]}
        self.numeric: list[str] = columns.get("numeric", [])
        self.category: list[str] = columns.get("category", [])
        self.classes: list[Any] = signature["classes"]
        self.positive: int = signature["positive_index"]

    def score(self, rows: list[dict[str, Any]]) -> bytes:
        feeds: dict[str, np.ndarray] = {}
        if self.numeric:
            # float64 conversion turns None into NaN and booleans into 1.0 / 0.0, as the model expects.
            feeds["numeric"] = np.array(
                [[row.get(c) for c in self.numeric] for row in rows], dtype=np.float64
            )
        if self.category:
            feeds["category"] = np.array(
                [[row.get(c) or "" for c in self.category] for row in rows], dtype=object
            )
        labels, probabilities = self.session.run(None, feeds)
        scores = probabilities[:, self.positive].tolist()
        return orjson.dumps(
            {
                "predictions": [
                    {"label": self.classes[i], "score": s}
                    for i, s in zip(labels.tolist(), scores, strict=True)
                ]
            }
        )


def create_app(models: dict[str, Model]) -> Starlette:
    async def score(request: Request) -> Response:
        model = models.get(request.path_params["name"])
        if model is None:
            return Response(b'{"detail":"unknown model"}', status_code=404, media_type="application/json")
        body = orjson.loads(await request.body())
        return Response(model.score(body["instances"]), media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[Route("/v1/models/{name}/score", score, methods=["POST"]), Route("/healthz", healthz)]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("models", nargs="+", help="name=path.onnx")
    args = parser.parse_args()
    models = {name: Model(path) for name, path in (item.split("=", 1) for item in args.models)}
    uvicorn.run(
        create_app(models),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        access_log=False,
        log_level="warning",
        lifespan="off",
    )


if __name__ == "__main__":
    main()
