//! The test harness: one PostgreSQL cluster per test binary, started from the
//! system's binaries, one database per test, and a `TestApp` with typed
//! helpers around the HTTP API.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_server::config::Settings;
use agent_server::db::embedded::EmbeddedPostgres;
use agent_server::startup::Application;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::mock_llm::MockLlm;

/// How long any wait for a condition may take before the test fails.
pub const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// The `admin` token of every test server (`AGENT_SERVER_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123456789";

/// A WebSocket request to `address` (`http://…`) carrying `token`.
pub fn ws_request(
    address: &str,
    token: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/api/ws", address.replace("http://", "ws://"));
    let mut request = url.into_client_request().expect("a WebSocket URL");
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {token}")
            .parse()
            .expect("a token fits a header"),
    );
    request
}

/// An HTTP client that sends `token` with every request.
pub fn client_with_token(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}")
            .parse()
            .expect("a token fits a header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("building an HTTP client")
}

/// The cluster shared by every test in this binary, stopped at exit.
struct Cluster {
    postgres: EmbeddedPostgres,
    dir: PathBuf,
}

static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();

extern "C" fn stop_cluster_at_exit() {
    if let Some(cluster) = CLUSTER.get() {
        cluster.postgres.stop_now();
        let _ = std::fs::remove_dir_all(&cluster.dir);
    }
}

async fn cluster() -> &'static Cluster {
    CLUSTER
        .get_or_init(|| async {
            let dir = tempfile::Builder::new()
                .prefix("agent-server-tests-")
                .tempdir()
                .expect("creating the cluster directory")
                .keep();
            let postgres = EmbeddedPostgres::start(&dir.join("pg"))
                .await
                .expect("starting PostgreSQL from the system's binaries");
            // SAFETY: registering a plain `extern "C"` function with atexit has
            // no preconditions.
            unsafe {
                libc::atexit(stop_cluster_at_exit);
            }
            Cluster { postgres, dir }
        })
        .await
}

/// A fresh database on the shared cluster, as a `DATABASE_URL`.
pub async fn fresh_database() -> String {
    let cluster = cluster().await;
    let name = format!("test_{}", Uuid::new_v4().simple());
    cluster
        .postgres
        .ensure_database(&name)
        .await
        .expect("creating the test database");
    let config = cluster.postgres.config(&name);
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
    };
    format!(
        "host={host} port={} user=postgres dbname={name}",
        config.get_ports()[0]
    )
}

/// A sleep duration no other process uses: a command that runs
/// `sleep {marker}` can be found from the host with [`processes_with`],
/// whatever namespace it runs in.
pub fn sleep_marker() -> String {
    format!("1000.{:09}", Uuid::new_v4().as_u128() % 1_000_000_000)
}

/// The host's live processes whose command line contains `marker`, as
/// `(pid, command line)`; zombies have no command line and are left out.
pub fn processes_with(marker: &str) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(entry.path().join("cmdline")).ok()?;
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            line.contains(marker)
                .then(|| (pid, line.trim_end().to_string()))
        })
        .collect()
}

/// Polls `check` until it gives a value, failing the test after `WAIT_LIMIT`.
pub async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < WAIT_LIMIT,
            "timed out after {WAIT_LIMIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub llm: MockLlm,
    pub workspace: TempDir,
    pub database_url: String,
    /// Streamed model text, as the server publishes it.
    pub deltas: agent_server::realtime::DeltaHub,
}

/// Settings for a server on a free port, the test's database, the mock
/// model and a fresh workspace, plus `extra` variables.
pub fn settings_map(
    database_url: &str,
    llm: &MockLlm,
    workspace: &std::path::Path,
    extra: &[(&str, &str)],
) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = [
        ("AGENT_SERVER_ADDR", "127.0.0.1:0".to_string()),
        ("DATABASE_URL", database_url.to_string()),
        ("LLM_PROVIDER", "openai".into()),
        ("LLM_BASE_URL", llm.base_url.clone()),
        ("OPENAI_API_KEY", "test-key".into()),
        ("LLM_MODEL", "mock-model".into()),
        ("AGENT_WORKSPACE", workspace.display().to_string()),
        // Beside the workspace, never inside it, where the server refuses it.
        // Nothing is written there: the tests give the database and the admin
        // token.
        (
            "AGENT_SERVER_DATA_DIR",
            format!("{}.data", workspace.display()),
        ),
        ("AGENT_SERVER_ADMIN_TOKEN", ADMIN_TOKEN.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    vars
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    spawn_app_on(&fresh_database().await, extra).await
}

/// A server on an existing database (a second instance, say).
pub async fn spawn_app_on(database_url: &str, extra: &[(&str, &str)]) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = agent_server::telemetry::init();
    }
    let database_url = database_url.to_string();
    let llm = MockLlm::start().await;
    let workspace = tempfile::tempdir().expect("creating the workspace");
    let vars = settings_map(&database_url, &llm, workspace.path(), extra);
    let settings = Settings::from_lookup(|name| vars.get(name).cloned()).expect("valid settings");
    let running = Application::build(settings)
        .await
        .expect("building the app")
        .spawn();
    TestApp {
        address: format!("http://127.0.0.1:{}", running.port),
        client: client_with_token(ADMIN_TOKEN),
        llm,
        workspace,
        database_url,
        deltas: running.registry.deps().deltas.clone(),
    }
}

