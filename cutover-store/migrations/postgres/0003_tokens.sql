-- API tokens. Only a hash of each secret is stored (SHA-256, hex): the
-- secret itself is shown once, when the token is created. A token is never
-- deleted, only revoked, so the audit trail keeps naming real principals.
-- The same schema as migrations/sqlite/0003_tokens.sql.
CREATE TABLE api_tokens (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT COLLATE "C" NOT NULL,
    secret_hash   TEXT   NOT NULL,
    -- JSON (TEXT): {"default": role, "envs": {env: role}}.
    grants        TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    created_by    TEXT   NOT NULL,
    expires_at_ms BIGINT,
    revoked_at_ms BIGINT,
    revoked_by    TEXT
);

CREATE UNIQUE INDEX api_tokens_secret_hash ON api_tokens (secret_hash);
-- One live token per name: a name is one principal in the audit log.
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at_ms IS NULL;
