//! The run's logic as a pure state machine: `RunState::apply` folds journal
//! entries into state, and `step` turns an input (a model answer, a tool
//! result, a human decision, the clock, a cancellation, or just waking up)
//! into the entries to journal next and the one effect to perform after they
//! are committed.
//!
//! Architecture invariant: nothing here does I/O, reads the clock or draws
//! random numbers; the actor passes time and fresh ids in through `Env`.
//! Recovery after a crash is `fold` followed by `step(Input::Wake)`, the very
//! same code that drives a live run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::prices::Prices;
pub use crate::domain::Refusal;
use crate::domain::{
    AgentName, ApprovalKind, Budget, BudgetUse, Command, Decision, Event, EventBody, ForkPoint,
    PendingApproval, RunError, RunStatus, RunSummary, ToolCall, TraceRef, Usage,
};
use crate::llm::{self, Message, ModelAnswer};
use crate::tools::{self, ToolOutcome};

/// Attempts of one model call before the run fails (retryable errors only).
pub const MAX_MODEL_ATTEMPTS: u32 = 5;

/// The longest backoff between two attempts of one model call.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Feedback recorded when nobody decided in time (contract section 2).
pub const EXPIRED_FEEDBACK: &str = "approval timed out";

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Completed(String),
    Failed(RunError),
    Cancelled,
}

/// One agent's conversation; the top of the stack is the agent acting now.
#[derive(Debug, Clone)]
struct Frame {
    agent: AgentName,
    /// Shared with the model request made from it (so a call does not copy
    /// the whole conversation); written only while no request holds it.
    messages: Arc<Vec<Message>>,
    /// Calls of the agent's latest answer, in the order they run.
    open_calls: Vec<String>,
    /// The final text, once the agent answered without calling a tool.
    final_answer: Option<String>,
    /// The parent's `delegate` call this agent answers.
    parent_call: Option<String>,
}

/// Everything the journal says about one tool call.
#[derive(Debug, Clone)]
struct CallState {
    tool: String,
    args: serde_json::Value,
    /// Whether a start without a result may run again after a crash.
    repeatable: bool,
    /// True until a human approves; set again by `TOOL_INTERRUPTED`.
    needs_approval: bool,
    /// Whether an approver replaced `args` (the model must be told).
    edited: bool,
    /// A rejection or expiry waiting to become the call's `TOOL_RESULT`.
    denial: Option<(Decision, Option<String>)>,
    /// `TOOL_STARTED` entries so far (a safe tool may run again after a crash).
    starts: u32,
    /// `TOOL_INTERRUPTED` entries so far.
    interruptions: u32,
    has_result: bool,
}

impl CallState {
    fn started_without_result(&self) -> bool {
        !self.has_result && self.starts > self.interruptions
    }
}

/// A run as its journal tells it.
#[derive(Debug, Clone)]
pub struct RunState {
    pub run_id: Uuid,
    pub top_agent: AgentName,
    pub task: String,
    pub approval_timeout_secs: u64,
    pub created_at: DateTime<Utc>,
    /// The name of the token that created the run.
    pub created_by: String,
    pub last_seq: i64,
    /// The run's trace (see `telemetry::trace`).
    pub trace: TraceRef,
    /// When each delegated agent started, by its `delegate` call.
    agent_started_at: HashMap<String, DateTime<Utc>>,
    frames: Vec<Frame>,
    calls: HashMap<String, CallState>,
    /// Every approval ever asked, with its decision once made.
    approvals: HashMap<Uuid, Option<Decision>>,
    pending: Option<PendingApproval>,
    /// Model answers so far, all agents together.
    thoughts: u32,
    /// The attempt of an `LLM_CALLED` that has no answer yet.
    outstanding_attempt: Option<u32>,
    /// Whether any model call was made (`pending` until then).
    began: bool,
    usage: BTreeMap<String, Usage>,
    outcome: Option<Outcome>,
    /// The limits, as started and raised since.
    budget: Budget,
    /// The cost of every model answer so far, in USD.
    cost_usd: f64,
    paused: bool,
    /// Operators' messages the acting agent has not read yet, as the
    /// model will read them; given with the next model call.
    notes: Vec<String>,
    /// `OPERATOR_MESSAGE` entries so far (for their keys).
    messages: u32,
    /// The answers of delegated agents that finished, by their `delegate`
    /// call: the call's result, should it not be journaled yet (a fork
    /// taken between the two entries).
    delegated: HashMap<String, String>,
    pub forked_from: Option<ForkPoint>,
}

/// What the actor hands the state machine besides the input: everything
/// impure, decided outside.
#[derive(Debug, Clone)]
pub struct Env {
    pub now: DateTime<Utc>,
    /// A fresh id for an approval this step may ask for.
    pub fresh_id: Uuid,
    /// A number in `[0, 1)` for backoff jitter.
    pub jitter: f64,
    pub max_iterations: u32,
    /// The model each agent uses; shared, as it is the same for every step.
    pub models: std::sync::Arc<HashMap<AgentName, String>>,
    /// What model answers cost.
    pub prices: std::sync::Arc<Prices>,
    /// The MCP tools' hazards, read when a call is journaled.
    pub mcp: std::sync::Arc<crate::mcp::Mcp>,
    /// Whether the actor has a model call, a tool or a retry's wait under
    /// way: an input that is not its result (an operator's message, a
    /// pause) is journaled, and nothing new is planned until it returns.
    pub busy: bool,
}

impl Env {
    fn model_for(&self, agent: AgentName) -> String {
        self.models.get(&agent).cloned().unwrap_or_default()
    }

    /// The `TOOL_CALLED` entry of `call`, with how careful to be with it.
    fn tool_called(&self, call: ToolCall) -> EventBody {
        let hazard = tools::hazard(&call.tool, &self.mcp);
        EventBody::ToolCalled {
            dangerous: hazard.dangerous,
            repeatable: (hazard.repeatable == hazard.dangerous).then_some(hazard.repeatable),
            call_id: call.call_id,
            tool: call.tool,
            args: call.args,
        }
    }
}

