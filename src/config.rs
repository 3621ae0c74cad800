//! Settings from the environment (contract section 2), read and validated once
//! at start and passed down.

use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use crate::agents::AgentName;

/// A value that must never reach a log line: `Debug` and `Display` hide it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The only way to read the value; grep for it to audit where secrets go.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Which model provider drives the runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmProvider {
    Anthropic,
    OpenAi,
    Scripted,
}

impl LlmProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            LlmProvider::Anthropic => "anthropic",
            LlmProvider::OpenAi => "openai",
            LlmProvider::Scripted => "scripted",
        }
    }
}

/// Everything the model client needs.
#[derive(Debug, Clone)]
pub struct LlmSettings {
    pub provider: LlmProvider,
    /// `LLM_MODEL`, or the provider's default.
    pub model: String,
    /// `LLM_MODEL_ORCHESTRATOR`, `LLM_MODEL_CODING`, `LLM_MODEL_LOG_ANALYZER`:
    /// an agent's own model, when it has one.
    pub agent_models: HashMap<AgentName, String>,
    /// `LLM_BASE_URL` without a trailing slash.
    pub base_url: String,
    pub api_key: Option<Secret>,
    /// `LLM_STREAMING` (default true): stream answers over SSE, or ask for
    /// whole answers, for servers that cannot stream.
    pub streaming: bool,
}

impl LlmSettings {
    /// The model an agent uses: its own, or `LLM_MODEL`.
    pub fn model_for(&self, agent: AgentName) -> &str {
        self.agent_models.get(&agent).unwrap_or(&self.model)
    }
}

/// The server's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where HTTP listens; port 0 picks a free port.
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// An external PostgreSQL; `None` runs the embedded cluster.
    pub database_url: Option<Secret>,
    pub llm: LlmSettings,
    pub workspace: PathBuf,
    pub max_iterations: u32,
    pub approval_timeout_secs: u64,
    pub loki_url: Option<String>,
    /// `AGENT_SERVER_ALLOWED_ORIGINS`: browser origins besides the server's
    /// own that may open the WebSocket, like `https://ops.example.com`.
    pub allowed_origins: Vec<String>,
    /// `AGENT_SERVER_WS_QUEUE` (default 1024): frames a WebSocket client may
    /// have waiting before it counts as too slow and is disconnected.
    pub ws_queue_frames: usize,
    /// `GRAFANA_URL`: where a browser reaches Grafana, for the dashboard's
    /// links to a run's trace; without it the dashboard shows the id only.
    pub grafana_url: Option<String>,
    /// Who may do what (contract section 9).
    pub access: AccessSettings,
    /// How `shell` commands are confined (contract section 9).
    pub sandbox: SandboxSettings,
    /// `AGENT_SERVER_INSTANCE_ID`: this process's name among the instances
    /// sharing the database; unset, the host name and a random suffix kept
    /// in the data dir (so a restarted process takes its runs back at once).
    pub instance_id: Option<String>,
    /// `AGENT_LEASE_SECS` (default 10): how long an instance's leases last
    /// without renewal; its runs are taken over within twice that.
    pub lease_secs: u64,
    /// `AGENT_RUN_MAX_TOKENS` and `AGENT_RUN_MAX_COST_USD`: the budget of a
    /// run created without one (contract section 11).
    pub default_budget: crate::domain::Budget,
    /// `AGENT_MODEL_PRICES` over the built-in prices.
    pub prices: crate::run::prices::Prices,
    /// `AGENT_MCP_CONFIG`: the MCP servers whose tools the agents use
    /// (contract section 12); none when unset.
    pub mcp: crate::mcp::config::McpConfig,
}

/// Whether requests must carry a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every request but the open ones needs a token or a session (default).
    Tokens,
    /// `AGENT_SERVER_AUTH=none`: everyone is `anonymous` with every role;
    /// refused unless the server listens on loopback only.
    None,
}

