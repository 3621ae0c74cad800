//! The data every layer shares, and nothing else: agent names, journal
//! entries (contract section 4), run statuses, summaries and pending
//! approvals, token usage, tool calls, a run's trace reference, and the
//! names of authors that are not tokens. This module imports nothing of
//! ours, so every arrow between modules points down to it; what the types
//! can do beyond being data lives with the modules that do it (`impl
//! AgentName` for tools and prompts in `agents`, `impl TraceRef` for spans
//! in `telemetry::trace`, folding in `run::state`).
//!
//! An entry's life: the state machine (`run::state`) creates it as an
//! `Event` with the next `seq` and a deterministic `key`, the run's writer
//! appends it in one transaction with the rest of its transition, and only
//! after the commit does anything act on it or see it. Loading a run folds
//! the same entries back through `RunState::apply`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The author of what a request did under `AGENT_SERVER_AUTH=none`, and of
/// runs journaled before runs had authors.
pub const ANONYMOUS: &str = "anonymous";

/// The author of what the server does on its own (an approval that expired).
pub const SYSTEM: &str = "system";

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

/// A tool call the model asked for, as journaled in `AGENT_THOUGHT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's own id, or one the server made up when it gave none.
    pub call_id: String,
    pub tool: String,
    pub args: serde_json::Value,
}

/// Token counts as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// A run's place in a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRef {
    /// 32 hex digits.
    pub trace_id: String,
    /// The run's root span: 16 hex digits.
    pub span_id: String,
    /// The caller's span, when the run was created inside a trace.
    pub parent_span_id: Option<String>,
    /// Whether the trace is recorded; runs journaled before this field
    /// existed were.
    #[serde(default = "sampled_by_default")]
    pub sampled: bool,
}

fn sampled_by_default() -> bool {
    true
}

/// One journal entry as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: i64,
    pub agent: Option<AgentName>,
    pub at: DateTime<Utc>,
    /// Unique within the run: writing an entry whose key exists is refused.
    pub key: String,
    #[serde(flatten)]
    pub body: EventBody,
}

/// A human's (or the clock's) answer to an approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approved,
    Rejected,
    Expired,
}

/// Why a run failed, as shown to users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunError {
    pub code: String,
    pub message: String,
}

/// The type and payload of an entry; serialized as `{"type", "payload"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventBody {
    RunStarted {
        task: String,
        agent: AgentName,
        /// Kept in the journal so the fold alone knows each approval's deadline.
        approval_timeout_secs: u64,
        /// The run's trace, the same for its whole life.
        #[serde(default)]
        trace: Option<TraceRef>,
        /// The name of the token that created the run.
        #[serde(default = "anonymous")]
        created_by: String,
        /// The run's limits (section 11); `null` for none.
        #[serde(default)]
        budget: Option<Budget>,
    },
    AgentStarted {
        agent: AgentName,
        task: String,
    },
    LlmCalled {
        agent: AgentName,
        model: String,
        attempt: u32,
    },
    AgentThought {
        agent: AgentName,
        model: String,
        text: String,
        tool_calls: Vec<ToolCall>,
        usage: Usage,
        /// What the answer cost in USD at the prices of the time it came;
        /// `null` for a model without a price.
        #[serde(default)]
        cost_usd: Option<f64>,
    },
    ToolCalled {
        call_id: String,
        tool: String,
        args: serde_json::Value,
        dangerous: bool,
        /// Whether a start without a result may simply run again after a
        /// crash; written only where it is not `!dangerous` (MCP tools that
        /// are safe but not idempotent, or approved but idempotent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        repeatable: Option<bool>,
    },
    RunSuspended {
        approval_id: Uuid,
        call_id: String,
        tool: String,
        args: serde_json::Value,
        /// `jcs::sha256_hex(args)`: what an approval must name (journals
        /// from before it was kept read as empty, and the fold recomputes).
        #[serde(default)]
        args_sha256: String,
        expires_at: DateTime<Utc>,
        interrupted: bool,
    },
    RunResumed {
        approval_id: Uuid,
        decision: Decision,
        feedback: Option<String>,
        /// The token's name, or `system` for an expiry.
        decided_by: String,
        /// Arguments an approver put in place of the model's; the tool runs
        /// with these.
        #[serde(default)]
        edited_args: Option<serde_json::Value>,
    },
    ToolStarted {
        call_id: String,
        tool: String,
    },
    ToolResult {
        call_id: String,
        tool: String,
        ok: bool,
        output: String,
        exit_code: Option<i32>,
        duration_ms: u64,
    },
    ToolInterrupted {
        call_id: String,
        tool: String,
    },
    AgentFinished {
        agent: AgentName,
        result: String,
    },
    RunCompleted {
        result: String,
    },
    RunFailed {
        error: RunError,
    },
    RunCancelled {
        reason: Option<String>,
        by: String,
    },
    /// An operator's message, read by the acting agent before its next
    /// model call.
    OperatorMessage {
        text: String,
        by: String,
    },
    RunPaused {
        reason: Option<String>,
        by: String,
    },
    RunUnpaused {
        by: String,
    },
    /// The entries before this one are copies of another run's first
    /// `from_seq`; nothing they hold is done again.
    RunForked {
        from_run_id: Uuid,
        from_seq: i64,
        by: String,
        /// The fork's own trace (its copied `RUN_STARTED` names the source's).
        #[serde(default)]
        trace: Option<TraceRef>,
    },
    BudgetExceeded {
        approval_id: Uuid,
        used_tokens: u64,
        max_tokens: Option<u64>,
        used_cost_usd: f64,
        max_cost_usd: Option<f64>,
        /// When the wait ends as a rejection.
        expires_at: DateTime<Utc>,
    },
    BudgetRaised {
        approval_id: Uuid,
        max_tokens: Option<u64>,
        max_cost_usd: Option<f64>,
        by: String,
    },
}

