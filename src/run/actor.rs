//! The run actor: one per run this instance drives. It owns the run's
//! `RunState` and the epoch of its claim, feeds every input through
//! `state::step`, commits the resulting entries with `journal::append` (fenced
//! by the epoch), and only then performs the effect (a model call, a tool, a
//! timer) whose result comes back to it as the next input.
//!
//! Commands (decisions, cancellations) come from the run's inbox in
//! PostgreSQL, whoever received them; each is answered in the same
//! transaction as the entries it caused. A run that waits for a human gives
//! its claim back in the commit that makes it wait, and its actor stops: a
//! parked run costs nothing until a command or its deadline wakes it on
//! whichever instance claims it. A write refused for a stale epoch means
//! another instance drives the run now: the actor kills its work and stops.
//!
//! Journal writes run in `ctx.wait`, so the mailbox pauses until the commit is
//! done and no input ever sees uncommitted state. Model calls and tools run
//! in `ctx.spawn`, so a cancellation or a human decision gets through while
//! they work. Any failure (a lost database, a stale view, a panic in the pure
//! logic) stops the actor; its `Supervisor` restarts it, and `started` folds
//! the journal again, which is the same path as recovery after a crash.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use deadpool_postgres::Pool;
use tracing::Instrument;
use uuid::Uuid;

use super::observer::{Committed, Observer};
use super::state::{self, Effect, Env, Input, Refusal, RunState};
use crate::agents::AgentName;
use crate::domain::RunSummary;
use crate::domain::{Command, CommandOutcome};
use crate::journal;
use crate::llm::{ModelClient, ModelRequest};
use crate::realtime::DeltaHub;
use crate::telemetry::metrics::ModelCall;
use crate::telemetry::trace;
use crate::tools::{self, ToolContext};
use opentelemetry::KeyValue;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// What every run actor shares.
pub struct RunDeps {
    pub pool: Pool,
    /// Commits the actors' appends, several runs' in one transaction when
    /// they come at once.
    pub journal: journal::Writer,
    pub model: Arc<dyn ModelClient>,
    pub tools: ToolContext,
    pub max_iterations: u32,
    /// Where streamed model text is published for watchers.
    pub deltas: DeltaHub,
    /// What follows every commit: the live feed, metrics, spans.
    pub observer: Observer,
    /// This instance among those sharing the database: claims, inboxes.
    pub cluster: crate::cluster::Cluster,
    /// The model each agent uses, read once from the client.
    pub models: Arc<HashMap<AgentName, String>>,
    /// What model answers cost.
    pub prices: Arc<super::prices::Prices>,
}

impl RunDeps {
    /// What a step needs besides its input: the time, a fresh id, jitter.
    pub fn env(&self) -> Env {
        let random = Uuid::new_v4();
        Env {
            now: journal::now(),
            fresh_id: Uuid::new_v4(),
            jitter: random.as_u64_pair().0 as f64 / (u64::MAX as f64 + 1.0),
            max_iterations: self.max_iterations,
            models: self.models.clone(),
            prices: self.prices.clone(),
            mcp: self.tools.mcp.clone(),
            busy: false,
        }
    }
}

/// The longest pause before a failed actor reloads its journal.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// Commands may wait in the run's inbox: read and apply them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CheckInbox;

/// The instance's leases lapsed: kill the work in flight and stop, writing
/// nothing more (the run is claimed again like any other).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Abandon;

/// The server is stopping: start nothing new and drop the work in flight
/// (the journal says how to resume it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// An input waiting its turn.
enum Queued {
    Command(crate::cluster::InboxEntry),
    Wake,
}

/// Tells the registry that this actor is done with the run (finished,
/// parked or lost), so it drops the actor's address; a closure, so the actor
/// needs nothing of the registry. Takes the run and the claim's epoch.
pub type Release = Arc<dyn Fn(Uuid, i64) + Send + Sync>;

pub struct RunActor {
    run_id: Uuid,
    /// The epoch of this instance's claim: every write names it.
    epoch: i64,
    deps: Arc<RunDeps>,
    release: Release,
    /// Set once the actor is done with the run; it then writes nothing more.
    done: bool,
    /// Whether the inbox is being read, and whether to read it again after.
    reading_inbox: bool,
    inbox_again: bool,
    /// Inputs waiting for the commit in progress (commands from the inbox,
    /// the wake after a load); taken one at a time by `pump`.
    queued: std::collections::VecDeque<Queued>,
    /// Whether a commit of this actor's is in progress.
    committing: bool,
    /// The state a new run starts with, used instead of loading the
    /// journal on the first start.
    initial: Option<RunState>,
    /// `None` while the journal loads.
    state: Option<RunState>,
    /// The summary as last committed, to write it only when it changes.
    summary: Option<RunSummary>,
    /// The model call or tool running now; dropping it aborts it.
    in_flight: Option<SpawnHandle>,
    /// The approval expiry or the backoff before the next model attempt.
    timer: Option<SpawnHandle>,
    /// Consecutive restarts, for the backoff before reloading.
    restarts: u32,
    shutting_down: bool,
    span: tracing::Span,
}

