#!/bin/bash
# docker-compose.yml's postgres runs this once, on an empty data directory, as its superuser: the platform's
# roles and database from infra/postgres/roles.sql, with passwords from the compose env file.
set -euo pipefail
psql -X -q -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v owner_password="${TOLLGATE_PG_PASSWORD:?}" -v writer_password="${TOLLGATE_AUDIT_LOG_WRITER_PASSWORD:?}" \
  -v ingest_password="${TOLLGATE_PG_PASSWORD_INGEST:?}" -v validator_password="${TOLLGATE_PG_PASSWORD_VALIDATOR:?}" \
  -v trainer_password="${TOLLGATE_PG_PASSWORD_TRAINER:?}" -v registry_password="${TOLLGATE_PG_PASSWORD_REGISTRY:?}" \
  -v scorer_password="${TOLLGATE_PG_PASSWORD_SCORER:?}" -v monitor_password="${TOLLGATE_PG_PASSWORD_MONITOR:?}" \
  -f /tollgate/roles.sql