/// Tokens, roles and the limits that go with them.
#[derive(Debug, Clone)]
pub struct AccessSettings {
    pub mode: AuthMode,
    /// `AGENT_SERVER_ADMIN_TOKEN`: the `admin` token's value, for compose
    /// files and tests; without it the first start makes a random one.
    pub admin_token: Option<Secret>,
    /// `AGENT_REQUIRE_SECOND_APPROVER`: the creator of a run may not decide
    /// its approvals.
    pub require_second_approver: bool,
    /// `AGENT_RATE_LIMIT_RUNS_PER_MIN`: run creations per token per minute.
    pub runs_per_minute: u32,
    /// `AGENT_MAX_OPEN_RUNS_PER_TOKEN`: unfinished runs a token may have.
    pub max_open_runs: u32,
    /// `AGENT_SERVER_ALLOWED_HOSTS`: the `Host` values accepted, lowercase
    /// `host` or `host:port`; `None` accepts any (but see `AuthMode::None`).
    pub allowed_hosts: Option<Vec<String>>,
}

/// Which sandbox `shell` runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxKind {
    /// bubblewrap: own PID, network, IPC and mount namespaces, an
    /// unprivileged user, only the workspace writable (default).
    Bwrap,
    /// `AGENT_SANDBOX=none`: the command runs beside the server in its own
    /// process group, as the server's user; logged as a warning at start.
    None,
}

/// How `shell` commands are confined.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    pub kind: SandboxKind,
    /// `AGENT_SHELL_NETWORK`: let commands use the host's network.
    pub network: bool,
    /// `AGENT_SHELL_MEMORY_MB`: the address space a command may use, and
    /// the size of its private `/tmp`.
    pub memory_mb: u64,
    /// `AGENT_SANDBOX_UID` (default 65534, nobody/nogroup): the user and
    /// group id commands run as when the server runs as root. Servers that
    /// share a host can each have their own, so that they do not share one
    /// budget of [`SANDBOX_MAX_PROCESSES`], which the kernel counts per user.
    pub uid: u32,
}

/// The most processes one sandboxed command may have (contract section 9).
/// The kernel counts them per user, so the commands running at one time as
/// the same sandbox user share this number.
pub const SANDBOX_MAX_PROCESSES: u64 = 256;
/// The sandbox user when `AGENT_SANDBOX_UID` is unset: `nobody`, which owns
/// no files outside the workspaces handed to it.
pub const DEFAULT_SANDBOX_UID: u32 = 65_534;
/// The shortest `AGENT_SERVER_ADMIN_TOKEN` accepted: as long as the tokens the
/// server makes itself are strong.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

/// An invalid setting: names the variable and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {variable}: {problem}")]
pub struct SettingsError {
    pub variable: &'static str,
    pub problem: String,
}

