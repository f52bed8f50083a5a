-- The newest training reference per dataset contract, so a restarted validator applies the same
-- statistical expectations at once (it is rebuilt from models.candidates as new models arrive).
CREATE TABLE validator_references (
    contract     text        PRIMARY KEY,
    model        text        NOT NULL,
    version      text        NOT NULL,
    reference    jsonb       NOT NULL,
    source_event uuid        NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
