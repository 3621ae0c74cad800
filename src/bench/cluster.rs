//! Instances of the bench's cluster figures, each wired as `startup` wires a
//! server (its own pool, cluster id, `LISTEN` connection, feed following
//! the cluster, announcer, journal writer, arbiters and registry), and the
//! figure of journaled entries per second with 64 runs on two of them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::ArbiterHandle;
use anyhow::Context;
use deadpool_postgres::Pool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{CONCURRENT_RUNS, InstantModel, STEPS_PER_CONCURRENT_RUN};
use crate::agents::AgentName;
use crate::cluster::{self, Announcer, Cluster, Notice};
use crate::journal;
use crate::llm::ModelClient;
use crate::realtime::{DeltaHub, Feed};
use crate::run::RunRegistry;
use crate::run::actor::RunDeps;
use crate::run::observer::Observer;
use crate::telemetry::metrics::Metrics;
use crate::tools::ToolContext;

/// The lease of the bench's instances: the server's default.
const LEASE: Duration = Duration::from_secs(10);

/// How long an instance's `LISTEN` connection may take to be ready.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// One instance of agent-server without its HTTP side.
pub struct Instance {
    pub pool: Pool,
    pub registry: RunRegistry,
    arbiters: Vec<ArbiterHandle>,
    /// Stops the maintenance, when it runs.
    stop: CancellationToken,
    maintenance: Option<JoinHandle<()>>,
    /// The `LISTEN` connection and the feed's follower of the cluster.
    tasks: Vec<JoinHandle<()>>,
}

impl Instance {
    /// Starts an instance named `bench-{name}-{random}` on the database of
    /// `config`, registered and listening; its runs' actors ask `model`.
    pub async fn start(
        config: &tokio_postgres::Config,
        name: &str,
        model: Arc<dyn ModelClient>,
        tools: &ToolContext,
        max_iterations: u32,
    ) -> anyhow::Result<Instance> {
        let pool = crate::db::pool(config.clone(), crate::db::POOL_SIZE)?;
        let id = format!("bench-{name}-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let cluster = Cluster::new(id.clone(), LEASE, pool.clone());
        let mut listening = cluster.notices();
        let listener = actix_rt::spawn(cluster::listener::run(
            config.clone(),
            cluster::CHANNELS,
            cluster.notice_sender(),
        ));
        tokio::time::timeout(LISTEN_TIMEOUT, async {
            while !matches!(listening.recv().await, Ok(Notice::Resync)) {}
        })
        .await
        .context("the instance's LISTEN connection did not open")?;
        cluster.register().await?;
        let feed = Feed::new();
        let follower = actix_rt::spawn(crate::realtime::follow_cluster(
            cluster.notices(),
            id.clone(),
            pool.clone(),
            feed.clone(),
        ));
        let models: HashMap<AgentName, String> = AgentName::ALL
            .into_iter()
            .map(|agent| (agent, model.model_for(agent)))
            .collect();
        let deps = Arc::new(RunDeps {
            journal: journal::Writer::start(pool.clone()),
            pool: pool.clone(),
            model,
            tools: tools.clone(),
            max_iterations,
            deltas: DeltaHub::new(),
            observer: Observer {
                feed,
                metrics: Metrics::with_export(false),
                announcer: Announcer::start(pool.clone(), id),
            },
            models: Arc::new(models),
            prices: Default::default(),
            cluster,
        });
        let arbiters = crate::startup::run_arbiters();
        Ok(Instance {
            pool,
            registry: RunRegistry::new(deps, arbiters.clone()),
            arbiters,
            stop: CancellationToken::new(),
            maintenance: None,
            tasks: vec![listener, follower],
        })
    }

    pub fn cluster(&self) -> &Cluster {
        &self.registry.deps().cluster
    }

    pub fn id(&self) -> &str {
        self.cluster().id()
    }

    /// Starts the instance's maintenance, as a server does once it has
    /// recovered: heartbeat, claims of runs that need a driver, timers.
    pub fn maintain(&mut self) {
        let registry = self.registry.clone();
        self.maintenance = Some(actix_rt::spawn(registry.maintain(self.stop.clone())));
    }

    /// Stops as on SIGTERM (runs told to stop, every lease given back),
    /// then leaves no trace: its threads stopped, its row deleted.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_maintenance().await;
        self.registry.shutdown().await;
        self.end().await
    }