/// The longest an approval may wait: 72 hours (contract section 2).
pub const MAX_APPROVAL_TIMEOUT_SECS: u64 = 259_200;

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Settings, SettingsError> {
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests need not touch the process
    /// environment. Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let invalid = |variable: &'static str, problem: String| SettingsError { variable, problem };

        let addr_text = get("AGENT_SERVER_ADDR").unwrap_or_else(|| "127.0.0.1:3200".into());
        let addr = addr_text
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| {
                invalid(
                    "AGENT_SERVER_ADDR",
                    format!("`{addr_text}` is not a HOST:PORT address"),
                )
            })?;

        let data_dir =
            PathBuf::from(get("AGENT_SERVER_DATA_DIR").unwrap_or_else(|| "./.agent-server".into()));

        let database_url = get("DATABASE_URL").map(Secret::new);
        if let Some(url) = &database_url {
            url.expose()
                .parse::<tokio_postgres::Config>()
                .map_err(|e| invalid("DATABASE_URL", format!("not a PostgreSQL URL ({e})")))?;
        }

        let anthropic_key = get("ANTHROPIC_API_KEY").map(Secret::new);
        let openai_key = get("OPENAI_API_KEY").map(Secret::new);
        let provider = match get("LLM_PROVIDER").as_deref() {
            Some("anthropic") => LlmProvider::Anthropic,
            Some("openai") => LlmProvider::OpenAi,
            Some("scripted") => LlmProvider::Scripted,
            Some(other) => {
                return Err(invalid(
                    "LLM_PROVIDER",
                    format!("`{other}` is not one of anthropic, openai, scripted"),
                ));
            }
            None if anthropic_key.is_some() => LlmProvider::Anthropic,
            None if openai_key.is_some() => LlmProvider::OpenAi,
            None => LlmProvider::Scripted,
        };
        let (default_model, default_base) = match provider {
            LlmProvider::Anthropic => ("claude-sonnet-4-20250514", "https://api.anthropic.com"),
            LlmProvider::OpenAi => ("gpt-4o-mini", "https://api.openai.com/v1"),
            LlmProvider::Scripted => ("scripted", ""),
        };
        let base_url = get("LLM_BASE_URL").unwrap_or_else(|| default_base.into());
        if provider != LlmProvider::Scripted
            && !(base_url.starts_with("http://") || base_url.starts_with("https://"))
        {
            return Err(invalid(
                "LLM_BASE_URL",
                format!("`{base_url}` is not an http:// or https:// URL"),
            ));
        }
        let agent_models = [
            (AgentName::Orchestrator, "LLM_MODEL_ORCHESTRATOR"),
            (AgentName::Coding, "LLM_MODEL_CODING"),
            (AgentName::LogAnalyzer, "LLM_MODEL_LOG_ANALYZER"),
        ]
        .into_iter()
        .filter_map(|(agent, variable)| get(variable).map(|model| (agent, model)))
        .collect();
        let streaming = parse_bool(&get, "LLM_STREAMING", true)?;
        let llm = LlmSettings {
            provider,
            model: get("LLM_MODEL").unwrap_or_else(|| default_model.into()),
            agent_models,
            streaming,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: match provider {
                LlmProvider::Anthropic => anthropic_key,
                LlmProvider::OpenAi => openai_key,
                LlmProvider::Scripted => None,
            },
        };

        let workspace = get("AGENT_WORKSPACE")
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("workspace"));

        let max_iterations = parse_number(&get, "AGENT_MAX_ITERATIONS", 50, 1, 100_000)? as u32;
        let approval_timeout_secs = parse_number(
            &get,
            "AGENT_APPROVAL_TIMEOUT_SECS",
            MAX_APPROVAL_TIMEOUT_SECS,
            1,
            MAX_APPROVAL_TIMEOUT_SECS,
        )?;

        let loki_url = get("LOKI_URL").map(|u| u.trim_end_matches('/').to_string());
        if let Some(url) = &loki_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                "LOKI_URL",
                format!("`{url}` is not an http:// or https:// URL"),
            ));
        }

        let grafana_url = get("GRAFANA_URL").map(|u| u.trim_end_matches('/').to_string());
        if let Some(url) = &grafana_url
            && (!(url.starts_with("http://") || url.starts_with("https://"))
                || url.contains(|c: char| c.is_whitespace() || c == '"' || c == '<'))
        {
            return Err(invalid(
                "GRAFANA_URL",
                format!("`{url}` is not an http:// or https:// URL"),
            ));
        }
        // Read by the telemetry set-up; checked here so a typo stops the
        // server with the others instead of quietly picking a format.
        if let Some(format) = get("LOG_FORMAT")
            && !matches!(format.as_str(), "json" | "pretty")
        {
            return Err(invalid(
                "LOG_FORMAT",
                format!("`{format}` is neither `json` nor `pretty`"),
            ));
        }

        let mut allowed_origins = Vec::new();
        for origin in get("AGENT_SERVER_ALLOWED_ORIGINS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            let origin = origin.trim_end_matches('/');
            let host = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            if host.is_none_or(|h| h.is_empty() || h.contains('/')) {
                return Err(invalid(
                    "AGENT_SERVER_ALLOWED_ORIGINS",
                    format!("`{origin}` is not an origin like https://host:port"),
                ));
            }
            allowed_origins.push(origin.to_ascii_lowercase());
        }

        let ws_queue_frames =
            parse_number(&get, "AGENT_SERVER_WS_QUEUE", 1024, 1, 1_000_000)? as usize;

        let access = access_settings(&get, addr)?;
        let sandbox = SandboxSettings {
            kind: match get("AGENT_SANDBOX").as_deref().map(str::trim) {
                None | Some("bwrap") => SandboxKind::Bwrap,
                Some("none") => SandboxKind::None,
                Some(other) => {
                    return Err(invalid(
                        "AGENT_SANDBOX",
                        format!("`{other}` is neither `bwrap` nor `none`"),
                    ));
                }
            },
            network: parse_bool(&get, "AGENT_SHELL_NETWORK", false)?,
            memory_mb: parse_number(&get, "AGENT_SHELL_MEMORY_MB", 1024, 64, 1 << 20)?,
            // Not 0, which is root, and not u32::MAX, which the kernel reads
            // as "no change" in chown and setresuid.
            uid: parse_number(
                &get,
                "AGENT_SANDBOX_UID",
                u64::from(DEFAULT_SANDBOX_UID),
                1,
                u64::from(u32::MAX - 1),
            )? as u32,
        };

        let instance_id = get("AGENT_SERVER_INSTANCE_ID").map(|id| id.trim().to_string());
        if let Some(id) = &instance_id
            && !valid_instance_id(id)
        {
            return Err(invalid(
                "AGENT_SERVER_INSTANCE_ID",
                format!("`{id}` must be 1 to 128 characters of A-Z, a-z, 0-9, `.`, `_` and `-`"),
            ));
        }
        let lease_secs = parse_number(&get, "AGENT_LEASE_SECS", 10, 1, 3600)?;
        let default_budget = crate::domain::Budget {
            max_tokens: get("AGENT_RUN_MAX_TOKENS")
                .map(|_| parse_number(&get, "AGENT_RUN_MAX_TOKENS", 0, 1, u64::MAX / 2))
                .transpose()?,
            max_cost_usd: match get("AGENT_RUN_MAX_COST_USD") {
                None => None,
                Some(text) => match text.trim().parse::<f64>() {
                    Ok(usd) if usd.is_finite() && usd > 0.0 => Some(usd),
                    _ => {
                        return Err(invalid(
                            "AGENT_RUN_MAX_COST_USD",
                            format!("`{text}` is not a number of USD greater than 0"),
                        ));
                    }
                },
            },
        };
        let prices = crate::run::prices::Prices::parse(get("AGENT_MODEL_PRICES").as_deref())
            .map_err(|problem| invalid("AGENT_MODEL_PRICES", problem))?;
        let mcp = match get("AGENT_MCP_CONFIG") {
            None => crate::mcp::config::McpConfig::default(),
            Some(path) => crate::mcp::config::McpConfig::load(std::path::Path::new(path.trim()))
                .map_err(|problem| invalid("AGENT_MCP_CONFIG", problem))?,
        };

        Ok(Settings {
            instance_id,
            lease_secs,
            default_budget,
            prices,
            mcp,
            access,
            sandbox,
            addr,
            allowed_origins,
            ws_queue_frames,
            data_dir,
            database_url,
            llm,
            workspace,
            max_iterations,
            approval_timeout_secs,
            loki_url,
            grafana_url,
        })
    }
}

