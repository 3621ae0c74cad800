//! The agents of the network: their names, system prompts and tool sets.
//!
//! Which agent acts next is decided by the run's state machine
//! (`run::state`); this module only says what each agent is.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One agent of the network, as named in the API and in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AgentName {
    Orchestrator,
    Coding,
    LogAnalyzer,
}

impl AgentName {
    /// Every agent, in the order the docs list them.
    pub const ALL: [AgentName; 3] = [
        AgentName::Orchestrator,
        AgentName::Coding,
        AgentName::LogAnalyzer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentName::Orchestrator => "orchestrator",
            AgentName::Coding => "coding",
            AgentName::LogAnalyzer => "log-analyzer",
        }
    }

    /// The tools this agent may call (contract section 6).
    pub fn tools(self) -> &'static [&'static str] {
        match self {
            AgentName::Orchestrator => &["delegate", "read_file", "list_files"],
            AgentName::Coding => &["shell", "read_file", "write_file", "list_files"],
            AgentName::LogAnalyzer => &["loki_query", "read_file", "list_files"],
        }
    }

    /// The system prompt, kept in its own file so it reads as prose.
    pub fn system_prompt(self) -> &'static str {
        match self {
            AgentName::Orchestrator => include_str!("prompts/orchestrator.md"),
            AgentName::Coding => include_str!("prompts/coding.md"),
            AgentName::LogAnalyzer => include_str!("prompts/log_analyzer.md"),
        }
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AgentName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AgentName::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!("unknown agent `{s}`; expected orchestrator, coding or log-analyzer")
            })
    }
}
