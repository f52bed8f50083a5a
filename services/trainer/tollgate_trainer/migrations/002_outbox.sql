-- Candidate events waiting to be published (transactional outbox).
CREATE TABLE trainer_outbox (
    seq          bigserial   PRIMARY KEY,
    topic        text        NOT NULL,
    key          bytea,
    value        bytea       NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX trainer_outbox_pending ON trainer_outbox (seq) WHERE published_at IS NULL;

