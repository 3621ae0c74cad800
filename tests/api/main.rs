//! The API test suite: one binary, each test with its own database, port and
//! mock model server.

mod access;
mod binary;
mod cancel;
mod chaos;
mod client;
mod cluster;
mod control;
mod demo;
mod errors;
mod helpers;
mod journal;
mod mcp;
mod mcp_server;
mod metrics;
mod mock_llm;
mod network;
mod otel;
mod process;
mod providers;
mod recovery;
mod runs;
mod sandbox;
mod supervision;
mod ws;
