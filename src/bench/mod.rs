//! `agent-server bench`: the durable core's speed, measured in one run against
//! one database and printed (never asserted).
//!
//! 1. The floor: a bare single-row `INSERT` committed on its own. It is
//!    taken again in turns with each figure below (a floor sample, then
//!    one of the figure's), and each ratio is to the floor taken beside it,
//!    so a machine that is busier at one moment than another does not
//!    skew a ratio.
//! 2. One durable commit on a run's critical path: `journal::append` of one
//!    entry with its summary update.
//! 3. The cost of fencing (`fencing`): the same commits with the epoch
//!    check and without it, taking turns.
//! 4. The wall time of one agent step (a model turn that asks for a safe
//!    tool, and the tool) through the real actor, with a model that answers
//!    at once; with OTLP export of spans, logs and metrics off and on
//!    (to the user's collector, or else to a local sink that discards it),
//!    interleaved, and what exporting costs per step.
//! 5. Journaled entries per second with 64 runs stepping at once, and how
//!    many appends the group commit put in each transaction; then the same
//!    64 runs on two instances sharing the database (`cluster`).
//! 6. The latency from a journal commit to its receipt by WebSocket clients
//!    (`ws`), with 1, 100 and 1,000 clients subscribed; then from a commit
//!    on one instance to clients of another, with 1 and 100.
//! 7. The time until 10,000 open runs left by a killed instance are all
//!    driven again by a fresh one (`restart`).
//! 8. The resident memory of 100,000 runs parked on a human, with the
//!    registry's maintenance running over them (`parked`, written in bulk
//!    by `seed`).
//!
//! The figures of several instances (contract section 10) use
//! `cluster::Instance`s, wired as `startup` wires a server: each its own
//! pool, cluster id, `LISTEN` connection, announcer, writer, arbiters and
//! registry.
//!
//! In embedded mode it uses its own database (`agent_server_bench`) so the
//! runs it creates never mix with real ones. Against `DATABASE_URL`, the
//! figures that claim runs (7 and 8) are skipped when the database holds
//! open runs or live instances that are not the bench's: a claim would
//! drive them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use futures_util::future::BoxFuture;
use serde_json::json;
use uuid::Uuid;

use crate::agents::AgentName;
use crate::config::Settings;
use crate::domain::{Event, EventBody};
use crate::domain::{RunStatus, RunSummary};
use crate::journal::{self, NewRun};
use crate::llm::{self, Message, ModelAnswer, ModelClient, ModelRequest, RequestedCall, Usage};
use crate::run::RunRegistry;
use crate::run::actor::RunDeps;
use crate::startup::open_database;
use crate::tools::{ToolContext, Workspace};

mod cluster;
mod fencing;
mod parked;
mod restart;
mod seed;
mod ws;

/// The creator named in every run the bench makes: not a possible token
/// name (those are `[a-z0-9_-]`), so the bench's runs are never a user's.
const CREATOR: &str = "agent-server bench";

/// Samples per latency figure: enough for a stable p99.
const SAMPLES: usize = 2_000;
/// Steps in the single run that measures one step's wall time.
const STEPS_PER_RUN: u32 = 200;
/// Runs of `STEPS_PER_RUN` steps timed one after another; the median is
/// reported, as one run is at the mercy of a busy moment.
const STEP_REPEATS: usize = 11;
/// Runs stepping at once for the throughput figure.
const CONCURRENT_RUNS: usize = 64;
/// Steps each of those runs takes.
const STEPS_PER_CONCURRENT_RUN: u32 = 50;

/// A model that answers at once: `steps` turns asking for `list_files`, then
/// a final answer.
struct InstantModel {
    steps: u32,
}

impl ModelClient for InstantModel {
    fn provider(&self) -> &'static str {
        "bench"
    }

    fn model_for(&self, _agent: AgentName) -> String {
        "instant".into()
    }

    fn complete(
        &self,
        request: ModelRequest,
    ) -> BoxFuture<'static, Result<ModelAnswer, llm::Error>> {
        let done = request
            .messages
            .iter()
            .filter(|m| matches!(m, Message::ToolResult { .. }))
            .count() as u32;
        let tool_calls = if done < self.steps {
            vec![RequestedCall {
                call_id: None,
                tool: "list_files".into(),
                args: json!({}),
            }]
        } else {
            vec![]
        };
        let answer = ModelAnswer {
            model: "instant".into(),
            text: String::new(),
            tool_calls,
            usage: Usage::default(),
        };
        Box::pin(async move { Ok(answer) })
    }
}

/// Floor samples taken before each step run, and around the throughput run.
const FLOOR_BURST: usize = 200;

/// The floor's statement on a connection of its own, to sample at any time.
struct Floor {
    client: deadpool_postgres::Object,
    insert: tokio_postgres::Statement,
}