/// Typed helpers over the HTTP API, shared by in-process and subprocess tests.
pub struct Api {
    pub address: String,
    pub client: reqwest::Client,
}

impl TestApp {
    pub fn api(&self) -> Api {
        Api {
            address: self.address.clone(),
            client: self.client.clone(),
        }
    }
}

impl Api {
    /// The same server, asked with another token.
    pub fn with_token(&self, token: &str) -> Api {
        Api {
            address: self.address.clone(),
            client: client_with_token(token),
        }
    }

    /// The same server, asked without any credential.
    pub fn anonymous(&self) -> Api {
        Api {
            address: self.address.clone(),
            client: reqwest::Client::new(),
        }
    }

    /// Creates a token with `roles` (as admin) and returns its value.
    pub async fn new_token(&self, name: &str, roles: &[&str]) -> String {
        let response = self
            .post("/api/tokens", json!({"name": name, "roles": roles}))
            .await;
        assert_eq!(response.status(), 201, "creating the token {name}");
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_string()
    }

    pub async fn post_run(&self, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}/api/runs", self.address))
            .json(&body)
            .send()
            .await
            .expect("POST /api/runs")
    }

    /// Creates a run and returns its JSON, asserting 201.
    pub async fn create_run(&self, body: Value) -> Value {
        let response = self.post_run(body).await;
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("GET")
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .json(&body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn run(&self, id: &str) -> Value {
        let response = self.get(&format!("/api/runs/{id}")).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn events(&self, id: &str) -> Vec<Value> {
        let response = self.get(&format!("/api/runs/{id}/events")).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["events"].as_array().unwrap().clone()
    }

    pub async fn event_types(&self, id: &str) -> Vec<String> {
        self.events(id)
            .await
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    }

    pub async fn resume(
        &self,
        id: &str,
        approval_id: &str,
        decision: &str,
        feedback: Option<&str>,
    ) -> reqwest::Response {
        let mut body = json!({"approval_id": approval_id, "decision": decision});
        if let Some(feedback) = feedback {
            body["feedback"] = json!(feedback);
        }
        self.post(&format!("/api/runs/{id}/resume"), body).await
    }

    pub async fn cancel(&self, id: &str) -> reqwest::Response {
        self.post(&format!("/api/runs/{id}/cancel"), json!({"reason": "test"}))
            .await
    }

    /// Waits until the run has `status`, and returns it.
    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        wait_until(&format!("run {id} to be {status}"), || async {
            let run = self.run(id).await;
            (run["status"] == status).then_some(run)
        })
        .await
    }

    /// Waits until the journal holds `count` entries of `event_type`.
    pub async fn wait_for_events(&self, id: &str, event_type: &str, count: usize) -> Vec<Value> {
        wait_until(&format!("{count} {event_type} in run {id}"), || async {
            let events = self.events(id).await;
            let n = events.iter().filter(|e| e["type"] == event_type).count();
            (n >= count).then_some(events)
        })
        .await
    }

    /// Waits for a pending approval and returns it.
    pub async fn wait_for_approval(&self, id: &str) -> Value {
        self.wait_for_status(id, "waiting_approval").await["pending_approval"].clone()
    }
}

/// An answer read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The contract's error code in the body, asserting the body is the
    /// contract's JSON error.
    pub fn error_code(&self) -> String {
        let body: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("a JSON error body, got {:?}: {e}", self.body));
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        body["error"]["code"]
            .as_str()
            .expect("an error code")
            .to_string()
    }
}

/// Sends `request` as it is over a new TCP connection to `address`
/// (`http://host:port`) and reads the answer until the server closes the
/// connection or `WAIT_LIMIT` passes. `request` should ask for
/// `Connection: close`.
pub async fn raw_http(address: &str, request: &[u8]) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("connecting");
    stream.write_all(request).await.expect("sending");
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(WAIT_LIMIT, stream.read_to_end(&mut bytes)).await;
    parse_raw(&bytes)
}

fn parse_raw(bytes: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    RawResponse {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Asserts the contract's error body and code.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status, "expected {status} {code}");
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}
