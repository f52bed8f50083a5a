-- The platform's PostgreSQL roles and database, none a superuser. Run as a superuser with psql by
-- infra/stack.sh (every start) and by docker-compose's postgres on its first start (compose-init.sh).
-- psql variables (the passwords; none is ever written here): owner_password, writer_password,
-- ingest_password, validator_password, trainer_password, registry_password, scorer_password, monitor_password.
--   tollgate               owns the database, its schema and every table; only `python -m tollgate_core.migrate`
--                          connects as it. It may create databases (the test suite makes one per run) but not
--                          roles, and bypasses nothing.
--   tollgate_<service>     one login role per service (ingest, validator, trainer, registry, scorer, monitor):
--                          no superuser, may create no role, database or schema object, bypasses nothing,
--                          inherits nothing. Its table privileges come from the migrations
--                          (tollgate_core.db_roles, applied by `python -m tollgate_core.migrate`).
--   tollgate_audit_writer  the audit-log's role: INSERT and SELECT on the trail only.
\set ON_ERROR_STOP on
SELECT 'CREATE ROLE tollgate LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate')\gexec
ALTER ROLE tollgate WITH LOGIN NOSUPERUSER CREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'owner_password';
SELECT 'CREATE ROLE tollgate_audit_writer LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate_audit_writer')\gexec
ALTER ROLE tollgate_audit_writer WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS
  PASSWORD :'writer_password';
SELECT format('CREATE ROLE %I LOGIN', r) FROM unnest(ARRAY['tollgate_ingest', 'tollgate_validator',
  'tollgate_trainer', 'tollgate_registry', 'tollgate_scorer', 'tollgate_monitor']) AS r
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r)\gexec
ALTER ROLE tollgate_ingest WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS
  PASSWORD :'ingest_password';
ALTER ROLE tollgate_validator WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS
  PASSWORD :'validator_password';
ALTER ROLE tollgate_trainer WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS
  PASSWORD :'trainer_password';
ALTER ROLE tollgate_registry WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS
  PASSWORD :'registry_password';
ALTER ROLE tollgate_scorer WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS
  PASSWORD :'scorer_password';
ALTER ROLE tollgate_monitor WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS
  PASSWORD :'monitor_password';
SELECT 'CREATE DATABASE tollgate OWNER tollgate'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'tollgate')\gexec
