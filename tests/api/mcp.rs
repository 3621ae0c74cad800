//! Tools from MCP servers (contract section 12), against the fixture server
//! of tests/mcp (the official Python SDK, over stdio and Streamable HTTP):
//! what the agents are offered, approvals, crashes mid-call, and servers
//! that are missing, die or hang.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::{assert_error, fresh_database, settings_map, spawn_app_with, wait_until};
use crate::mock_llm::{MockLlm, Reply};
use crate::process::{Server, server_command};

/// The fixture's Python, its environment made once per test binary.
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let status = Command::new(root.join("tests/mcp/setup.sh"))
            .status()
            .expect("running tests/mcp/setup.sh");
        assert!(status.success(), "tests/mcp/setup.sh failed");
        root.join("target/mcp-venv/bin/python")
            .display()
            .to_string()
    })
}

fn fixture_script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/mcp/fixture_server.py")
        .display()
        .to_string()
}

/// A stdio server entry of the config file.
fn stdio(ledger: &Path, mode: &str) -> Value {
    json!({
        "command": python(),
        "args": [fixture_script(), "stdio", "--ledger", ledger, "--mode", mode],
    })
}

/// The fixture over HTTP, killed when dropped.
struct HttpFixture {
    child: Child,
    url: String,
}

impl HttpFixture {
    fn start(ledger: &Path, extra: &[&str]) -> HttpFixture {
        let mut child = Command::new(python())
            .arg(fixture_script())
            .args(["http", "--port", "0", "--ledger"])
            .arg(ledger)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the HTTP fixture");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the fixture said {line:?}"));
        HttpFixture {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }
}

impl Drop for HttpFixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory with the config file `mcp.json` holding `servers`, and the
/// fixtures' ledger.
struct Setup {
    dir: TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn ledger(&self) -> PathBuf {
        self.dir.path().join("ledger")
    }

    fn config(&self, servers: Value) -> String {
        let path = self.dir.path().join("mcp.json");
        std::fs::write(&path, json!({"mcpServers": servers}).to_string()).unwrap();
        path.display().to_string()
    }