impl RunActor {
    /// The actor of an existing run, which loads its journal when started.
    pub fn new(run_id: Uuid, epoch: i64, deps: Arc<RunDeps>, release: Release) -> RunActor {
        RunActor {
            run_id,
            epoch,
            deps,
            release,
            done: false,
            reading_inbox: false,
            inbox_again: false,
            queued: Default::default(),
            committing: false,
            initial: None,
            state: None,
            summary: None,
            in_flight: None,
            timer: None,
            restarts: 0,
            shutting_down: false,
            span: tracing::info_span!(
                "run",
                run_id = %run_id,
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty
            ),
        }
    }

    /// The actor of a run just created with `state` (its `RUN_STARTED`
    /// committed), which goes on from there without reading the journal.
    pub fn new_run(state: RunState, epoch: i64, deps: Arc<RunDeps>, release: Release) -> RunActor {
        let mut actor = RunActor::new(state.run_id, epoch, deps, release);
        actor.initial = Some(state);
        actor
    }

    fn load(&mut self, ctx: &mut Context<Self>) {
        let pool = self.deps.pool.clone();
        let run_id = self.run_id;
        let load = async move { journal::load(&pool, run_id).await }.instrument(self.span.clone());
        ctx.wait(load.into_actor(self).map(move |loaded, act, ctx| {
            let events = match loaded {
                Ok(events) => events,
                Err(error) => return act.fail(&error, ctx),
            };
            match state::fold(run_id, &events) {
                Some(state) => {
                    act.span.record("trace_id", state.trace.trace_id.as_str());
                    act.span.record("span_id", state.trace.span_id.as_str());
                    if state.last_seq > 1 && !state.is_terminal() {
                        // Work picked up again (after a restart, or a
                        // reload): say so in the run's trace.
                        let now = journal::now();
                        trace::emit(trace::FinishedSpan {
                            name: "run.resumed".into(),
                            trace_id: None,
                            span_id: None,
                            parent: state.trace.agent_context(state.current_agent_call()),
                            start: now,
                            end: now,
                            attributes: vec![
                                KeyValue::new("run.id", run_id.to_string()),
                                KeyValue::new("run.resumed_at_seq", state.last_seq),
                                KeyValue::new("run.resumed_after_restart", act.restarts == 0),
                            ],
                            error: None,
                        });
                    }
                    act.summary = Some(state.summary());
                    if !state.is_terminal() {
                        act.deps.observer.claimed(&state, act.deps.cluster.id());
                    }
                    act.state = Some(state);
                    act.restarts = 0;
                    // Commands first (they may be why the run was claimed),
                    // then on from where the journal stops.
                    act.read_inbox(ctx, true);
                }
                None => {
                    tracing::error!(parent: &act.span, "run has no RUN_STARTED entry; leaving it alone");
                    act.done = true;
                    (act.release)(run_id, act.epoch);
                }
            }
        }));
    }

    /// Throws the state away and folds the journal again after a backoff
    /// (a lost database, a stale view); or, when another instance claimed
    /// the run, lets it go for good. The reload happens in place rather
    /// than through an actix restart, whose reset of spawn handles can
    /// alias a handle cancelled just before and silently drop the next
    /// future spawned.
    fn fail(&mut self, error: &journal::Error, ctx: &mut Context<Self>) {
        if let journal::Error::Fenced(_) = error {
            tracing::warn!(parent: &self.span, "another instance drives this run now; letting go");
            self.let_go(ctx);
            return;
        }
        tracing::error!(parent: &self.span, %error, "run actor failed; reloading from the journal");
        self.reload(ctx);
    }

    /// Forgets everything the journal does not say and loads it again.
    fn reload(&mut self, ctx: &mut Context<Self>) {
        self.forget(ctx);
        self.reload_later(ctx);
    }

