"""MLServer, the peer: its own virtualenv, a model repository holding the joblib pipelines, V2 request bodies.

MLServer 1.7.1 pins libraries that conflict with the project's, so it lives in ``.local/bench/mlserver-venv``,
made with ``python -m venv`` and ``pip install -r tests/bench/mlserver-requirements.txt`` when missing or when
that file changed (a stamp in the venv holds the file's sha256).

Request format (V2 / Open Inference Protocol, ``POST /v2/models/<name>/infer``): the scikit-learn runtime
decodes the request with the codec named by ``parameters.content_type``; the pipeline takes a mixed-type
table (16 numeric columns, 4 category columns), so the request uses the pandas codec (``"pd"``) with one
named input per feature, in the pipeline's column order: ``FP64`` for numbers, integers and booleans (as
1.0 / 0.0, the pipeline's numeric encoding) and ``BYTES`` with ``content_type: "str"`` for categories (a null is ``null`` in a number column, ``""`` in a
category column: the pipeline's own encodings of a missing value). One
input of shape ``[n]`` per column carries ``n`` rows. The model settings set ``predict_fn`` to
``predict_proba``, so the answer is the ``[n, 2]`` probability tensor.

A reference, not a peer for the targets: the same server also serves each pipeline's final estimator
alone (``<name>-estimator``), fed the pipeline's own preprocessed columns as one ``FP64 [n, k]`` tensor (the
NumPy codec). That is MLServer's floor for the same fitted model when the client does the preprocessing,
and it separates MLServer's own cost from scikit-learn's per-call cost of the preprocessing pipeline.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from string import Template
from typing import Any

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE.parent / "mlserver-requirements.txt"
SETTINGS_TEMPLATE = HERE / "mlserver-settings.json"
MODEL_SETTINGS_TEMPLATE = HERE / "mlserver-model-settings.json"
STAMP = ".tollgate-requirements.sha256"


def ensure_venv(venv: Path, requirements: Path = REQUIREMENTS) -> Path:
    """The MLServer executable, creating or refreshing its virtualenv first when needed."""
    wanted = hashlib.sha256(requirements.read_bytes()).hexdigest()
    stamp = venv / STAMP
    executable = venv / "bin" / "mlserver"
    if executable.is_file() and stamp.is_file() and stamp.read_text().strip() == wanted:
        return executable
    print(f"creating the MLServer virtualenv in {venv} (pip install -r {requirements.name}) ...", flush=True)
    if not (venv / "bin" / "python").is_file():
        # The base interpreter of the running one, i.e. the same Python version (MLServer 1.7 needs < 3.13).
        base = getattr(sys, "_base_executable", sys.executable)
        made = subprocess.run([base, "-m", "venv", str(venv)], check=False)
        if made.returncode != 0:
            # Debian's own Python has no ensurepip without the python3-venv package; uv (which makes the
            # project's environment) creates the same virtualenv without it.
            uv = shutil.which("uv")
            if uv is None:
                raise RuntimeError(f"{base} -m venv failed: install Debian's python3-venv package (or uv)")
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([uv, "venv", "--seed", "--python", base, str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-r", str(requirements)], check=True)
    subprocess.run([str(executable), "--version"], check=True, stdout=subprocess.DEVNULL)
    stamp.write_text(wanted + "\n")
    return executable


def write_repository(
    repo: Path,
    models: dict[str, Path],
    *,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    parallel_workers: int,
) -> None:
    """``repo/settings.json`` plus one folder per model with ``model-settings.json`` and ``model.joblib``."""
    repo.mkdir(parents=True, exist_ok=True)
    settings = Template(SETTINGS_TEMPLATE.read_text()).substitute(
        http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, parallel_workers=parallel_workers
    )
    (repo / "settings.json").write_text(settings)
    for name, joblib_file in models.items():
        folder = repo / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.joblib").write_bytes(joblib_file.read_bytes())
        (folder / "model-settings.json").write_text(
            Template(MODEL_SETTINGS_TEMPLATE.read_text()).substitute(name=name)
        )


def v2_body(
    rows: Sequence[dict[str, Any]], numeric: Sequence[str], boolean: set[str], category: Sequence[str]
) -> bytes:
    """A V2 inference request for the pandas codec: one named column per feature, ``len(rows)`` rows."""
    inputs: list[dict[str, Any]] = []
    for name in numeric:
        numbers = [_number(row.get(name), name in boolean) for row in rows]
        inputs.append({"name": name, "datatype": "FP64", "shape": [len(rows)], "data": numbers})
    for name in category:
        strings = [str(row.get(name) or "") for row in rows]
        inputs.append(
            {
                "name": name,
                "datatype": "BYTES",
                "shape": [len(rows)],
                "data": strings,
                "parameters": {"content_type": "str"},
            }
        )
    return json.dumps({"parameters": {"content_type": "pd"}, "inputs": inputs}).encode()


def tensor_body(matrix: Any) -> bytes:
    """A V2 request with one ``FP64`` tensor ``[n, k]`` (the runtime's default NumPy codec)."""
    rows, columns = matrix.shape
    data = [float(v) for v in matrix.reshape(-1)]
    return json.dumps(
        {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [rows, columns], "data": data}]}
    ).encode()


def _number(value: Any, boolean: bool) -> float | None:
    if value is None:
        return None  # the pandas codec reads a JSON null in an FP64 column as NaN, which the pipeline imputes
    if boolean:
        return 1.0 if value else 0.0
    return float(value)


def positive_scores(response: bytes, positive_index: int) -> list[float]:
    output = json.loads(response)["outputs"][0]
    columns = output["shape"][1]
    data = output["data"]
    return [data[i * columns + positive_index] for i in range(output["shape"][0])]
