-- Approvals of a version: who (the API key's principal), when, why, and the digest of the gate report they
-- approved. A high-risk-tier version needs two from distinct principals before it enters production; every
-- approval is kept. Append-only.
CREATE TABLE registry_approvals (
    model         text        NOT NULL,
    version       text        NOT NULL,
    principal     text        NOT NULL,
    reason        text        NOT NULL,
    report_digest text        NOT NULL CHECK (report_digest ~ '^[0-9a-f]{64}$'),
    at            timestamptz NOT NULL,
    PRIMARY KEY (model, version, principal),
    FOREIGN KEY (model, version) REFERENCES registry_versions (model, version)
);

CREATE TRIGGER registry_approvals_append_only BEFORE UPDATE OR DELETE ON registry_approvals
    FOR EACH ROW EXECUTE FUNCTION registry_transitions_append_only();
