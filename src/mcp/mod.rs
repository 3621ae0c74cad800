//! MCP servers' tools for the agents: connections, the tool catalogue, calls.
//!
//! `config` reads `AGENT_MCP_CONFIG`. This file owns the connections, made
//! with the official SDK (`rmcp`): a stdio server is started on first use,
//! with only the configured environment plus `PATH`, in a process group of
//! its own (so that what it starts dies with it), its stderr logged under
//! its name, and started again when it died; an HTTP server is reached over
//! the Streamable HTTP transport with the configured headers, each call
//! carrying the caller's `traceparent` as a header and in `_meta`.
//!
//! The durable rules are the run's (`run::state`), the same as for built-in
//! tools; what this module adds is each tool's [`Hazard`], read from the
//! server's annotations when the model's answer is journaled: dangerous
//! unless `readOnlyHint` or in `safe_tools`, repeatable after a crash only
//! when `readOnlyHint` or `idempotentHint`. A tool not (or no longer) in the
//! catalogue is dangerous and not repeatable. Every failure of a server
//! (cannot start, exits, hangs past its timeout, answers nonsense) is a tool
//! result with `ok: false`, never a failed run.

pub mod config;
pub mod http;
pub mod server;

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, ClientCapabilities, ClientConfig, ClientRequest,
    ContentBlock, Implementation, RequestMetaObject, ServerResult,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::{ClientHandler, RoleClient};
use serde_json::Value;

use crate::domain::AgentName;
use crate::tools::{ToolOutcome, ToolSpec};
use config::{McpConfig, SEPARATOR, ServerConfig};

/// After a server failed to start or to list its tools, model calls go
/// without its tools for this long before it is tried again (a call of one
/// of its tools always tries, so that the model reads the real error).
const RETRY_LISTING_AFTER: Duration = Duration::from_secs(5);

/// Whether a person must approve a call, and whether a call that started
/// but left no result may simply run again after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hazard {
    pub dangerous: bool,
    pub repeatable: bool,
}

/// One tool of one server, as last listed.
#[derive(Debug, Clone)]
pub struct McpTool {
    /// `SERVER__TOOL`, what the model calls.
    pub name: String,
    pub description: String,
    pub input_schema: std::sync::Arc<Value>,
    pub hazard: Hazard,
}

/// The MCP servers of this process; empty without `AGENT_MCP_CONFIG`.
#[derive(Default)]
pub struct Mcp {
    servers: Vec<Server>,
}

impl std::fmt::Debug for Mcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.servers.iter().map(|s| &s.config.name))
            .finish()
    }
}

/// A configured server: its live session, if any, and its tools.
struct Server {
    config: ServerConfig,
    /// Held while connecting, so that concurrent first uses start one process.
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    /// The last tool list, `None` until listed or after `list_changed`.
    tools: RwLock<Option<Arc<Vec<McpTool>>>>,
    /// When starting or listing last failed.
    failed_at: Mutex<Option<Instant>>,
}

/// A connected server.
struct Session {
    service: RunningService<RoleClient, Handler>,
    /// The stdio server's process group, killed with the session.
    process_group: Option<i32>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(group) = self.process_group {
            // The SDK kills the server itself; its children go with the group.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(group),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// What the server may tell us unasked: that its tools changed.
struct Handler {
    server: String,
    stale: Arc<std::sync::atomic::AtomicBool>,
}

impl ClientHandler for Handler {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        tracing::info!(mcp_server = %self.server, "the server's tools changed; listing them again");
        self.stale.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("agent-server", env!("CARGO_PKG_VERSION")),
        )
    }
}

/// A call that could not be made; the message is what the model reads.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct McpError(String);

impl Mcp {
    /// The servers of `config`; nothing is started until it is used.
    pub fn new(config: &McpConfig) -> Mcp {
        Mcp {
            servers: config
                .servers
                .iter()
                .map(|config| Server {
                    config: config.clone(),
                    session: tokio::sync::Mutex::new(None),
                    tools: RwLock::new(None),
                    failed_at: Mutex::new(None),
                })
                .collect(),
        }
    }

    /// Servers whose tools are already listed, for tests of what the run
    /// does with them.
    #[cfg(test)]
    pub(crate) fn listed(config: &McpConfig, tools: Vec<McpTool>) -> Mcp {
        let mcp = Mcp::new(config);
        for server in &mcp.servers {
            let prefix = format!("{}{SEPARATOR}", server.config.name);
            let own = tools
                .iter()
                .filter(|t| t.name.starts_with(&prefix))
                .cloned()
                .collect();
            *server.tools.write().expect("tools lock") = Some(Arc::new(own));
        }
        mcp
    }

