-- Live registrations of dataset contracts and model catalog entries: every revision of every key
-- (contract/<name>/v<N>, model/<name>) with the validated document, its digest and the principal that
-- registered it. The registry checks a new contract against these (and the schemas/ seed) and publishes
-- each revision through registry_outbox in the same transaction. Append-only.
CREATE TABLE registry_registrations (
    key           text        NOT NULL,
    revision      integer     NOT NULL CHECK (revision >= 1),
    kind          text        NOT NULL CHECK (kind IN ('contract', 'model')),
    name          text        NOT NULL,
    version       integer,
    digest        text        NOT NULL CHECK (digest ~ '^[0-9a-f]{64}$'),
    document      jsonb       NOT NULL,
    registered_by text        NOT NULL,
    registered_at timestamptz NOT NULL,
    event_id      uuid        NOT NULL UNIQUE,
    PRIMARY KEY (key, revision)
);

CREATE FUNCTION registry_registrations_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'registry_registrations is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER registry_registrations_append_only BEFORE UPDATE OR DELETE ON registry_registrations
    FOR EACH ROW EXECUTE FUNCTION registry_registrations_append_only();
