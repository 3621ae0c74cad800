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
}

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
        let streaming = match get("LLM_STREAMING").as_deref().map(str::trim) {
            None | Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            Some(other) => {
                return Err(invalid(
                    "LLM_STREAMING",
                    format!("`{other}` is not true or false"),
                ));
            }
        };
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

        Ok(Settings {
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
