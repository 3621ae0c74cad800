-- Each run is one trace; its id is shown with the run so it can be found in
-- a tracing backend. (The whole trace context is journaled in RUN_STARTED.)
ALTER TABLE runs ADD COLUMN trace_id text;
