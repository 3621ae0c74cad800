//! The chaos test of contract section 10: three instances on one database,
//! runs whose approvals are sent to random instances, and an instance
//! killed (`kill -9`) and started again every few seconds. At the end every
//! journal is checked (gapless, one terminal entry, no tool with two
//! results), and a ledger the approved commands write proves that no
//! dangerous command ran twice. The counts are printed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::helpers::Api;
use crate::process::Server;

/// Runs in the test.
const RUNS: usize = 120;
/// Runs driven at once.
const CONCURRENT: usize = 20;
/// Instances.
const INSTANCES: usize = 3;
/// Time between two kills.
const KILL_EVERY: Duration = Duration::from_secs(2);
/// How long one run may take, kills and takeovers included.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// What the driver did, for the printed counts.
#[derive(Default, Debug)]
struct Counts {
    approved_commands: usize,
    interrupted_rejected: usize,
    writes_decided: usize,
    retried_requests: usize,
    kills: usize,
}

/// The instances alive now, by slot; a killed one is `None` until it is
/// started again.
type Live = Arc<Mutex<Vec<Option<Api>>>>;

fn pick(live: &Live, seed: usize) -> Option<Api> {
    let live = live.lock().unwrap();
    let up: Vec<&Api> = live.iter().flatten().collect();
    (!up.is_empty()).then(|| {
        let api = up[seed % up.len()];
        Api {
            address: api.address.clone(),
            client: api.client.clone(),
        }
    })
}

