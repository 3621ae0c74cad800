//! agent-server runs LLM agents durably on PostgreSQL and lets people watch
//! and steer them.
//!
//! Layout:
//! - `cli`: `agent-server token …`, straight on the database.
//! - `cluster`: this instance among those sharing the database: its id,
//!   heartbeat and leases, claims, the runs' inboxes, notifications.
//! - `config`: settings from the environment, validated once at start.
//! - `startup`: the one wiring point (database, actors, HTTP, recovery).
//! - `telemetry`: the tracing subscriber and the metrics served at `/metrics`.
//! - `auth`: roles, identities, tokens and sessions (their hashes in
//!   PostgreSQL), and the first admin token.
//! - `domain`: the data every layer shares (agent names, journal entries,
//!   statuses, summaries, usage, trace references); imports nothing of ours.
//! - `db`: the pool, the migrations, and the embedded PostgreSQL cluster.
//! - `jcs`: canonical JSON (RFC 8785) and the `args_sha256` of approvals.
//! - `journal`: the only SQL for runs and their journal entries; appends are
//!   idempotent by key and fenced by the last `seq`, and committed together
//!   when many runs append at once (`journal::Writer`).
//! - `run`: the journal entries, the pure state machine, the run actor that
//!   performs its effects, and the registry that supervises the actors.
//! - `agents`: the agents' names, prompts and tool sets.
//! - `llm`: the provider-neutral model client and its providers.
//! - `tools`: the tools the models call, confined to the workspace; `tools::sandbox`
//!   runs `shell` commands in bubblewrap.
//! - `api`: the HTTP API, and the MCP server at `/mcp` whose tools are its
//!   endpoints' twins; the only module that knows status codes.
//! - `realtime`: what watchers see live: streamed model text (deltas).
//! - `bench`: the `agent-server bench` measurements.
//! - `mock_llm`: the `mock-llm` binary's deterministic LLM server (both
//!   providers' protocols, scripted by fixtures), also embeddable in tests.

pub mod agents;
pub mod api;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod db;
pub mod domain;
pub mod jcs;
pub mod journal;
pub mod llm;
pub mod mcp;
pub mod mock_llm;
pub mod realtime;
pub mod run;
pub mod startup;
pub mod telemetry;
pub mod tools;
