//! Both providers, streaming and not, against `mock-llm`: text, several tool
//! calls in one answer with arguments split over many chunks, usage, retries
//! after a 500 and a 429 with `Retry-After`, a 4xx that fails the run, and
//! cancellation in the middle of a stream.

use std::time::{Duration, Instant};

use agent_server::mock_llm::{self, MockLlmServer, Protocol};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app_with};

/// The final text, with characters that must survive being cut anywhere.
const FINAL_TEXT: &str = "Read both: \"a.txt\" says ünïcødé 🦀, and the listing has 1 file.";

fn rules(extra: Value) -> Vec<mock_llm::Rule> {
    let mut rules = vec![
        json!({
            "name": "two calls",
            "match": {"system_contains": "You are a coding agent", "tool_results": 0},
            "reply": {"text": "Looking.", "tool_calls": [
                {"name": "list_files", "arguments": {}},
                {"name": "read_file", "arguments": {"path": "a.txt"}}
            ], "usage": {"input_tokens": 100, "output_tokens": 20}},
            "chunk_chars": 2
        }),
        json!({
            "name": "final",
            "match": {"system_contains": "You are a coding agent", "tool_results": 2},
            "reply": {"text": FINAL_TEXT, "usage": {"input_tokens": 300, "output_tokens": 40}},
            "chunk_chars": 3
        }),
    ];
    if let Value::Array(extra) = extra {
        rules.splice(0..0, extra);
    }
    mock_llm::parse("test", &Value::Array(rules).to_string()).expect("valid rules")
}

async fn app_for(mock: &MockLlmServer, provider: &str, streaming: bool) -> TestApp {
    let base = match provider {
        "anthropic" => mock.anthropic_base_url(),
        _ => mock.openai_base_url(),
    };
    let streaming = streaming.to_string();
    let app = spawn_app_with(&[
        ("LLM_PROVIDER", provider),
        ("LLM_BASE_URL", &base),
        ("ANTHROPIC_API_KEY", "test-anthropic-key"),
        ("LLM_STREAMING", &streaming),
    ])
    .await;
    std::fs::write(app.workspace.path().join("a.txt"), "ünïcødé 🦀").unwrap();
    app
}