    /// Dies as on `kill -9`: its actors vanish with their threads and
    /// nothing is given back; its runs keep it as their owner, and its row
    /// stays with the last heartbeat it sent.
    pub async fn kill(mut self) {
        self.stop_maintenance().await;
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        for task in &self.tasks {
            task.abort();
        }
        self.pool.close();
    }

    async fn stop_maintenance(&mut self) {
        self.stop.cancel();
        if let Some(maintenance) = self.maintenance.take() {
            let _ = maintenance.await;
        }
    }

    async fn end(self) -> anyhow::Result<()> {
        // First: some of the pool's connections may have been opened by
        // actors, and are driven by their arbiters' threads.
        forget_instance(&self.pool, self.id()).await?;
        self.pool.close();
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        for task in &self.tasks {
            task.abort();
        }
        Ok(())
    }
}

/// Deletes an instance's row.
pub async fn forget_instance(pool: &Pool, id: &str) -> anyhow::Result<()> {
    pool.get()
        .await?
        .execute("DELETE FROM instances WHERE id = $1", &[&id])
        .await?;
    Ok(())
}

/// Journaled entries per second with `CONCURRENT_RUNS` runs stepping at
/// once, half created on each of two instances sharing the database, each
/// with its heartbeat and claims running; printed beside `single`, the
/// figure of one instance.
pub async fn two_instances(
    config: &tokio_postgres::Config,
    tools: &ToolContext,
    single: f64,
) -> anyhow::Result<()> {
    let steps = STEPS_PER_CONCURRENT_RUN;
    let model: Arc<dyn ModelClient> = Arc::new(InstantModel { steps });
    let mut instances = Vec::with_capacity(2);
    for name in ["a", "b"] {
        let mut instance = Instance::start(config, name, model.clone(), tools, steps + 10).await?;
        instance.maintain();
        instances.push(instance);
    }
    let (a, b) = (&instances[0].registry, &instances[1].registry);
    let per_instance = CONCURRENT_RUNS / 2;
    let started = Instant::now();
    let (on_a, on_b) = tokio::join!(
        super::start_runs(a, per_instance),
        super::start_runs(b, per_instance)
    );
    let (on_a, on_b) = (on_a?, on_b?);
    tokio::join!(
        super::wait_finished(a, &on_a),
        super::wait_finished(b, &on_b)
    );
    let elapsed = started.elapsed();
    let pool = &instances[0].pool;
    let mut events = 0usize;
    for id in on_a.iter().chain(&on_b) {
        events += journal::load(pool, *id).await?.len();
    }
    let rate = events as f64 / elapsed.as_secs_f64();
    println!(
        "{:<44} {:>8.0} events/s ({events} entries, {per_instance} runs on each, {:.2} s; \
         {:.2} x one instance's)",
        "throughput, two instances",
        rate,
        elapsed.as_secs_f64(),
        rate / single
    );
    let transactions: usize = instances
        .iter()
        .map(|i| i.registry.deps().journal.stats().transactions)
        .sum();
    let appends: usize = instances
        .iter()
        .map(|i| i.registry.deps().journal.stats().appends)
        .sum();
    println!(
        "{:<44} {:>8.1} appends per transaction ({appends} appends, {transactions} transactions)",
        "  group commit, both writers",
        appends as f64 / transactions.max(1) as f64,
    );
    for instance in instances {
        instance.stop().await?;
    }
    Ok(())
}
