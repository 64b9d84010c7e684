-- Parameter store and audit log; the same schema as migrations/sqlite/0001_init.sql.
-- COLLATE "C": keys compare byte-wise, as in SQLite, so prefix ranges and
-- ORDER BY key give the same results on both backends.

CREATE TABLE param_versions (
    key     TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL CHECK (version >= 1),
    value   TEXT   NOT NULL,
    actor   TEXT   NOT NULL,
    at_ms   BIGINT NOT NULL,
    PRIMARY KEY (key, version)
);

-- detail is TEXT, not JSONB: JSONB reorders object keys, and the audit log
-- must read back exactly what was written on either backend.
CREATE TABLE audit_log (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms   BIGINT NOT NULL,
    actor   TEXT   NOT NULL,
    action  TEXT   NOT NULL,
    target  TEXT   NOT NULL,
    detail  TEXT   NOT NULL
);

CREATE INDEX audit_log_target ON audit_log (target, id);