impl Floor {
    /// One bare single-row `INSERT`, committed.
    async fn sample(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.client.execute(&self.insert, &[&"x"]).await?;
        Ok(started.elapsed())
    }

    async fn burst(&self, count: usize) -> anyhow::Result<Vec<Duration>> {
        let mut samples = Vec::with_capacity(count);
        for _ in 0..count {
            samples.push(self.sample().await?);
        }
        Ok(samples)
    }
}

/// p50 and p99 of `samples`.
fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub(crate) fn summarize(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!(
        "{name:<44} p50 {:>8.3} ms   p99 {:>8.3} ms   (n = {})",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        samples.len()
    );
    (p50, p99)
}

/// Requests and bytes the sink received, to show that export happened.
#[derive(Default)]
struct SinkCount {
    requests: std::sync::atomic::AtomicUsize,
    bytes: std::sync::atomic::AtomicUsize,
}

/// Answers every OTLP export with success and drops it, so the "export on"
/// figures include building and sending the data but no collector's work.
fn start_sink(listener: std::net::TcpListener) -> anyhow::Result<Arc<SinkCount>> {
    use actix_web::{App, HttpResponse, HttpServer, web};
    use std::sync::atomic::Ordering::Relaxed;
    let count = Arc::new(SinkCount::default());
    let counted = web::Data::from(count.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(counted.clone())
            .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
            .default_service(web::to(
                |body: web::Bytes, count: web::Data<SinkCount>| async move {
                    count.requests.fetch_add(1, Relaxed);
                    count.bytes.fetch_add(body.len(), Relaxed);
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body("{}")
                },
            ))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    actix_rt::spawn(server);
    Ok(count)
}

pub async fn run(
    settings: Settings,
    telemetry: &crate::telemetry::Telemetry,
    sink: Option<std::net::TcpListener>,
) -> anyhow::Result<()> {
    let sink = sink.map(start_sink).transpose()?;
    let database = open_database(&settings, "agent_server_bench").await?;
    let pool = database.pool.clone();
    println!("agent-server bench on {}", database.description);

    // 1. The floor.
    let client = pool.get().await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, v text NOT NULL);
             TRUNCATE bench_floor",
        )
        .await?;
    let insert = client
        .prepare("INSERT INTO bench_floor (v) VALUES ($1)")
        .await?;
    let floor = Floor { client, insert };
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        samples.push(floor.sample().await?);
    }
    summarize("floor: INSERT + COMMIT", samples);

    // 2. One durable commit of a journal entry and its summary.
    let run_id = create_run(&pool).await?;
    let summary = RunSummary {
        status: RunStatus::Running,
        pending_approval: None,
        usage: Default::default(),
        result: None,
        error: None,
        budget: None,
        cost_usd: 0.0,
    };
    let mut seq = 1;
    for (name, with_summary, target) in [
        ("journal commit: entry alone", false, "p50 <= 1.2 x"),
        (
            "journal commit: entry + summary update",
            true,
            "p50 <= 1.3 x, p99 <= 2 x",
        ),
    ] {
        let mut commits = Vec::with_capacity(SAMPLES);
        let mut floors = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            floors.push(floor.sample().await?);
            seq += 1;
            let event = Event {
                seq,
                agent: Some(AgentName::Coding),
                at: Utc::now(),
                key: format!("bench:{seq}"),
                body: EventBody::ToolStarted {
                    call_id: format!("call_{seq}"),
                    tool: "list_files".into(),
                },
            };
            let started = Instant::now();
            journal::append(
                &pool,
                &journal::Append {
                    run_id,
                    epoch: 1,
                    events: vec![event],
                    summary: with_summary.then(|| summary.clone()),
                    release: false,
                    answer: None,
                },
            )
            .await?;
            commits.push(started.elapsed());
        }
        let (commit_p50, commit_p99) = summarize(name, commits);
        let (floor_p50, floor_p99) = percentiles(floors);
        println!(
            "{:<44} p50 {:>8.2} x    p99 {:>8.2} x    (target {target})",
            "  ratio to the floor taken in turns",
            commit_p50.as_secs_f64() / floor_p50.as_secs_f64(),
            commit_p99.as_secs_f64() / floor_p99.as_secs_f64()
        );
    }
    // The journal's part of one agent step: its two commits (3 entries,
    // then 2, as a model turn asking for a safe tool and the tool's result
    // make), with nothing else: what the step figure below cannot go under.
    let mut pairs = Vec::with_capacity(SAMPLES / 4);
    let mut floors = Vec::with_capacity(SAMPLES / 4);
    for _ in 0..SAMPLES / 4 {
        floors.push(floor.sample().await?);
        let started = Instant::now();
        for entries in [3, 2] {
            let events = (0..entries)
                .map(|_| {
                    seq += 1;
                    Event {
                        seq,
                        agent: Some(AgentName::Coding),
                        at: Utc::now(),
                        key: format!("bench:{seq}"),
                        body: EventBody::ToolStarted {
                            call_id: format!("call_{seq}"),
                            tool: "list_files".into(),
                        },
                    }
                })
                .collect();
            journal::append(
                &pool,
                &journal::Append {
                    run_id,
                    epoch: 1,
                    events,
                    summary: None,
                    release: false,
                    answer: None,
                },
            )
            .await?;
        }
        pairs.push(started.elapsed());
    }
    let (pair_p50, _) = summarize("journal commits of one step (3 + 2 entries)", pairs);
    let (floor_p50, _) = percentiles(floors);
    println!(
        "{:<44} p50 {:>8.2} x    (the agent step's journal alone)",
        "  ratio to the floor taken in turns",
        pair_p50.as_secs_f64() / floor_p50.as_secs_f64()
    );
    seed::forget_runs(&pool, &[run_id]).await?;

    // 3. What the epoch check adds to those commits.
    fencing::run(&pool).await?;

    // 4 and 5 drive real run actors.
    let workspace_dir = tempfile_dir()?;
    let workspace = Workspace::open(&workspace_dir).context("opening the bench workspace")?;
    let context = ToolContext {
        workspace: Arc::new(workspace),
        // The bench runs no `loki_query` calls.
        loki: None,
        // Nor `shell` calls.
        sandbox: Arc::new(crate::tools::sandbox::Sandbox::unconfined()),
        mcp: Default::default(),
    };
    let arbiters = crate::startup::run_arbiters();
    let registry_with = |steps: u32, export: bool| {
        let model: Arc<dyn ModelClient> = Arc::new(InstantModel { steps });
        let deps = Arc::new(RunDeps {
            journal: crate::journal::Writer::start(pool.clone()),
            pool: pool.clone(),
            model,
            tools: context.clone(),
            max_iterations: steps + 10,
            deltas: crate::realtime::DeltaHub::new(),
            observer: crate::run::observer::Observer {
                feed: crate::realtime::Feed::new(),
                metrics: crate::telemetry::metrics::Metrics::with_export(export),
                announcer: crate::cluster::Announcer::silent(),
            },
            models: Arc::new(HashMap::from([(AgentName::Coding, "instant".to_string())])),
            prices: Default::default(),
            // Runs made here are this instance's (epoch 1); nobody else claims them.
            cluster: crate::cluster::Cluster::new(
                "bench".into(),
                Duration::from_secs(3600),
                pool.clone(),
            ),
        });
        RunRegistry::new(deps, arbiters.clone())
    };
    let registry_for = |steps: u32| registry_with(steps, false);

    // Off and on take turns, so a busy moment of the machine hits both.
    let exporting = crate::telemetry::otlp_endpoint_set("TRACES");
    let off = registry_with(STEPS_PER_RUN, false);
    let on = registry_with(STEPS_PER_RUN, true);
    let mut per_step_off = Vec::with_capacity(STEP_REPEATS);
    let mut per_step_on = Vec::with_capacity(STEP_REPEATS);
    let mut floors = Vec::new();
    for _ in 0..STEP_REPEATS {
        floors.extend(floor.burst(FLOOR_BURST).await?);
        for (export, registry, samples) in [
            (false, &off, &mut per_step_off),
            (true, &on, &mut per_step_on),
        ] {
            if export && !exporting {
                continue;
            }
            crate::telemetry::set_exporting(export);
            let started = Instant::now();
            let ids = start_runs(registry, 1).await?;
            wait_finished(registry, &ids).await;
            // What was buffered is part of the cost: it leaves before the
            // clock stops.
            telemetry.flush();
            samples.push(started.elapsed() / STEPS_PER_RUN);
        }
    }
    // The other figures are taken without export, as a server without an
    // OTLP endpoint runs.
    crate::telemetry::set_exporting(false);
    let (floor_p50, _) = percentiles(floors);
    let report = |name: &str, samples: &mut Vec<Duration>| {
        samples.sort();
        let median = samples[samples.len() / 2];
        println!(
            "{name:<44} median {:>6.3} ms   best {:>6.3} ms per step  ({STEP_REPEATS} runs of {STEPS_PER_RUN} steps)",
            median.as_secs_f64() * 1e3,
            samples[0].as_secs_f64() * 1e3,
        );
        println!(
            "{:<44} median {:>6.2} x    best {:>6.2} x    (target <= 3 x; two commits are 2 x)",
            "  ratio to the floor taken in turns (p50)",
            median.as_secs_f64() / floor_p50.as_secs_f64(),
            samples[0].as_secs_f64() / floor_p50.as_secs_f64(),
        );
        median
    };
    let median_off = report("agent step, telemetry export off", &mut per_step_off);
    if exporting {
        let median_on = report("agent step, telemetry export on", &mut per_step_on);
        println!(
            "{:<44} {:>+6.1} % of the step (median on vs off; target <= 5 %)",
            "  cost of exporting telemetry",
            (median_on.as_secs_f64() / median_off.as_secs_f64() - 1.0) * 100.0
        );
        if let Some(sink) = &sink {
            use std::sync::atomic::Ordering::Relaxed;
            println!(
                "{:<44} {} OTLP requests, {:.1} MiB, to the bench's own sink",
                "  exported",
                sink.requests.load(Relaxed),
                sink.bytes.load(Relaxed) as f64 / (1024.0 * 1024.0)
            );
        }
    }

    let registry = registry_for(STEPS_PER_CONCURRENT_RUN);
    let mut floors = floor.burst(FLOOR_BURST).await?;
    let started = Instant::now();
    let ids = start_runs(&registry, CONCURRENT_RUNS).await?;
    wait_finished(&registry, &ids).await;
    let elapsed = started.elapsed();
    let mut events = 0usize;
    for id in &ids {
        events += journal::load(&pool, *id).await?.len();
    }
    let single = events as f64 / elapsed.as_secs_f64();
    floors.extend(floor.burst(FLOOR_BURST).await?);
    let (floor_p50, _) = percentiles(floors);
    drop(floor);
    println!(
        "{:<44} {:>8.0} events/s ({events} entries, {CONCURRENT_RUNS} runs, {:.2} s)",
        "throughput",
        single,
        elapsed.as_secs_f64()
    );
    println!(
        "{:<44} {:>8.2}    (entries a second x the floor's p50 in seconds, the floor taken \
         just before and after; target >= 6, 30,000 a second at a 0.2 ms floor)",
        "  ratio to the floor",
        single * floor_p50.as_secs_f64()
    );
    let stats = registry.deps().journal.stats();
    println!(
        "{:<44} {:>8.1} appends per transaction ({} appends, {} transactions)",
        "  group commit",
        stats.appends as f64 / stats.transactions.max(1) as f64,
        stats.appends,
        stats.transactions
    );

    // The figures of several instances start from a database where nothing
    // waits for a driver but what they make.
    let claims_blocked = seed::prepare_for_claims(&pool, database.embedded.is_some()).await?;
    cluster::two_instances(&database.config, &context, single).await?;

    // 6. From commit to a WebSocket client's receipt, on the writer's
    // instance and on another.
    let registry = registry_for(1);
    ws::run(&pool, &database.config, &registry, &settings).await?;
    ws::across_instances(&pool, &database.config, &context, &settings).await?;

    // 7 and 8 claim runs, as every instance does.
    match &claims_blocked {
        None => {
            restart::run(&pool, &database.config, &context).await?;
            parked::run(&pool, &database.config, &context).await?;
        }
        Some(reason) => println!("{:<44} skipped: {reason}", "restart, parked runs"),
    }

    crate::telemetry::set_exporting(true);
    let _ = std::fs::remove_dir_all(&workspace_dir);
    pool.close();
    if let Some(cluster) = &database.embedded {
        cluster.stop().await?;
    }
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("agent-server-bench-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn start_runs(registry: &RunRegistry, count: usize) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let start = new_start(60);
        ids.push(start.run_id);
        registry.create(start, None, None).await?;
    }
    Ok(ids)
}

