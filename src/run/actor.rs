//! The run actor: one per open run. It owns the run's `RunState`, feeds every
//! input through `state::step`, commits the resulting entries with
//! `journal::append`, and only then performs the effect (a model call, a tool,
//! a timer) whose result comes back to it as the next input.
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
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use super::registry::RunRegistry;
use super::state::{self, Effect, Env, Input, Refusal, RunState, RunSummary};
use crate::agents::AgentName;
use crate::journal;
use crate::llm::{ModelClient, ModelRequest};
use crate::realtime::{DeltaHub, Feed};
use crate::telemetry::metrics::Metrics;
use crate::tools::{self, ToolContext};

/// What every run actor shares.
pub struct RunDeps {
    pub pool: Pool,
    pub model: Arc<dyn ModelClient>,
    pub tools: ToolContext,
    pub max_iterations: u32,
    /// Where streamed model text is published for watchers.
    pub deltas: DeltaHub,
    /// Where committed entries and summaries are published for watchers.
    pub feed: Feed,
    pub metrics: Metrics,
    /// The model each agent uses, read once from the client.
    pub models: Arc<HashMap<AgentName, String>>,
}

/// The longest pause before a failed actor reloads its journal.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// Why a human's command did not take effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SteerError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The run could not journal the command right now (database trouble or
    /// the run is reloading); nothing changed and the client may retry.
    #[error("the run cannot take commands right now; retry shortly")]
    Unavailable,
}

/// A human decides a pending approval.
#[derive(Message)]
#[rtype(result = "Result<(), SteerError>")]
pub struct Decide {
    pub approval_id: Uuid,
    pub approved: bool,
    pub feedback: Option<String>,
    pub decided_by: String,
}

/// A human cancels the run.
#[derive(Message)]
#[rtype(result = "Result<(), SteerError>")]
pub struct Cancel {
    pub reason: Option<String>,
    pub by: String,
}

/// The server is stopping: start nothing new and drop the work in flight
/// (the journal says how to resume it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

