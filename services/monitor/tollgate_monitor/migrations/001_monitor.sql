-- Versions the monitor knows: reference profile and holdout metrics (from models.candidates), stage (from
-- models.lifecycle). Either event may come first, so every column but the key is optional.
CREATE TABLE monitor_versions (
    model             text        NOT NULL,
    version           text        NOT NULL,
    contract          text,
    task              text,
    reference         jsonb,
    metrics           jsonb,
    trained_at        timestamptz,
    stage             text        NOT NULL DEFAULT 'candidate',
    stage_changed_at  timestamptz,
    canary_weight     double precision,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version)
);

-- Checkpoint per inference-log partition: window counts, hysteresis and the last offset they include.
-- Written with every batch, compare-and-set on last_offset, so a replica holding stale state cannot
-- overwrite a newer checkpoint.
CREATE TABLE monitor_partitions (
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    last_offset  bigint      NOT NULL,
    state        jsonb       NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- One report per evaluated window and version: drift per feature, prediction histogram, latency,
-- performance, verdicts. What the dashboard draws.
CREATE TABLE monitor_windows (
    model         text        NOT NULL,
    version       text        NOT NULL,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    rows          integer     NOT NULL,
    report        jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version, window_end)
);

-- Predictions waiting for (or joined with) their late label; joined by entity id or request id.
CREATE TABLE monitor_predictions (
    request_id   text        NOT NULL,
    model        text        NOT NULL,
    version      text        NOT NULL,
    contract     text        NOT NULL,
    entity_id    text,
    score        double precision,
    predicted    text,
    occurred_at  timestamptz NOT NULL,
    label        text,
    truth        double precision,
    labeled_at   timestamptz,
    PRIMARY KEY (request_id, model, version)
);
CREATE INDEX monitor_predictions_waiting ON monitor_predictions (contract, entity_id) WHERE label IS NULL;
CREATE INDEX monitor_predictions_labeled ON monitor_predictions (model, version, labeled_at)
    WHERE labeled_at IS NOT NULL;
CREATE INDEX monitor_predictions_age ON monitor_predictions (occurred_at);

-- Every alert event published (raised and cleared), and the current state per series and kind.
CREATE TABLE monitor_alerts (
    event_id      uuid        PRIMARY KEY,
    alert_id      text        NOT NULL,
    model         text        NOT NULL,
    version       text        NOT NULL,
    kind          text        NOT NULL,
    state         text        NOT NULL,
    severity      text        NOT NULL,
    stage         text        NOT NULL,
    summary       text        NOT NULL,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX monitor_alerts_model ON monitor_alerts (model, created_at DESC);

CREATE TABLE monitor_alert_state (
    model       text        NOT NULL,
    version     text        NOT NULL,
    kind        text        NOT NULL,
    state       text        NOT NULL,
    alert_id    text,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version, kind)
);

-- Debounce of training requests: the last one per model.
CREATE TABLE monitor_retrain (
    model              text        PRIMARY KEY,
    last_requested_at  timestamptz NOT NULL,
    alert_id           text
);

-- Alerts and training requests waiting to be published (transactional outbox).
CREATE TABLE monitor_outbox (
    seq          bigserial   PRIMARY KEY,
    topic        text        NOT NULL,
    key          bytea,
    value        bytea       NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX monitor_outbox_pending ON monitor_outbox (seq) WHERE published_at IS NULL;
