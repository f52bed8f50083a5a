-- API keys of every HTTP service (scorer, registry, audit-log): only a sha256 of each key is stored.
CREATE TABLE IF NOT EXISTS api_keys (
    id          bigserial   PRIMARY KEY,
    name        text        NOT NULL UNIQUE,
    role        text        NOT NULL CHECK (role IN ('scorer-client', 'compliance-reader', 'auditor', 'operator')),
    key_hash    text        NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE INDEX IF NOT EXISTS api_keys_active ON api_keys (key_hash) WHERE revoked_at IS NULL;
