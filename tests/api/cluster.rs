//! Several instances on one PostgreSQL (contract section 10), as real
//! binaries: any instance takes any request, a WebSocket on one sees runs
//! driven by another, runs are taken over when their owner is killed or
//! frozen (and a frozen owner that wakes writes nothing and kills its
//! shell), and SIGTERM hands runs over at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{
    ADMIN_TOKEN, Api, fresh_database, processes_with, settings_map, sleep_marker, wait_until,
    ws_request,
};
use crate::mock_llm::{MockLlm, Reply};
use crate::process::Server;

/// The lease in these tests: short, so takeovers take seconds.
const LEASE_SECS: u64 = 2;

/// Instances on one database, one mock model and one shared workspace.
pub struct Cluster {
    pub database_url: String,
    pub llm: MockLlm,
    pub workspace: TempDir,
    /// Each instance's own data dir (and so its own instance id).
    data_dirs: Vec<TempDir>,
}

impl Cluster {
    pub async fn new(instances: usize) -> Cluster {
        Cluster {
            database_url: fresh_database().await,
            llm: MockLlm::start().await,
            workspace: tempfile::tempdir().unwrap(),
            data_dirs: (0..instances)
                .map(|_| tempfile::tempdir().unwrap())
                .collect(),
        }
    }

    /// Instance `n`'s settings, plus `extra`.
    pub fn vars(&self, n: usize, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let data_dir = self.data_dirs[n].path().to_str().unwrap().to_string();
        let lease = LEASE_SECS.to_string();
        let mut all: Vec<(&str, &str)> = vec![
            ("AGENT_SERVER_DATA_DIR", &data_dir),
            ("AGENT_LEASE_SECS", &lease),
            ("AGENT_RATE_LIMIT_RUNS_PER_MIN", "100000"),
        ];
        all.extend_from_slice(extra);
        settings_map(&self.database_url, &self.llm, self.workspace.path(), &all)
    }

    /// Starts instance `n` (again, after it was stopped: the same id).
    pub async fn start(&self, n: usize) -> Server {
        Server::start_with(self.vars(n, &[])).await
    }
}

