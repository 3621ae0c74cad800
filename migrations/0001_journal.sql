-- The run summary table and the per-run journal.
--
-- `runs` is a cache of what the journal says, kept in the same transaction as
-- the entry that changes it; `run_events` is the journal itself and the only
-- source of a run's state.

CREATE TABLE runs (
    id                    uuid PRIMARY KEY,
    status                text        NOT NULL,
    agent                 text        NOT NULL,
    task                  text        NOT NULL,
    approval_timeout_secs bigint      NOT NULL,
    idempotency_key       text        UNIQUE,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    pending_approval      jsonb,
    usage                 jsonb       NOT NULL DEFAULT '{}'::jsonb,
    result                text,
    error                 jsonb
);

-- Newest-first listing with a (created_at, id) cursor.
CREATE INDEX runs_created_idx ON runs (created_at DESC, id DESC);
-- Recovery at start looks only at unfinished runs.
CREATE INDEX runs_open_idx ON runs (status) WHERE status NOT IN ('completed', 'failed', 'cancelled');

CREATE TABLE run_events (
    run_id  uuid        NOT NULL REFERENCES runs (id),
    seq     bigint      NOT NULL,
    type    text        NOT NULL,
    agent   text,
    at      timestamptz NOT NULL,
    key     text        NOT NULL,
    payload jsonb       NOT NULL,
    PRIMARY KEY (run_id, seq),
    UNIQUE (run_id, key)
);
