//! Journal entries (contract section 4): what each one says, as plain data.
//!
//! An entry's life: the state machine (`run::state`) creates it as a `Event`
//! with the next `seq` and a deterministic `key`, the actor appends it with
//! `journal::append` in one transaction with the rest of its transition, and
//! only after the commit does anything act on it or see it. Loading a run
//! folds the same entries back through `RunState::apply`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::agents::AgentName;
use crate::llm::{ToolCall, Usage};
use crate::telemetry::trace::TraceRef;

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
    },
    ToolCalled {
        call_id: String,
        tool: String,
        args: serde_json::Value,
        dangerous: bool,
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
}

/// The author of entries written before runs had authors.
fn anonymous() -> String {
    crate::auth::ANONYMOUS.to_string()
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

    /// Rebuilds an entry from the journal's `type` and `payload` columns.
    pub fn from_columns(type_name: &str, payload: serde_json::Value) -> serde_json::Result<Self> {
        serde_json::from_value(serde_json::json!({"type": type_name, "payload": payload}))
    }
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
