-- The audit trail: append-only, one hash chain per stream, signed Merkle checkpoints.
-- Rows are never changed: the triggers below refuse UPDATE, DELETE and TRUNCATE for every role, the owner
-- included (only dropping or disabling a trigger, which needs the owner, gets past them), and the service's
-- runtime role is granted INSERT and SELECT only (see tollgate_audit_log/roles.py).

CREATE TABLE audit_events (
    stream          text        NOT NULL,
    seq             bigint      NOT NULL CHECK (seq >= 1),
    event_id        uuid        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    event_type      text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL,
    request_id      text,
    entity_id       text,
    model           text,
    version         text,
    trace_id        text,
    -- The envelope exactly as hashed: as the producer sent it. Kept as text, not jsonb: jsonb would
    -- re-encode it (and cost the insert a parse); the audit_trail view below parses it for ad-hoc SQL.
    envelope        text        NOT NULL,
    content_hash    bytea       NOT NULL CHECK (octet_length(content_hash) = 32),
    prev_hash       bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    row_hash        bytea       NOT NULL CHECK (octet_length(row_hash) = 32),
    PRIMARY KEY (stream, seq),
    CONSTRAINT audit_events_event_id_key UNIQUE (event_id)
);

-- Compliance queries; keyset pagination walks (occurred_at, stream, seq). Every index slows the sink, so
-- the model index leaves out the inference stream (a handful of models, millions of rows: a filter on the
-- time index serves it); lineage looks models up in the small lifecycle/candidates/alerts streams.
CREATE INDEX audit_events_time ON audit_events (occurred_at, stream, seq);
CREATE INDEX audit_events_request ON audit_events (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX audit_events_entity ON audit_events (entity_id) WHERE entity_id IS NOT NULL;
CREATE INDEX audit_events_model ON audit_events (model, version, occurred_at)
    WHERE model IS NOT NULL AND stream <> 'inference';

-- For analysts with SQL access: the same rows with the envelope and payload as jsonb.
CREATE VIEW audit_trail AS
    SELECT stream, seq, event_id, topic, kafka_partition, kafka_offset, event_type, occurred_at, recorded_at,
           request_id, entity_id, model, version, trace_id, envelope::jsonb AS event,
           (envelope::jsonb) -> 'payload' AS payload, content_hash, prev_hash, row_hash
    FROM audit_events;

-- Public keys that signed checkpoints (a verifier should be given the key out of band; these are a
-- convenience and say which key id was in use).
CREATE TABLE audit_signing_keys (
    key_id      text        PRIMARY KEY,
    algorithm   text        NOT NULL CHECK (algorithm = 'ed25519'),
    public_key  bytea       NOT NULL CHECK (octet_length(public_key) = 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_checkpoints (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream      text        NOT NULL,
    first_seq   bigint      NOT NULL CHECK (first_seq >= 1),
    last_seq    bigint      NOT NULL,
    merkle_root bytea       NOT NULL CHECK (octet_length(merkle_root) = 32),
    head_hash   bytea       NOT NULL CHECK (octet_length(head_hash) = 32),
    created_at  timestamptz NOT NULL,
    key_id      text        NOT NULL REFERENCES audit_signing_keys (key_id),
    signature   bytea       NOT NULL CHECK (octet_length(signature) = 64),
    CHECK (last_seq >= first_seq),
    UNIQUE (stream, first_seq),
    UNIQUE (stream, last_seq)
);

CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_signing_keys_append_only BEFORE UPDATE OR DELETE ON audit_signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_signing_keys_no_truncate BEFORE TRUNCATE ON audit_signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

REVOKE ALL ON audit_events, audit_checkpoints, audit_signing_keys, audit_trail FROM PUBLIC;
