-- Issue 11 (four-eyes bound to a SHA): a run's version is fixed when it is
-- requested (target_version), and the run records who chose it: the actor
-- who wrote the desired_version value it was resolved from. Nobody who
-- requested a production run or chose its version may approve it.
-- The same schema as migrations/sqlite/0004_run_chooser.sql.
ALTER TABLE runs ADD COLUMN version_chosen_by TEXT;

-- "Has this SHA succeeded on that environment?" (the `requires:` policy).
CREATE INDEX runs_env_version ON runs (env, version, state);
