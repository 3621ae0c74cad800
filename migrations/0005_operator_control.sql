-- Operator control (contract section 11): budgets, forks, finding runs.
--
-- `budget` is the run JSON's budget (limits and use) and `cost_usd` what
-- its model answers cost; both are summary columns, written with the entries
-- that change them. A fork names its source and the last entry it copied.

ALTER TABLE runs ADD COLUMN budget jsonb;
ALTER TABLE runs ADD COLUMN cost_usd double precision NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN forked_from_run uuid;
ALTER TABLE runs ADD COLUMN forked_from_seq bigint;

-- A source's forks, for its detail view.
CREATE INDEX runs_forks_idx ON runs (forked_from_run) WHERE forked_from_run IS NOT NULL;

-- `q` matches the task anywhere, case-insensitively: a trigram index serves
-- `ILIKE '%…%'` without reading every run.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX runs_task_trgm_idx ON runs USING gin (task gin_trgm_ops);

-- The agent filter, newest first like the listing.
CREATE INDEX runs_agent_idx ON runs (agent, created_at DESC, id DESC);