/// Something that reached the run.
#[derive(Debug, Clone)]
pub enum Input {
    /// Nothing new: decide what to do from the state alone (start, recovery).
    Wake,
    ModelAnswered {
        answer: ModelAnswer,
    },
    ModelFailed {
        error: llm::Error,
    },
    ToolFinished {
        call_id: String,
        outcome: ToolOutcome,
        duration_ms: u64,
    },
    Decide {
        approval_id: Uuid,
        approved: bool,
        feedback: Option<String>,
        decided_by: String,
        /// The hash of the arguments the human saw; refused if they are not
        /// the ones waiting.
        args_sha256: Option<String>,
        /// Arguments to run the tool with instead (only with approval;
        /// checked against the tool's schema by the caller).
        edited_args: Option<serde_json::Value>,
        /// For a budget approval: what to add to the limits.
        add_tokens: Option<u64>,
        add_cost_usd: Option<f64>,
    },
    ApprovalExpired {
        approval_id: Uuid,
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

impl From<Command> for Input {
    fn from(command: Command) -> Input {
        match command {
            Command::Decide {
                approval_id,
                approved,
                feedback,
                decided_by,
                args_sha256,
                edited_args,
                add_tokens,
                add_cost_usd,
            } => Input::Decide {
                approval_id,
                approved,
                feedback,
                decided_by,
                args_sha256,
                edited_args,
                add_tokens,
                add_cost_usd,
            },
            Command::Cancel { reason, by } => Input::Cancel { reason, by },
            Command::Message { text, by } => Input::Message { text, by },
            Command::Pause { reason, by } => Input::Pause { reason, by },
            Command::Unpause { by } => Input::Unpause { by },
        }
    }
}

/// The one thing the actor does after committing a step's entries.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a model request (its `LLM_CALLED` is in this step's entries).
    CallModel {
        agent: AgentName,
        model: String,
        attempt: u32,
        messages: Arc<Vec<Message>>,
    },
    /// Wait, then wake up and call the model again.
    RetryModelAfter(Duration),
    /// Run a tool (its `TOOL_STARTED` is in this step's entries).
    RunTool {
        agent: AgentName,
        call_id: String,
        tool: String,
        args: serde_json::Value,
    },
    /// Wait for a human, or for the expiry.
    AwaitApproval {
        approval_id: Uuid,
        expires_at: DateTime<Utc>,
    },
    /// Step again at once with `Input::Wake` (after `start`).
    Continue,
    /// Paused: start nothing; park once the work in flight is journaled.
    Paused,
    /// Nothing to do until the work under way returns.
    Working,
    /// The run is over.
    Finished,
}

/// The entries to journal, in one transaction, and the effect that follows.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub events: Vec<Event>,
    pub effect: Effect,
}

/// What a new run is made of.
#[derive(Debug, Clone)]
pub struct Start {
    pub run_id: Uuid,
    pub agent: AgentName,
    pub task: String,
    pub approval_timeout_secs: u64,
    pub trace: TraceRef,
    /// The name of the token creating it.
    pub created_by: String,
    pub budget: Budget,
}

/// A run's first transition: its `RUN_STARTED` entry, and then stepping on
/// at once. The state is the one `fold` gives from that entry.
pub fn start(start: Start, env: &Env) -> (RunState, Transition) {
    let run_id = start.run_id;
    let event = started_entry(start, env.now);
    let state = match RunState::start(run_id, &event) {
        Some(state) => state,
        // `RunState::start` accepts every `RUN_STARTED` entry.
        None => unreachable!("a RUN_STARTED entry starts a run"),
    };
    (
        state,
        Transition {
            events: vec![event],
            effect: Effect::Continue,
        },
    )
}

/// The `RUN_STARTED` entry of a run made at `at`.
pub fn started_entry(start: Start, at: DateTime<Utc>) -> Event {
    Event {
        seq: 1,
        agent: Some(start.agent),
        at,
        key: "run-started".into(),
        body: EventBody::RunStarted {
            task: start.task,
            agent: start.agent,
            approval_timeout_secs: start.approval_timeout_secs,
            trace: Some(start.trace),
            created_by: start.created_by,
            budget: (!start.budget.is_unlimited()).then_some(start.budget),
        },
    }
}

/// What a fork is made of (contract section 11).
#[derive(Debug, Clone)]
pub struct Fork {
    /// The new run's id.
    pub run_id: Uuid,
    pub from_run_id: Uuid,
    /// The last entry of the source that the fork copies.
    pub from_seq: i64,
    /// The name of the token forking.
    pub by: String,
    /// The fork's own trace.
    pub trace: TraceRef,
    /// An operator's message the fork starts with.
    pub message: Option<String>,
}

/// A fork's first transition: the state the copied entries `prefix` fold
/// to, then its `RUN_FORKED` entry (and the message), and stepping on at
/// once. What the copies hold is in the state and is never done again; what
/// was in flight at the fork point follows the recovery rules, and an
/// approval that waited there is asked again. Refused for a prefix that
/// ends the run.
pub fn fork(prefix: &[Event], fork: Fork, env: &Env) -> Result<(RunState, Transition), Refusal> {
    let Some(mut state) = self::fold(fork.run_id, prefix) else {
        return Err(Refusal::Invalid(
            "a fork must copy at least the source's first entry".into(),
        ));
    };
    if state.is_terminal() {
        return Err(Refusal::Invalid(
            "the entry at at_seq ends the run; fork from an entry before it".into(),
        ));
    }
    let mut builder = Builder {
        state: &mut state,
        env,
        events: Vec::new(),
    };
    let agent = Some(builder.state.current_agent());
    // Keyed by where it was taken: a fork of a fork copies its source's
    // `RUN_FORKED`, which was taken at an earlier entry.
    builder.push(
        agent,
        format!("forked:{}", fork.from_seq),
        EventBody::RunForked {
            from_run_id: fork.from_run_id,
            from_seq: fork.from_seq,
            by: fork.by.clone(),
            trace: Some(fork.trace),
        },
    );
    if let Some(text) = fork.message {
        let key = format!("message:{}", builder.state.messages + 1);
        builder.push(agent, key, EventBody::OperatorMessage { text, by: fork.by });
    }
    let events = builder.events;
    Ok((
        state,
        Transition {
            events,
            effect: Effect::Continue,
        },
    ))
}

