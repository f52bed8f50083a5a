-- Labeled records per dataset contract, each with the exact Kafka position it came from (lineage).
CREATE TABLE trainer_rows (
    seq         bigserial   UNIQUE,
    event_id    uuid        PRIMARY KEY,
    contract    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    occurred_at timestamptz NOT NULL,
    payload     jsonb       NOT NULL
);
CREATE INDEX trainer_rows_contract_seq ON trainer_rows (contract, seq);
CREATE INDEX trainer_rows_position ON trainer_rows (contract, topic, partition, "offset");

-- One row per training run, whatever its outcome.
CREATE TABLE trainer_runs (
    run_id       uuid        PRIMARY KEY,
    model        text        NOT NULL,
    version      integer     NOT NULL,
    trigger      text        NOT NULL,
    status       text        NOT NULL,            -- running | offered | not_offered | failed | skipped
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    last_seq     bigint      NOT NULL,            -- newest training-store row the run saw
    row_count    integer,
    metrics      jsonb,
    lineage      jsonb,
    candidate_event_id uuid,
    error        text,
    UNIQUE (model, version)
);

-- Training requests received (operators, monitor alerts), consumed by the next run of the model.
CREATE TABLE trainer_requests (
    event_id     uuid        PRIMARY KEY,
    model        text        NOT NULL,
    reason       text        NOT NULL,
    requested_by text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    run_id       uuid
);
