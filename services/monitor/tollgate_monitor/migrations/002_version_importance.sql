-- Each version's global feature importance (the evaluation report of its models.candidates event), drawn on
-- the dashboard for the versions in service; null for a version whose report has none.
ALTER TABLE monitor_versions ADD COLUMN importance jsonb;