/// Rebuilds a run's state from its whole journal.
pub fn fold(run_id: Uuid, events: &[Event]) -> Option<RunState> {
    let (first, rest) = events.split_first()?;
    let mut state = RunState::start(run_id, first)?;
    for event in rest {
        state.apply(event);
    }
    Some(state)
}

/// Applies `input`, then plans up to the next effect. The returned entries
/// are already applied to `state`; if they fail to commit, the caller must
/// throw `state` away and fold the journal again.
pub fn step(state: &mut RunState, input: Input, env: &Env) -> Result<Transition, Refusal> {
    let mut builder = Builder {
        state,
        env,
        events: Vec::new(),
    };
    if let Some(effect) = builder.accept(input)? {
        return Ok(Transition {
            events: builder.events,
            effect,
        });
    }
    let effect = builder.plan();
    Ok(Transition {
        events: builder.events,
        effect,
    })
}

impl RunState {
    /// The state after `RUN_STARTED`; `None` if the first entry is anything else.
    pub fn start(run_id: Uuid, first: &Event) -> Option<RunState> {
        let EventBody::RunStarted {
            task,
            agent,
            approval_timeout_secs,
            trace,
            created_by,
            budget,
        } = &first.body
        else {
            return None;
        };
        Some(RunState {
            run_id,
            top_agent: *agent,
            task: task.clone(),
            approval_timeout_secs: *approval_timeout_secs,
            created_at: first.at,
            created_by: created_by.clone(),
            last_seq: first.seq,
            trace: trace.clone().unwrap_or_else(|| TraceRef {
                trace_id: run_id.simple().to_string(),
                span_id: format!("{:016x}", run_id.as_u64_pair().1 | 1),
                parent_span_id: None,
                sampled: true,
            }),
            agent_started_at: HashMap::new(),
            frames: vec![Frame::new(*agent, task.clone(), None)],
            calls: HashMap::new(),
            approvals: HashMap::new(),
            pending: None,
            thoughts: 0,
            outstanding_attempt: None,
            began: false,
            usage: BTreeMap::new(),
            outcome: None,
            budget: budget.unwrap_or_default(),
            cost_usd: 0.0,
            paused: false,
            notes: Vec::new(),
            messages: 0,
            delegated: HashMap::new(),
            forked_from: None,
        })
    }

