-- Parameter store and audit log.
-- Portable on purpose: TEXT and BIGINT only, times are unix milliseconds,
-- JSON is stored as TEXT. migrations/postgres/0001_init.sql is the same schema.

-- Every write of a parameter is a new row; the newest version is the value.
CREATE TABLE param_versions (
    key     TEXT   NOT NULL,
    version BIGINT NOT NULL CHECK (version >= 1),
    value   TEXT   NOT NULL,
    actor   TEXT   NOT NULL,
    at_ms   BIGINT NOT NULL,
    PRIMARY KEY (key, version)
);

-- Append-only. AUTOINCREMENT: ids are never reused, so `before_id` paging is stable.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   BIGINT NOT NULL,
    actor   TEXT   NOT NULL,
    action  TEXT   NOT NULL,
    target  TEXT   NOT NULL,
    detail  TEXT   NOT NULL
);

CREATE INDEX audit_log_target ON audit_log (target, id);
