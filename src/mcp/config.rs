//! `AGENT_MCP_CONFIG`: which MCP servers the agents use, read and checked once at start.
//!
//! The file has the shape other MCP clients use (`{"mcpServers": {NAME: …}}`),
//! so a configuration can be copied from one of them; `agents`, `safe_tools`
//! and `timeout_secs` are ours. Anything else, and every mistake, is refused
//! with a sentence naming the server and the field, because a server left out
//! silently would only show up as an agent that cannot do its work.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::AgentName;

/// Between a server's name and its tool's name in what the model calls.
pub const SEPARATOR: &str = "__";

/// The longest tool name the providers accept (OpenAI: 64).
pub const MAX_TOOL_NAME: usize = 64;

/// How long a server may take to start, to list its tools or to answer a
/// call, when the file does not say.
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;

/// The servers of `AGENT_MCP_CONFIG`, in name order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct McpConfig {
    pub servers: Vec<ServerConfig>,
}

/// One MCP server and who may use it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// The key in `mcpServers`; the first part of its tools' names.
    pub name: String,
    pub transport: Transport,
    /// The agents offered its tools (default: all).
    pub agents: Vec<AgentName>,
    /// Tools (by the server's own names) that need no approval.
    pub safe_tools: Vec<String>,
    /// How long starting, listing and each call may take.
    pub timeout: Duration,
}

/// How to reach a server.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// A child process speaking MCP on its stdin and stdout.
    Stdio {
        command: String,
        args: Vec<String>,
        /// The whole environment it gets, besides `PATH`.
        env: BTreeMap<String, String>,
        cwd: Option<String>,
    },
    /// The Streamable HTTP transport.
    Http {
        url: String,
        headers: BTreeMap<String, String>,
    },
}

impl ServerConfig {
    /// Whether `agent` is offered this server's tools.
    pub fn serves(&self, agent: AgentName) -> bool {
        self.agents.contains(&agent)
    }
}

/// The file as written; every field optional so that what is missing gets a
/// sentence of its own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(rename = "mcpServers")]
    mcp_servers: Option<HashMap<String, serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(rename = "type")]
    kind: Option<String>,
    command: Option<String>,
    args: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    cwd: Option<String>,
    url: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    agents: Option<Vec<String>>,
    safe_tools: Option<Vec<String>>,
    timeout_secs: Option<u64>,
}