pub struct RunActor {
    run_id: Uuid,
    deps: Arc<RunDeps>,
    registry: RunRegistry,
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
    pub fn new(run_id: Uuid, deps: Arc<RunDeps>, registry: RunRegistry) -> RunActor {
        RunActor {
            run_id,
            deps,
            registry,
            state: None,
            summary: None,
            in_flight: None,
            timer: None,
            restarts: 0,
            shutting_down: false,
            span: tracing::info_span!("run", run_id = %run_id),
        }
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
                    act.deps.metrics.set_status(run_id, state.status());
                    act.summary = Some(state.summary());
                    act.state = Some(state);
                    act.restarts = 0;
                    if let Err(error) = act.drive(Input::Wake, ctx, None) {
                        tracing::debug!(parent: &act.span, %error, "nothing to do on wake");
                    }
                }
                None => {
                    tracing::error!(parent: &act.span, "run has no RUN_STARTED entry; leaving it alone");
                    act.registry.remove(run_id);
                }
            }
        }));
    }

    /// Stops the actor so the supervisor rebuilds it from the journal.
    fn fail(&mut self, error: &dyn std::fmt::Display, ctx: &mut Context<Self>) {
        tracing::error!(parent: &self.span, %error, "run actor failed; reloading from the journal");
        ctx.stop();
    }

    fn env(&self) -> Env {
        let random = Uuid::new_v4();
        Env {
            now: journal::now(),
            fresh_id: Uuid::new_v4(),
            jitter: random.as_u64_pair().0 as f64 / (u64::MAX as f64 + 1.0),
            max_iterations: self.deps.max_iterations,
            models: self.deps.models.clone(),
        }
    }

    /// Steps the state machine with `input`, commits what it decided, then
    /// performs the effect. `reply` hears whether the commit went through.
    fn drive(
        &mut self,
        input: Input,
        ctx: &mut Context<Self>,
        reply: Option<oneshot::Sender<Result<(), SteerError>>>,
    ) -> Result<(), SteerError> {
        let env = self.env();
        let Some(state) = self.state.as_mut() else {
            return Err(SteerError::Unavailable);
        };
        let pending_before = state.pending_approval().cloned();
        let stepped = catch_unwind(AssertUnwindSafe(|| state::step(state, input, &env)));
        let transition = match stepped {
            Ok(Ok(transition)) => transition,
            Ok(Err(refusal)) => return Err(refusal.into()),
            Err(_) => {
                self.fail(&"the state machine panicked", ctx);
                return Err(SteerError::Unavailable);
            }
        };
        if transition.events.is_empty() {
            if let Some(reply) = reply {
                let _ = reply.send(Ok(()));
            }
            self.perform(transition.effect, ctx);
            return Ok(());
        }
        let summary = state.summary();
        let changed = self.summary.as_ref() != Some(&summary);
        let pool = self.deps.pool.clone();
        let run_id = self.run_id;
        let effect = transition.effect;
        let commit = async move {
            let started = Instant::now();
            let outcome = journal::append(
                &pool,
                run_id,
                &transition.events,
                changed.then_some(&summary),
            )
            .await
            .map(|()| (summary, transition.events));
            (outcome, started.elapsed())
        }
        .instrument(self.span.clone());
        ctx.wait(commit.into_actor(self).map(
            move |(committed, elapsed), act, ctx| match committed {
                Ok((summary, events)) => {
                    let metrics = &act.deps.metrics;
                    metrics.record_journal_append(elapsed);
                    metrics.record_committed(&events, pending_before.as_ref());
                    metrics.set_status(act.run_id, summary.status);
                    // Committed: now, and only now, watchers see it.
                    act.publish(&events, summary, changed);
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                    act.perform(effect, ctx);
                }
                Err(error) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(SteerError::Unavailable));
                    }
                    act.fail(&error, ctx);
                }
            },
        ));
        Ok(())
    }

    /// Publishes committed entries, and the summary when it changed.
    fn publish(&mut self, events: &[crate::run::event::Event], summary: RunSummary, changed: bool) {
        let feed = &self.deps.feed;
        feed.publish_events(self.run_id, events);
        if changed && let (Some(state), Some(last)) = (&self.state, events.last()) {
            feed.publish_run(&journal::RunRecord::from_state(
                state,
                summary.clone(),
                last.at,
            ));
        }
        self.summary = Some(summary);
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
                let request = ModelRequest {
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
                let span = tracing::info_span!(parent: &self.span, "model_call",
                    run_id = %self.run_id, agent = %agent, model = %model, attempt);
                let call = self.deps.model.complete(request).instrument(span);
                let started = Instant::now();
                let handle = ctx.spawn(call.into_actor(self).map(move |answer, act, ctx| {
                    act.in_flight = None;
                    let usage = answer.as_ref().ok().map(|a| a.usage);
                    let provider = act.deps.model.provider();
                    act.deps.metrics.record_model_call(
                        agent,
                        &model,
                        provider,
                        started.elapsed(),
                        usage,
                    );
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
            Effect::RetryModelAfter(delay) => {
                self.set_timer(ctx, delay, Input::Wake);
            }
            Effect::RunTool {
                agent,
                call_id,
                tool,
                args,
            } => {
                let span = tracing::info_span!(parent: &self.span, "tool_call",
                    run_id = %self.run_id, agent = %agent, tool = %tool, call_id = %call_id);
                let context = self.deps.tools.clone();
                let run = async move {
                    let started = Instant::now();
                    let outcome = tools::execute(&tool, &args, &context).await;
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
                let delay = (expires_at - Utc::now()).to_std().unwrap_or_default();
                self.set_timer(ctx, delay, Input::ApprovalExpired { approval_id });
            }
            Effect::Finished => {
                self.cancel_work(ctx);
                // Without the registry's address, the actor stops by itself
                // once the last request holding an address is answered.
                self.registry.remove(self.run_id);
            }
        }
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
        if self.restarts == 0 {
            self.load(ctx);
        } else {
            let delay =
                Duration::from_millis(200 * 2u64.pow(self.restarts.min(8))).min(MAX_RESTART_DELAY);
            ctx.run_later(delay, |act, ctx| act.load(ctx));
        }
    }
}

impl Supervised for RunActor {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        self.cancel_work(ctx);
        self.state = None;
        self.summary = None;
        self.restarts += 1;
    }
}

impl Handler<Decide> for RunActor {
    type Result = ResponseFuture<Result<(), SteerError>>;

    fn handle(&mut self, msg: Decide, ctx: &mut Context<Self>) -> Self::Result {
        let input = Input::Decide {
            approval_id: msg.approval_id,
            approved: msg.approved,
            feedback: msg.feedback,
            decided_by: msg.decided_by,
        };
        let (tx, rx) = oneshot::channel();
        match self.drive(input, ctx, Some(tx)) {
            Err(error) => Box::pin(async move { Err(error) }),
            Ok(()) => Box::pin(async move { rx.await.unwrap_or(Err(SteerError::Unavailable)) }),
        }
    }
}

impl Handler<Cancel> for RunActor {
    type Result = ResponseFuture<Result<(), SteerError>>;

    fn handle(&mut self, msg: Cancel, ctx: &mut Context<Self>) -> Self::Result {
        if self.state.as_ref().is_some_and(|s| !s.is_terminal()) {
            // Abort first: whatever the commit's fate, nothing may run on
            // after a cancellation, and a failed commit reloads the journal,
            // which resumes the aborted work by the recovery rules.
            self.cancel_work(ctx);
        }
        let input = Input::Cancel {
            reason: msg.reason,
            by: msg.by,
        };
        let (tx, rx) = oneshot::channel();
        match self.drive(input, ctx, Some(tx)) {
            Err(error) => Box::pin(async move { Err(error) }),
            Ok(()) => Box::pin(async move { rx.await.unwrap_or(Err(SteerError::Unavailable)) }),
        }
    }
}

impl Handler<Shutdown> for RunActor {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Context<Self>) {
        self.shutting_down = true;
        self.cancel_work(ctx);
    }
}
