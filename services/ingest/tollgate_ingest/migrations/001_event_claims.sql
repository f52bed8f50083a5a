-- Which raw message first claimed each event_id. A replay of the *same* message (same partition and offset,
-- after a crash aborted its transaction) still owns its claim and is published again; any other copy is a
-- duplicate and is dropped. Rows older than the dedup window are pruned.
CREATE TABLE ingest_event_claims (
    event_id   uuid        PRIMARY KEY,
    topic      text        NOT NULL,
    partition  integer     NOT NULL,
    "offset"   bigint      NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ingest_event_claims_claimed_at ON ingest_event_claims (claimed_at);
