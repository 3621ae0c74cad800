//! The restart figure: 10,000 open runs, each waiting for its model's
//! answer, are left by an instance that dies as on `kill -9` (nothing given
//! back); a fresh instance recovers them, and the figure is the time from
//! its `recover()` until every run has an actor that journaled the call
//! again (`LLM_CALLED`, attempt 2) and sent it.
//!
//! The runs are made through `RunRegistry::create` on the instance that is
//! then killed, so they are what a server leaves behind. Their model never
//! answers, so nothing but the takeover is timed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use uuid::Uuid;

use super::cluster::{Instance, forget_instance};
use super::seed;
use crate::agents::AgentName;
use crate::llm::{self, ModelAnswer, ModelClient, ModelRequest};
use crate::run::RunRegistry;
use crate::tools::ToolContext;

/// Open runs left by the instance that dies.
const RUNS: usize = 10_000;
/// Runs created at once: as many requests as a busy server takes at once.
const CREATING_AT_ONCE: usize = 64;
/// The longest wait for every run to be driven; past it, the figure says
/// how many were.
const GIVE_UP: Duration = Duration::from_secs(60);
/// How often the count of model calls is read.
const POLL: Duration = Duration::from_millis(1);

/// A model that never answers, and counts its calls: an actor sends a call
/// only once its `LLM_CALLED` is committed, so the count is the number of
/// runs driven that far.
#[derive(Default)]
struct SilentModel {
    calls: AtomicUsize,
}

impl SilentModel {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Waits until `count` calls arrived, or `GIVE_UP`; returns how many did.
    async fn wait_for(&self, count: usize) -> usize {
        let deadline = Instant::now() + GIVE_UP;
        while self.calls() < count && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        self.calls()
    }
}

impl ModelClient for SilentModel {
    fn provider(&self) -> &'static str {
        "bench"
    }

    fn model_for(&self, _agent: AgentName) -> String {
        "silent".into()
    }

    fn complete(
        &self,
        _request: ModelRequest,
    ) -> BoxFuture<'static, Result<ModelAnswer, llm::Error>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(futures_util::future::pending())
    }
}

/// Prints the time until every run is driven again, and how long the
/// claims and the making of the runs took.
pub async fn run(
    pool: &Pool,
    config: &tokio_postgres::Config,
    tools: &ToolContext,
) -> anyhow::Result<()> {
    // The instance that dies, with every run waiting on its first call.
    let model = Arc::new(SilentModel::default());
    let mut doomed = Instance::start(config, "killed", model.clone(), tools, 10).await?;
    doomed.maintain();
    let making = Instant::now();
    let ids = create_many(&doomed.registry, RUNS).await?;
    let made = model.wait_for(RUNS).await;
    let making = making.elapsed();
    let killed = doomed.id().to_string();
    doomed.kill().await;
    // Its lease runs out, as if `AGENT_LEASE_SECS` had passed.
    pool.get()
        .await?
        .execute(
            "UPDATE instances SET heartbeat_at = now() - interval '1 hour' WHERE id = $1",
            &[&killed],
        )
        .await?;
    seed::analyze(pool).await?;

    // The fresh instance, timed from its recovery.
    let model = Arc::new(SilentModel::default());
    let mut fresh = Instance::start(config, "restarted", model.clone(), tools, 10).await?;
    let started = Instant::now();
    let recovered = fresh.registry.recover().await;
    let claimed = started.elapsed();
    fresh.maintain();
    let driven = model.wait_for(RUNS).await;
    let elapsed = started.elapsed();
    let second_attempts = second_attempts(pool, &ids).await?;
    println!(
        "{:<44} {:>8.2} s    ({driven} of {RUNS} runs driven, {second_attempts} LLM_CALLED \
         attempt 2 journaled; target <= 5 s)",
        "restart: open runs driven again",
        elapsed.as_secs_f64(),
    );
    println!(
        "{:<44} {:>8.2} s    ({recovered} runs claimed by recover())",
        "  claims",
        claimed.as_secs_f64(),
    );
    println!(
        "{:<44} {:>8.2} s    ({made} runs created and their first call journaled by the \
         instance then killed)",
        "  before the kill",
        making.as_secs_f64(),
    );

    fresh.stop().await?;
    forget_instance(pool, &killed).await?;
    seed::forget_runs(pool, &ids).await?;
    seed::vacuum(pool).await
}

/// Creates `count` runs on `registry`, `CREATING_AT_ONCE` at a time.
async fn create_many(registry: &RunRegistry, count: usize) -> anyhow::Result<Vec<Uuid>> {
    let starts: Vec<_> = (0..count).map(|_| super::new_start(3600)).collect();
    let ids = starts.iter().map(|start| start.run_id).collect();
    futures_util::stream::iter(starts)
        .map(|start| registry.create(start, None, None))
        .buffer_unordered(CREATING_AT_ONCE)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    Ok(ids)
}

/// How many of the runs journaled a second attempt of their model call.
async fn second_attempts(pool: &Pool, ids: &[Uuid]) -> anyhow::Result<i64> {
    let ids = ids.to_vec();
    Ok(pool
        .get()
        .await?
        .query_one(
            "SELECT count(*) FROM run_events
             WHERE run_id = ANY($1) AND type = 'LLM_CALLED' AND payload->>'attempt' = '2'",
            &[&ids],
        )
        .await?
        .get(0))
}
