-- The platform's PostgreSQL roles and database, none a superuser. Run as a superuser with psql by
-- infra/stack.sh (every start) and by docker-compose's postgres on its first start (compose-init.sh).
-- psql variables: owner_password, writer_password.
--   tollgate               owns the database and its schema; the services connect as it. It may create
--                          databases (the test suite makes one per run) but not roles, and bypasses nothing.
--   tollgate_audit_writer  the audit-log's run-time role: INSERT and SELECT on the trail only (the grants come
--                          from the audit-log's migrations).
\set ON_ERROR_STOP on
SELECT 'CREATE ROLE tollgate LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate')\gexec
ALTER ROLE tollgate WITH LOGIN NOSUPERUSER CREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'owner_password';
SELECT 'CREATE ROLE tollgate_audit_writer LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate_audit_writer')\gexec
ALTER ROLE tollgate_audit_writer WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS
  PASSWORD :'writer_password';
SELECT 'CREATE DATABASE tollgate OWNER tollgate'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'tollgate')\gexec
