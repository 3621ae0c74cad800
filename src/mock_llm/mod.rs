//! mock-llm: a deterministic LLM server for tests and offline demos. It
//! speaks the OpenAI Chat Completions and the Anthropic Messages protocols,
//! streaming and not, with tool calls, and answers from fixtures: rules
//! matched against the conversation, first match wins.
//!
//! Layout:
//! - `fixtures`: the fixture format, loading, and the compiled-in defaults
//!   from `infra/mock-llm/` (whose README documents the format);
//! - `conversation`: one view of a request, whatever its protocol;
//! - `script`: which rule answers and what it answers (pure);
//! - `openai`, `anthropic`: the two wire formats, in and out;
//! - `server`: the routes, the shared state and the `MockLlmServer` handle.
//!
//! Architecture invariant: only `openai` and `anthropic` know provider JSON;
//! the script sees conversations and produces protocol-free answers.
//!
//! In-process use (tests): `mock_llm::start("127.0.0.1:0", rules).await?`
//! gives a handle with the real port; the server stops when it is dropped.

pub mod anthropic;
pub mod conversation;
pub mod fixtures;
pub mod openai;
pub mod script;
pub mod server;

#[cfg(test)]
mod tests;

pub use conversation::{ChatRequest, Conversation, Turn};
pub use fixtures::{Match, Protocol, Reply, Rule, defaults, load, parse};
pub use server::{MockLlmServer, RecordedRequest, serve, start};