/// A run's limits: tokens (input and output, all agents) and USD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Budget {
    pub max_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
}

impl Budget {
    pub fn is_unlimited(&self) -> bool {
        self.max_tokens.is_none() && self.max_cost_usd.is_none()
    }
}

/// A run's budget and what it used, as the run JSON shows it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BudgetUse {
    pub max_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
    pub used_tokens: u64,
    pub used_cost_usd: f64,
}

/// Where a fork was taken: the source run and the last entry copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ForkPoint {
    pub run_id: Uuid,
    pub seq: i64,
}

/// The author of entries written before runs had authors.
fn anonymous() -> String {
    ANONYMOUS.to_string()
}

impl EventBody {
    /// The entry's `type` as stored in the journal.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::RunStarted { .. } => "RUN_STARTED",
            EventBody::AgentStarted { .. } => "AGENT_STARTED",
            EventBody::LlmCalled { .. } => "LLM_CALLED",
            EventBody::AgentThought { .. } => "AGENT_THOUGHT",
            EventBody::ToolCalled { .. } => "TOOL_CALLED",
            EventBody::RunSuspended { .. } => "RUN_SUSPENDED",
            EventBody::RunResumed { .. } => "RUN_RESUMED",
            EventBody::ToolStarted { .. } => "TOOL_STARTED",
            EventBody::ToolResult { .. } => "TOOL_RESULT",
            EventBody::ToolInterrupted { .. } => "TOOL_INTERRUPTED",
            EventBody::AgentFinished { .. } => "AGENT_FINISHED",
            EventBody::RunCompleted { .. } => "RUN_COMPLETED",
            EventBody::RunFailed { .. } => "RUN_FAILED",
            EventBody::RunCancelled { .. } => "RUN_CANCELLED",
            EventBody::OperatorMessage { .. } => "OPERATOR_MESSAGE",
            EventBody::RunPaused { .. } => "RUN_PAUSED",
            EventBody::RunUnpaused { .. } => "RUN_UNPAUSED",
            EventBody::RunForked { .. } => "RUN_FORKED",
            EventBody::BudgetExceeded { .. } => "BUDGET_EXCEEDED",
            EventBody::BudgetRaised { .. } => "BUDGET_RAISED",
        }
    }

    /// Splits the entry into the journal's `type` and `payload` columns.
    pub fn to_columns(&self) -> (&'static str, serde_json::Value) {
        let payload = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut map)) => {
                map.remove("payload").unwrap_or(serde_json::Value::Null)
            }
            // Serializing plain data to a JSON object cannot fail or give
            // another shape; keep going with an empty payload if it ever did.
            _ => serde_json::Value::Null,
        };
        (self.type_name(), payload)
    }

    /// The entry's `payload` column as JSON text, serialized straight from
    /// the entry: what `to_columns` gives, without building a
    /// `serde_json::Value` tree on the journal's write path.
    pub fn payload_text(&self) -> String {
        let mut whole = serde_json::to_string(self).unwrap_or_default();
        // Adjacently tagged, serde_json writes `{"type":"NAME","payload":P}`.
        let head = r#"{"type":""#.len() + self.type_name().len() + r#"","payload":"#.len();
        let framed = whole
            .strip_prefix(r#"{"type":""#)
            .and_then(|rest| rest.strip_prefix(self.type_name()))
            .and_then(|rest| rest.strip_prefix(r#"","payload":"#))
            .is_some_and(|rest| rest.ends_with('}'));
        if !framed {
            // A variant without a payload (`to_columns` gives null too).
            return "null".into();
        }
        whole.truncate(whole.len() - 1);
        whole.drain(..head);
        whole
    }

    /// Rebuilds an entry from the journal's `type` and `payload` columns.
    pub fn from_columns(type_name: &str, payload: serde_json::Value) -> serde_json::Result<Self> {
        serde_json::from_value(serde_json::json!({"type": type_name, "payload": payload}))
    }
}

/// A run's status, as in the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Pending,
    Running,
    WaitingApproval,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::WaitingApproval,
        RunStatus::Paused,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::WaitingApproval => "waiting_approval",
            RunStatus::Paused => "paused",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// What an approval is about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalKind {
    /// A dangerous tool call.
    #[default]
    Tool,
    /// More budget, for a run at its limit; `tool` is `budget`, `call_id`
    /// empty, and `args` says what was used of what.
    Budget,
}

/// The approval a run waits for, as shown in the run JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingApproval {
    pub approval_id: Uuid,
    #[serde(default)]
    pub kind: ApprovalKind,
    pub call_id: String,
    pub agent: AgentName,
    pub tool: String,
    #[schema(value_type = Object)]
    pub args: serde_json::Value,
    /// `jcs::sha256_hex(args)`, which a decision may name to prove what the
    /// human saw (empty in summaries from before it was kept).
    #[serde(default)]
    pub args_sha256: String,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What the summary row in `runs` says; derived from the state, never stored
/// apart from it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub status: RunStatus,
    pub pending_approval: Option<PendingApproval>,
    pub usage: BTreeMap<String, Usage>,
    pub result: Option<String>,
    pub error: Option<RunError>,
    /// `None` for a run without limits.
    pub budget: Option<BudgetUse>,
    /// What the run's model answers cost, at the prices of their time.
    pub cost_usd: f64,
}

