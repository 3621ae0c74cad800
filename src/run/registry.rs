//! The runs this instance drives: creates runs (their first transition,
//! through the state machine and the journal's writer), starts one
//! supervised actor per claimed run on the runs' arbiters, sends commands to
//! runs wherever they are driven, and keeps the instance's part of the
//! cluster going (`maintain`): its heartbeat, claiming the runs that need a
//! driver, waking actors whose inbox has mail, and letting every run go at
//! once when its leases lapsed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::actor::{Abandon, CheckInbox, Release, RunActor, RunDeps, Shutdown};
use super::observer::Committed;
use super::state::{self, Fork, Start};
use crate::cluster::{self, Claim, Notice};
use crate::domain::{Command, CommandOutcome};
use crate::domain::{ForkPoint, Refusal};
use crate::journal::{self, Created, NewFork, NewRun, RunLimits};

/// A cheap cloneable handle to the registry.
#[derive(Clone)]
pub struct RunRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    /// A std mutex: held only to insert, look up or remove, never across an
    /// await. Each actor with the epoch of the claim it drives.
    actors: Mutex<HashMap<Uuid, (Addr<RunActor>, i64)>>,
    deps: Arc<RunDeps>,
    /// The threads run actors live on; a run's thread is picked from its id.
    arbiters: Vec<ArbiterHandle>,
    /// Written while claiming, read while creating: the list of runs this
    /// instance drives, read by a claim, is then exact, so it never claims
    /// a run it drives or is creating (which would start a second actor).
    claiming: tokio::sync::RwLock<()>,
    /// Runs being created here: theirs already, though no actor drives them
    /// yet.
    creating: Mutex<std::collections::HashSet<Uuid>>,
}

/// How long shutdown waits for actors to finish the commit they are in.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How often the cluster's open runs are counted for the gauges pushed over
/// OTLP (`GET /metrics` counts them itself).
const GAUGE_INTERVAL: Duration = Duration::from_secs(10);

/// Runs claimed in one statement at the most: a restart with many open runs
/// takes them in batches, each started as soon as it is claimed. 2,000: the
/// bench's 10,000 open runs are all driven again in about 2 s (500 took
/// 3.5 s, each statement gathering the same candidates again).
const CLAIM_BATCH: i64 = 2000;

/// Why a command got no outcome.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no run with this id")]
    NotFound,
    /// Nobody handled it in time, and it was withdrawn: it never takes
    /// effect, and the client may retry.
    #[error("the run did not take the command in time; nothing changed, retry shortly")]
    TimedOut,
    /// The run ended before anyone handled the command, which was withdrawn.
    #[error("the run has already finished")]
    Finished,
    #[error(transparent)]
    Journal(#[from] journal::Error),
}

impl RunRegistry {
    /// A registry placing actors on `arbiters` (at least one).
    pub fn new(deps: Arc<RunDeps>, arbiters: Vec<ArbiterHandle>) -> RunRegistry {
        assert!(!arbiters.is_empty(), "the registry needs an arbiter");
        RunRegistry {
            inner: Arc::new(Inner {
                actors: Mutex::new(HashMap::new()),
                deps,
                arbiters,
                claiming: tokio::sync::RwLock::new(()),
                creating: Mutex::default(),
            }),
        }
    }

    pub fn deps(&self) -> &Arc<RunDeps> {
        &self.inner.deps
    }