    pub fn status(&self) -> RunStatus {
        match (&self.outcome, &self.pending) {
            (Some(Outcome::Completed(_)), _) => RunStatus::Completed,
            (Some(Outcome::Failed(_)), _) => RunStatus::Failed,
            (Some(Outcome::Cancelled), _) => RunStatus::Cancelled,
            (None, _) if self.paused => RunStatus::Paused,
            (None, Some(_)) => RunStatus::WaitingApproval,
            (None, None) if self.began => RunStatus::Running,
            (None, None) => RunStatus::Pending,
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.outcome.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Tokens used so far, input and output, all agents.
    pub fn used_tokens(&self) -> u64 {
        self.usage
            .values()
            .map(|u| u.input_tokens + u.output_tokens)
            .sum()
    }

    /// The budget and its use; `None` for a run without limits.
    pub fn budget_use(&self) -> Option<BudgetUse> {
        (!self.budget.is_unlimited()).then(|| BudgetUse {
            max_tokens: self.budget.max_tokens,
            max_cost_usd: self.budget.max_cost_usd,
            used_tokens: self.used_tokens(),
            used_cost_usd: self.cost_usd,
        })
    }

    /// Whether the run may not call a model before its budget is raised.
    fn over_budget(&self) -> bool {
        self.budget
            .max_tokens
            .is_some_and(|max| self.used_tokens() >= max)
            || self
                .budget
                .max_cost_usd
                .is_some_and(|max| self.cost_usd >= max)
    }

    pub fn pending_approval(&self) -> Option<&PendingApproval> {
        self.pending.as_ref()
    }

    /// The `delegate` call that started the agent acting now (`None` for the
    /// run's own agent).
    pub fn current_agent_call(&self) -> Option<&str> {
        self.frames.last().and_then(|f| f.parent_call.as_deref())
    }

    /// When the delegated agent started by `call` began.
    pub fn agent_started_at(&self, call: &str) -> Option<DateTime<Utc>> {
        self.agent_started_at.get(call).copied()
    }

    /// The agent acting now.
    pub fn current_agent(&self) -> AgentName {
        self.frames.last().map_or(self.top_agent, |f| f.agent)
    }

    pub fn summary(&self) -> RunSummary {
        RunSummary {
            status: self.status(),
            pending_approval: self.pending.clone(),
            usage: self.usage.clone(),
            result: match &self.outcome {
                Some(Outcome::Completed(result)) => Some(result.clone()),
                _ => None,
            },
            error: match &self.outcome {
                Some(Outcome::Failed(error)) => Some(error.clone()),
                _ => None,
            },
            budget: self.budget_use(),
            cost_usd: self.cost_usd,
        }
    }

    /// Folds one committed entry into the state. Entries that contradict the
    /// state (which the journal's constraints prevent) are ignored rather than
    /// trusted.
    pub fn apply(&mut self, event: &Event) {
        self.last_seq = event.seq;
        if self.outcome.is_some() {
            return;
        }
        match &event.body {
            EventBody::RunStarted { .. } => {}
            EventBody::AgentStarted { agent, task } => {
                let parent_call = self.first_open_call();
                if let Some(call) = &parent_call {
                    self.agent_started_at.insert(call.clone(), event.at);
                }
                self.frames
                    .push(Frame::new(*agent, task.clone(), parent_call));
            }
            EventBody::LlmCalled { attempt, .. } => {
                self.began = true;
                self.outstanding_attempt = Some(*attempt);
                // The call carries the operators' messages: read now.
                let notes = std::mem::take(&mut self.notes);
                if let Some(frame) = self.frames.last_mut() {
                    frame.final_answer = None;
                    if !notes.is_empty() {
                        Arc::make_mut(&mut frame.messages)
                            .extend(notes.into_iter().map(|text| Message::User { text }));
                    }
                }
            }
            EventBody::AgentThought {
                agent,
                text,
                tool_calls,
                usage,
                cost_usd,
                ..
            } => {
                self.outstanding_attempt = None;
                self.thoughts += 1;
                self.cost_usd += cost_usd.unwrap_or(0.0);
                self.usage
                    .entry(agent.as_str().to_string())
                    .or_default()
                    .add(*usage);
                if let Some(frame) = self.frames.last_mut() {
                    Arc::make_mut(&mut frame.messages).push(Message::Assistant {
                        text: text.clone(),
                        tool_calls: tool_calls.clone(),
                    });
                    frame.open_calls = tool_calls.iter().map(|c| c.call_id.clone()).collect();
                    frame.final_answer = tool_calls.is_empty().then(|| text.clone());
                }
            }
            EventBody::ToolCalled {
                call_id,
                tool,
                args,
                dangerous,
                repeatable,
            } => {
                self.calls.insert(
                    call_id.clone(),
                    CallState {
                        tool: tool.clone(),
                        args: args.clone(),
                        repeatable: repeatable.unwrap_or(!*dangerous),
                        needs_approval: *dangerous,
                        edited: false,
                        denial: None,
                        starts: 0,
                        interruptions: 0,
                        has_result: false,
                    },
                );
            }
            EventBody::RunSuspended {
                approval_id,
                call_id,
                tool,
                args,
                args_sha256,
                expires_at,
                ..
            } => {
                self.approvals.insert(*approval_id, None);
                self.pending = Some(PendingApproval {
                    approval_id: *approval_id,
                    kind: ApprovalKind::Tool,
                    call_id: call_id.clone(),
                    agent: event.agent.unwrap_or(self.current_agent()),
                    tool: tool.clone(),
                    args: args.clone(),
                    args_sha256: if args_sha256.is_empty() {
                        crate::jcs::sha256_hex(args)
                    } else {
                        args_sha256.clone()
                    },
                    requested_at: event.at,
                    expires_at: *expires_at,
                });
            }
            EventBody::RunResumed {
                approval_id,
                decision,
                feedback,
                edited_args,
                ..
            } => {
                self.approvals.insert(*approval_id, Some(*decision));
                let Some(pending) = self.pending.take_if(|p| p.approval_id == *approval_id) else {
                    return;
                };
                if let Some(call) = self.calls.get_mut(&pending.call_id) {
                    match decision {
                        Decision::Approved => {
                            call.needs_approval = false;
                            if let Some(args) = edited_args {
                                call.args = args.clone();
                                call.edited = true;
                            }
                        }
                        Decision::Rejected | Decision::Expired => {
                            call.denial = Some((*decision, feedback.clone()))
                        }
                    }
                }
            }
            EventBody::ToolStarted { call_id, .. } => {
                if let Some(call) = self.calls.get_mut(call_id) {
                    call.starts += 1;
                }
            }
            EventBody::ToolResult {
                call_id,
                tool,
                ok,
                output,
                ..
            } => {
                if let Some(call) = self.calls.get_mut(call_id) {
                    call.has_result = true;
                }
                if let Some(frame) = self.frames.last_mut() {
                    Arc::make_mut(&mut frame.messages).push(Message::ToolResult {
                        call_id: call_id.clone(),
                        tool: tool.clone(),
                        ok: *ok,
                        output: output.clone(),
                    });
                }
            }
            EventBody::ToolInterrupted { call_id, .. } => {
                if let Some(call) = self.calls.get_mut(call_id) {
                    call.interruptions = call.starts;
                    call.needs_approval = true;
                }
            }
            EventBody::AgentFinished { result, .. } => {
                if self.frames.len() > 1
                    && let Some(frame) = self.frames.pop()
                    && let Some(call) = frame.parent_call
                {
                    self.delegated.insert(call, result.clone());
                }
            }
            EventBody::RunCompleted { result } => {
                self.outcome = Some(Outcome::Completed(result.clone()))
            }
            EventBody::RunFailed { error } => self.outcome = Some(Outcome::Failed(error.clone())),
            EventBody::RunCancelled { .. } => self.outcome = Some(Outcome::Cancelled),
            EventBody::OperatorMessage { text, by } => {
                self.messages += 1;
                self.notes.push(operator_note(by, text));
            }
            EventBody::RunPaused { .. } => self.paused = true,
            EventBody::RunUnpaused { .. } => self.paused = false,
            EventBody::RunForked {
                from_run_id,
                from_seq,
                by,
                trace,
            } => {
                self.forked_from = Some(ForkPoint {
                    run_id: *from_run_id,
                    seq: *from_seq,
                });
                self.created_by = by.clone();
                if let Some(trace) = trace {
                    self.trace = trace.clone();
                }
                // The fork goes on, whatever its source was doing.
                self.paused = false;
                // Whatever waited at the fork point is asked again in the
                // fork, with its own id and deadline: the source's id stays
                // the source's.
                if let Some(pending) = self.pending.take() {
                    self.approvals.remove(&pending.approval_id);
                }
            }
            EventBody::BudgetExceeded {
                approval_id,
                used_tokens,
                max_tokens,
                used_cost_usd,
                max_cost_usd,
                expires_at,
            } => {
                self.approvals.insert(*approval_id, None);
                let args = serde_json::json!({
                    "used_tokens": used_tokens,
                    "max_tokens": max_tokens,
                    "used_cost_usd": used_cost_usd,
                    "max_cost_usd": max_cost_usd,
                });
                self.pending = Some(PendingApproval {
                    approval_id: *approval_id,
                    kind: ApprovalKind::Budget,
                    call_id: String::new(),
                    agent: event.agent.unwrap_or(self.current_agent()),
                    tool: BUDGET_TOOL.into(),
                    args_sha256: crate::jcs::sha256_hex(&args),
                    args,
                    requested_at: event.at,
                    expires_at: *expires_at,
                });
            }
            EventBody::BudgetRaised {
                approval_id,
                max_tokens,
                max_cost_usd,
                ..
            } => {
                self.approvals
                    .insert(*approval_id, Some(Decision::Approved));
                self.pending.take_if(|p| p.approval_id == *approval_id);
                self.budget = Budget {
                    max_tokens: *max_tokens,
                    max_cost_usd: *max_cost_usd,
                };
            }
        }
        if self.outcome.is_some() {
            self.pending = None;
        }
    }

    /// The calls of the acting agent's latest answer that have no
    /// `TOOL_CALLED` entry.
    fn unrecorded_calls(&self) -> Vec<ToolCall> {
        let Some(frame) = self.frames.last() else {
            return Vec::new();
        };
        if frame
            .open_calls
            .iter()
            .all(|id| self.calls.contains_key(id))
        {
            return Vec::new();
        }
        match frame.messages.iter().rev().find_map(|m| match m {
            Message::Assistant { tool_calls, .. } => Some(tool_calls),
            _ => None,
        }) {
            Some(calls) => calls
                .iter()
                .filter(|c| !self.calls.contains_key(&c.call_id))
                .cloned()
                .collect(),
            None => Vec::new(),
        }
    }

    /// The first call of the current agent's latest answer without a result.
    fn first_open_call(&self) -> Option<String> {
        let frame = self.frames.last()?;
        frame
            .open_calls
            .iter()
            .find(|id| self.calls.get(*id).is_some_and(|c| !c.has_result))
            .cloned()
    }
}

/// The `tool` of a budget approval in `pending_approval`.
pub const BUDGET_TOOL: &str = "budget";

/// An operator's message as the model reads it.
fn operator_note(by: &str, text: &str) -> String {
    format!(
        "Message from the human operator `{by}` (sent while you work; take it into account):\n\n{text}"
    )
}

impl Frame {
    fn new(agent: AgentName, task: String, parent_call: Option<String>) -> Frame {
        Frame {
            agent,
            messages: Arc::new(vec![Message::User { text: task }]),
            open_calls: Vec::new(),
            final_answer: None,
            parent_call,
        }
    }
}

/// Collects the entries of one step, applying each as it is made.
struct Builder<'a> {
    state: &'a mut RunState,
    env: &'a Env,
    events: Vec<Event>,
}

/// What the planner found to do next.
enum Next {
    Append(Vec<(Option<AgentName>, String, EventBody)>),
    Effect {
        /// Boxed: an entry is much larger than the other variants.
        prefix: Box<(Option<AgentName>, String, EventBody)>,
        effect: Effect,
    },
    Idle(Effect),
}

impl Builder<'_> {
    fn push(&mut self, agent: Option<AgentName>, key: String, body: EventBody) {
        let event = Event {
            seq: self.state.last_seq + 1,
            agent,
            at: self.env.now,
            key,
            body,
        };
        self.state.apply(&event);
        self.events.push(event);
    }

