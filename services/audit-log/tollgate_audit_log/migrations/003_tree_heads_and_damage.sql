-- Signed tree heads that chain, the writer's damage records and their acknowledgements, key rotations.
--
-- A checkpoint now also signs the RFC 6962 root of the whole stream (tree_root over rows 1..last_seq), the
-- previous checkpoint's tree root (prev_root) and the sha256 of its statement (prev_statement): the heads
-- form a chain, published outside the database, that consistency proofs (consistency: the RFC 6962 proof
-- from the previous head, concatenated 32-byte hashes) show to be append-only. frontier: the roots of the
-- perfect subtrees of the tree at last_seq, so a new writer resumes the tree without reading the stream
-- (checked against the signed tree_root before use).

ALTER TABLE audit_checkpoints
    ADD COLUMN tree_root      bytea CHECK (octet_length(tree_root) = 32),
    ADD COLUMN prev_root      bytea CHECK (octet_length(prev_root) = 32),
    ADD COLUMN prev_statement bytea CHECK (octet_length(prev_statement) = 32),
    ADD COLUMN frontier       bytea CHECK (octet_length(frontier) % 32 = 0),
    ADD COLUMN consistency    bytea CHECK (octet_length(consistency) % 32 = 0);

-- The writer found rows it did not write (or its rows changed) in a stream: the stream is damaged and no
-- checkpoint is signed on it until an auditor acknowledges every damage record of the stream.
CREATE TABLE audit_stream_damage (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream        text        NOT NULL,
    detected_at   timestamptz NOT NULL DEFAULT now(),
    kind          text        NOT NULL,
    expected_seq  bigint      NOT NULL,
    expected_hash bytea       NOT NULL,
    found_seq     bigint      NOT NULL,
    found_hash    bytea       NOT NULL,
    detail        text        NOT NULL
);
CREATE INDEX audit_stream_damage_stream ON audit_stream_damage (stream);

CREATE TABLE audit_damage_acks (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    damage_id       bigint      NOT NULL UNIQUE REFERENCES audit_stream_damage (id),
    acknowledged_by text        NOT NULL,
    reason          text        NOT NULL,
    acknowledged_at timestamptz NOT NULL DEFAULT now()
);

-- Key rotations: the previous key's signature over the new key (verifiers follow them from pinned keys).
CREATE TABLE audit_key_rotations (
    new_key_id      text        PRIMARY KEY,
    previous_key_id text        NOT NULL,
    new_public_key  bytea       NOT NULL CHECK (octet_length(new_public_key) = 32),
    created_at      timestamptz NOT NULL,
    signature       bytea       NOT NULL CHECK (octet_length(signature) = 64)
);

CREATE TRIGGER audit_stream_damage_append_only BEFORE UPDATE OR DELETE ON audit_stream_damage
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_stream_damage_no_truncate BEFORE TRUNCATE ON audit_stream_damage
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_damage_acks_append_only BEFORE UPDATE OR DELETE ON audit_damage_acks
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_damage_acks_no_truncate BEFORE TRUNCATE ON audit_damage_acks
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_key_rotations_append_only BEFORE UPDATE OR DELETE ON audit_key_rotations
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_key_rotations_no_truncate BEFORE TRUNCATE ON audit_key_rotations
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

REVOKE ALL ON audit_stream_damage, audit_damage_acks, audit_key_rotations FROM PUBLIC;