    /// The server `name` belongs to, with the tool's own name.
    fn route<'a>(&self, name: &'a str) -> Option<(&Server, &'a str)> {
        let (server, tool) = name.split_once(SEPARATOR)?;
        let server = self.servers.iter().find(|s| s.config.name == server)?;
        Some((server, tool))
    }

    /// Whether `name` is a tool of a configured server (listed or not).
    pub fn owns(&self, name: &str) -> bool {
        self.route(name).is_some()
    }

    /// Whether `agent` may call `name`: a tool of a server that serves it.
    pub fn offers(&self, agent: AgentName, name: &str) -> bool {
        self.route(name)
            .is_some_and(|(server, _)| server.config.serves(agent))
    }

    /// How careful to be with `name`, when it is an MCP tool: from the last
    /// listing, or, when the tool is not listed, dangerous unless the file
    /// says it is safe, and never repeated.
    pub fn hazard(&self, name: &str) -> Option<Hazard> {
        let (server, tool) = self.route(name)?;
        let listed = server.listed();
        Some(
            listed
                .and_then(|tools| tools.iter().find(|t| t.name == name).map(|t| t.hazard))
                .unwrap_or(Hazard {
                    dangerous: !server.config.safe_tools.iter().any(|s| s == tool),
                    repeatable: false,
                }),
        )
    }

    /// The tools offered to `agent`, listing (and starting) servers as
    /// needed; a server that cannot be reached offers none this time.
    pub async fn tools_for(&self, agent: AgentName) -> Vec<ToolSpec> {
        let mut specs = Vec::new();
        for server in self.servers.iter().filter(|s| s.config.serves(agent)) {
            if server.listed().is_none() && server.failed_recently() {
                continue;
            }
            match server.tools().await {
                Ok(tools) => specs.extend(tools.iter().map(|t| ToolSpec {
                    name: t.name.clone().into(),
                    description: t.description.clone().into(),
                    parameters: t.input_schema.clone(),
                })),
                Err(error) => {
                    tracing::warn!(mcp_server = %server.config.name, %error,
                        "the MCP server's tools are not offered this time");
                }
            }
        }
        specs
    }

    /// The input schema of `name`, listing its server if needed; `None`
    /// when the server does not offer it.
    pub async fn input_schema(&self, name: &str) -> Result<std::sync::Arc<Value>, String> {
        let (server, _) = self
            .route(name)
            .ok_or_else(|| format!("there is no tool `{name}`"))?;
        let tools = server.tools().await.map_err(|e| e.to_string())?;
        tools
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.input_schema.clone())
            .ok_or_else(|| format!("the MCP server no longer offers `{name}`"))
    }

    /// Calls `name` with `args`. Dropping the future sends the server the
    /// MCP cancel notification and stops waiting.
    pub async fn call(&self, name: &str, args: &Value) -> ToolOutcome {
        let Some((server, tool)) = self.route(name) else {
            return ToolOutcome::failure(format!("there is no tool `{name}`"));
        };
        match server.call(tool, args).await {
            Ok(outcome) => outcome,
            Err(error) => ToolOutcome::failure(format!(
                "the MCP server `{}` could not run `{tool}`: {error}",
                server.config.name
            )),
        }
    }
}

impl Server {
    fn listed(&self) -> Option<Arc<Vec<McpTool>>> {
        self.tools.read().expect("tools lock").clone()
    }

    fn failed_recently(&self) -> bool {
        self.failed_at
            .lock()
            .expect("failure lock")
            .is_some_and(|at| at.elapsed() < RETRY_LISTING_AFTER)
    }

    fn failed(&self) {
        *self.failed_at.lock().expect("failure lock") = Some(Instant::now());
    }

    /// The live session, starting the server when there is none or it ended.
    async fn session(&self) -> Result<Arc<Session>, McpError> {
        let mut slot = self.session.lock().await;
        if let Some(session) = slot.as_ref().filter(|s| !s.service.is_closed()) {
            return Ok(session.clone());
        }
        if slot.take().is_some() {
            tracing::warn!(mcp_server = %self.config.name, "the MCP server's session ended; starting it again");
            *self.tools.write().expect("tools lock") = None;
        }
        let stale = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handler = Handler {
            server: self.config.name.clone(),
            stale: stale.clone(),
        };
        let connecting = server::connect(&self.config, handler);
        let session = match tokio::time::timeout(self.config.timeout, connecting).await {
            Ok(Ok(session)) => Arc::new(session),
            Ok(Err(error)) => {
                self.failed();
                return Err(error);
            }
            Err(_) => {
                self.failed();
                return Err(McpError(format!(
                    "it did not start within {} s",
                    self.config.timeout.as_secs()
                )));
            }
        };
        tracing::info!(mcp_server = %self.config.name, "connected to the MCP server");
        *slot = Some(session.clone());
        Ok(session)
    }