    /// Journals what the input says; `Some(effect)` ends the step early.
    fn accept(&mut self, input: Input) -> Result<Option<Effect>, Refusal> {
        let agent = Some(self.state.current_agent());
        match input {
            Input::Wake => {
                if self.state.is_terminal() {
                    return Ok(Some(Effect::Finished));
                }
            }
            Input::ModelAnswered { answer } => {
                if self.state.is_terminal() || self.state.outstanding_attempt.is_none() {
                    return Err(Refusal::Stale);
                }
                self.accept_answer(answer);
            }
            Input::ModelFailed { error } => {
                let Some(attempt) = self.state.outstanding_attempt else {
                    return Err(Refusal::Stale);
                };
                if self.state.is_terminal() {
                    return Err(Refusal::Stale);
                }
                if error.is_retryable() && attempt < MAX_MODEL_ATTEMPTS {
                    return Ok(Some(Effect::RetryModelAfter(self.backoff(attempt, &error))));
                }
                let message = if error.is_retryable() {
                    format!("the model call failed {attempt} times; the last error: {error}")
                } else {
                    error.to_string()
                };
                self.push(
                    agent,
                    TERMINAL_KEY.into(),
                    EventBody::RunFailed {
                        error: RunError {
                            code: "llm_error".into(),
                            message,
                        },
                    },
                );
            }
            Input::ToolFinished {
                call_id,
                outcome,
                duration_ms,
            } => {
                let Some(call) = self.state.calls.get(&call_id) else {
                    return Err(Refusal::Stale);
                };
                if self.state.is_terminal() || !call.started_without_result() {
                    return Err(Refusal::Stale);
                }
                let tool = call.tool.clone();
                let output = if call.edited {
                    edited_note(&call.args, &outcome.output)
                } else {
                    outcome.output
                };
                self.push(
                    agent,
                    format!("tool-result:{call_id}"),
                    EventBody::ToolResult {
                        call_id,
                        tool,
                        ok: outcome.ok,
                        output,
                        exit_code: outcome.exit_code,
                        duration_ms,
                    },
                );
            }
            Input::Decide {
                approval_id,
                approved,
                feedback,
                decided_by,
                args_sha256,
                edited_args,
                add_tokens,
                add_cost_usd,
            } => {
                self.check_decidable(approval_id)?;
                if let Some(seen) = args_sha256
                    && self
                        .state
                        .pending
                        .as_ref()
                        .is_some_and(|p| !p.args_sha256.eq_ignore_ascii_case(seen.trim()))
                {
                    return Err(Refusal::ArgsChanged);
                }
                let budget = self
                    .state
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.kind == ApprovalKind::Budget);
                if budget {
                    if edited_args.is_some() {
                        return Err(Refusal::Invalid(
                            "a budget approval has no arguments to edit; send add_tokens or add_cost_usd".into(),
                        ));
                    }
                    if approved {
                        self.raise_budget(approval_id, add_tokens, add_cost_usd, decided_by)?;
                    } else {
                        self.resume(approval_id, Decision::Rejected, feedback, decided_by, None);
                    }
                    return Ok(None);
                }
                if add_tokens.is_some() || add_cost_usd.is_some() {
                    return Err(Refusal::Invalid(
                        "add_tokens and add_cost_usd answer a budget approval; this one is for a tool call".into(),
                    ));
                }
                let (decision, edited_args) = if approved {
                    (Decision::Approved, edited_args)
                } else {
                    (Decision::Rejected, None)
                };
                self.resume(approval_id, decision, feedback, decided_by, edited_args);
            }
            Input::ApprovalExpired { approval_id } => {
                self.check_decidable(approval_id)
                    .map_err(|_| Refusal::Stale)?;
                let due = self
                    .state
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.expires_at <= self.env.now);
                if due {
                    self.resume(
                        approval_id,
                        Decision::Expired,
                        Some(EXPIRED_FEEDBACK.into()),
                        crate::auth::SYSTEM.into(),
                        None,
                    );
                }
            }
            Input::Cancel { reason, by } => {
                if self.state.is_terminal() {
                    return Err(Refusal::AlreadyFinished);
                }
                self.push(
                    agent,
                    TERMINAL_KEY.into(),
                    EventBody::RunCancelled { reason, by },
                );
            }
            Input::Message { text, by } => {
                if self.state.is_terminal() {
                    return Err(Refusal::AlreadyFinished);
                }
                let key = format!("message:{}", self.state.messages + 1);
                self.push(agent, key, EventBody::OperatorMessage { text, by });
            }
            Input::Pause { reason, by } => {
                if self.state.is_terminal() {
                    return Err(Refusal::AlreadyFinished);
                }
                if self.state.paused {
                    return Err(Refusal::AlreadyPaused);
                }
                let key = format!("paused:{}", self.state.last_seq + 1);
                self.push(agent, key, EventBody::RunPaused { reason, by });
            }
            Input::Unpause { by } => {
                if self.state.is_terminal() {
                    return Err(Refusal::AlreadyFinished);
                }
                if !self.state.paused {
                    return Err(Refusal::NotPaused);
                }
                let key = format!("unpaused:{}", self.state.last_seq + 1);
                self.push(agent, key, EventBody::RunUnpaused { by });
            }
        }
        Ok(None)
    }

    /// Approves more budget: each limit the run has grows by what is added
    /// to it (a dimension without a limit stays without one), and the new
    /// limits must let the run go on.
    fn raise_budget(
        &mut self,
        approval_id: Uuid,
        add_tokens: Option<u64>,
        add_cost_usd: Option<f64>,
        by: String,
    ) -> Result<(), Refusal> {
        if add_tokens.is_none() && add_cost_usd.is_none() {
            return Err(Refusal::Invalid(
                "approving a budget needs add_tokens or add_cost_usd (or both)".into(),
            ));
        }
        let old = self.state.budget;
        let raised = Budget {
            max_tokens: old
                .max_tokens
                .map(|max| max.saturating_add(add_tokens.unwrap_or(0))),
            max_cost_usd: old
                .max_cost_usd
                .map(|max| max + add_cost_usd.unwrap_or(0.0)),
        };
        let used_tokens = self.state.used_tokens();
        if let Some(max) = raised.max_tokens.filter(|max| used_tokens >= *max) {
            return Err(Refusal::Invalid(format!(
                "the run used {used_tokens} tokens; a limit of {max} still stops it: add more than {} tokens",
                used_tokens - max
            )));
        }
        if let Some(max) = raised
            .max_cost_usd
            .filter(|max| self.state.cost_usd >= *max)
        {
            return Err(Refusal::Invalid(format!(
                "the run used {:.6} USD; a limit of {max:.6} USD still stops it: add more than {:.6} USD",
                self.state.cost_usd,
                self.state.cost_usd - max
            )));
        }
        let agent = self.state.pending.as_ref().map(|p| p.agent);
        self.push(
            agent,
            format!("budget-raised:{approval_id}"),
            EventBody::BudgetRaised {
                approval_id,
                max_tokens: raised.max_tokens,
                max_cost_usd: raised.max_cost_usd,
                by,
            },
        );
        Ok(())
    }

    fn check_decidable(&self, approval_id: Uuid) -> Result<(), Refusal> {
        match self.state.approvals.get(&approval_id) {
            Some(Some(_)) => Err(Refusal::AlreadyDecided),
            Some(None) if !self.state.is_terminal() => Ok(()),
            // Asked but never decided before the run ended (cancelled while
            // waiting): nothing waits for it any more.
            Some(None) | None => Err(Refusal::NoPendingApproval),
        }
    }

    fn resume(
        &mut self,
        approval_id: Uuid,
        decision: Decision,
        feedback: Option<String>,
        decided_by: String,
        edited_args: Option<serde_json::Value>,
    ) {
        let agent = self.state.pending.as_ref().map(|p| p.agent);
        let budget = self
            .state
            .pending
            .as_ref()
            .is_some_and(|p| p.kind == ApprovalKind::Budget);
        let failure = budget.then(|| RunError {
            code: "budget_exceeded".into(),
            message: match decision {
                Decision::Expired => format!(
                    "the run reached its budget and nobody raised it within {} seconds",
                    self.state.approval_timeout_secs
                ),
                _ => format!("the run reached its budget and `{decided_by}` declined to raise it"),
            },
        });
        self.push(
            agent,
            format!("resumed:{approval_id}"),
            EventBody::RunResumed {
                approval_id,
                decision,
                feedback,
                decided_by,
                edited_args,
            },
        );
        if let Some(error) = failure {
            self.push(agent, TERMINAL_KEY.into(), EventBody::RunFailed { error });
        }
    }

    fn accept_answer(&mut self, answer: ModelAnswer) {
        let agent = self.state.current_agent();
        let requested = self.env.model_for(agent);
        let cost_usd = self
            .env
            .prices
            .cost(&[answer.model.as_str(), requested.as_str()], answer.usage);
        let thought = self.state.thoughts + 1;
        let mut seen: HashSet<String> = HashSet::new();
        let tool_calls: Vec<ToolCall> = answer
            .tool_calls
            .into_iter()
            .enumerate()
            .map(|(index, call)| {
                // The provider's id, unless it gave none or reused one: ids
                // must be unique within the run for the journal's keys.
                let call_id = call
                    .call_id
                    .filter(|id| {
                        !id.is_empty() && !self.state.calls.contains_key(id) && !seen.contains(id)
                    })
                    .unwrap_or_else(|| format!("call_{thought}_{index}"));
                seen.insert(call_id.clone());
                ToolCall {
                    call_id,
                    tool: call.tool,
                    args: call.args,
                }
            })
            .collect();
        self.push(
            Some(agent),
            format!("thought:{thought}"),
            EventBody::AgentThought {
                agent,
                model: answer.model,
                text: answer.text,
                tool_calls: tool_calls.clone(),
                usage: answer.usage,
                cost_usd,
            },
        );
        for call in tool_calls {
            let key = format!("tool-called:{}", call.call_id);
            let body = self.env.tool_called(call);
            self.push(Some(agent), key, body);
        }
    }

    fn backoff(&self, attempt: u32, error: &llm::Error) -> Duration {
        if let Some(wait) = error.retry_after() {
            return wait.min(MAX_BACKOFF * 2);
        }
        let base = Duration::from_millis(500) * 2u32.saturating_pow(attempt.saturating_sub(1));
        // Full jitter on the upper half keeps retries of many runs apart.
        base.min(MAX_BACKOFF).mul_f64(0.5 + self.env.jitter / 2.0)
    }

    /// Appends entries until the next effect.
    fn plan(&mut self) -> Effect {
        loop {
            match self.next() {
                Next::Append(entries) => {
                    for (agent, key, body) in entries {
                        self.push(agent, key, body);
                    }
                }
                Next::Effect { prefix, effect } => {
                    let (agent, key, body) = *prefix;
                    self.push(agent, key, body);
                    return effect;
                }
                Next::Idle(effect) => return effect,
            }
        }
    }

    fn next(&self) -> Next {
        let state = &*self.state;
        if state.is_terminal() {
            return Next::Idle(Effect::Finished);
        }
        if let Some(pending) = &state.pending {
            return Next::Idle(Effect::AwaitApproval {
                approval_id: pending.approval_id,
                expires_at: pending.expires_at,
            });
        }
        if state.paused {
            return Next::Idle(Effect::Paused);
        }
        if self.env.busy {
            return Next::Idle(Effect::Working);
        }
        // A `frames` stack is never empty: `AGENT_FINISHED` keeps the root.
        let Some(frame) = state.frames.last() else {
            return Next::Idle(Effect::Finished);
        };
        let agent = Some(frame.agent);

        // Calls of the latest answer not journaled yet: a fork taken
        // between an `AGENT_THOUGHT` and its `TOOL_CALLED` entries.
        let unrecorded = state.unrecorded_calls();
        if !unrecorded.is_empty() {
            return Next::Append(
                unrecorded
                    .into_iter()
                    .map(|call| {
                        (
                            agent,
                            format!("tool-called:{}", call.call_id),
                            self.env.tool_called(call),
                        )
                    })
                    .collect(),
            );
        }

        if let Some(call_id) = state.first_open_call() {
            return self.next_for_call(frame, call_id);
        }

        // An agent that answered while an operator's message was on its
        // way reads it before it is done.
        if let Some(answer) = frame
            .final_answer
            .as_ref()
            .filter(|_| state.notes.is_empty())
        {
            return Next::Append(match &frame.parent_call {
                Some(parent_call) => vec![
                    (
                        agent,
                        format!("agent-finished:{parent_call}"),
                        EventBody::AgentFinished {
                            agent: frame.agent,
                            result: answer.clone(),
                        },
                    ),
                    (
                        state.frames.iter().rev().nth(1).map(|parent| parent.agent),
                        format!("tool-result:{parent_call}"),
                        EventBody::ToolResult {
                            call_id: parent_call.clone(),
                            tool: "delegate".into(),
                            ok: true,
                            output: answer.clone(),
                            exit_code: None,
                            duration_ms: 0,
                        },
                    ),
                ],
                None => vec![(
                    agent,
                    TERMINAL_KEY.into(),
                    EventBody::RunCompleted {
                        result: answer.clone(),
                    },
                )],
            });
        }

        if state.outstanding_attempt.is_none() && state.thoughts >= self.env.max_iterations {
            return Next::Append(vec![(
                agent,
                TERMINAL_KEY.into(),
                EventBody::RunFailed {
                    error: RunError {
                        code: "iteration_limit".into(),
                        message: format!(
                            "the run reached the limit of {} model calls (AGENT_MAX_ITERATIONS)",
                            self.env.max_iterations
                        ),
                    },
                },
            )]);
        }
        if state.over_budget() {
            let approval_id = self.env.fresh_id;
            let timeout = chrono::Duration::seconds(state.approval_timeout_secs as i64);
            return Next::Append(vec![(
                agent,
                format!("budget-exceeded:{approval_id}"),
                EventBody::BudgetExceeded {
                    approval_id,
                    used_tokens: state.used_tokens(),
                    max_tokens: state.budget.max_tokens,
                    used_cost_usd: state.cost_usd,
                    max_cost_usd: state.budget.max_cost_usd,
                    expires_at: self.env.now + timeout,
                },
            )]);
        }
        let attempt = state.outstanding_attempt.map_or(1, |a| a + 1);
        let model = self.env.model_for(frame.agent);
        let thought = state.thoughts + 1;
        let mut messages = frame.messages.clone();
        if !state.notes.is_empty() {
            Arc::make_mut(&mut messages).extend(
                state
                    .notes
                    .iter()
                    .map(|text| Message::User { text: text.clone() }),
            );
        }
        Next::Effect {
            prefix: Box::new((
                agent,
                format!("llm-called:{thought}:{attempt}"),
                EventBody::LlmCalled {
                    agent: frame.agent,
                    model: model.clone(),
                    attempt,
                },
            )),
            effect: Effect::CallModel {
                agent: frame.agent,
                model,
                attempt,
                messages,
            },
        }
    }

    fn next_for_call(&self, frame: &Frame, call_id: String) -> Next {
        let state = &*self.state;
        let agent = Some(frame.agent);
        // `first_open_call` only returns ids present in `calls`.
        let Some(call) = state.calls.get(&call_id) else {
            return Next::Idle(Effect::Finished);
        };
        let fail = |output: String| {
            Next::Append(vec![(
                agent,
                format!("tool-result:{call_id}"),
                EventBody::ToolResult {
                    call_id: call_id.clone(),
                    tool: call.tool.clone(),
                    ok: false,
                    output,
                    exit_code: None,
                    duration_ms: 0,
                },
            )])
        };

        if !frame.agent.tools().contains(&call.tool.as_str())
            && !self.env.mcp.offers(frame.agent, &call.tool)
        {
            return fail(format!(
                "the tool `{}` is not available to the {} agent; its tools are: {}",
                call.tool,
                frame.agent,
                frame.agent.tools().join(", ")
            ));
        }
        if let Some((decision, feedback)) = &call.denial {
            return fail(denial_text(
                &call.tool,
                *decision,
                feedback.as_deref(),
                state.approval_timeout_secs,
            ));
        }
        if call.tool == "delegate" {
            if let Some(result) = state.delegated.get(&call_id) {
                // The agent finished; only its answer is not journaled yet.
                return Next::Append(vec![(
                    agent,
                    format!("tool-result:{call_id}"),
                    EventBody::ToolResult {
                        call_id: call_id.clone(),
                        tool: "delegate".into(),
                        ok: true,
                        output: result.clone(),
                        exit_code: None,
                        duration_ms: 0,
                    },
                )]);
            }
            return match parse_delegate(&call.args) {
                Ok((child, task)) => Next::Append(vec![(
                    Some(child),
                    format!("agent-started:{call_id}"),
                    EventBody::AgentStarted { agent: child, task },
                )]),
                Err(message) => fail(message),
            };
        }
        if !call.repeatable && call.started_without_result() {
            // Never run a dangerous (or not idempotent) tool twice without
            // a human: it may have done its work before the crash.
            return Next::Append(vec![
                (
                    agent,
                    format!("tool-interrupted:{call_id}:{}", call.starts),
                    EventBody::ToolInterrupted {
                        call_id: call_id.clone(),
                        tool: call.tool.clone(),
                    },
                ),
                self.suspension(frame.agent, &call_id, call, true),
            ]);
        }
        if call.needs_approval {
            let interrupted = call.interruptions > 0;
            return Next::Append(vec![self.suspension(
                frame.agent,
                &call_id,
                call,
                interrupted,
            )]);
        }
        Next::Effect {
            prefix: Box::new((
                agent,
                format!("tool-started:{call_id}:{}", call.starts + 1),
                EventBody::ToolStarted {
                    call_id: call_id.clone(),
                    tool: call.tool.clone(),
                },
            )),
            effect: Effect::RunTool {
                agent: frame.agent,
                call_id: call_id.clone(),
                tool: call.tool.clone(),
                args: call.args.clone(),
            },
        }
    }

    fn suspension(
        &self,
        agent: AgentName,
        call_id: &str,
        call: &CallState,
        interrupted: bool,
    ) -> (Option<AgentName>, String, EventBody) {
        let approval_id = self.env.fresh_id;
        let timeout = chrono::Duration::seconds(self.state.approval_timeout_secs as i64);
        (
            Some(agent),
            format!("suspended:{approval_id}"),
            EventBody::RunSuspended {
                approval_id,
                call_id: call_id.to_string(),
                tool: call.tool.clone(),
                args: call.args.clone(),
                args_sha256: crate::jcs::sha256_hex(&call.args),
                expires_at: self.env.now + timeout,
                interrupted,
            },
        )
    }
}