    fn actors(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, (Addr<RunActor>, i64)>> {
        // A poisoned lock only means another thread panicked while holding
        // it; the map itself is always consistent.
        self.inner
            .actors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates a run: its first transition (`state::start`), committed by
    /// the journal's writer unless the idempotency key was used or the
    /// creator is over a limit, handed to the observer, and driven here
    /// (epoch 1) by an actor that starts from the state the transition made.
    pub async fn create(
        &self,
        start: Start,
        idempotency_key: Option<String>,
        limits: Option<RunLimits>,
    ) -> Result<Created, journal::Error> {
        let run_id = start.run_id;
        let deps = &self.inner.deps;
        let (state, transition) = state::start(start, &deps.env());
        let new_run = NewRun {
            id: run_id,
            started: transition.events[0].clone(),
            owner: deps.cluster.id().to_string(),
            idempotency_key,
            limits,
        };
        self.begin(state, transition.events, deps.journal.create(&new_run))
            .await
    }

    /// Forks a run: `copied` are the source's entries `1..=fork.from_seq`;
    /// the fork's first transition (`state::fork`) is committed with them
    /// unless the forker is over a limit, and the fork is driven here like a
    /// new run. The observer sees only the fork's own entries: the copies
    /// were counted and traced with the source.
    pub async fn fork(
        &self,
        copied: &[crate::domain::Event],
        fork: Fork,
        limits: Option<RunLimits>,
    ) -> Result<Result<Created, Refusal>, journal::Error> {
        let run_id = fork.run_id;
        let deps = &self.inner.deps;
        let from = ForkPoint {
            run_id: fork.from_run_id,
            seq: fork.from_seq,
        };
        let (created_by, trace_id) = (fork.by.clone(), fork.trace.trace_id.clone());
        let (state, transition) = match state::fork(copied, fork, &deps.env()) {
            Ok(forked) => forked,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let mut events = copied.to_vec();
        events.extend(transition.events.iter().cloned());
        let new_fork = NewFork {
            id: run_id,
            from,
            events,
            summary: state.summary(),
            owner: deps.cluster.id().to_string(),
            created_by,
            trace_id,
            limits,
        };
        let created = self
            .begin(
                state,
                transition.events,
                journal::create_fork(&deps.pool, &new_fork),
            )
            .await?;
        Ok(Ok(created))
    }

    /// What creating a run and forking one share: `commit` writes the new
    /// run's first entries (`events` the run's own, which the observer
    /// sees), while it counts as this instance's so no claim takes it;
    /// once committed, the observer follows and an actor drives it from
    /// `state` (epoch 1).
    async fn begin(
        &self,
        state: state::RunState,
        events: Vec<crate::domain::Event>,
        commit: impl std::future::Future<Output = Result<Created, journal::Error>>,
    ) -> Result<Created, journal::Error> {
        let run_id = state.run_id;
        let deps = &self.inner.deps;
        let began = Instant::now();
        let _creating = self.inner.claiming.read().await;
        self.creating().insert(run_id);
        let created = commit.await;
        if let Ok(Created::New(_)) = &created {
            let summary = state.summary();
            deps.observer.committed(
                &Committed {
                    run_id,
                    state: &state,
                    events: &events,
                    summary: &summary,
                    summary_changed: true,
                    pending_before: None,
                    agent_call: state.current_agent_call(),
                    elapsed: began.elapsed(),
                    owner: Some(deps.cluster.id()),
                },
                &tracing::info_span!("run", run_id = %run_id,
                    trace_id = %state.trace.trace_id, span_id = %state.trace.span_id),
            );
            let claim = Claim { run_id, epoch: 1 };
            self.spawn(claim, move |deps, release| {
                RunActor::new_run(state, 1, deps, release)
            });
        }
        self.creating().remove(&run_id);
        created
    }

    /// Drives a run this instance claimed: an actor that loads its journal.
    pub fn start(&self, claim: Claim) {
        self.spawn(claim, move |deps, release| {
            RunActor::new(claim.run_id, claim.epoch, deps, release)
        });
    }

    /// Starts the actor `make` builds for `claim`, unless one drives that
    /// claim already. An actor of an older claim is left to find out by
    /// itself (its next write is fenced).
    fn spawn(
        &self,
        claim: Claim,
        make: impl FnOnce(Arc<RunDeps>, Release) -> RunActor + Send + 'static,
    ) {
        let mut actors = self.actors();
        if actors
            .get(&claim.run_id)
            .is_some_and(|(_, epoch)| *epoch >= claim.epoch)
        {
            return;
        }
        let deps = self.inner.deps.clone();
        let registry = Arc::downgrade(&self.inner);
        let release: Release = Arc::new(move |run_id, epoch| {
            if let Some(inner) = registry.upgrade() {
                RunRegistry { inner }.remove(run_id, epoch);
            }
        });
        let arbiters = &self.inner.arbiters;
        let arbiter = &arbiters[(claim.run_id.as_u128() % arbiters.len() as u128) as usize];
        let addr = Supervisor::start_in_arbiter(arbiter, move |_| make(deps, release));
        actors.insert(claim.run_id, (addr, claim.epoch));
        self.inner.deps.observer.metrics.set_owned(actors.len());
    }

    /// Whether this instance drives the run now.
    pub fn drives(&self, run_id: Uuid) -> bool {
        self.actors().contains_key(&run_id)
    }

    /// The runs this instance drives (or is creating).
    pub fn driving(&self) -> Vec<Uuid> {
        let mut runs: Vec<Uuid> = self.actors().keys().copied().collect();
        runs.extend(self.creating().iter().copied());
        runs
    }

    fn creating(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<Uuid>> {
        self.inner
            .creating
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets the actor of `run_id` if it still drives claim `epoch`.
    fn remove(&self, run_id: Uuid, epoch: i64) {
        let mut actors = self.actors();
        if actors.get(&run_id).is_some_and(|(_, e)| *e == epoch) {
            actors.remove(&run_id);
        }
        self.inner.deps.observer.metrics.set_owned(actors.len());
    }

    /// Tells the local actor of `run_id`, if any, that commands may wait.
    fn check_inbox(&self, run_id: Uuid) -> bool {
        match self.actors().get(&run_id) {
            Some((addr, _)) => {
                addr.do_send(CheckInbox);
                true
            }
            None => false,
        }
    }

    /// Sends a command to a run, wherever it is driven, and waits for its
    /// outcome: through the run's inbox in PostgreSQL, so the owner applies
    /// it in the same transaction as the entries it causes. A run without a
    /// live owner (parked, or its owner died) is claimed here. After
    /// `AGENT_LEASE_SECS` + 5 s without an outcome the command is withdrawn,
    /// so that it cannot take effect after the client was told it did not.
    pub async fn command(
        &self,
        run_id: Uuid,
        command: &Command,
    ) -> Result<CommandOutcome, CommandError> {
        let cluster = &self.inner.deps.cluster;
        let mut notices = cluster.notices();
        let json = serde_json::to_value(command).map_err(|e| journal::Error::Corrupt {
            run_id,
            seq: 0,
            reason: e.to_string(),
        })?;
        let inbox_id = cluster
            .send(run_id, &json)
            .await?
            .ok_or(CommandError::NotFound)?;
        if !self.check_inbox(run_id) {
            let _claiming = self.inner.claiming.write().await;
            if !self.drives(run_id)
                && let Some(claim) = cluster.claim_one(run_id).await?
            {
                self.start(claim);
            }
        }
        let deadline = Instant::now() + cluster.lease() + Duration::from_secs(5);
        let mut poll = Duration::from_millis(20);
        loop {
            if let Some(outcome) = cluster.outcome(inbox_id).await? {
                return read_outcome(run_id, outcome);
            }
            if Instant::now() >= deadline {
                if cluster.withdraw(inbox_id).await? {
                    return Err(CommandError::TimedOut);
                }
                continue;
            }
            // A run that ended has no driver to answer; its journal does.
            if poll >= Duration::from_millis(160)
                && let Some(run) = journal::get_run(&self.inner.deps.pool, run_id).await?
                && run.status.is_terminal()
                && cluster.withdraw(inbox_id).await?
            {
                return Err(CommandError::Finished);
            }
            // The notification is a hint; the poll, ever slower, is the rule.
            let wait = tokio::time::sleep(poll);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    notice = notices.recv() => match notice {
                        Ok(Notice::Message { channel, payload })
                            if channel == cluster::INBOX_DONE && payload == inbox_id.to_string() => break,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => {
                            wait.as_mut().await;
                            break;
                        }
                    },
                }
            }
            poll = (poll * 2).min(Duration::from_millis(250));
        }
    }

    /// Keeps this instance's part of the cluster going until `stop`: the
    /// heartbeat, claims of runs that need a driver, and mail for the runs
    /// driven here. Call once, on the actix system of the server.
    pub async fn maintain(self, stop: tokio_util::sync::CancellationToken) {
        let cluster = self.inner.deps.cluster.clone();
        let heartbeat = {
            let registry = self.clone();
            let stop = stop.clone();
            async move {
                let mut beat = tokio::time::interval(cluster.heartbeat_interval());
                beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        _ = beat.tick() => {}
                        _ = stop.cancelled() => return,
                    }
                    // Checked before renewing: a process that was frozen
                    // must not renew leases others may have taken meanwhile.
                    if cluster.lapsed() {
                        registry.lapsed().await;
                    }
                    if let Err(error) = cluster.heartbeat().await {
                        tracing::warn!(%error, "could not renew this instance's leases");
                    }
                }
            }
        };
        let claims = {
            let registry = self.clone();
            let stop = stop.clone();
            async move {
                let cluster = registry.inner.deps.cluster.clone();
                let mut notices = cluster.notices();
                let mut tick = tokio::time::interval(cluster.claim_interval());
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        notice = notices.recv() => match notice {
                            Ok(Notice::Message { channel, payload }) if channel == cluster::INBOX => {
                                if let Ok(run_id) = payload.parse() {
                                    registry.check_inbox(run_id);
                                }
                                continue;
                            }
                            Ok(Notice::Message { channel, .. }) if channel == cluster::RELEASED => {}
                            Ok(Notice::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                            Ok(_) => continue,
                            Err(broadcast::error::RecvError::Closed) => {}
                        },
                        _ = stop.cancelled() => return,
                    }
                    if !cluster.lapsed() {
                        registry.claim_and_deliver().await;
                    }
                }
            }
        };
        let gauges = {
            let registry = self.clone();
            let stop = stop.clone();
            async move {
                let deps = &registry.inner.deps;
                let mut tick = tokio::time::interval(GAUGE_INTERVAL);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.cancelled() => return,
                    }
                    if let Ok(counts) = journal::open_run_counts(&deps.pool).await {
                        deps.observer.metrics.set_open_runs(counts);
                    }
                }
            }
        };
        tokio::join!(heartbeat, claims, gauges);
    }

    /// Claims, at start, the runs that need a driver (those this instance
    /// drove before a restart among them); returns how many it drives.
    pub async fn recover(&self) -> usize {
        self.claim_and_deliver().await;
        self.actors().len()
    }

    /// One round of claims (runs that need a driver, in batches) and of
    /// mail for the runs driven here.
    async fn claim_and_deliver(&self) {
        let cluster = &self.inner.deps.cluster;
        let claiming = self.inner.claiming.write().await;
        loop {
            match cluster.claim_due(&self.driving(), CLAIM_BATCH).await {
                Ok(claims) => {
                    let full = claims.len() as i64 == CLAIM_BATCH;
                    if !claims.is_empty() {
                        self.inner.deps.observer.metrics.record_claims(claims.len());
                        tracing::info!(runs = claims.len(), "claimed runs that needed a driver");
                    }
                    for claim in claims {
                        self.start(claim);
                    }
                    if !full {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "could not claim runs");
                    return;
                }
            }
        }
        drop(claiming);
        match cluster.runs_with_mail().await {
            Ok(runs) => {
                for run_id in runs {
                    self.check_inbox(run_id);
                }
            }
            Err(error) => tracing::warn!(%error, "could not look for commands"),
        }
    }

    /// The instance's leases may have lapsed (it was frozen, or cut off
    /// from the database): every run is let go at once, its commands
    /// killed, and given back; runs nobody took are claimed again as usual.
    async fn lapsed(&self) {
        let actors: Vec<(Addr<RunActor>, i64)> = self.actors().drain().map(|(_, a)| a).collect();
        if actors.is_empty() {
            return;
        }
        tracing::warn!(
            runs = actors.len(),
            "this instance's leases lapsed; letting every run go"
        );
        self.inner
            .deps
            .observer
            .metrics
            .record_leases_lost(actors.len());
        let abandon = futures_util::future::join_all(actors.iter().map(|(a, _)| a.send(Abandon)));
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, abandon).await;
        self.inner.deps.observer.metrics.set_owned(0);
        if let Err(error) = self.inner.deps.cluster.release_all().await {
            tracing::warn!(%error, "could not give the runs back; they are claimed when the leases lapse");
        }
    }

    /// Tells every actor to stop starting work, waits for the commits in
    /// progress (an actor handles `Shutdown` only after its current commit),
    /// then gives every run back, so other instances take them at once.
    pub async fn shutdown(&self) {
        let actors: Vec<Addr<RunActor>> = self.actors().values().map(|(a, _)| a.clone()).collect();
        let all = futures_util::future::join_all(actors.iter().map(|a| a.send(Shutdown)));
        if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
            tracing::warn!("some runs did not acknowledge the shutdown in time");
        }
        match self.inner.deps.cluster.stop().await {
            Ok(released) => tracing::info!(runs = released, "gave the runs back"),
            Err(error) => {
                tracing::warn!(%error, "could not give the runs back; they are taken when the leases lapse")
            }
        }
    }
}

/// A handled command's outcome, as journaled by its run's owner.
fn read_outcome(run_id: Uuid, outcome: serde_json::Value) -> Result<CommandOutcome, CommandError> {
    match serde_json::from_value::<CommandOutcome>(outcome) {
        Ok(CommandOutcome::Withdrawn) => Err(CommandError::TimedOut),
        Ok(outcome) => Ok(outcome),
        Err(error) => Err(CommandError::Journal(journal::Error::Corrupt {
            run_id,
            seq: 0,
            reason: format!("a command's outcome cannot be read: {error}"),
        })),
    }
}
