-- Request and entity ids are opaque identifiers: only ever compared for equality (compliance lookups), never
-- sorted or matched by pattern. With the database's linguistic collation every comparison in their btrees
-- goes through strcoll(); collation "C" compares bytes. Equality is the same under both (both collations
-- are deterministic), and the sink spends markedly less on these two indexes for every row it appends.
-- The collation change does not rewrite the table; the two indexes are rebuilt. The audit_trail view
-- reads both columns, so it is recreated around the change (grants on it are given on every start).

DROP VIEW audit_trail;

ALTER TABLE audit_events
    ALTER COLUMN request_id TYPE text COLLATE "C",
    ALTER COLUMN entity_id TYPE text COLLATE "C";

CREATE VIEW audit_trail AS
    SELECT stream, seq, event_id, topic, kafka_partition, kafka_offset, event_type, occurred_at, recorded_at,
           request_id, entity_id, model, version, trace_id, envelope::jsonb AS event,
           (envelope::jsonb) -> 'payload' AS payload, content_hash, prev_hash, row_hash
    FROM audit_events;

REVOKE ALL ON audit_trail FROM PUBLIC;