    /// The tools, listed again when the server said they changed.
    async fn tools(&self) -> Result<Arc<Vec<McpTool>>, McpError> {
        let session = self.session().await?;
        let stale = session
            .service
            .service()
            .stale
            .swap(false, std::sync::atomic::Ordering::SeqCst);
        if !stale && let Some(tools) = self.listed() {
            return Ok(tools);
        }
        let listing = session.service.peer().list_all_tools();
        let listed = match tokio::time::timeout(self.config.timeout, listing).await {
            Ok(Ok(listed)) => listed,
            Ok(Err(error)) => {
                self.failed();
                return Err(McpError(format!("listing its tools failed: {error}")));
            }
            Err(_) => {
                self.failed();
                return Err(McpError(format!(
                    "it did not list its tools within {} s",
                    self.config.timeout.as_secs()
                )));
            }
        };
        let mut tools = Vec::with_capacity(listed.len());
        for tool in listed {
            let name = format!("{}{SEPARATOR}{}", self.config.name, tool.name);
            if name.len() > config::MAX_TOOL_NAME
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                tracing::warn!(mcp_server = %self.config.name, tool = %tool.name,
                    "not offered: model providers accept tool names of at most 64 letters, digits, `_` or `-`");
                continue;
            }
            let hints = tool.annotations.as_ref();
            let read_only = hints.and_then(|a| a.read_only_hint) == Some(true);
            let idempotent = hints.and_then(|a| a.idempotent_hint) == Some(true);
            let safe = self.config.safe_tools.iter().any(|s| *s == tool.name);
            tools.push(McpTool {
                name,
                description: tool
                    .description
                    .as_deref()
                    .unwrap_or(tool.title.as_deref().unwrap_or_default())
                    .to_string(),
                input_schema: std::sync::Arc::new(Value::Object((*tool.input_schema).clone())),
                hazard: Hazard {
                    dangerous: !(read_only || safe),
                    repeatable: read_only || idempotent,
                },
            });
        }
        let tools = Arc::new(tools);
        *self.tools.write().expect("tools lock") = Some(tools.clone());
        Ok(tools)
    }

    async fn call(&self, tool: &str, args: &Value) -> Result<ToolOutcome, McpError> {
        let arguments = match args {
            Value::Object(map) => Some(map.clone()),
            Value::Null => None,
            _ => return Err(McpError("the arguments must be a JSON object".into())),
        };
        let session = self.session().await?;
        let mut meta = RequestMetaObject::default();
        if let Some(traceparent) = crate::telemetry::trace::current_traceparent() {
            meta.set_traceparent(traceparent);
        }
        let mut params = CallToolRequestParams::new(tool.to_string());
        params.arguments = arguments;
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        let peer = session.service.peer();
        let options = PeerRequestOptions::with_timeout(self.config.timeout).with_meta(meta);
        let handle = peer
            .send_cancellable_request(request, options)
            .await
            .map_err(|e| self.ended(&session, e))?;
        let mut guard = CancelOnDrop {
            peer: Some(peer.clone()),
            id: handle.id.clone(),
        };
        let answer = handle.await_response().await;
        guard.peer = None;
        let result = match answer.map_err(|e| self.ended(&session, e))? {
            ServerResult::CallToolResult(result) => result,
            other => {
                return Err(McpError(format!(
                    "it answered the call with something else than a tool result: {}",
                    serde_json::to_string(&other).unwrap_or_default()
                )));
            }
        };
        let mut text = String::new();
        for block in &result.content {
            if !text.is_empty() {
                text.push('\n');
            }
            match block {
                ContentBlock::Text(t) => text.push_str(&t.text),
                ContentBlock::Image(image) => {
                    text.push_str(&format!("[an image, {}]", image.mime_type))
                }
                ContentBlock::Audio(audio) => {
                    text.push_str(&format!("[audio, {}]", audio.mime_type))
                }
                other => text.push_str(&serde_json::to_string(other).unwrap_or_default()),
            }
        }
        if text.is_empty()
            && let Some(structured) = &result.structured_content
        {
            text = structured.to_string();
        }
        let output = crate::tools::cap_output(&text);
        Ok(if result.is_error == Some(true) {
            ToolOutcome::failure(output)
        } else {
            ToolOutcome::success(output)
        })
    }

    /// Turns a failed request into the model's sentence; a closed transport
    /// means the server died, and the next use starts it again.
    fn ended(&self, session: &Arc<Session>, error: rmcp::service::ServiceError) -> McpError {
        use rmcp::service::ServiceError;
        match error {
            ServiceError::TransportClosed | ServiceError::TransportSend(_) => {
                if let Ok(mut slot) = self.session.try_lock()
                    && slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, session))
                {
                    *slot = None;
                }
                McpError("the connection to it ended (it is started again on next use)".into())
            }
            ServiceError::Timeout { timeout } => McpError(format!(
                "it did not answer within {} s (the call was cancelled)",
                timeout.as_secs()
            )),
            ServiceError::McpError(error) => McpError(format!("it refused: {}", error.message)),
            other => McpError(other.to_string()),
        }
    }
}

/// Sends `notifications/cancelled` when the call's future is dropped (the
/// run was cancelled, or lost its lease) before the answer came.
struct CancelOnDrop {
    peer: Option<rmcp::Peer<RoleClient>>,
    id: rmcp::model::RequestId,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(peer) = self.peer.take() else {
            return;
        };
        let id = self.id.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let notification = rmcp::model::CancelledNotification::new(
                rmcp::model::CancelledNotificationParam::new(
                    Some(id),
                    Some("the call's run stopped waiting for it".into()),
                ),
            );
            let _ = peer.send_notification(notification.into()).await;
        });
    }
}
