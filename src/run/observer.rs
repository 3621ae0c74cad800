//! What follows a commit, in one place: every commit of a run's entries is
//! handed here once, after it is durable, and the observer feeds the live
//! feed (`realtime::Feed`), the metrics, the spans that end with those
//! entries (an approval's wait, a delegated agent, the run's root) and the
//! log lines that mark a run's milestones. The run actor only drives the
//! state machine; nothing it does after a commit is anything but this call.

use std::time::Duration;

use opentelemetry::KeyValue;
use uuid::Uuid;

use super::state::RunState;
use crate::domain::{Event, EventBody, PendingApproval, RunStatus, RunSummary};
use crate::journal;
use crate::realtime::Feed;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::trace;

/// One commit of a run, as the observer sees it.
pub struct Committed<'a> {
    pub run_id: Uuid,
    /// The run after the commit.
    pub state: &'a RunState,
    /// The entries committed, in order.
    pub events: &'a [Event],
    /// The summary after the commit, and whether the commit changed it.
    pub summary: &'a RunSummary,
    pub summary_changed: bool,
    /// The approval pending before the commit (its wait may end here).
    pub pending_before: Option<&'a PendingApproval>,
    /// The `delegate` call of the agent acting before the commit.
    pub agent_call: Option<&'a str>,
    /// How long the commit took.
    pub elapsed: Duration,
    /// The instance driving the run after the commit (`None` once parked
    /// or over).
    pub owner: Option<&'a str>,
}

/// The one observer of commits; cheap to clone.
#[derive(Clone)]
pub struct Observer {
    pub feed: Feed,
    pub metrics: Metrics,
    /// Tells the other instances, so their watchers see the commit too.
    pub announcer: crate::cluster::Announcer,
}

impl Observer {
    /// Everything that follows a commit. `span` is the run's span, for the
    /// log lines.
    pub fn committed(&self, commit: &Committed<'_>, span: &tracing::Span) {
        self.metrics.record_journal_append(commit.elapsed);
        self.metrics
            .record_committed(commit.events, commit.pending_before);
        emit_spans(commit);
        self.feed.publish_events(commit.run_id, commit.events);
        if let (Some(first), Some(last)) = (commit.events.first(), commit.events.last()) {
            self.announcer.announce(crate::cluster::Announced {
                run_id: commit.run_id,
                first: first.seq,
                last: last.seq,
                summary_changed: commit.summary_changed,
            });
        }
        if commit.summary_changed {
            if let Some(last) = commit.events.last() {
                self.feed.publish_run(&journal::RunRecord::from_state(
                    commit.state,
                    commit.summary.clone(),
                    last.at,
                    commit.owner,
                ));
            }
            log_milestone(commit, span);
        }
    }
}

impl Observer {
    /// A run was claimed by `owner` (taken over, woken from parking): its
    /// summary now names another driver, which watchers here and elsewhere
    /// see, though nothing was journaled.
    pub fn claimed(&self, state: &RunState, owner: &str) {
        self.feed.publish_run(&journal::RunRecord::from_state(
            state,
            state.summary(),
            // Newer than any summary watchers hold, so they take this one.
            journal::now(),
            Some(owner),
        ));
        self.announcer.announce(crate::cluster::Announced {
            run_id: state.run_id,
            first: state.last_seq + 1,
            last: state.last_seq,
            summary_changed: true,
        });
    }
}

/// The log line of a commit that started, parked or ended a run.
fn log_milestone(commit: &Committed<'_>, span: &tracing::Span) {
    let summary = commit.summary;
    match summary.status {
        status if status.is_terminal() => {
            tracing::info!(parent: span, status = status.as_str(), "run finished")
        }
        RunStatus::WaitingApproval => {
            if let Some(p) = &summary.pending_approval {
                tracing::info!(parent: span, tool = %p.tool, approval_id = %p.approval_id,
                    "waiting for approval");
            }
        }
        RunStatus::Pending if commit.state.last_seq == 1 => {
            tracing::info!(parent: span, agent = %commit.state.top_agent,
                created_by = %commit.state.created_by, "run created");
        }
        _ => {}
    }
}

/// Emits the spans that end with these committed entries: an approval's
/// wait, a delegated agent's activation, the run's root.
fn emit_spans(commit: &Committed<'_>) {
    let state = commit.state;
    let run_id = commit.run_id;
    for event in commit.events {
        match &event.body {
            EventBody::RunResumed {
                decision,
                decided_by,
                ..
            } => {
                if let Some(pending) = commit.pending_before {
                    let wait = (event.at - pending.requested_at).num_milliseconds() as f64 / 1000.0;
                    trace::emit(trace::FinishedSpan {
                        name: "hitl.wait_for_approval".into(),
                        trace_id: None,
                        span_id: None,
                        parent: state.trace.agent_context(commit.agent_call),
                        start: pending.requested_at,
                        end: event.at,
                        attributes: vec![
                            KeyValue::new("run.id", run_id.to_string()),
                            KeyValue::new("gen_ai.conversation.id", run_id.to_string()),
                            KeyValue::new("gen_ai.agent.name", pending.agent.as_str()),
                            KeyValue::new("gen_ai.tool.name", pending.tool.clone()),
                            KeyValue::new("gen_ai.tool.call.id", pending.call_id.clone()),
                            KeyValue::new("hitl.approval_id", pending.approval_id.to_string()),
                            KeyValue::new("hitl.decision", format!("{decision:?}").to_lowercase()),
                            KeyValue::new("hitl.decided_by", decided_by.clone()),
                            KeyValue::new("hitl.wait_seconds", wait),
                        ],
                        error: None,
                    });
                }
            }
            EventBody::AgentFinished { agent, .. } => {
                if let Some(call) = event.key.strip_prefix("agent-finished:")
                    && let Some(start) = state.agent_started_at(call)
                {
                    trace::emit_agent(
                        &state.trace,
                        run_id,
                        *agent,
                        Some(call),
                        start,
                        event.at,
                        None,
                    );
                }
            }
            EventBody::RunCompleted { .. }
            | EventBody::RunFailed { .. }
            | EventBody::RunCancelled { .. } => {
                let error = match &event.body {
                    EventBody::RunFailed { error } => Some(error.code.as_str()),
                    EventBody::RunCancelled { .. } => Some("cancelled"),
                    _ => None,
                };
                trace::emit_agent(
                    &state.trace,
                    run_id,
                    state.top_agent,
                    None,
                    state.created_at,
                    event.at,
                    error,
                );
            }
            _ => {}
        }
    }
}