/// The instance's id, as `GET /api/me`'s server sees itself: the owner it
/// writes into the runs it drives, read from `GET /api/instances` by the
/// instance's start time.
async fn instance_ids(api: &Api) -> Vec<String> {
    let body: Value = api.get("/api/instances").await.json().await.unwrap();
    body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until `run`'s owner is `owner` (`None`: no owner).
async fn wait_for_owner(api: &Api, run: &str, owner: Option<&str>) -> Value {
    wait_until(&format!("run {run} owned by {owner:?}"), || async {
        let body = api.run(run).await;
        (body["owner"].as_str() == owner).then_some(body)
    })
    .await
}

/// A run that `api`'s instance drives, held in a model call the mock never
/// answers (the next reply queued is the one the call gets when sent
/// again); returns the run's id and its owner.
async fn held_run(cluster: &Cluster, api: &Api) -> (String, String) {
    cluster.llm.push(Reply::Hang);
    let run = api
        .create_run(json!({"task": "held", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let owner = api.wait_for_status(&id, "running").await["owner"]
        .as_str()
        .unwrap()
        .to_string();
    (id, owner)
}

#[actix_web::test]
async fn any_instance_takes_any_request() {
    let cluster = Cluster::new(2).await;
    let a = cluster.start(0).await;
    let b = cluster.start(1).await;
    assert_eq!(instance_ids(&b.api).await.len(), 2);

    // A decision sent to an instance that does not drive the run.
    cluster.llm.push(Reply::tool_call(
        "call_sh",
        "shell",
        json!({"command": "echo ran >> ledger.txt"}),
    ));
    let run = a
        .api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let pending = a.api.wait_for_approval(&id).await;
    // Parked: nobody drives a run that waits for a human.
    wait_for_owner(&a.api, &id, None).await;
    cluster.llm.push(Reply::text("done"));
    let decided = b
        .api
        .resume(
            &id,
            pending["approval_id"].as_str().unwrap(),
            "approved",
            None,
        )
        .await;
    assert_eq!(decided.status(), 200);
    a.api.wait_for_status(&id, "completed").await;
    assert_eq!(
        std::fs::read_to_string(cluster.workspace.path().join("ledger.txt")).unwrap(),
        "ran\n"
    );
    let types = b.api.event_types(&id).await;
    assert_eq!(types.iter().filter(|t| *t == "RUN_RESUMED").count(), 1);

    // A cancellation sent to an instance that does not drive the run: the
    // owner aborts its model call.
    let (id, owner) = held_run(&cluster, &a.api).await;
    let started = Instant::now();
    let cancelled = b.api.cancel(&id).await;
    assert_eq!(cancelled.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let body: Value = cancelled.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");
    wait_until("the model call to be aborted", || async {
        (cluster.llm.aborted() == 1).then_some(())
    })
    .await;
    assert!(instance_ids(&b.api).await.contains(&owner));
}

#[actix_web::test]
async fn a_websocket_on_one_instance_sees_every_entry_of_a_run_driven_by_another() {
    let cluster = Cluster::new(2).await;
    let a = cluster.start(0).await;
    let b = cluster.start(1).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(&b.api.address, ADMIN_TOKEN))
        .await
        .unwrap();
    for i in 0..5 {
        cluster
            .llm
            .push(Reply::tool_call(&format!("c{i}"), "list_files", json!({})));
    }
    cluster.llm.push(Reply::text("listed"));
    cluster.llm.push(Reply::Hang);
    // The run is created on A, which drives it; B's client follows it.
    let hold = a
        .api
        .create_run(json!({"task": "hold", "agent": "coding"}))
        .await;
    let id = hold["id"].as_str().unwrap().to_string();
    ws.send(Message::text(
        json!({"op": "subscribe", "run_id": id, "after": 0}).to_string(),
    ))
    .await
    .unwrap();
    let mut seqs = Vec::new();
    let mut done = false;
    while !done {
        let frame = tokio::time::timeout(crate::helpers::WAIT_LIMIT, ws.next())
            .await
            .expect("a frame in time")
            .unwrap()
            .unwrap();
        let Message::Text(text) = frame else { continue };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["type"] == "event" {
            seqs.push(frame["event"]["seq"].as_i64().unwrap());
            done = frame["event"]["type"] == "RUN_COMPLETED";
        }
    }
    let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
    assert_eq!(seqs, expected, "every entry once, in order");
    assert_eq!(
        a.api.events(&id).await.len(),
        seqs.len(),
        "and nothing else"
    );
    drop(b);
}

#[actix_web::test]
async fn killing_the_owner_hands_its_runs_to_another_instance() {
    let cluster = Cluster::new(2).await;
    let a = cluster.start(0).await;
    let b = cluster.start(1).await;
    // A run in a model call on A.
    let (busy, a_id) = held_run(&cluster, &a.api).await;
    cluster.llm.wait_for_requests(1).await;
    cluster.llm.push(Reply::text("answered after the takeover"));

    let killed = Instant::now();
    a.kill_9();
    let done = b.api.wait_for_status(&busy, "completed").await;
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(2 * LEASE_SECS + 2),
        "taken over after {took:?}"
    );
    assert_ne!(done["owner"].as_str(), Some(a_id.as_str()));
    let events = b.api.events(&busy).await;
    let attempts: Vec<i64> = events
        .iter()
        .filter(|e| e["type"] == "LLM_CALLED")
        .map(|e| e["payload"]["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2], "the model call is sent again, once");
    assert!(!instance_ids(&b.api).await.contains(&a_id), "A is gone");
}

#[actix_web::test]
async fn a_frozen_owner_that_wakes_writes_nothing_and_its_shell_dies() {
    let cluster = Cluster::new(2).await;
    let a = cluster.start(0).await;
    let b = cluster.start(1).await;
    let marker = sleep_marker();
    cluster.llm.push(Reply::tool_call(
        "call_sleep",
        "shell",
        json!({"command": format!("sleep {marker}")}),
    ));
    let run = a
        .api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let pending = a.api.wait_for_approval(&id).await;
    // Approved through A, which then runs the command.
    let approved = a
        .api
        .resume(
            &id,
            pending["approval_id"].as_str().unwrap(),
            "approved",
            None,
        )
        .await;
    assert_eq!(approved.status(), 200);
    wait_until("the command to run", || async {
        (!processes_with(&marker).is_empty()).then_some(())
    })
    .await;
    let a_pid = nix::unistd::Pid::from_raw(a.child.id() as i32);
    nix::sys::signal::kill(a_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();

    // B takes the run over: the command may have done its work, so a human
    // is asked again.
    let again = wait_until("B to ask again", || async {
        let run = b.api.run(&id).await;
        (run["pending_approval"]["approval_id"] != pending["approval_id"]
            && run["status"] == "waiting_approval")
            .then_some(run)
    })
    .await;
    let types = b.api.event_types(&id).await;
    assert!(types.contains(&"TOOL_INTERRUPTED".to_string()), "{types:?}");
    let journal = b.api.events(&id).await;

    // A wakes up: it kills the command and writes nothing more.
    nix::sys::signal::kill(a_pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    wait_until("the command to die", || async {
        processes_with(&marker).is_empty().then_some(())
    })
    .await;
    wait_until("A to renew its heartbeat", || async {
        let body: Value = a.api.get("/api/instances").await.json().await.ok()?;
        (body["instances"].as_array()?.len() == 2).then_some(())
    })
    .await;
    assert_eq!(b.api.events(&id).await, journal, "A wrote nothing more");
    assert_eq!(again["pending_approval"]["tool"], "shell");
}

#[actix_web::test]
async fn sigterm_hands_the_runs_over_at_once() {
    let cluster = Cluster::new(2).await;
    let a = cluster.start(0).await;
    let b = cluster.start(1).await;
    let (id, a_id) = held_run(&cluster, &a.api).await;
    cluster.llm.wait_for_requests(1).await;
    cluster.llm.push(Reply::text("finished on B"));
    let stopping = Instant::now();
    assert!(a.terminate().success());
    let done = b.api.wait_for_status(&id, "completed").await;
    assert!(
        stopping.elapsed() < Duration::from_secs(2 * LEASE_SECS),
        "handed over after {:?}, sooner than a lease",
        stopping.elapsed()
    );
    assert_ne!(done["owner"].as_str(), Some(a_id.as_str()));
    assert_eq!(done["result"], "finished on B");
}