impl McpConfig {
    /// Reads and checks the file `path`; the error is one sentence.
    pub fn load(path: &Path) -> Result<McpConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        McpConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Checks a configuration given as JSON text.
    pub fn parse(text: &str) -> Result<McpConfig, String> {
        let file: File =
            serde_json::from_str(text).map_err(|e| format!("not a valid file: {e}"))?;
        let raw = file
            .mcp_servers
            .ok_or("the object `mcpServers` is missing")?;
        let mut servers = raw
            .into_iter()
            .map(|(name, value)| server(&name, value).map_err(|e| format!("server `{name}`: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        servers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(McpConfig { servers })
    }

    /// The server whose tools start with `name`.
    pub fn server(&self, name: &str) -> Option<&ServerConfig> {
        self.servers.iter().find(|s| s.name == name)
    }
}

fn server(name: &str, value: serde_json::Value) -> Result<ServerConfig, String> {
    if name.is_empty()
        || name.contains(SEPARATOR)
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        || name.starts_with('_')
        || name.ends_with('_')
        || name.len() > MAX_TOOL_NAME / 2
    {
        return Err(format!(
            "the name must be 1 to {} letters, digits, `-` or `_`, without `{SEPARATOR}` and \
             not starting or ending with `_` (it prefixes the tools' names)",
            MAX_TOOL_NAME / 2
        ));
    }
    let raw: RawServer = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let transport = match (raw.command, raw.url) {
        (Some(_), Some(_)) => return Err("give either `command` or `url`, not both".into()),
        (None, None) => return Err("give `command` (stdio) or `url` (HTTP)".into()),
        (Some(command), None) => {
            if let Some(kind) = raw.kind.as_deref().filter(|k| *k != "stdio") {
                return Err(format!("`type` is `{kind}` but `command` is given"));
            }
            if raw.headers.is_some() {
                return Err("`headers` go with `url`".into());
            }
            if command.trim().is_empty() {
                return Err("`command` is empty".into());
            }
            let env = raw.env.unwrap_or_default();
            if let Some(bad) = env.keys().find(|k| k.is_empty() || k.contains('=')) {
                return Err(format!("`env` has an invalid variable name `{bad}`"));
            }
            Transport::Stdio {
                command,
                args: raw.args.unwrap_or_default(),
                env,
                cwd: raw.cwd,
            }
        }
        (None, Some(url)) => {
            if let Some(kind) = raw
                .kind
                .as_deref()
                .filter(|k| !matches!(*k, "http" | "streamable-http" | "streamableHttp"))
            {
                return Err(format!(
                    "`type` is `{kind}` but `url` is given (only Streamable HTTP is spoken)"
                ));
            }
            if raw.args.is_some() || raw.env.is_some() || raw.cwd.is_some() {
                return Err("`args`, `env` and `cwd` go with `command`".into());
            }
            let parsed = reqwest::Url::parse(&url).map_err(|e| format!("`url` {url:?}: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!("`url` {url:?} is not http(s)"));
            }
            let headers = raw.headers.unwrap_or_default();
            for (header, value) in &headers {
                reqwest::header::HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| format!("`headers` has an invalid name `{header}`"))?;
                reqwest::header::HeaderValue::from_str(value)
                    .map_err(|_| format!("`headers` has an invalid value for `{header}`"))?;
            }
            Transport::Http { url, headers }
        }
    };
    let agents = match raw.agents {
        None => AgentName::ALL.to_vec(),
        Some(names) => names
            .iter()
            .map(|n| {
                n.parse::<AgentName>().map_err(|_| {
                    format!(
                        "`agents` names `{n}`, which is not an agent (orchestrator, coding, \
                         log-analyzer)"
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let safe_tools = raw.safe_tools.unwrap_or_default();
    if let Some(bad) = safe_tools.iter().find(|t| t.is_empty()) {
        return Err(format!("`safe_tools` has an empty name {bad:?}"));
    }
    let timeout_secs = raw.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
    if !(1..=3600).contains(&timeout_secs) {
        return Err("`timeout_secs` must be between 1 and 3600".into());
    }
    Ok(ServerConfig {
        name: name.to_string(),
        transport,
        agents,
        safe_tools,
        timeout: Duration::from_secs(timeout_secs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_shape_other_clients_use() {
        let config = McpConfig::parse(
            r#"{"mcpServers": {
                "fs": {"command": "npx", "args": ["-y", "server-fs", "/data"], "env": {"A": "1"}},
                "remote": {"type": "http", "url": "https://example.test/mcp",
                           "headers": {"Authorization": "Bearer x"},
                           "agents": ["coding"], "safe_tools": ["search"], "timeout_secs": 5}
            }}"#,
        )
        .unwrap();
        assert_eq!(config.servers.len(), 2);
        let fs = config.server("fs").unwrap();
        assert_eq!(fs.agents, AgentName::ALL.to_vec());
        assert_eq!(fs.timeout, Duration::from_secs(DEFAULT_TIMEOUT_SECS));
        assert!(matches!(&fs.transport, Transport::Stdio { args, env, .. }
            if args.len() == 3 && env["A"] == "1"));
        let remote = config.server("remote").unwrap();
        assert!(remote.serves(AgentName::Coding));
        assert!(!remote.serves(AgentName::Orchestrator));
        assert_eq!(remote.safe_tools, ["search"]);
        assert_eq!(remote.timeout, Duration::from_secs(5));
    }

    #[test]
    fn mistakes_are_named() {
        for (text, expected) in [
            ("[]", "not a valid file"),
            ("{}", "`mcpServers` is missing"),
            (r#"{"servers": {}}"#, "unknown field `servers`"),
            (
                r#"{"mcpServers": {"a__b": {"command": "x"}}}"#,
                "server `a__b`: the name",
            ),
            (r#"{"mcpServers": {"a b": {"command": "x"}}}"#, "the name"),
            (r#"{"mcpServers": {"s": {}}}"#, "give `command`"),
            (
                r#"{"mcpServers": {"s": {"command": "x", "url": "http://h"}}}"#,
                "not both",
            ),
            (
                r#"{"mcpServers": {"s": {"command": " "}}}"#,
                "`command` is empty",
            ),
            (
                r#"{"mcpServers": {"s": {"url": "ftp://h"}}}"#,
                "not http(s)",
            ),
            (r#"{"mcpServers": {"s": {"url": "nope"}}}"#, "`url`"),
            (
                r#"{"mcpServers": {"s": {"command": "x", "agents": ["boss"]}}}"#,
                "`boss`, which is not an agent",
            ),
            (
                r#"{"mcpServers": {"s": {"command": "x", "timeout_secs": 0}}}"#,
                "`timeout_secs`",
            ),
            (
                r#"{"mcpServers": {"s": {"command": "x", "alwaysAllow": []}}}"#,
                "unknown field `alwaysAllow`",
            ),
            (
                r#"{"mcpServers": {"s": {"type": "sse", "url": "http://h"}}}"#,
                "only Streamable HTTP",
            ),
            (
                r#"{"mcpServers": {"s": {"url": "http://h", "headers": {"a b": "c"}}}}"#,
                "invalid name",
            ),
        ] {
            let error = McpConfig::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains('\n'), "one line: {error}");
        }
    }
}
