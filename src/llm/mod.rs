//! The model client: a provider-neutral conversation, the `ModelClient` trait
//! and its providers.
//!
//! Layout:
//! - this file: the conversation types the state machine builds, the answer a
//!   provider returns, and the error every provider maps its failures to;
//! - `anthropic`: the Anthropic Messages wire format;
//! - `openai`: the Chat Completions wire format (any OpenAI-compatible server);
//! - `sse`: the server-sent-events parser both providers stream through;
//! - `scripted`: a deterministic built-in model for offline demos and tests.
//!
//! Only the provider modules know provider JSON.

pub mod anthropic;
pub mod openai;
pub mod scripted;
pub mod sse;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::agents::AgentName;
use crate::config::{LlmProvider, LlmSettings, Secret};
pub use crate::domain::{ToolCall, Usage};
use crate::tools::ToolSpec;

/// Every model request gives up after this long, so a hung provider cannot
/// stall a run forever; generous because long answers take minutes.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

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
    /// The conversation, shared with the run's state (not copied per call).
    pub messages: std::sync::Arc<Vec<Message>>,
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
        LlmProvider::Anthropic => Arc::new(anthropic::AnthropicClient::new(settings)?),
    })
}

// What the HTTP providers share: the client, sending a request and mapping
// HTTP failures to `Error`.

/// A provider must accept the connection within this long, so an unreachable
/// host fails fast instead of using up the whole request timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Provider error messages are cut to this many characters before they reach
/// the journal: enough to explain, short enough to read.
const MAX_ERROR_MESSAGE: usize = 500;

/// The HTTP client of a provider. It has only a connect timeout: a stream may
/// rightly last longer than any total limit, so each request bounds itself
/// (`REQUEST_TIMEOUT` for whole answers, an idle timeout for streams).
fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .build()?)
}

/// Sends `request`, waiting at most `wait` for the answer's head (and for
/// the body of an error), and turns any non-2xx answer into `Error::Status`
/// with the provider's message and `Retry-After`.
async fn send(
    request: reqwest::RequestBuilder,
    wait: Duration,
    api_key: Option<&Secret>,
) -> Result<reqwest::Response, Error> {
    let response = tokio::time::timeout(wait, request.send())
        .await
        .map_err(|_| Error::Timeout(wait))?
        .map_err(|error| transport_error(error, wait))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    // Only the delay-seconds form; an HTTP date is rare from model providers
    // and the caller's own backoff covers it.
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map(Duration::from_secs_f64);
    // The status alone is still worth reporting when the body cannot be read.
    let body = tokio::time::timeout(wait, response.text())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    Err(Error::Status {
        status: status.as_u16(),
        message: error_message(&body, api_key),
        retry_after,
    })
}

/// Reads a whole JSON answer within `timeout`. A body cut off on the way is
/// a connection error, worth another attempt; a body that arrived whole but
/// is not JSON is not.
async fn read_json(
    response: reqwest::Response,
    timeout: Duration,
) -> Result<serde_json::Value, Error> {
    let body = tokio::time::timeout(timeout, response.bytes())
        .await
        .map_err(|_| Error::Timeout(timeout))?
        .map_err(|error| transport_error(error, timeout))?;
    serde_json::from_slice(&body)
        .map_err(|error| Error::InvalidResponse(format!("the answer is not JSON ({error})")))
}

/// Maps a failure of the HTTP exchange itself; `timeout` is the limit the
/// caller was waiting under.
fn transport_error(error: reqwest::Error, timeout: Duration) -> Error {
    if error.is_timeout() && error.is_connect() {
        Error::Connection(format!("no connection within {CONNECT_TIMEOUT:?}"))
    } else if error.is_timeout() {
        Error::Timeout(timeout)
    } else {
        // Without the URL: it is ours, and the user knows it. The causes say
        // what actually failed ("connection refused", "dns error").
        let error = error.without_url();
        let mut message = error.to_string();
        let mut cause = std::error::Error::source(&error);
        while let Some(inner) = cause {
            message.push_str(": ");
            message.push_str(&inner.to_string());
            cause = inner.source();
        }
        Error::Connection(message)
    }
}

/// The provider's own message from an error body. OpenAI and Anthropic both
/// put it at `error.message`; other bodies (a proxy's HTML page) are shown as
/// they are. Cut to `MAX_ERROR_MESSAGE`, and never showing the key even if a
/// provider echoes it.
fn error_message(body: &str, api_key: Option<&Secret>) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    let message = match api_key {
        Some(key) if !key.expose().is_empty() => message.replace(key.expose(), "***"),
        _ => message,
    };
    let message = shorten(&message);
    if message.is_empty() {
        "no error message".into()
    } else {
        message
    }
}

/// `message` cut to `MAX_ERROR_MESSAGE` characters.
fn shorten(message: &str) -> String {
    message.chars().take(MAX_ERROR_MESSAGE).collect()
}