/// Why an input was refused; nothing was journaled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    #[error("no approval with this id is waiting")]
    NoPendingApproval,
    #[error("this approval was already decided")]
    AlreadyDecided,
    #[error(
        "the arguments waiting for approval are not the ones you saw (args_sha256 differs); reload and decide again"
    )]
    ArgsChanged,
    #[error("the run has already finished")]
    AlreadyFinished,
    #[error("the run is already paused")]
    AlreadyPaused,
    #[error("the run is not paused")]
    NotPaused,
    /// A command that cannot apply as given (a budget approval without
    /// more budget, say); the text says why.
    #[error("{0}")]
    Invalid(String),
    /// An answer to something the run no longer waits for; drop it.
    #[error("the input is stale")]
    Stale,
}

/// A human's command for a run (contract sections 3, 9, 11), sent to the
/// run's inbox by whichever instance took the request and applied by the
/// run's owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    Decide {
        approval_id: Uuid,
        approved: bool,
        feedback: Option<String>,
        decided_by: String,
        args_sha256: Option<String>,
        edited_args: Option<serde_json::Value>,
        /// Budget approvals only: what to add to the run's limits.
        #[serde(default)]
        add_tokens: Option<u64>,
        #[serde(default)]
        add_cost_usd: Option<f64>,
    },
    Cancel {
        reason: Option<String>,
        by: String,
    },
    Message {
        text: String,
        by: String,
    },
    Pause {
        reason: Option<String>,
        by: String,
    },
    Unpause {
        by: String,
    },
}

/// What became of a command, as its run's owner recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CommandOutcome {
    /// Journaled.
    Done,
    /// Refused by the run; nothing was journaled.
    Refused { reason: Refusal },
    /// Its sender gave up waiting before anyone handled it; it never took
    /// effect.
    Withdrawn,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_round_trip_and_null_fields_are_present() {
        let body = EventBody::RunResumed {
            approval_id: Uuid::nil(),
            decision: Decision::Expired,
            feedback: None,
            decided_by: "system".into(),
            edited_args: None,
        };
        let (ty, payload) = body.to_columns();
        assert_eq!(ty, "RUN_RESUMED");
        assert_eq!(payload["feedback"], serde_json::Value::Null);
        assert_eq!(payload["edited_args"], serde_json::Value::Null);
        assert!(payload.as_object().unwrap().contains_key("edited_args"));
        assert!(payload.as_object().unwrap().contains_key("feedback"));
        assert_eq!(payload["decision"], "expired");
        assert_eq!(EventBody::from_columns(ty, payload).unwrap(), body);
    }

    #[test]
    fn the_payload_text_is_the_payload_column() {
        let bodies = [
            EventBody::RunResumed {
                approval_id: Uuid::nil(),
                decision: Decision::Rejected,
                feedback: Some("not \"that\" one, {payload}".into()),
                decided_by: "alice".into(),
                edited_args: Some(serde_json::json!({"cmd": ["a", {"b": null}]})),
            },
            EventBody::RunStarted {
                task: "a task with \u{0} and \u{1F600}".into(),
                agent: AgentName::Orchestrator,
                approval_timeout_secs: 60,
                trace: Some(TraceRef {
                    trace_id: "0".repeat(32),
                    span_id: "1".repeat(16),
                    parent_span_id: None,
                    sampled: true,
                }),
                created_by: "bob".into(),
                budget: None,
            },
            EventBody::ToolStarted {
                call_id: "call_1".into(),
                tool: "list_files".into(),
            },
        ];
        for body in bodies {
            let text = body.payload_text();
            let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(parsed, body.to_columns().1, "{text}");
        }
    }

    #[test]
    fn an_event_serializes_flat() {
        let event = Event {
            seq: 3,
            agent: Some(AgentName::LogAnalyzer),
            at: DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            key: "k".into(),
            body: EventBody::LlmCalled {
                agent: AgentName::LogAnalyzer,
                model: "m".into(),
                attempt: 1,
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "LLM_CALLED");
        assert_eq!(json["agent"], "log-analyzer");
        assert_eq!(json["payload"]["attempt"], 1);
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
    }
}
