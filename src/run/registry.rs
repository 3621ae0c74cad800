//! The registry of run actors: starts one supervised actor per open run on
//! the runs' arbiter, finds it for the API, and forgets it when the run ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use uuid::Uuid;

use super::actor::{RunActor, RunDeps, Shutdown};
use crate::journal;

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

    /// The run's actor, started (supervised) if it is not running yet.
    pub fn start(&self, run_id: Uuid) -> Addr<RunActor> {
        let mut actors = self.actors();
        if let Some(addr) = actors.get(&run_id) {
            return addr.clone();
        }
        let deps = self.inner.deps.clone();
        let registry = self.clone();
        let arbiters = &self.inner.arbiters;
        let arbiter = &arbiters[(run_id.as_u128() % arbiters.len() as u128) as usize];
        let addr =
            Supervisor::start_in_arbiter(arbiter, move |_| RunActor::new(run_id, deps, registry));
        actors.insert(run_id, addr.clone());
        addr
    }

    /// The actor of an open run, if it has one.
    pub fn get(&self, run_id: Uuid) -> Option<Addr<RunActor>> {
        self.actors().get(&run_id).cloned()
    }

    pub(super) fn remove(&self, run_id: Uuid) {
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
