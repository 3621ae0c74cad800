//! The WebSocket figure of `agent-server bench`: the latency from a journal
//! commit to its receipt by WebSocket clients on loopback, with 1, 100 and
//! 1,000 clients subscribed to the run. Entries go through the same path as
//! a run's: `journal::append`, then `Feed::publish_events`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{App, HttpServer, web};
use deadpool_postgres::Pool;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::agents::AgentName;
use crate::api::{self, AppState};
use crate::config::Settings;
use crate::domain::{Event, EventBody};
use crate::journal;
use crate::run::RunRegistry;

/// Entries committed per measurement.
const SAMPLES: i64 = 100;
/// The pause between two entries: a busy run's pace, not a flood.
const PACE: Duration = Duration::from_millis(10);
/// The client counts measured.
const CLIENTS: [usize; 3] = [1, 100, 1000];

pub async fn run(pool: &Pool, registry: &RunRegistry, settings: &Settings) -> anyhow::Result<()> {
    raise_open_file_limit();
    let state = web::Data::new(AppState {
        pool: pool.clone(),
        registry: registry.clone(),
        settings: Arc::new(settings.clone()),
        // This server is only the WebSocket's: it has no access guard.
        authenticator: crate::auth::Authenticator::new(pool.clone()),
        access: api::access::AccessPolicy::new(settings, 0),
        stopping: Default::default(),
    });
    let server =
        HttpServer::new(move || App::new().app_data(state.clone()).configure(api::configure))
            .disable_signals()
            .bind("127.0.0.1:0")?;
    let url = format!("ws://127.0.0.1:{}/api/ws", server.addrs()[0].port());
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);

    for clients in CLIENTS {
        let latencies = measure(pool, registry, &url, clients).await?;
        super::summarize(
            &format!("commit to WebSocket receipt, {clients} clients"),
            latencies,
        );
    }
    println!("{:<44} (target: p99 <= 5 ms at 100 clients)", "");
    handle.stop(false).await;
    Ok(())
}

async fn measure(
    pool: &Pool,
    registry: &RunRegistry,
    url: &str,
    clients: usize,
) -> anyhow::Result<Vec<Duration>> {
    let run_id = super::create_run(pool).await?;

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

    let feed = &registry.deps().observer.feed;
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
        journal::append(
            pool,
            &journal::Append {
                run_id,
                epoch: 1,
                events: vec![event.clone()],
                summary: None,
                release: false,
                answer: None,
            },
        )
        .await?;
        committed.push(Instant::now());
        feed.publish_events(run_id, std::slice::from_ref(&event));
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
                    let frame: serde_json::Value = serde_json::from_str(&text)?;
                    if let Some(seq) = frame["event"]["seq"].as_i64() {
                        received.push((seq, at));
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
