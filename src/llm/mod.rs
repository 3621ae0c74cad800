//! The model client: a provider-neutral conversation, the `ModelClient` trait
//! and its providers.
//!
//! Layout:
//! - this file: the conversation types the state machine builds, the answer a
//!   provider returns, and the error every provider maps its failures to;
//! - `openai`: the Chat Completions wire format (any OpenAI-compatible server);
//! - `scripted`: a deterministic built-in model for offline demos and tests.
//!
//! Only the provider modules know provider JSON.

pub mod openai;
pub mod scripted;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::agents::AgentName;
use crate::config::{LlmProvider, LlmSettings};
use crate::tools::ToolSpec;

/// Every model request gives up after this long, so a hung provider cannot
/// stall a run forever; generous because long answers take minutes.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A tool call the model asked for, as journaled in `AGENT_THOUGHT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's own id, or one the server made up when it gave none.
    pub call_id: String,
    pub tool: String,
    pub args: serde_json::Value,
}

/// Token counts as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }
}

/// One turn of an agent's conversation, rebuilt from the journal.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    User {
        text: String,
    },
    Assistant {
        text: String,
        tool_calls: Vec<ToolCall>,
    },
    ToolResult {
        call_id: String,
        tool: String,
        ok: bool,
        output: String,
    },
}

/// Receives the model's text as it streams in; cheap to clone. Deltas are
/// for watching only (never journaled), so a sink must not block.
pub type DeltaSink = Arc<dyn Fn(&str) + Send + Sync>;

/// Everything a provider needs for one model call.
#[derive(Clone)]
pub struct ModelRequest {
    pub run_id: Uuid,
    pub agent: AgentName,
    pub model: String,
    pub system: String,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    /// Where streamed text goes, when someone may be watching.
    pub on_delta: Option<DeltaSink>,
}

impl std::fmt::Debug for ModelRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRequest")
            .field("run_id", &self.run_id)
            .field("agent", &self.agent)
            .field("model", &self.model)
            .field("messages", &self.messages.len())
            .field("tools", &self.tools.len())
            .finish()
    }
}

/// A tool call as the provider returned it, before the server checks its id.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedCall {
    pub call_id: Option<String>,
    pub tool: String,
    pub args: serde_json::Value,
}

/// The model's answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelAnswer {
    /// The model that answered, as the provider names it.
    pub model: String,
    pub text: String,
    pub tool_calls: Vec<RequestedCall>,
    pub usage: Usage,
}

/// Why a model call failed; the message never carries a key or a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("the model request timed out after {0:?}")]
    Timeout(Duration),
    #[error("could not reach the model provider: {0}")]
    Connection(String),
    #[error("the model provider answered {status}: {message}")]
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("the model provider sent an answer that could not be read: {0}")]
    InvalidResponse(String),
}

impl Error {
    /// 429, 5xx, timeouts and connection errors are worth another attempt;
    /// any other 4xx will fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout(_) | Error::Connection(_) => true,
            Error::Status { status, .. } => *status == 429 || *status >= 500,
            Error::InvalidResponse(_) => false,
        }
    }

    /// How long the provider asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A model provider. Object-safe so the server picks one at start.
pub trait ModelClient: Send + Sync + 'static {
    /// The provider's name for logs and the start-up line (`openai`, `scripted`).
    fn provider(&self) -> &'static str;

    /// The model an agent uses.
    fn model_for(&self, agent: AgentName) -> String;

    /// Sends one request. Dropping the future aborts the request.
    fn complete(&self, request: ModelRequest) -> BoxFuture<'static, Result<ModelAnswer, Error>>;
}

/// Builds the client the settings ask for.
pub fn from_settings(settings: &LlmSettings) -> anyhow::Result<Arc<dyn ModelClient>> {
    Ok(match settings.provider {
        LlmProvider::Scripted => Arc::new(scripted::ScriptedModel),
        LlmProvider::OpenAi => Arc::new(openai::OpenAiClient::new(settings)?),
        LlmProvider::Anthropic => anyhow::bail!(
            "LLM_PROVIDER=anthropic is not available in this version; use openai (any OpenAI-compatible server) or scripted"
        ),
    })
}