    /// Kills the work in flight and drops every view of the run that the
    /// journal would have to confirm.
    fn forget(&mut self, ctx: &mut Context<Self>) {
        self.cancel_work(ctx);
        self.state = None;
        self.summary = None;
        self.queued.clear();
        self.committing = false;
        self.reading_inbox = false;
        self.restarts += 1;
    }

    /// Loads the journal after a backoff that grows with consecutive
    /// failures; the mailbox waits meanwhile.
    fn reload_later(&mut self, ctx: &mut Context<Self>) {
        let delay =
            Duration::from_millis(200 * 2u64.pow(self.restarts.min(8))).min(MAX_RESTART_DELAY);
        ctx.wait(
            tokio::time::sleep(delay)
                .into_actor(self)
                .map(|(), act, ctx| act.load(ctx)),
        );
    }

    /// Done with the run (finished, parked or lost): kill the work in
    /// flight, write nothing more, and leave the registry, which stops the
    /// actor for good.
    fn let_go(&mut self, ctx: &mut Context<Self>) {
        self.done = true;
        self.cancel_work(ctx);
        (self.release)(self.run_id, self.epoch);
        ctx.stop();
    }

    /// Reads the commands waiting in the run's inbox and queues them; with
    /// `then_wake` (after a load, when nothing is in flight), the run goes
    /// on from the journal once they are applied.
    fn read_inbox(&mut self, ctx: &mut Context<Self>, then_wake: bool) {
        if self.done || self.state.is_none() {
            return;
        }
        if self.reading_inbox {
            self.inbox_again = true;
            return;
        }
        self.reading_inbox = true;
        let cluster = self.deps.cluster.clone();
        let run_id = self.run_id;
        ctx.wait(
            async move { cluster.waiting(run_id).await }
                .into_actor(self)
                .map(move |waiting, act, ctx| {
                    act.reading_inbox = false;
                    match waiting {
                        Ok(entries) => {
                            for entry in entries {
                                if !act.queued.iter().any(|q| matches!(q, Queued::Command(e) if e.id == entry.id)) {
                                    act.queued.push_back(Queued::Command(entry));
                                }
                            }
                        }
                        Err(error) => {
                            tracing::warn!(parent: &act.span, %error, "could not read the run's inbox")
                        }
                    }
                    if then_wake {
                        act.queued.push_back(Queued::Wake);
                    }
                    if std::mem::take(&mut act.inbox_again) {
                        act.read_inbox(ctx, false);
                    }
                    act.pump(ctx);
                }),
        );
    }

