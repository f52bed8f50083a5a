# syntax=docker/dockerfile:1
# One image for every tollgate service; the container's command picks the service, e.g.
#   docker run tollgate:dev python -m tollgate_ingest
# (docker-compose.yml sets one command per service). Every workspace package is installed, so the image also
# has the `tollgate` command line (compose's one-shot topics job runs `tollgate admin topics apply`).
# Build: docker build -t tollgate:dev .

ARG PYTHON_IMAGE=python:3.11-slim

# ---- manifests: only the workspace's pyproject.toml files, so the dependency layer below is rebuilt only
# when uv.lock or a pyproject.toml changes, not on every source edit.
FROM ${PYTHON_IMAGE} AS manifests
WORKDIR /src
COPY libs libs
COPY services services
RUN find libs services -type f ! -name pyproject.toml -delete

# ---- build: the virtual environment in /app/.venv, exactly as uv.lock pins it, without dev tools.
FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.8
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir --root-user-action=ignore "uv==${UV_VERSION}"
WORKDIR /app
COPY pyproject.toml uv.lock ./
COPY --from=manifests /src/ ./
# Third-party dependencies first (cached layer), then the workspace packages themselves. The audit trail's
# compiled hot loops (libs/audit-native, Rust) are left out of the image: its writer and verifier run their
# Python loops there (same rows and verdicts; verification about twice as slow); a checkout builds them.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --all-packages --no-dev --no-install-workspace
COPY libs libs
COPY services services
COPY schemas schemas
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --all-packages --no-dev --no-install-package tollgate-audit-native \
    && python -m compileall -q libs services

# ---- runtime: the environment and sources only, run as an unprivileged user.
FROM ${PYTHON_IMAGE} AS runtime
# /var/lib/tollgate/artifacts is the artifact store's mount point; a named volume mounted there starts out
# with this ownership.
RUN groupadd --system --gid 10001 tollgate \
    && useradd --system --uid 10001 --gid tollgate --home-dir /app --no-create-home tollgate \
    && mkdir -p /var/lib/tollgate/artifacts \
    && chown tollgate:tollgate /var/lib/tollgate/artifacts
WORKDIR /app
# The workspace packages are installed editable: the venv points at /app/libs and /app/services, and
# tollgate_core's package data tollgate_core/schemas is a link to /app/schemas.
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1
USER tollgate
# HTTP ports of the services (scorer 8080, ingest 8081, registry 8082, monitor 8083, audit-log 8084,
# validator 8085, trainer 8086).
EXPOSE 8080-8086