/// A JSON answer from some live instance, retried on connection errors and
/// 503s (an instance dying, a run changing hands).
async fn call(
    live: &Live,
    counts: &Mutex<Counts>,
    seed: &mut usize,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let started = Instant::now();
    loop {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if let Some(api) = pick(live, *seed >> 33) {
            let mut request = api
                .client
                .request(method.clone(), format!("{}{path}", api.address))
                .timeout(Duration::from_secs(20));
            if let Some(body) = &body {
                request = request.json(body);
            }
            if let Ok(response) = request.send().await {
                let status = response.status().as_u16();
                if status != 503 {
                    let value = response.json().await.unwrap_or(Value::Null);
                    return (status, value);
                }
            }
        }
        counts.lock().unwrap().retried_requests += 1;
        assert!(started.elapsed() < RUN_LIMIT, "no instance answered {path}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Drives one run to its end: every shell command approved once, with
/// arguments that write a ledger line; a command asked again after a crash
/// is rejected (a human would not run it blind); writes approved.
async fn drive(live: Live, counts: Arc<Mutex<Counts>>, index: usize) -> String {
    let mut seed = index * 7919 + 1;
    let (status, run) = call(
        &live,
        &counts,
        &mut seed,
        reqwest::Method::POST,
        "/api/runs",
        Some(json!({"task": format!("chaos {index}"), "agent": "coding", "idempotency_key": format!("chaos-{index}")})),
    )
    .await;
    assert!(status == 201 || status == 200, "{status} {run}");
    let id = run["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < RUN_LIMIT, "run {id} did not end");
        let (_, run) = call(
            &live,
            &counts,
            &mut seed,
            reqwest::Method::GET,
            &format!("/api/runs/{id}"),
            None,
        )
        .await;
        match run["status"].as_str() {
            Some("completed" | "failed" | "cancelled") => return id,
            Some("waiting_approval") => {}
            _ => {
                tokio::time::sleep(Duration::from_millis(150)).await;
                continue;
            }
        }
        let pending = &run["pending_approval"];
        let approval = pending["approval_id"].as_str().unwrap().to_string();
        let (_, events) = call(
            &live,
            &counts,
            &mut seed,
            reqwest::Method::GET,
            &format!("/api/runs/{id}/events"),
            None,
        )
        .await;
        let interrupted = events["events"].as_array().unwrap().iter().any(|e| {
            e["type"] == "RUN_SUSPENDED"
                && e["payload"]["approval_id"] == approval.as_str()
                && e["payload"]["interrupted"] == true
        });
        let body = match (pending["tool"].as_str(), interrupted) {
            (Some("shell"), false) => {
                let call_id = pending["call_id"].as_str().unwrap();
                json!({
                    "approval_id": approval,
                    "decision": "approved",
                    "args_sha256": pending["args_sha256"],
                    "args": {"command": format!("echo {id} {call_id} >> ledger.txt; sleep 2")},
                })
            }
            (_, true) => {
                json!({"approval_id": approval, "decision": "rejected", "feedback": "interrupted; not again"})
            }
            _ => json!({"approval_id": approval, "decision": "approved"}),
        };
        let (status, answer) = call(
            &live,
            &counts,
            &mut seed,
            reqwest::Method::POST,
            &format!("/api/runs/{id}/resume"),
            Some(body),
        )
        .await;
        match status {
            200 => {
                let mut counts = counts.lock().unwrap();
                match (pending["tool"].as_str(), interrupted) {
                    (_, true) => counts.interrupted_rejected += 1,
                    (Some("shell"), false) => counts.approved_commands += 1,
                    _ => counts.writes_decided += 1,
                }
            }
            // Decided meanwhile (a retried request), or asked again.
            409 => {}
            other => panic!("resume answered {other}: {answer}"),
        }
    }
}

#[actix_web::test]
async fn three_instances_a_kill_every_few_seconds_and_no_command_runs_twice() {
    let cluster = Arc::new(Cluster::new(INSTANCES).await);
    let scripted = [("LLM_PROVIDER", "scripted"), ("OPENAI_API_KEY", "")];
    let start = {
        let cluster = cluster.clone();
        move |n: usize| {
            let cluster = cluster.clone();
            async move { Server::start_with(cluster.vars(n, &scripted)).await }
        }
    };
    let mut servers: Vec<Option<Server>> = Vec::new();
    for n in 0..INSTANCES {
        servers.push(Some(start(n).await));
    }
    let live: Live = Arc::new(Mutex::new(
        servers
            .iter()
            .map(|s| {
                s.as_ref().map(|s| Api {
                    address: s.api.address.clone(),
                    client: s.api.client.clone(),
                })
            })
            .collect(),
    ));
    let counts = Arc::new(Mutex::new(Counts::default()));
    let began = Instant::now();

    // The chaos: kill an instance, start it again, and the next.
    let stop = tokio_util::sync::CancellationToken::new();
    let chaos = {
        let live = live.clone();
        let counts = counts.clone();
        let stop = stop.clone();
        actix_rt::spawn(async move {
            let mut victim = 0;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(KILL_EVERY) => {}
                    _ = stop.cancelled() => return servers,
                }
                live.lock().unwrap()[victim] = None;
                if let Some(server) = servers[victim].take() {
                    server.kill_9();
                }
                counts.lock().unwrap().kills += 1;
                let server = start(victim).await;
                live.lock().unwrap()[victim] = Some(Api {
                    address: server.api.address.clone(),
                    client: server.api.client.clone(),
                });
                servers[victim] = Some(server);
                victim = (victim + 1) % INSTANCES;
            }
        })
    };

    let runs: Vec<String> = futures_util::stream::iter(0..RUNS)
        .map(|i| drive(live.clone(), counts.clone(), i))
        .buffer_unordered(CONCURRENT)
        .collect()
        .await;
    stop.cancel();
    let servers = chaos.await.unwrap();
    let elapsed = began.elapsed();

    // Every journal, straight from the database.
    let config: tokio_postgres::Config = cluster.database_url.parse().unwrap();
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    actix_rt::spawn(connection);
    let mut statuses: HashMap<String, usize> = HashMap::new();
    let (mut entries, mut interrupted, mut resent, mut takeovers) = (0, 0, 0, 0i64);
    // Commands approved, as the journal says (a driver may not have heard
    // the answer of a decision whose instance died right after it).
    let mut approved = 0;
    for id in &runs {
        let uuid: uuid::Uuid = id.parse().unwrap();
        let rows = client
            .query(
                "SELECT seq, type, key, payload FROM run_events WHERE run_id = $1 ORDER BY seq",
                &[&uuid],
            )
            .await
            .unwrap();
        let seqs: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "run {id}: gapless"
        );
        let types: Vec<String> = rows.iter().map(|r| r.get(1)).collect();
        let terminal = types
            .iter()
            .filter(|t| matches!(t.as_str(), "RUN_COMPLETED" | "RUN_FAILED" | "RUN_CANCELLED"))
            .count();
        assert_eq!(terminal, 1, "run {id}: one terminal entry: {types:?}");
        assert!(
            matches!(
                types.last().map(String::as_str),
                Some("RUN_COMPLETED" | "RUN_FAILED" | "RUN_CANCELLED")
            ),
            "run {id}: nothing after the end"
        );
        let mut results: HashMap<String, usize> = HashMap::new();
        for row in &rows {
            let kind: String = row.get(1);
            let payload: Value = row.get(3);
            match kind.as_str() {
                "TOOL_RESULT" => {
                    *results
                        .entry(payload["call_id"].as_str().unwrap().to_string())
                        .or_default() += 1
                }
                "TOOL_INTERRUPTED" => interrupted += 1,
                "RUN_RESUMED"
                    if payload["decision"] == "approved" && !payload["edited_args"].is_null() =>
                {
                    approved += 1
                }
                "LLM_CALLED" if payload["attempt"].as_i64() > Some(1) => resent += 1,
                _ => {}
            }
        }
        assert!(
            results.values().all(|n| *n == 1),
            "run {id}: a second TOOL_RESULT: {results:?}"
        );
        entries += rows.len();
        let summary = client
            .query_one("SELECT status, epoch FROM runs WHERE id = $1", &[&uuid])
            .await
            .unwrap();
        *statuses.entry(summary.get::<_, String>(0)).or_default() += 1;
        takeovers += summary.get::<_, i64>(1) - 1;
    }

    // The ledger: one line per command that ran; none ran twice.
    let ledger =
        std::fs::read_to_string(cluster.workspace.path().join("ledger.txt")).unwrap_or_default();
    let mut lines: HashMap<&str, usize> = HashMap::new();
    for line in ledger.lines() {
        *lines.entry(line).or_default() += 1;
    }
    let twice: Vec<_> = lines.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "dangerous commands that ran twice: {twice:?}"
    );

    let counts = counts.lock().unwrap();
    println!(
        "chaos: {RUNS} runs on {INSTANCES} instances in {:.1} s, {} kills (kill -9 and start again every {} s); \
         statuses {statuses:?}; {entries} journal entries; {approved} commands approved ({} answers heard), {} ledger lines, none twice; \
         {interrupted} TOOL_INTERRUPTED, {} re-asked approvals rejected; {resent} model calls sent again after a crash; \
         {takeovers} claims after the first (takeovers, woken parked runs); {} writes decided; {} requests retried",
        elapsed.as_secs_f64(),
        counts.kills,
        KILL_EVERY.as_secs(),
        counts.approved_commands,
        lines.len(),
        counts.interrupted_rejected,
        counts.writes_decided,
        counts.retried_requests,
    );
    assert!(counts.kills >= 3, "the chaos killed instances");
    assert_eq!(statuses.get("completed"), Some(&RUNS), "{statuses:?}");
    assert!(
        lines.len() <= approved,
        "{} ledger lines, {approved} approvals",
        lines.len()
    );
    drop(servers);
}
