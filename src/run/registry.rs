//! The registry of run actors: creates runs (their first transition, through
//! the state machine and the journal's writer), starts one supervised actor
//! per open run on the runs' arbiter, finds it for the API, and forgets it
//! when the run ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use uuid::Uuid;

use super::actor::{Release, RunActor, RunDeps, Shutdown};
use super::observer::Committed;
use super::state::{self, Start};
use crate::journal::{self, Created, NewRun, RunLimits};

/// A cheap cloneable handle to the registry.
#[derive(Clone)]
pub struct RunRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    /// A std mutex: held only to insert, look up or remove, never across an
    /// await.
    actors: Mutex<HashMap<Uuid, Addr<RunActor>>>,
    deps: Arc<RunDeps>,
    /// The threads run actors live on; a run's thread is picked from its id.
    arbiters: Vec<ArbiterHandle>,
}

/// How long shutdown waits for actors to finish the commit they are in.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl RunRegistry {
    /// A registry placing actors on `arbiters` (at least one).
    pub fn new(deps: Arc<RunDeps>, arbiters: Vec<ArbiterHandle>) -> RunRegistry {
        assert!(!arbiters.is_empty(), "the registry needs an arbiter");
        RunRegistry {
            inner: Arc::new(Inner {
                actors: Mutex::new(HashMap::new()),
                deps,
                arbiters,
            }),
        }
    }

    pub fn deps(&self) -> &Arc<RunDeps> {
        &self.inner.deps
    }

    fn actors(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Addr<RunActor>>> {
        // A poisoned lock only means another thread panicked while holding
        // it; the map itself is always consistent.
        self.inner
            .actors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates a run: its first transition (`state::start`), committed by
    /// the journal's writer unless the idempotency key was used or the
    /// creator is over a limit, handed to the observer, and driven by an
    /// actor that starts from the state the transition made.
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
            idempotency_key,
            limits,
        };
        let began = std::time::Instant::now();
        let created = deps.journal.create(&new_run).await?;
        if let Created::New(_) = &created {
            let summary = state.summary();
            deps.observer.committed(
                &Committed {
                    run_id,
                    state: &state,
                    events: &transition.events,
                    summary: &summary,
                    summary_changed: true,
                    pending_before: None,
                    agent_call: None,
                    elapsed: began.elapsed(),
                },
                &tracing::info_span!("run", run_id = %run_id),
            );
            self.spawn(run_id, move |deps, release| {
                RunActor::new_run(state, deps, release)
            });
        }
        Ok(created)
    }

    /// The run's actor, started (supervised) if it is not running yet; it
    /// loads the run's journal.
    pub fn start(&self, run_id: Uuid) -> Addr<RunActor> {
        self.spawn(run_id, move |deps, release| {
            RunActor::new(run_id, deps, release)
        })
    }

    /// Starts the actor `make` builds, unless the run has one.
    fn spawn(
        &self,
        run_id: Uuid,
        make: impl FnOnce(Arc<RunDeps>, Release) -> RunActor + Send + 'static,
    ) -> Addr<RunActor> {
        let mut actors = self.actors();
        if let Some(addr) = actors.get(&run_id) {
            return addr.clone();
        }
        let deps = self.inner.deps.clone();
        let registry = self.clone();
        let release: Release = Arc::new(move |id| registry.remove(id));
        let arbiters = &self.inner.arbiters;
        let arbiter = &arbiters[(run_id.as_u128() % arbiters.len() as u128) as usize];
        let addr = Supervisor::start_in_arbiter(arbiter, move |_| make(deps, release));
        actors.insert(run_id, addr.clone());
        addr
    }

    /// The actor of an open run, if it has one.
    pub fn get(&self, run_id: Uuid) -> Option<Addr<RunActor>> {
        self.actors().get(&run_id).cloned()
    }

    fn remove(&self, run_id: Uuid) {
        self.actors().remove(&run_id);
    }

    /// Gives every unfinished run its actor back; returns how many.
    pub async fn recover(&self) -> Result<usize, journal::Error> {
        let open = journal::open_runs(&self.inner.deps.pool).await?;
        for run_id in &open {
            self.start(*run_id);
        }
        Ok(open.len())
    }

    /// Tells every actor to stop starting work, and waits for the commits in
    /// progress (an actor handles `Shutdown` only after its current commit).
    pub async fn shutdown(&self) {
        let actors: Vec<Addr<RunActor>> = self.actors().values().cloned().collect();
        let all = futures_util::future::join_all(actors.iter().map(|a| a.send(Shutdown)));
        if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
            tracing::warn!("some runs did not acknowledge the shutdown in time");
        }
    }
}
