//! The WebSocket figures of `agent-server bench`: the latency from a journal
//! commit to its receipt by WebSocket clients on loopback, with 1, 100 and
//! 1,000 clients subscribed to the run; and from a commit on one instance
//! to clients of another sharing the database, with 1 and 100.
//!
//! On one instance, entries go through the same path as a run's:
//! `journal::append`, then `Feed::publish_events`. Across instances they go
//! through the whole path of the real servers: the writer's journal writer
//! and observer, whose announcer notifies the others after the commit; the
//! reader's `LISTEN` connection, `follow_cluster` (which reads the entries
//! from the journal) and its feed; then its WebSocket connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{App, web};
use deadpool_postgres::Pool;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::cluster::Instance;
use crate::agents::AgentName;
use crate::api::{self, AppState};
use crate::config::Settings;
use crate::domain::{Event, EventBody};
use crate::journal;
use crate::realtime::Feed;
use crate::run::RunRegistry;
use crate::run::actor::RunDeps;
use crate::run::observer::Committed;
use crate::run::state::{self, RunState};
use crate::tools::ToolContext;

/// Entries committed per measurement.
const SAMPLES: i64 = 100;
/// The pause between two entries: a busy run's pace, not a flood.
const PACE: Duration = Duration::from_millis(10);
/// The client counts measured.
const CLIENTS: [usize; 3] = [1, 100, 1000];
/// The client counts measured on another instance than the writer's.
const CLIENTS_ACROSS: [usize; 2] = [1, 100];

/// Prints commit-to-receipt latency with 1, 100 and 1,000 clients of the
/// writer's own server.
pub async fn run(
    pool: &Pool,
    config: &tokio_postgres::Config,
    registry: &RunRegistry,
    settings: &Settings,
) -> anyhow::Result<()> {
    raise_open_file_limit();
    let (url, server) = serve(config, registry, settings)?;
    let feed = &registry.deps().observer.feed;
    for clients in CLIENTS {
        let run_id = super::create_run(pool).await?;
        let committer = Committer::Local { pool, feed };
        let latencies = measure(&url, run_id, clients, &committer).await?;
        super::seed::forget_runs(pool, &[run_id]).await?;
        super::summarize(
            &format!("commit to WebSocket receipt, {clients} clients"),
            latencies,
        );
    }
    println!(
        "{:<44} (target: p99 <= 2 ms, 3 ms, 25 ms at 1, 100, 1000 clients)",
        ""
    );
    server.stop().await;
    Ok(())
}

/// Prints commit-to-receipt latency with 1 and 100 clients of one
/// instance, the entries committed by another.
pub async fn across_instances(
    pool: &Pool,
    config: &tokio_postgres::Config,
    tools: &ToolContext,
    settings: &Settings,
) -> anyhow::Result<()> {
    // No run is driven here, so the model is never asked; and neither
    // instance claims, so the run stays the writer's.
    let model = Arc::new(super::InstantModel { steps: 0 });
    let writer = Instance::start(config, "writer", model.clone(), tools, 10).await?;
    let reader = Instance::start(config, "reader", model, tools, 10).await?;
    let (url, server) = serve(config, &reader.registry, settings)?;
    for clients in CLIENTS_ACROSS {
        writer.cluster().heartbeat().await?;
        let run_id = super::create_run_owned(&writer.pool, writer.id()).await?;
        let events = journal::load(&writer.pool, run_id).await?;
        let state = state::fold(run_id, &events)
            .ok_or_else(|| anyhow::anyhow!("the run has no RUN_STARTED"))?;
        let committer = Committer::Instance {
            deps: writer.registry.deps(),
            state: &state,
        };
        let latencies = measure(&url, run_id, clients, &committer).await?;
        super::seed::forget_runs(pool, &[run_id]).await?;
        super::summarize(
            &format!("receipt on another instance, {clients} clients"),
            latencies,
        );
    }
    println!("{:<44} (target: p99 <= 20 ms)", "");
    server.stop().await;
    writer.stop().await?;
    reader.stop().await
}

