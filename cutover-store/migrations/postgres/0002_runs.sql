-- Pipeline runs (their stages, logs and approvals) and the scheduler (state
-- per environment, job runs and their logs).
-- Portable on purpose: TEXT and BIGINT only, times are unix milliseconds,
-- enums are stored as their text forms (RunState::as_str, Stage::slug...),
-- booleans as 0/1. The same schema as migrations/sqlite/0002_runs.sql.

-- Identity ids are never reused, so `before_id` paging is stable.
-- log_seq is the last log line's seq: appenders bump it with one UPDATE, which
-- serialises them on this row on every backend, so seqs are gapless.
CREATE TABLE runs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    env              TEXT   NOT NULL,
    kind             TEXT   NOT NULL,
    state            TEXT   NOT NULL,
    requested_by     TEXT   NOT NULL,
    reason           TEXT,
    target_version   TEXT,
    version          TEXT,
    previous_version TEXT,
    created_at_ms    BIGINT NOT NULL,
    started_at_ms    BIGINT,
    ended_at_ms      BIGINT,
    current_stage    TEXT,
    failed_stage     TEXT,
    error            TEXT,
    superseded_by    BIGINT REFERENCES runs (id),
    log_seq          BIGINT NOT NULL DEFAULT 0
);

-- Queue per environment (enqueue, "is one active here?") and crash recovery.
CREATE INDEX runs_env_state ON runs (env, state, id);
CREATE INDEX runs_state ON runs (state, id);

-- 13 rows per run; ordinal is the stage's place in the pipeline (0..12).
CREATE TABLE run_stages (
    run_id        BIGINT NOT NULL REFERENCES runs (id),
    stage         TEXT   NOT NULL,
    ordinal       BIGINT NOT NULL,
    status        TEXT   NOT NULL,
    started_at_ms BIGINT,
    ended_at_ms   BIGINT,
    note          TEXT,
    PRIMARY KEY (run_id, stage)
);

CREATE TABLE run_logs (
    run_id BIGINT NOT NULL REFERENCES runs (id),
    seq    BIGINT NOT NULL CHECK (seq >= 1),
    stage  TEXT   NOT NULL,
    at_ms  BIGINT NOT NULL,
    line   TEXT   NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- One stage's log (`logs --stage`).
CREATE INDEX run_logs_stage ON run_logs (run_id, stage, seq);

CREATE TABLE run_approvals (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id   BIGINT NOT NULL REFERENCES runs (id),
    actor    TEXT   NOT NULL,
    decision TEXT   NOT NULL,
    comment  TEXT,
    at_ms    BIGINT NOT NULL
);

CREATE INDEX run_approvals_run ON run_approvals (run_id, id);

CREATE TABLE scheduler_state (
    env             TEXT   PRIMARY KEY,
    suspended       BIGINT NOT NULL CHECK (suspended IN (0, 1)),
    reason          TEXT,
    version         TEXT,
    pending_version TEXT,
    updated_at_ms   BIGINT NOT NULL,
    updated_by      TEXT   NOT NULL
);

-- triggered_by: `schedule` or `manual` (TRIGGER is an SQL keyword).
CREATE TABLE job_runs (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    env           TEXT   NOT NULL,
    job           TEXT   NOT NULL,
    version       TEXT   NOT NULL,
    triggered_by  TEXT   NOT NULL,
    state         TEXT   NOT NULL,
    started_at_ms BIGINT NOT NULL,
    ended_at_ms   BIGINT,
    exit_code     BIGINT,
    note          TEXT,
    log_seq       BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX job_runs_env ON job_runs (env, id);
CREATE INDEX job_runs_env_job ON job_runs (env, job, id);
CREATE INDEX job_runs_state ON job_runs (state, id);

CREATE TABLE job_logs (
    job_run_id BIGINT NOT NULL REFERENCES job_runs (id),
    seq        BIGINT NOT NULL CHECK (seq >= 1),
    at_ms      BIGINT NOT NULL,
    line       TEXT   NOT NULL,
    PRIMARY KEY (job_run_id, seq)
);
