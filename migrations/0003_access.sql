-- Who may do what (contract section 9): API tokens, dashboard sessions, and
-- the name of the token that created each run.
--
-- A token is stored only as the SHA-256 of its value: tokens carry 256 random
-- bits, so a fast hash is enough and lets every request be checked by one
-- index lookup. A revoked token keeps its row (and so its name, which the
-- journal names as the author of what it did) with `revoked_at` set.

CREATE TABLE api_tokens (
    name         text        PRIMARY KEY CHECK (name ~ '^[a-z0-9_-]{1,64}$'),
    hash         bytea       NOT NULL UNIQUE,
    roles        text[]      NOT NULL,
    created_at   timestamptz NOT NULL,
    created_by   text        NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- A dashboard's session: the cookie holds a random secret of its own, never
-- the token, so signing out ends the session without touching the token,
-- and revoking the token ends its sessions.
CREATE TABLE api_sessions (
    hash       bytea       PRIMARY KEY,
    token_name text        NOT NULL REFERENCES api_tokens (name),
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX api_sessions_expiry_idx ON api_sessions (expires_at);

-- Runs made before tokens existed were made by nobody in particular.
ALTER TABLE runs ADD COLUMN created_by text NOT NULL DEFAULT 'anonymous';
-- Rate limits count a token's recent and open runs.
CREATE INDEX runs_creator_idx ON runs (created_by, created_at DESC);
CREATE INDEX runs_creator_open_idx ON runs (created_by)
    WHERE status NOT IN ('completed', 'failed', 'cancelled');