/// A server on loopback over `registry`'s feed, wired as the real one
/// (`api::wire`) without its access guard.
///
/// Its replays read through a pool of its own: a connection opened on one
/// of the server's worker threads is driven by that thread, and closes
/// when the server stops.
fn serve(
    config: &tokio_postgres::Config,
    registry: &RunRegistry,
    settings: &Settings,
) -> anyhow::Result<(String, Server)> {
    let pool = crate::db::pool(config.clone(), crate::db::POOL_SIZE)?;
    let state = web::Data::new(AppState {
        pool: pool.clone(),
        registry: registry.clone(),
        settings: Arc::new(settings.clone()),
        // This server is only the WebSocket's: it has no access guard.
        authenticator: crate::auth::Authenticator::new(pool.clone()),
        access: api::access::AccessPolicy::new(settings, 0),
        stopping: Default::default(),
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("ws://127.0.0.1:{}/api/ws", listener.local_addr()?.port());
    let server = api::wire::server(listener, move || {
        App::new().app_data(state.clone()).configure(api::configure)
    })?;
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok((url, Server { handle, pool }))
}

/// A running WebSocket server of the bench.
struct Server {
    handle: actix_server::ServerHandle,
    pool: Pool,
}

impl Server {
    async fn stop(self) {
        self.handle.stop(false).await;
        self.pool.close();
    }
}

/// Who commits the measured entries, and how watchers learn of them.
enum Committer<'a> {
    /// The clients' own instance: the append, then its feed.
    Local { pool: &'a Pool, feed: &'a Feed },
    /// Another instance: its journal writer, then its observer, which
    /// announces the commit to the cluster.
    Instance {
        deps: &'a RunDeps,
        state: &'a RunState,
    },
}

impl Committer<'_> {
    /// Commits `event`; returns when the commit was done.
    async fn commit(&self, run_id: Uuid, event: Event) -> anyhow::Result<Instant> {
        let append = journal::Append {
            run_id,
            epoch: 1,
            events: vec![event],
            summary: None,
            release: false,
            answer: None,
        };
        match self {
            Committer::Local { pool, feed } => {
                journal::append(pool, &append).await?;
                let committed = Instant::now();
                feed.publish_events(run_id, &append.events);
                Ok(committed)
            }
            Committer::Instance { deps, state } => {
                let started = Instant::now();
                let (outcome, events) = deps.journal.append(append).await;
                outcome?;
                let committed = Instant::now();
                let summary = state.summary();
                deps.observer.committed(
                    &Committed {
                        run_id,
                        state,
                        events: &events,
                        summary: &summary,
                        summary_changed: false,
                        pending_before: None,
                        agent_call: None,
                        elapsed: committed - started,
                        owner: Some(deps.cluster.id()),
                    },
                    &tracing::info_span!("run", run_id = %run_id),
                );
                Ok(committed)
            }
        }
    }
}

async fn measure(
    url: &str,
    run_id: Uuid,
    clients: usize,
    committer: &Committer<'_>,
) -> anyhow::Result<Vec<Duration>> {
    // The clients run on their own threads, as a browser would.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let url = url.to_string();
    let readers = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(clients_receive(url, run_id, clients, ready_tx))
    });
    ready_rx
        .await
        .map_err(|_| anyhow::anyhow!("the WebSocket clients failed to connect"))?;

    let mut committed = Vec::with_capacity(SAMPLES as usize);
    for seq in 2..SAMPLES + 2 {
        let event = Event {
            seq,
            agent: Some(AgentName::Coding),
            at: journal::now(),
            key: format!("bench:{seq}"),
            body: EventBody::ToolStarted {
                call_id: format!("call_{seq}"),
                tool: "list_files".into(),
            },
        };
        committed.push(committer.commit(run_id, event).await?);
        tokio::time::sleep(PACE).await;
    }
    let received = tokio::task::spawn_blocking(move || readers.join())
        .await?
        .map_err(|_| anyhow::anyhow!("a WebSocket client panicked"))??;
    Ok(received
        .into_iter()
        .map(|(seq, at)| at.saturating_duration_since(committed[(seq - 2) as usize]))
        .collect())
}

/// Connects and subscribes every client, says so, then collects when each
/// entry arrived at each client.
async fn clients_receive(
    url: String,
    run_id: Uuid,
    clients: usize,
    ready: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<Vec<(i64, Instant)>> {
    let subscribe =
        serde_json::json!({"op": "subscribe", "run_id": run_id, "after": 1}).to_string();
    let mut streams = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (mut stream, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
        stream.send(Message::text(subscribe.clone())).await?;
        // The first frame is `subscribed`.
        stream.next().await;
        streams.push(stream);
    }
    let _ = ready.send(());
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut received = Vec::with_capacity(SAMPLES as usize);
                while (received.len() as i64) < SAMPLES {
                    let Some(Ok(Message::Text(text))) = stream.next().await else {
                        continue;
                    };
                    let at = Instant::now();
                    // Only the entry's `seq` is read: these clients share the
                    // machine with the server, and a browser's own work is
                    // not the server's latency.
                    let frame: Received = serde_json::from_str(&text)?;
                    if let Some(event) = frame.event {
                        received.push((event.seq, at));
                    }
                }
                anyhow::Ok(received)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(clients * SAMPLES as usize);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

/// What a client reads of a frame.
#[derive(serde::Deserialize)]
struct Received {
    event: Option<ReceivedEvent>,
}

#[derive(serde::Deserialize)]
struct ReceivedEvent {
    seq: i64,
}

/// A thousand clients and their server ends need about 2,000 descriptors;
/// many systems start processes with a soft limit of 1,024.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(65_536).max(soft), hard);
    }
}
