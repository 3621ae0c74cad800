-- Several instances on one PostgreSQL (contract section 10).
--
-- An instance is alive while it renews its heartbeat; its lease on every
-- run it drives lasts as long (`AGENT_LEASE_SECS`), so renewing one row
-- renews them all. A run's `owner` is the instance driving it and `epoch`
-- counts the claims of it: every journal write names the writer's epoch and
-- is refused in the same statement when it is not the current one, so an
-- instance that lost a run (killed, frozen, cut off) can never write to it
-- again. A parked run (waiting for a human) has no owner; `wake_at` is its
-- durable timer, which every instance watches.

CREATE TABLE instances (
    id           text        PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    stopped_at   timestamptz
);

ALTER TABLE runs ADD COLUMN owner text;
ALTER TABLE runs ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN wake_at timestamptz;

-- The claim scan looks at few rows whatever the number of runs: active runs
-- nobody drives, runs that have an owner (to find those of dead instances),
-- parked runs by their timer, and commands waiting. Parked runs, however
-- many, are in none of these but the timer's.
CREATE INDEX runs_undriven_idx ON runs (created_at)
    WHERE owner IS NULL AND status IN ('pending', 'running');
CREATE INDEX runs_owner_idx ON runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_wake_idx ON runs (wake_at)
    WHERE owner IS NULL AND wake_at IS NOT NULL;

-- Commands for a run (decisions, cancellations), sent by whichever instance
-- took the request and applied by the run's owner, which marks each handled
-- with its outcome in the same transaction as the journal entries it wrote.
CREATE TABLE run_inbox (
    id         bigserial   PRIMARY KEY,
    run_id     uuid        NOT NULL REFERENCES runs (id),
    command    jsonb       NOT NULL,
    created_at timestamptz NOT NULL,
    handled_at timestamptz,
    outcome    jsonb
);
CREATE INDEX run_inbox_waiting_idx ON run_inbox (run_id, id) WHERE handled_at IS NULL;
