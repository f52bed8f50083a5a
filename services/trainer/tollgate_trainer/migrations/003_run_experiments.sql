-- The champion selection of a run: every trial tried (parameters, validation metrics, seconds, artifact
-- digest), the winner and the budget (tollgate_core.lifecycle.Experiment); NULL when the catalog asks for none.
ALTER TABLE trainer_runs ADD COLUMN experiment jsonb;