    /// Takes the next queued input, one at a time: the state machine is
    /// never stepped while a commit of its last step is pending.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while !self.committing && !self.done {
            match self.queued.pop_front() {
                Some(Queued::Command(entry)) => self.apply(entry, ctx),
                // Recovery's step, from the journal alone: only when no
                // command started work meanwhile (a tool started is not an
                // interrupted one).
                Some(Queued::Wake) => {
                    if self.in_flight.is_none() && self.timer.is_none() {
                        self.drive_quietly(Input::Wake, ctx);
                    }
                }
                None => return,
            }
        }
    }

    /// Applies one command from the inbox; its outcome is written with the
    /// entries it causes, or alone when it is refused.
    fn apply(&mut self, entry: crate::cluster::InboxEntry, ctx: &mut Context<Self>) {
        if self.done {
            return;
        }
        let refused = |reason| CommandOutcome::Refused { reason };
        let outcome = match serde_json::from_value::<Command>(entry.command) {
            Err(error) => {
                tracing::error!(parent: &self.span, %error, "a command in the inbox cannot be read");
                refused(Refusal::Stale)
            }
            Ok(command) => {
                if matches!(command, Command::Cancel { .. })
                    && self.state.as_ref().is_some_and(|s| !s.is_terminal())
                {
                    // Abort first: whatever the commit's fate, nothing may
                    // run on after a cancellation, and a failed commit
                    // reloads the journal, which resumes the aborted work by
                    // the recovery rules.
                    self.cancel_work(ctx);
                }
                match self.drive(command.into(), ctx, Some(entry.id)) {
                    Ok(()) => return,
                    Err(reason) => refused(reason),
                }
            }
        };
        let answer = journal::Answer {
            inbox_id: entry.id,
            outcome: serde_json::to_value(&outcome).unwrap_or_default(),
        };
        let pool = self.deps.pool.clone();
        let (run_id, epoch) = (self.run_id, self.epoch);
        self.committing = true;
        ctx.wait(
            async move { journal::answer_alone(&pool, run_id, epoch, &answer).await }
                .into_actor(self)
                .map(|answered, act, ctx| {
                    act.committing = false;
                    match answered {
                        Err(error) => act.fail(&error, ctx),
                        Ok(_) => act.pump(ctx),
                    }
                }),
        );
    }

    /// Steps the state machine with `input`, commits what it decided, then
    /// performs the effect. `answer` is the inbox command the input came
    /// from, marked handled in the same transaction.
    fn drive(
        &mut self,
        input: Input,
        ctx: &mut Context<Self>,
        answer: Option<i64>,
    ) -> Result<(), Refusal> {
        if self.done {
            return Err(Refusal::Stale);
        }
        let mut env = self.deps.env();
        env.busy = self.in_flight.is_some() || self.timer.is_some();
        let Some(state) = self.state.as_mut() else {
            return Err(Refusal::Stale);
        };
        let pending_before = state.pending_approval().cloned();
        let agent_call = state.current_agent_call().map(str::to_string);
        let stepped = catch_unwind(AssertUnwindSafe(|| state::step(state, input, &env)));
        let transition = match stepped {
            Ok(Ok(transition)) => transition,
            Ok(Err(refusal)) => return Err(refusal),
            Err(_) => {
                tracing::error!(parent: &self.span, "the state machine panicked; reloading from the journal");
                self.reload(ctx);
                return Err(Refusal::Stale);
            }
        };
        if transition.events.is_empty() && answer.is_none() {
            self.perform(transition.effect, ctx);
            return Ok(());
        }
        // A run that will wait for a human, is paused with nothing in
        // flight, or has ended, needs no driver: it is given back in the
        // same statement.
        let release = match &transition.effect {
            Effect::AwaitApproval { expires_at, .. } => *expires_at > env.now,
            Effect::Paused => self.in_flight.is_none(),
            Effect::Finished => true,
            _ => false,
        };
        let summary = state.summary();
        let changed = self.summary.as_ref() != Some(&summary);
        let writer = self.deps.journal.clone();
        let run_id = self.run_id;
        let epoch = self.epoch;
        let effect = transition.effect;
        let db_span = tracing::info_span!(target: trace::TARGET, parent: &self.span, "journal.append",
            otel.name = "INSERT run_events", otel.kind = "client",
            db.system.name = "postgresql", db.operation.name = "INSERT",
            db.collection.name = "run_events", run.id = %run_id, run_id = %run_id,
            journal.entries = transition.events.len() as i64);
        self.join_trace(&db_span);
        let commit = async move {
            let started = Instant::now();
            let append = journal::Append {
                run_id,
                epoch,
                events: transition.events,
                summary: (changed || release).then(|| summary.clone()),
                release,
                answer: answer.map(|inbox_id| journal::Answer {
                    inbox_id,
                    outcome: serde_json::to_value(CommandOutcome::Done).unwrap_or_default(),
                }),
            };
            let (outcome, events) = writer.append(append).await;
            (outcome.map(|()| (summary, events)), started.elapsed())
        }
        .instrument(db_span);
        self.committing = true;
        ctx.wait(commit.into_actor(self).map(
            move |(committed, elapsed), act, ctx| match committed {
                Ok((summary, events)) => {
                    // Committed: now, and only now, anything follows.
                    if let Some(state) = &act.state {
                        act.deps.observer.committed(
                            &Committed {
                                run_id: act.run_id,
                                state,
                                events: &events,
                                summary: &summary,
                                summary_changed: changed,
                                pending_before: pending_before.as_ref(),
                                agent_call: agent_call.as_deref(),
                                elapsed,
                                owner: (!release).then(|| act.deps.cluster.id()),
                            },
                            &act.span,
                        );
                    }
                    act.summary = Some(summary);
                    act.committing = false;
                    if release {
                        // Parked, or over: no driver until something wakes it.
                        act.let_go(ctx);
                    } else {
                        act.perform(effect, ctx);
                        act.pump(ctx);
                    }
                }
                Err(error) => {
                    act.committing = false;
                    act.fail(&error, ctx)
                }
            },
        ));
        Ok(())
    }

    /// Makes `span` part of the run's trace, under the agent acting now.
    fn join_trace(&self, span: &tracing::Span) {
        if let Some(state) = &self.state {
            let parent = state.trace.agent_context(state.current_agent_call());
            let _ = span.set_parent(parent);
        }
    }

    /// Drives an input that came from the run's own work; a refusal only
    /// means the input is no longer relevant.
    fn drive_quietly(&mut self, input: Input, ctx: &mut Context<Self>) {
        if let Err(error) = self.drive(input, ctx, None) {
            tracing::debug!(parent: &self.span, %error, "input dropped");
        }
    }

    fn perform(&mut self, effect: Effect, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        match effect {
            Effect::CallModel {
                agent,
                model,
                attempt,
                messages,
            } => {
                let mut request = ModelRequest {
                    run_id: self.run_id,
                    agent,
                    model: model.clone(),
                    system: agent.system_prompt().to_string(),
                    messages,
                    tools: agent
                        .tools()
                        .iter()
                        .filter_map(|t| tools::spec(t))
                        .collect(),
                    on_delta: Some(self.deps.deltas.sink(self.run_id, agent)),
                };
                let provider = self.deps.model.provider();
                let span = tracing::info_span!(target: trace::TARGET, parent: &self.span, "chat",
                    otel.name = %format!("chat {model}"), otel.kind = "client",
                    gen_ai.operation.name = "chat", gen_ai.provider.name = provider,
                    gen_ai.request.model = %model, gen_ai.agent.name = %agent,
                    gen_ai.conversation.id = %self.run_id, run.id = %self.run_id,
                    run_id = %self.run_id, attempt = attempt as i64,
                    gen_ai.response.model = tracing::field::Empty,
                    gen_ai.response.finish_reasons = tracing::field::Empty,
                    gen_ai.usage.input_tokens = tracing::field::Empty,
                    gen_ai.usage.output_tokens = tracing::field::Empty,
                    error.type = tracing::field::Empty);
                self.join_trace(&span);
                let model_client = self.deps.model.clone();
                let mcp = self.deps.tools.mcp.clone();
                // The MCP servers' tools are listed first (starting a server
                // on first use); the request is built inside the span, so it
                // carries this span's `traceparent`.
                let call = async move {
                    request.tools.extend(mcp.tools_for(agent).await);
                    model_client.complete(request).await
                }
                .instrument(span.clone());
                let started = Instant::now();
                let handle = ctx.spawn(call.into_actor(self).map(move |answer, act, ctx| {
                    act.in_flight = None;
                    match &answer {
                        Ok(answer) => {
                            span.record("gen_ai.response.model", answer.model.as_str());
                            // i64: OpenTelemetry has no unsigned integers.
                            span.record(
                                "gen_ai.usage.input_tokens",
                                answer.usage.input_tokens as i64,
                            );
                            span.record(
                                "gen_ai.usage.output_tokens",
                                answer.usage.output_tokens as i64,
                            );
                            let reason = if answer.tool_calls.is_empty() {
                                "stop"
                            } else {
                                "tool_calls"
                            };
                            span.record("gen_ai.response.finish_reasons", reason);
                        }
                        Err(error) => {
                            span.record("error.type", error_type(error));
                        }
                    }
                    let failure = answer.as_ref().err().map(error_type).unwrap_or_default();
                    act.deps.observer.metrics.record_model_call(ModelCall {
                        agent,
                        model: &model,
                        provider: act.deps.model.provider(),
                        elapsed: started.elapsed(),
                        outcome: match &answer {
                            Ok(answer) => Ok((answer.model.as_str(), answer.usage)),
                            Err(_) => Err(&failure),
                        },
                    });
                    let input = match answer {
                        Ok(answer) => Input::ModelAnswered { answer },
                        Err(error) => {
                            tracing::warn!(parent: &act.span, %error, "model call failed");
                            Input::ModelFailed { error }
                        }
                    };
                    act.drive_quietly(input, ctx);
                }));
                self.in_flight = Some(handle);
            }
            Effect::Continue => self.drive_quietly(Input::Wake, ctx),
            Effect::RetryModelAfter(delay) => {
                self.set_timer(ctx, delay, Input::Wake);
            }
            Effect::RunTool {
                agent,
                call_id,
                tool,
                args,
            } => {
                let span = tracing::info_span!(target: trace::TARGET, parent: &self.span, "execute_tool",
                    otel.name = %format!("execute_tool {tool}"),
                    gen_ai.operation.name = "execute_tool", gen_ai.tool.name = %tool,
                    gen_ai.tool.call.id = %call_id, gen_ai.agent.name = %agent,
                    gen_ai.conversation.id = %self.run_id, run.id = %self.run_id,
                    run_id = %self.run_id, error.type = tracing::field::Empty,
                    mcp.server = tracing::field::Empty);
                if self.deps.tools.mcp.owns(&tool)
                    && let Some((server, _)) = tool.split_once(crate::mcp::config::SEPARATOR)
                {
                    span.record("mcp.server", server);
                }
                self.join_trace(&span);
                let context = self.deps.tools.clone();
                let tool_span = span.clone();
                let run = async move {
                    let started = Instant::now();
                    let outcome = tools::execute(&tool, &args, &context).await;
                    if !outcome.ok {
                        tool_span.record("error.type", "tool_error");
                    }
                    (outcome, started.elapsed())
                }
                .instrument(span);
                let handle = ctx.spawn(run.into_actor(self).map(
                    move |(outcome, elapsed), act, ctx| {
                        act.in_flight = None;
                        let input = Input::ToolFinished {
                            call_id,
                            outcome,
                            duration_ms: elapsed.as_millis() as u64,
                        };
                        act.drive_quietly(input, ctx);
                    },
                ));
                self.in_flight = Some(handle);
            }
            Effect::AwaitApproval {
                approval_id,
                expires_at,
            } => {
                if expires_at <= Utc::now() {
                    self.drive_quietly(Input::ApprovalExpired { approval_id }, ctx);
                } else {
                    // Woken for nothing that changed it (a refused command):
                    // park again.
                    self.give_back(ctx);
                }
            }
            Effect::Paused => {
                // What is in flight finishes and is journaled (its input
                // steps here again); a retry's wait is dropped, the journal
                // says to call again once unpaused.
                if let Some(timer) = self.timer.take() {
                    ctx.cancel_future(timer);
                }
                if self.in_flight.is_none() {
                    self.give_back(ctx);
                }
            }
            Effect::Working => {}
            Effect::Finished => self.give_back(ctx),
        }
    }

    /// Gives the claim back without writing an entry, then lets go.
    fn give_back(&mut self, ctx: &mut Context<Self>) {
        let cluster = self.deps.cluster.clone();
        let claim = crate::cluster::Claim {
            run_id: self.run_id,
            epoch: self.epoch,
        };
        self.done = true;
        ctx.wait(
            async move { cluster.release(claim).await }
                .into_actor(self)
                .map(|released, act, ctx| {
                    if let Err(error) = released {
                        // The lease lapses by itself; the run is claimed then.
                        tracing::warn!(parent: &act.span, %error, "could not give the run back");
                    }
                    act.let_go(ctx);
                }),
        );
    }

    fn set_timer(&mut self, ctx: &mut Context<Self>, delay: Duration, input: Input) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        self.timer = Some(ctx.run_later(delay, move |act, ctx| {
            act.timer = None;
            act.drive_quietly(input, ctx);
        }));
    }

    /// Aborts the model call or tool in flight (a running shell's process
    /// group is killed when its future is dropped) and any timer.
    fn cancel_work(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.in_flight.take() {
            ctx.cancel_future(handle);
        }
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
    }
}