/// What a bench run of the coding agent starts from.
fn new_start(approval_timeout_secs: u64) -> crate::run::state::Start {
    crate::run::state::Start {
        run_id: Uuid::new_v4(),
        agent: AgentName::Coding,
        task: "bench".into(),
        approval_timeout_secs,
        trace: crate::telemetry::trace::TraceRef::new(None),
        created_by: CREATOR.into(),
        budget: Default::default(),
    }
}

/// A run of the coding agent, journaled but not started.
pub(crate) async fn create_run(pool: &deadpool_postgres::Pool) -> anyhow::Result<Uuid> {
    create_run_owned(pool, "bench").await
}

/// A run of the coding agent, journaled but not started, owned by `owner`
/// at epoch 1.
pub(crate) async fn create_run_owned(
    pool: &deadpool_postgres::Pool,
    owner: &str,
) -> anyhow::Result<Uuid> {
    let start = new_start(60);
    let id = start.run_id;
    let run = NewRun {
        id,
        started: crate::run::state::started_entry(start, journal::now()),
        owner: owner.into(),
        idempotency_key: None,
        limits: None,
    };
    journal::create_run(pool, &run).await?;
    Ok(run.id)
}

/// Waits until every run's actor has left the registry (it does so when the
/// run ends); an in-memory check, so it adds no load to the database.
async fn wait_finished(registry: &RunRegistry, ids: &[Uuid]) {
    while ids.iter().any(|id| registry.drives(*id)) {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}