/// Whether `id` may name an instance: it shows in logs, metrics and URLs.
pub fn valid_instance_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn access_settings(
    get: &impl Fn(&str) -> Option<String>,
    addr: SocketAddr,
) -> Result<AccessSettings, SettingsError> {
    let invalid = |variable: &'static str, problem: String| SettingsError { variable, problem };
    let mode = match get("AGENT_SERVER_AUTH").as_deref().map(str::trim) {
        None | Some("tokens") => AuthMode::Tokens,
        Some("none") if addr.ip().is_loopback() => AuthMode::None,
        Some("none") => {
            return Err(invalid(
                "AGENT_SERVER_AUTH",
                format!(
                    "`none` turns access checks off and is only allowed when AGENT_SERVER_ADDR is a loopback address, not {addr}"
                ),
            ));
        }
        Some(other) => {
            return Err(invalid(
                "AGENT_SERVER_AUTH",
                format!("`{other}` is neither `tokens` nor `none`"),
            ));
        }
    };
    let admin_token = get("AGENT_SERVER_ADMIN_TOKEN").map(|t| Secret::new(t.trim().to_string()));
    if let Some(token) = &admin_token {
        let value = token.expose();
        if value.chars().count() < MIN_ADMIN_TOKEN_CHARS
            || !value.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(invalid(
                "AGENT_SERVER_ADMIN_TOKEN",
                format!(
                    "must be at least {MIN_ADMIN_TOKEN_CHARS} visible ASCII characters without spaces (make one with `openssl rand -hex 32`)"
                ),
            ));
        }
    }
    let allowed_hosts = match get("AGENT_SERVER_ALLOWED_HOSTS") {
        None => None,
        Some(list) => {
            let mut hosts = Vec::new();
            for host in list.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                let valid = !host.contains(['/', '@', ' '])
                    && host
                        .rsplit_once(':')
                        .is_none_or(|(name, port)| !name.is_empty() && port.parse::<u16>().is_ok());
                if !valid {
                    return Err(invalid(
                        "AGENT_SERVER_ALLOWED_HOSTS",
                        format!("`{host}` is not a host or host:port"),
                    ));
                }
                hosts.push(host.to_ascii_lowercase());
            }
            Some(hosts)
        }
    };
    Ok(AccessSettings {
        mode,
        admin_token,
        require_second_approver: parse_bool(get, "AGENT_REQUIRE_SECOND_APPROVER", false)?,
        runs_per_minute: parse_number(get, "AGENT_RATE_LIMIT_RUNS_PER_MIN", 120, 1, 1_000_000)?
            as u32,
        max_open_runs: parse_number(get, "AGENT_MAX_OPEN_RUNS_PER_TOKEN", 1000, 1, 10_000_000)?
            as u32,
        allowed_hosts,
    })
}

