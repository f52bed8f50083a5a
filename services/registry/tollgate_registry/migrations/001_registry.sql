-- Model versions: the candidate as received (metrics, parity, reference statistics, lineage), the results of
-- its gates, and its stage. A version's record never changes after registration; only its stage does.
CREATE TABLE registry_versions (
    model            text        NOT NULL,
    version          text        NOT NULL,
    seq              bigserial   NOT NULL,
    stage            text        NOT NULL
                     CHECK (stage IN ('candidate', 'staging', 'production', 'archived', 'rejected')),
    task             text        NOT NULL,
    contract         text        NOT NULL,
    artifact         jsonb       NOT NULL,
    metrics          jsonb       NOT NULL,
    candidate        jsonb       NOT NULL,
    gates            jsonb       NOT NULL DEFAULT '[]',
    gates_passed     boolean     NOT NULL,
    candidate_event  uuid        NOT NULL,
    production_rank  integer,
    rolled_back      boolean     NOT NULL DEFAULT false,
    canary_until     timestamptz,
    registered_at    timestamptz NOT NULL,
    stage_changed_at timestamptz NOT NULL,
    PRIMARY KEY (model, version)
);
-- The state machine's invariants, enforced again by the database: one production, one staging per model.
CREATE UNIQUE INDEX registry_versions_one_production ON registry_versions (model) WHERE stage = 'production';
CREATE UNIQUE INDEX registry_versions_one_staging ON registry_versions (model) WHERE stage = 'staging';
CREATE INDEX registry_versions_canary_due ON registry_versions (canary_until)
    WHERE stage = 'staging' AND canary_until IS NOT NULL;

-- Candidate events already handled: the idempotency key of the candidate sink (redelivery changes nothing).
CREATE TABLE registry_candidate_events (
    event_id    uuid        PRIMARY KEY,
    model       text        NOT NULL,
    version     text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Every state change of every version: who, when, why, from which stage to which, and the event that
-- announced it. Append-only: rows are never updated or deleted.
CREATE TABLE registry_transitions (
    id         bigserial   PRIMARY KEY,
    model      text        NOT NULL,
    version    text        NOT NULL,
    transition text        NOT NULL,
    from_stage text,
    to_stage   text        NOT NULL,
    actor      text        NOT NULL,
    reason     text        NOT NULL,
    at         timestamptz NOT NULL,
    event_id   uuid        NOT NULL UNIQUE,
    FOREIGN KEY (model, version) REFERENCES registry_versions (model, version)
);
CREATE INDEX registry_transitions_by_version ON registry_transitions (model, version, id);

CREATE FUNCTION registry_transitions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'registry_transitions is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER registry_transitions_append_only BEFORE UPDATE OR DELETE ON registry_transitions
    FOR EACH ROW EXECUTE FUNCTION registry_transitions_append_only();

-- Lifecycle events waiting to be published (transactional outbox; tollgate_core.outbox.outbox_ddl).
CREATE TABLE registry_outbox (
    seq          bigserial   PRIMARY KEY,
    topic        text        NOT NULL,
    key          bytea,
    value        bytea       NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX registry_outbox_pending ON registry_outbox (seq) WHERE published_at IS NULL;