/// The one key every terminal entry shares: a run can end only once.
const TERMINAL_KEY: &str = "terminal";

/// What the model reads when a call was not allowed to run.
pub fn denial_text(
    tool: &str,
    decision: Decision,
    feedback: Option<&str>,
    timeout_secs: u64,
) -> String {
    let quoted = match feedback.map(str::trim).filter(|f| !f.is_empty()) {
        Some(feedback) => format!("\"{feedback}\""),
        None => "none given".to_string(),
    };
    match decision {
        Decision::Expired => format!(
            "DENIED: approval for this `{tool}` call timed out after {timeout_secs} seconds without a human decision, so the call was NOT run. Treat it as rejected. Feedback: {quoted}."
        ),
        Decision::Rejected | Decision::Approved => format!(
            "DENIED: a human rejected this `{tool}` call, so it was NOT run. Feedback: {quoted}."
        ),
    }
}

/// The most of the edited arguments repeated to the model, so a large file
/// written by a human does not crowd out the tool's own output.
const EDITED_ARGS_SHOWN_BYTES: usize = 4096;

/// A tool's output as the model reads it when an approver changed the
/// arguments: said first and plainly, with the arguments that ran.
fn edited_note(args: &serde_json::Value, output: &str) -> String {
    let mut shown = args.to_string();
    if shown.len() > EDITED_ARGS_SHOWN_BYTES {
        let mut cut = EDITED_ARGS_SHOWN_BYTES;
        while !shown.is_char_boundary(cut) {
            cut -= 1;
        }
        let left_out = shown.len() - cut;
        shown.truncate(cut);
        shown.push_str(&format!(" [... {left_out} more bytes]"));
    }
    tools::cap_output(&format!(
        "NOTE: a human approver changed the arguments of this call before approving it, so it did NOT run with the arguments you gave. It ran with: {shown}\n\n{output}"
    ))
}

fn parse_delegate(args: &serde_json::Value) -> Result<(AgentName, String), String> {
    let agent = args
        .get("agent")
        .and_then(|a| a.as_str())
        .ok_or("delegate: missing string field `agent` (coding or log-analyzer)")?;
    let agent = match agent.parse::<AgentName>() {
        Ok(AgentName::Orchestrator) | Err(_) => {
            return Err(format!(
                "delegate: `{agent}` is not an agent you can delegate to; use coding or log-analyzer"
            ));
        }
        Ok(agent) => agent,
    };
    let task = args
        .get("task")
        .and_then(|t| t.as_str())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or("delegate: missing non-empty string field `task`")?;
    Ok((agent, task.to_string()))
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