fn parse_bool(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: bool,
) -> Result<bool, SettingsError> {
    match get(variable).as_deref().map(str::trim) {
        None => Ok(default),
        Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => Err(SettingsError {
            variable,
            problem: format!("`{other}` is not true or false"),
        }),
    }
}

fn parse_number(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, SettingsError> {
    let Some(text) = get(variable) else {
        return Ok(default);
    };
    match text.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(SettingsError {
            variable,
            problem: format!("`{text}` is not a whole number from {min} to {max}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_give_an_offline_scripted_server() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.addr.to_string(), "127.0.0.1:3200");
        assert_eq!(s.llm.provider, LlmProvider::Scripted);
        assert_eq!(s.max_iterations, 50);
        assert_eq!(s.approval_timeout_secs, 259_200);
        assert_eq!(s.workspace, PathBuf::from("./.agent-server/workspace"));
        assert!(s.database_url.is_none());
    }

    #[test]
    fn a_key_picks_its_provider_and_default_model() {
        let s = settings(&[("OPENAI_API_KEY", "sk-test")]).unwrap();
        assert_eq!(s.llm.provider, LlmProvider::OpenAi);
        assert_eq!(s.llm.model, "gpt-4o-mini");
        assert_eq!(s.llm.base_url, "https://api.openai.com/v1");
        let s = settings(&[("ANTHROPIC_API_KEY", "k"), ("OPENAI_API_KEY", "k")]).unwrap();
        assert_eq!(s.llm.provider, LlmProvider::Anthropic);
        assert_eq!(s.llm.model, "claude-sonnet-4-20250514");
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (var, value) in [
            ("AGENT_SERVER_ADDR", "not an address"),
            ("LLM_PROVIDER", "gemini"),
            ("AGENT_MAX_ITERATIONS", "0"),
            ("AGENT_MAX_ITERATIONS", "many"),
            ("AGENT_APPROVAL_TIMEOUT_SECS", "259201"),
            ("DATABASE_URL", "postgres://a:b@host:notaport/db"),
            ("LOKI_URL", "loki:3100"),
            ("LLM_STREAMING", "sometimes"),
            ("AGENT_SERVER_ALLOWED_ORIGINS", "ops.example.com"),
            ("GRAFANA_URL", "localhost:3000"),
            ("LOG_FORMAT", "yaml"),
            ("AGENT_SERVER_AUTH", "off"),
            ("AGENT_SERVER_ADMIN_TOKEN", "short"),
            ("AGENT_REQUIRE_SECOND_APPROVER", "yes"),
            ("AGENT_RATE_LIMIT_RUNS_PER_MIN", "0"),
            ("AGENT_MAX_OPEN_RUNS_PER_TOKEN", "-1"),
            ("AGENT_SERVER_ALLOWED_HOSTS", "http://example.com"),
            ("AGENT_SANDBOX", "docker"),
            ("AGENT_SHELL_NETWORK", "maybe"),
            ("AGENT_SHELL_MEMORY_MB", "1"),
            ("AGENT_SANDBOX_UID", "0"),
            ("AGENT_SANDBOX_UID", "4294967295"),
            ("AGENT_SERVER_INSTANCE_ID", "has space"),
            ("AGENT_LEASE_SECS", "0"),
        ] {
            let err = settings(&[(var, value)]).unwrap_err();
            assert_eq!(err.variable, var, "{value}");
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid setting {var}:"))
            );
        }
    }

    #[test]
    fn no_auth_only_on_loopback() {
        let s = settings(&[("AGENT_SERVER_AUTH", "none")]).unwrap();
        assert_eq!(s.access.mode, AuthMode::None);
        let err = settings(&[
            ("AGENT_SERVER_AUTH", "none"),
            ("AGENT_SERVER_ADDR", "0.0.0.0:3200"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "AGENT_SERVER_AUTH");
        let s = settings(&[]).unwrap();
        assert_eq!(s.access.mode, AuthMode::Tokens);
        assert_eq!(s.sandbox.kind, SandboxKind::Bwrap);
        assert!(!s.sandbox.network);
        assert_eq!(s.sandbox.memory_mb, 1024);
        assert_eq!(s.sandbox.uid, 65_534);
        assert_eq!(s.access.runs_per_minute, 120);
        assert_eq!(s.access.max_open_runs, 1000);
    }

    #[test]
    fn agents_may_have_their_own_model() {
        let s = settings(&[
            ("OPENAI_API_KEY", "k"),
            ("LLM_MODEL", "base"),
            ("LLM_MODEL_CODING", "coder"),
            ("LLM_STREAMING", "false"),
        ])
        .unwrap();
        assert_eq!(s.llm.model_for(AgentName::Coding), "coder");
        assert_eq!(s.llm.model_for(AgentName::Orchestrator), "base");
        assert!(!s.llm.streaming);
        assert!(settings(&[]).unwrap().llm.streaming);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = settings(&[("OPENAI_API_KEY", "sk-very-secret")]).unwrap();
        assert!(!format!("{s:?}").contains("sk-very-secret"));
    }
}