impl Actor for RunActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.done {
            ctx.stop();
        } else if let Some(state) = self.initial.take() {
            // A new run: its first entry is committed and its state known.
            self.span.record("trace_id", state.trace.trace_id.as_str());
            self.span.record("span_id", state.trace.span_id.as_str());
            self.summary = Some(state.summary());
            self.state = Some(state);
            self.perform(Effect::Continue, ctx);
        } else if self.restarts == 0 {
            self.load(ctx);
        } else {
            self.reload_later(ctx);
        }
    }
}

impl Supervised for RunActor {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        self.forget(ctx);
    }
}

impl Handler<CheckInbox> for RunActor {
    type Result = ();

    fn handle(&mut self, _msg: CheckInbox, ctx: &mut Context<Self>) {
        self.read_inbox(ctx, false);
    }
}

impl Handler<Abandon> for RunActor {
    type Result = ();

    fn handle(&mut self, _msg: Abandon, ctx: &mut Context<Self>) {
        tracing::warn!(parent: &self.span, "this instance's leases lapsed; letting the run go");
        self.let_go(ctx);
    }
}

impl Handler<Shutdown> for RunActor {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Context<Self>) {
        self.shutting_down = true;
        self.cancel_work(ctx);
    }
}

/// `error.type` for a failed model call: a short, stable class.
fn error_type(error: &crate::llm::Error) -> String {
    match error {
        crate::llm::Error::Timeout(_) => "timeout".into(),
        crate::llm::Error::Connection(_) => "connection".into(),
        crate::llm::Error::Status { status, .. } => status.to_string(),
        crate::llm::Error::InvalidResponse(_) => "invalid_response".into(),
    }
}