    /// The ledger's lines that start with `prefix`.
    fn lines(&self, prefix: &str) -> Vec<String> {
        std::fs::read_to_string(self.ledger())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    async fn wait_for_line(&self, line: &str) {
        wait_until(&format!("`{line}` in the fixture's ledger"), || async {
            self.lines(line).first().map(|_| ())
        })
        .await
    }
}

/// The names of the tools offered in a model request (OpenAI's shape).
fn offered(request: &Value) -> Vec<String> {
    request["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn tool_results(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["type"] == "TOOL_RESULT")
        .map(|e| &e["payload"])
        .collect()
}

#[actix_web::test]
async fn servers_tools_reach_their_agents_and_safe_calls_run_over_stdio_and_http() {
    let setup = Setup::new();
    let web = HttpFixture::start(
        &setup.ledger(),
        &["--require-header", "X-Fixture-Key:s3cret"],
    );
    let mut fx = stdio(&setup.ledger(), "list-changed");
    fx["agents"] = json!(["coding"]);
    let config = setup.config(json!({
        "fx": fx,
        "web": {"url": web.url, "headers": {"X-Fixture-Key": "s3cret"},
                "agents": ["orchestrator"], "safe_tools": ["fail"]},
    }));
    // The binary exporting traces, so every outgoing request carries a
    // `traceparent`.
    let receiver = crate::otel::Receiver::start().await;
    let llm = MockLlm::start().await;
    let workspace = tempfile::tempdir().unwrap();
    let vars = settings_map(
        &fresh_database().await,
        &llm,
        workspace.path(),
        &[
            ("AGENT_MCP_CONFIG", &config),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint),
        ],
    );
    let server = Server::start_with(vars).await;
    let api = &server.api;
    llm.push(Reply::tool_call(
        "c1",
        "fx__lookup",
        json!({"key": "colour"}),
    ));
    llm.push(Reply::text("the colour is known"));

    let run = api
        .create_run(json!({"task": "look it up", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let done = api.wait_for_status(id, "completed").await;
    assert_eq!(done["result"], "the colour is known");

    let requests = llm.requests();
    let first = offered(&requests[0]);
    for tool in [
        "shell",
        "fx__lookup",
        "fx__delete_item",
        "fx__set_flag",
        "fx__slow_delete",
        "fx__slow_set",
        "fx__fail",
    ] {
        assert!(first.contains(&tool.to_string()), "{tool} in {first:?}");
    }
    assert!(!first.iter().any(|t| t.starts_with("web__")), "{first:?}");
    assert!(!first.contains(&"fx__extra".to_string()));
    // The server's own description and schema.
    let lookup = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == "fx__lookup")
        .unwrap();
    assert_eq!(
        lookup["function"]["description"],
        "Looks up a key and returns its value. Reads only; changes nothing."
    );
    assert_eq!(
        lookup["function"]["parameters"],
        json!({"type": "object", "properties": {"key": {"type": "string", "description": "The key to look up."}},
               "required": ["key"], "additionalProperties": false})
    );
    // The server said its tools changed after the lookup: listed again.
    assert!(offered(&requests[1]).contains(&"fx__extra".to_string()));

    // Read-only: no approval, journaled like a built-in tool.
    let events = api.events(id).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(!types.contains(&"RUN_SUSPENDED"), "{types:?}");
    let called = events.iter().find(|e| e["type"] == "TOOL_CALLED").unwrap();
    assert_eq!(called["payload"]["tool"], "fx__lookup");
    assert_eq!(called["payload"]["dangerous"], false);
    let results = tool_results(&events);
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[0]["output"], "value of colour");

    // The orchestrator has the HTTP server's tools, reached with the
    // configured header and the call's traceparent.
    llm.push(Reply::tool_call(
        "c2",
        "web__lookup",
        json!({"key": "size"}),
    ));
    llm.push(Reply::tool_call("c3", "web__fail", json!({})));
    llm.push(Reply::text("done"));
    let run = api.create_run(json!({"task": "ask the web"})).await;
    let id = run["id"].as_str().unwrap();
    let done = api.wait_for_status(id, "completed").await;
    let requests = llm.requests();
    let offered_now = offered(&requests[2]);
    assert!(offered_now.contains(&"web__lookup".to_string()));
    assert!(!offered_now.iter().any(|t| t.starts_with("fx__")));
    let events = api.events(id).await;
    let results = tool_results(&events);
    assert_eq!(results[0]["output"], "value of size");
    assert_eq!(results[0]["ok"], true);
    // Listed in `safe_tools`: no approval; an error the tool reports is a
    // result the model reads.
    assert!(
        !api.event_types(id)
            .await
            .contains(&"RUN_SUSPENDED".to_string())
    );
    assert_eq!(results[1]["ok"], false);
    assert!(
        results[1]["output"]
            .as_str()
            .unwrap()
            .contains("fixture failure")
    );
    let trace_id = done["trace_id"].as_str().unwrap();
    assert!(
        setup
            .lines("traceparent 00-")
            .iter()
            .any(|l| l.contains(trace_id)),
        "a call carried the run's trace: {:?}",
        setup.lines("traceparent")
    );
    // The call's span names the server.
    receiver
        .wait_for("the MCP call's span", |spans| {
            spans.iter().any(|s| {
                s.name == "execute_tool web__lookup" && s.attributes["mcp.server"] == "web"
            })
        })
        .await;
}

#[actix_web::test]
async fn a_dangerous_call_waits_for_approval_and_runs_once_or_never() {
    let setup = Setup::new();
    let config = setup.config(json!({"fx": stdio(&setup.ledger(), "normal")}));
    let app = spawn_app_with(&[("AGENT_MCP_CONFIG", &config)]).await;
    let api = app.api();
    app.llm.push(Reply::tool_call(
        "c1",
        "fx__delete_item",
        json!({"id": "a"}),
    ));
    app.llm.push(Reply::tool_call(
        "c2",
        "fx__delete_item",
        json!({"id": "b"}),
    ));
    app.llm.push(Reply::text("deleted a, not b"));

    let run = api
        .create_run(json!({"task": "clean up", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let pending = api.wait_for_approval(id).await;
    assert_eq!(pending["tool"], "fx__delete_item");
    assert_eq!(pending["args"], json!({"id": "a"}));
    assert!(
        setup.lines("delete_item").is_empty(),
        "nothing before approval"
    );
    // Edited arguments are checked against the server's own schema.
    let resume = |args: Value| {
        json!({"approval_id": pending["approval_id"], "decision": "approved",
               "args_sha256": pending["args_sha256"], "args": args})
    };
    let path = format!("/api/runs/{id}/resume");
    assert_error(
        api.post(&path, resume(json!({"id": 5}))).await,
        400,
        "invalid_request",
    )
    .await;
    assert_error(
        api.post(&path, resume(json!({"id": "a", "force": true})))
            .await,
        400,
        "invalid_request",
    )
    .await;
    let response = api.post(&path, resume(json!({"id": "a-edited"}))).await;
    assert_eq!(response.status(), 200);

    let second = wait_until("the second approval", || async {
        let run = api.run(id).await;
        run["pending_approval"]["call_id"]
            .as_str()
            .filter(|c| *c == "c2")
            .map(|_| run["pending_approval"].clone())
    })
    .await;
    assert_eq!(setup.lines("delete_item"), ["delete_item a-edited"]);
    let response = api
        .resume(
            id,
            second["approval_id"].as_str().unwrap(),
            "rejected",
            Some("keep b"),
        )
        .await;
    assert_eq!(response.status(), 200);
    let done = api.wait_for_status(id, "completed").await;
    assert_eq!(done["result"], "deleted a, not b");
    assert_eq!(
        setup.lines("delete_item"),
        ["delete_item a-edited"],
        "b never ran"
    );
    let results = tool_results(&api.events(id).await)
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    let output = results[0]["output"].as_str().unwrap();
    assert!(output.contains("deleted a-edited"), "{output}");
    assert_eq!(results[1]["ok"], false);
    let last_request = app.llm.requests().last().unwrap().to_string();
    assert!(
        last_request.contains("keep b"),
        "the model reads the feedback"
    );
}

#[actix_web::test]
async fn servers_that_are_missing_exit_or_hang_are_tool_errors_not_failed_runs() {
    let setup = Setup::new();
    let mut dies = stdio(&setup.ledger(), "exit");
    dies["safe_tools"] = json!(["lookup"]);
    let mut stuck = stdio(&setup.ledger(), "hang");
    stuck["safe_tools"] = json!(["lookup"]);
    stuck["timeout_secs"] = json!(2);
    let mut slow = stdio(&setup.ledger(), "hang-tools");
    slow["timeout_secs"] = json!(2);
    let config = setup.config(json!({
        "missing": {"command": "/nonexistent/mcp-server", "safe_tools": ["lookup"]},
        "dies": dies,
        "stuck": stuck,
        "slow": slow,
    }));
    let app = spawn_app_with(&[("AGENT_MCP_CONFIG", &config)]).await;
    let api = app.api();
    app.llm.push(Reply::tool_calls(&[
        ("c1", "missing__lookup", json!({"key": "k"})),
        ("c2", "dies__lookup", json!({"key": "k"})),
        ("c3", "stuck__lookup", json!({"key": "k"})),
        ("c4", "slow__lookup", json!({"key": "k"})),
    ]));
    app.llm.push(Reply::text("the servers are broken"));

    let run = api
        .create_run(json!({"task": "try them", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let done = api.wait_for_status(id, "completed").await;
    assert_eq!(done["result"], "the servers are broken");
    // Only the server that answers its listing offers tools.
    let first = offered(&app.llm.requests()[0]);
    assert!(first.contains(&"slow__lookup".to_string()), "{first:?}");
    assert!(
        !first.iter().any(|t| t.starts_with("missing__")
            || t.starts_with("dies__")
            || t.starts_with("stuck__")),
        "{first:?}"
    );
    let events = api.events(id).await;
    let results = tool_results(&events);
    assert_eq!(results.len(), 4);
    for (result, expected) in results.iter().zip([
        "could not be started",
        "handshake",
        "did not start within 2 s",
        "did not answer within 2 s",
    ]) {
        assert_eq!(result["ok"], false, "{result}");
        let output = result["output"].as_str().unwrap();
        assert!(output.contains(expected), "{expected:?} in {output:?}");
    }
    // The hung call reached the server and was given up on.
    assert_eq!(setup.lines("hang lookup").len(), 1);
}

#[actix_web::test]
async fn after_kill_9_a_destructive_call_is_interrupted_and_an_idempotent_one_repeated() {
    let setup = Setup::new();
    let config = setup.config(json!({"fx": stdio(&setup.ledger(), "normal")}));
    let database_url = fresh_database().await;
    let llm = MockLlm::start().await;
    let workspace = tempfile::tempdir().unwrap();
    let vars = settings_map(
        &database_url,
        &llm,
        workspace.path(),
        &[("AGENT_MCP_CONFIG", &config)],
    );
    llm.push(Reply::tool_call(
        "d1",
        "fx__slow_delete",
        json!({"id": "k", "seconds": 60}),
    ));
    llm.push(Reply::tool_call(
        "s1",
        "fx__slow_set",
        json!({"name": "f", "seconds": 3}),
    ));
    llm.push(Reply::text("set, twice"));
    llm.push(Reply::text("left it alone"));

    let server = Server::start_with(vars.clone()).await;
    let api = &server.api;
    let deleting = api
        .create_run(json!({"task": "delete k", "agent": "coding"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pending = api.wait_for_approval(&deleting).await;
    let setting = api
        .create_run(json!({"task": "set f", "agent": "coding"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pending_set = api.wait_for_approval(&setting).await;
    for (id, pending) in [(&deleting, &pending), (&setting, &pending_set)] {
        let response = api
            .resume(
                id,
                pending["approval_id"].as_str().unwrap(),
                "approved",
                None,
            )
            .await;
        assert_eq!(response.status(), 200);
    }
    setup.wait_for_line("slow_delete start k").await;
    setup.wait_for_line("slow_set start f").await;
    // The server's stderr is in our logs, under its name.
    assert!(
        server
            .stdout
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("fixture: started") && l.contains("fx")),
        "the fixture's stderr line in the logs"
    );
    server.kill_9();

    let server = Server::start_with(vars).await;
    let api = &server.api;
    // The idempotent call runs again by itself and the run goes on.
    let done = api.wait_for_status(&setting, "completed").await;
    assert_eq!(done["result"], "set, twice");
    assert_eq!(setup.lines("slow_set start f").len(), 2);
    // The destructive one waits for a human, marked interrupted.
    let again = api.wait_for_approval(&deleting).await;
    assert_eq!(again["call_id"], "d1");
    let events = api.events(&deleting).await;
    assert!(events.iter().any(|e| e["type"] == "TOOL_INTERRUPTED"));
    assert_eq!(events.last().unwrap()["payload"]["interrupted"], true);
    assert_eq!(
        setup.lines("slow_delete start k").len(),
        1,
        "never repeated"
    );
    let response = api
        .resume(
            &deleting,
            again["approval_id"].as_str().unwrap(),
            "rejected",
            Some("it may have run"),
        )
        .await;
    assert_eq!(response.status(), 200);
    let done = api.wait_for_status(&deleting, "completed").await;
    assert_eq!(done["result"], "left it alone");
    assert_eq!(setup.lines("slow_delete start k").len(), 1);
}

#[actix_web::test]
async fn cancelling_a_run_cancels_its_mcp_call() {
    let setup = Setup::new();
    let config = setup.config(json!({"fx": stdio(&setup.ledger(), "normal")}));
    let app = spawn_app_with(&[("AGENT_MCP_CONFIG", &config)]).await;
    let api = app.api();
    app.llm.push(Reply::tool_call(
        "s1",
        "fx__slow_set",
        json!({"name": "f", "seconds": 600}),
    ));
    let run = api
        .create_run(json!({"task": "set f slowly", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let pending = api.wait_for_approval(id).await;
    api.resume(
        id,
        pending["approval_id"].as_str().unwrap(),
        "approved",
        None,
    )
    .await;
    setup.wait_for_line("slow_set start f").await;
    assert_eq!(api.cancel(id).await.status(), 200);
    api.wait_for_status(id, "cancelled").await;
    // The server was told, and stopped the call.
    setup.wait_for_line("slow_set cancelled f").await;
    assert!(setup.lines("slow_set done").is_empty());
}

#[test]
fn a_bad_mcp_config_stops_the_start_with_one_line() {
    let setup = Setup::new();
    let bad = setup.dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"mcpServers": {"fx": {"url": "ftp://nowhere"}}}"#).unwrap();
    let missing = setup.dir.path().join("missing.json");
    for path in [bad, missing] {
        let vars = [("AGENT_MCP_CONFIG".to_string(), path.display().to_string())]
            .into_iter()
            .collect();
        let output = server_command(vars)
            .stderr(Stdio::piped())
            .output()
            .expect("running agent-server");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("AGENT_MCP_CONFIG"), "{stderr}");
    }
}
