//! The agents of the network: their names, system prompts and tool sets.
//!
//! Which agent acts next is decided by the run's state machine
//! (`run::state`); this module only says what each agent is.

pub use crate::domain::AgentName;

impl AgentName {
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
