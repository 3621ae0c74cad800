//! The `mock-llm` binary with its default fixtures driving the whole agent
//! network through the server, as in the README's demo and the compose file.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::helpers::{spawn_app_with, wait_until};

/// `mock-llm` as a child process, killed when dropped.
struct MockLlmProcess {
    child: Child,
    base_url: String,
}

impl MockLlmProcess {
    fn start() -> MockLlmProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mock-llm"))
            .args(["--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting mock-llm");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let address = lines
            .find_map(|line| {
                line.ok()?
                    .strip_prefix("mock-llm listening on ")
                    .map(str::to_string)
            })
            .expect("mock-llm printed its address");
        // Keep draining so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        MockLlmProcess {
            child,
            base_url: format!("{address}/v1"),
        }
    }
}

impl Drop for MockLlmProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[actix_web::test]
async fn the_default_fixtures_drive_the_network_to_the_end() {
    let mock = MockLlmProcess::start();
    let app = spawn_app_with(&[("LLM_BASE_URL", &mock.base_url)]).await;
    std::fs::write(app.workspace.path().join("README.md"), "# demo project\n").unwrap();
    let api = app.api();

    let run = api
        .create_run(json!({"task": "tidy up the repository"}))
        .await;
    let id = run["id"].as_str().unwrap();
    for tool in ["shell", "write_file"] {
        let pending = wait_until(&format!("the {tool} approval"), || async {
            let run = api.run(id).await;
            (run["pending_approval"]["tool"] == tool).then(|| run["pending_approval"].clone())
        })
        .await;
        assert_eq!(pending["agent"], "coding");
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
    let done = api.wait_for_status(id, "completed").await;
    assert!(!done["result"].as_str().unwrap().is_empty());
    assert!(app.workspace.path().join("NOTES.md").exists());
    let types = api.event_types(id).await;
    assert_eq!(types.iter().filter(|t| *t == "AGENT_STARTED").count(), 1);

    // A task about logs goes to the log-analyzer, which explains that Loki is
    // not configured.
    let run = api
        .create_run(json!({"task": "why are there errors in the api logs?"}))
        .await;
    let id = run["id"].as_str().unwrap();
    api.wait_for_status(id, "completed").await;
    let events = api.events(id).await;
    let started = events
        .iter()
        .find(|e| e["type"] == "AGENT_STARTED")
        .unwrap();
    assert_eq!(started["payload"]["agent"], "log-analyzer");
    let loki = events
        .iter()
        .find(|e| e["type"] == "TOOL_RESULT" && e["payload"]["tool"] == "loki_query")
        .unwrap();
    assert_eq!(loki["payload"]["ok"], false);
    assert!(
        loki["payload"]["output"]
            .as_str()
            .unwrap()
            .contains("LOKI_URL")
    );
}