async fn a_run_completes(provider: &str, streaming: bool) {
    let mock = mock_llm::start("127.0.0.1:0", rules(json!([])))
        .await
        .unwrap();
    let app = app_for(&mock, provider, streaming).await;
    let mut deltas = app.deltas.subscribe();
    let api = app.api();

    let run = api
        .create_run(json!({"task": "read a.txt", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let done = api.wait_for_status(id, "completed").await;

    assert_eq!(
        done["result"], FINAL_TEXT,
        "{provider} streaming={streaming}"
    );
    assert_eq!(
        done["usage"]["coding"],
        json!({"input_tokens": 400, "output_tokens": 60})
    );
    let events = api.events(id).await;
    let thought = events
        .iter()
        .find(|e| e["type"] == "AGENT_THOUGHT")
        .unwrap();
    let calls = thought["payload"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["tool"], "list_files");
    assert_eq!(calls[1]["args"], json!({"path": "a.txt"}));
    let results: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "TOOL_RESULT")
        .collect();
    assert!(
        results[1]["payload"]["output"]
            .as_str()
            .unwrap()
            .contains("ünïcødé 🦀")
    );

    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let expected = if provider == "anthropic" {
        Protocol::Anthropic
    } else {
        Protocol::OpenAi
    };
    assert!(
        requests
            .iter()
            .all(|r| r.protocol == expected && r.status == 200)
    );
    let stream_flag = requests[0].body["stream"].as_bool().unwrap_or(false);
    assert_eq!(stream_flag, streaming);

    // Streamed text is published as it arrives, and adds up to the answers.
    let mut streamed = String::new();
    while let Ok(delta) = deltas.try_recv() {
        assert_eq!(delta.run_id.to_string(), id);
        streamed.push_str(&delta.text);
    }
    if streaming {
        assert_eq!(streamed, format!("Looking.{FINAL_TEXT}"));
    }
}

#[actix_web::test]
async fn openai_streaming() {
    a_run_completes("openai", true).await;
}

#[actix_web::test]
async fn openai_whole_answers() {
    a_run_completes("openai", false).await;
}

#[actix_web::test]
async fn anthropic_streaming() {
    a_run_completes("anthropic", true).await;
}

#[actix_web::test]
async fn anthropic_whole_answers() {
    a_run_completes("anthropic", false).await;
}

async fn retries_then_completes(provider: &str) {
    let flaky = json!([
        {"name": "flaky first", "match": {"tool_results": 0},
         "reply": {"tool_calls": [{"name": "list_files"}]},
         "fail": {"status": 500, "times": 1, "message": "boom"}},
        {"name": "limited second", "match": {"tool_results": 1},
         "reply": {"text": "done after retries"},
         "fail": {"status": 429, "times": 1, "retry_after": 1, "message": "slow down"}}
    ]);
    let mock = mock_llm::start("127.0.0.1:0", rules(flaky)).await.unwrap();
    let app = app_for(&mock, provider, true).await;
    let api = app.api();
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let started = Instant::now();
    let done = api.wait_for_status(id, "completed").await;
    assert_eq!(done["result"], "done after retries");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    let attempts: Vec<i64> = api
        .events(id)
        .await
        .iter()
        .filter(|e| e["type"] == "LLM_CALLED")
        .map(|e| e["payload"]["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 1, 2]);
    let statuses: Vec<u16> = mock.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 200, 429, 200]);
}

#[actix_web::test]
async fn openai_retries_after_500_and_429() {
    retries_then_completes("openai").await;
}

#[actix_web::test]
async fn anthropic_retries_after_500_and_429() {
    retries_then_completes("anthropic").await;
}

async fn a_client_error_fails_the_run(provider: &str) {
    let bad = json!([{"name": "refused", "reply": {"text": "never"},
                      "fail": {"status": 400, "times": 1, "message": "model claude-nonsense does not exist"}}]);
    let mock = mock_llm::start("127.0.0.1:0", rules(bad)).await.unwrap();
    let app = app_for(&mock, provider, true).await;
    let api = app.api();
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let failed = api.wait_for_status(id, "failed").await;
    assert_eq!(failed["error"]["code"], "llm_error");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.contains("does not exist"), "{message}");
    assert!(!message.contains("test-anthropic-key") && !message.contains("test-key"));
    assert_eq!(mock.requests().len(), 1, "a 4xx is not retried");
}

#[actix_web::test]
async fn openai_client_error_fails_the_run() {
    a_client_error_fails_the_run("openai").await;
}

#[actix_web::test]
async fn anthropic_client_error_fails_the_run() {
    a_client_error_fails_the_run("anthropic").await;
}

async fn cancel_during_a_stream(provider: &str) {
    let slow = json!([{"name": "slow", "reply": {"text": "a very long answer that streams slowly ".repeat(20)},
                       "chunk_chars": 4, "chunk_delay_ms": 100}]);
    let mock = mock_llm::start("127.0.0.1:0", rules(slow)).await.unwrap();
    let app = app_for(&mock, provider, true).await;
    let mut deltas = app.deltas.subscribe();
    let api = app.api();
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    tokio::time::timeout(crate::helpers::WAIT_LIMIT, deltas.recv())
        .await
        .expect("a first delta")
        .unwrap();

    let started = Instant::now();
    let response = api.cancel(id).await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    // The stream stops: no more deltas for this run once the cancel is in.
    // Absence has no condition to wait for, so give the old stream three of
    // its 100 ms chunk intervals to show up.
    while deltas.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(deltas.try_recv().is_err(), "the stream was aborted");
    let types = api.event_types(id).await;
    assert_eq!(types.last().unwrap(), "RUN_CANCELLED");
    assert!(!types.contains(&"AGENT_THOUGHT".to_string()));
    assert_error(api.cancel(id).await, 409, "already_finished").await;
}

#[actix_web::test]
async fn openai_cancel_during_a_stream() {
    cancel_during_a_stream("openai").await;
}

#[actix_web::test]
async fn anthropic_cancel_during_a_stream() {
    cancel_during_a_stream("anthropic").await;
}
