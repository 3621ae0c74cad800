//! Runs through the HTTP API: a safe tool, approval, rejection with
//! feedback, expiry, idempotent creation, listing and events.

use serde_json::{Value, json};

use crate::helpers::{assert_error, spawn_app};
use crate::mock_llm::Reply;

/// The tool messages the model received in its last request.
fn tool_messages(request: &Value) -> Vec<Value> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .cloned()
        .collect()
}

#[actix_web::test]
async fn a_run_with_a_safe_tool_completes() {
    // Arrange
    let app = spawn_app().await;
    std::fs::write(app.workspace.path().join("notes.txt"), "remember the milk").unwrap();
    app.llm.push(Reply::tool_call(
        "call_1",
        "read_file",
        json!({"path": "notes.txt"}),
    ));
    app.llm
        .push(Reply::text("The note says to remember the milk."));
    let api = app.api();

    // Act
    let run = api
        .create_run(json!({"task": "read my notes", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let done = api.wait_for_status(id, "completed").await;

    // Assert
    assert_eq!(run["status"], "pending");
    assert_eq!(run["agent"], "coding");
    assert_eq!(done["result"], "The note says to remember the milk.");
    assert_eq!(
        done["usage"]["coding"],
        json!({"input_tokens": 31, "output_tokens": 12})
    );
    assert_eq!(
        api.event_types(id).await,
        [
            "RUN_STARTED",
            "LLM_CALLED",
            "AGENT_THOUGHT",
            "TOOL_CALLED",
            "TOOL_STARTED",
            "TOOL_RESULT",
            "LLM_CALLED",
            "AGENT_THOUGHT",
            "RUN_COMPLETED"
        ]
    );
    let requests = app.llm.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0]["messages"][1],
        json!({"role": "user", "content": "read my notes"})
    );
    let tools: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["shell", "read_file", "write_file", "list_files"]);
    let results = tool_messages(&requests[1]);
    assert_eq!(results[0]["tool_call_id"], "call_1");
    assert!(
        results[0]["content"]
            .as_str()
            .unwrap()
            .contains("remember the milk")
    );
    assert!(
        requests[0].to_string().find("test-key").is_none(),
        "the key travels only in the Authorization header"
    );
    let events = api.events(id).await;
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["seq"], i as i64 + 1);
        assert!(event["at"].is_string() && event["key"].is_string());
    }
    assert_eq!(done["last_seq"], events.len() as i64);
}

#[actix_web::test]
async fn an_approved_shell_command_runs_once() {
    let app = spawn_app().await;
    app.llm.push(Reply::tool_call(
        "call_sh",
        "shell",
        json!({"command": "echo ran >> ledger.txt; echo hi"}),
    ));
    app.llm.push(Reply::text("ran it"));
    let api = app.api();

    let run = api
        .create_run(json!({"task": "run it", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let pending = api.wait_for_approval(id).await;
    assert_eq!(pending["tool"], "shell");
    assert_eq!(pending["agent"], "coding");
    assert_eq!(pending["call_id"], "call_sh");
    assert_eq!(
        pending["args"]["command"],
        "echo ran >> ledger.txt; echo hi"
    );
    assert!(
        !app.workspace.path().join("ledger.txt").exists(),
        "nothing runs before approval"
    );

    let approval_id = pending["approval_id"].as_str().unwrap();
    let response = api.resume(id, approval_id, "approved", None).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"run_id": id, "approval_id": approval_id, "decision": "approved"})
    );

    api.wait_for_status(id, "completed").await;
    let ledger = std::fs::read_to_string(app.workspace.path().join("ledger.txt")).unwrap();
    assert_eq!(ledger, "ran\n");
    let events = api.events(id).await;
    let result = events.iter().find(|e| e["type"] == "TOOL_RESULT").unwrap();
    assert_eq!(result["payload"]["ok"], true);
    assert_eq!(result["payload"]["exit_code"], 0);
    assert_eq!(result["payload"]["output"], "hi\n");
    let resumed = events.iter().find(|e| e["type"] == "RUN_RESUMED").unwrap();
    assert_eq!(resumed["payload"]["decision"], "approved");
    assert_eq!(resumed["payload"]["feedback"], Value::Null);

    // The decision is final.
    assert_error(
        api.resume(id, approval_id, "rejected", None).await,
        409,
        "already_decided",
    )
    .await;
}

#[actix_web::test]
async fn a_rejection_reaches_the_model_with_its_feedback() {
    let app = spawn_app().await;
    app.llm.push(Reply::tool_call(
        "call_w",
        "write_file",
        json!({"path": "config.toml", "content": "debug = true"}),
    ));
    app.llm
        .push(Reply::text("Understood, I left config.toml alone."));
    let api = app.api();

    let run = api
        .create_run(json!({"task": "enable debug", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let pending = api.wait_for_approval(id).await;
    assert_eq!(pending["args"]["content"], "debug = true");
    let response = api
        .resume(
            id,
            pending["approval_id"].as_str().unwrap(),
            "rejected",
            Some("not in production"),
        )
        .await;
    assert_eq!(response.status(), 200);
    api.wait_for_status(id, "completed").await;

    assert!(!app.workspace.path().join("config.toml").exists());
    let requests = app.llm.requests();
    let denial = &tool_messages(&requests[1])[0];
    assert_eq!(denial["tool_call_id"], "call_w");
    let text = denial["content"].as_str().unwrap();
    assert!(text.contains("rejected"), "{text}");
    assert!(text.contains("\"not in production\""), "{text}");
    let types = api.event_types(id).await;
    assert!(
        !types.contains(&"TOOL_STARTED".to_string()),
        "a rejected call never starts"
    );
}

#[actix_web::test]
async fn an_unanswered_approval_expires_as_a_denial() {
    let app = spawn_app().await;
    app.llm.push(Reply::tool_call(
        "call_x",
        "shell",
        json!({"command": "touch x"}),
    ));
    app.llm.push(Reply::text("gave up"));
    let api = app.api();

    let run = api
        .create_run(json!({"task": "t", "agent": "coding", "approval_timeout_secs": 1}))
        .await;
    let id = run["id"].as_str().unwrap();
    let pending = api.wait_for_approval(id).await;
    let done = api.wait_for_status(id, "completed").await;

    assert_eq!(done["result"], "gave up");
    let events = api.events(id).await;
    let resumed = events.iter().find(|e| e["type"] == "RUN_RESUMED").unwrap();
    assert_eq!(resumed["payload"]["decision"], "expired");
    assert_eq!(resumed["payload"]["feedback"], "approval timed out");
    let denial = &tool_messages(&app.llm.requests()[1])[0];
    assert!(denial["content"].as_str().unwrap().contains("timed out"));
    assert!(!app.workspace.path().join("x").exists());
    assert_error(
        api.resume(
            id,
            pending["approval_id"].as_str().unwrap(),
            "approved",
            None,
        )
        .await,
        409,
        "already_decided",
    )
    .await;
}

#[actix_web::test]
async fn the_same_idempotency_key_gives_the_same_run() {
    let app = spawn_app().await;
    let api = app.api();

    // Concurrent requests with the header: one run.
    let body = json!({"task": "once only", "agent": "coding"});
    let attempts = (0..8).map(|_| {
        app.client
            .post(format!("{}/api/runs", app.address))
            .header("Idempotency-Key", "key-1")
            .json(&body)
            .send()
    });
    let responses = futures_util::future::join_all(attempts).await;
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for response in responses {
        let response = response.unwrap();
        match response.status().as_u16() {
            201 => created += 1,
            200 => {}
            other => panic!("unexpected {other}"),
        }
        let run: Value = response.json().await.unwrap();
        ids.insert(run["id"].as_str().unwrap().to_string());
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);

    // The field shares the header's key space.
    let again = api
        .post_run(json!({"task": "once only", "agent": "coding", "idempotency_key": "key-1"}))
        .await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert!(ids.contains(again["id"].as_str().unwrap()));

    // The same key with other content is a conflict.
    assert_error(
        api.post_run(json!({"task": "something else", "idempotency_key": "key-1"}))
            .await,
        409,
        "conflict",
    )
    .await;
    let list: Value = api.get("/api/runs").await.json().await.unwrap();
    assert_eq!(list["runs"].as_array().unwrap().len(), 1);
}

#[actix_web::test]
async fn runs_are_listed_newest_first_with_a_cursor_and_a_filter() {
    let app = spawn_app().await;
    let api = app.api();
    // Each run's model hangs so the runs stay running.
    for _ in 0..5 {
        app.llm.push(Reply::Hang);
    }
    let mut ids = Vec::new();
    for i in 0..5 {
        let run = api.create_run(json!({"task": format!("task {i}")})).await;
        ids.push(run["id"].as_str().unwrap().to_string());
    }
    ids.reverse();

    let page: Value = api.get("/api/runs?limit=2").await.json().await.unwrap();
    let first: Vec<&str> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(first, [ids[0].as_str(), ids[1].as_str()]);
    let cursor = page["next_before"].as_str().unwrap();
    let page: Value = api
        .get(&format!("/api/runs?limit=2&before={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    let second: Vec<&str> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(second, [ids[2].as_str(), ids[3].as_str()]);
    let cursor = page["next_before"].as_str().unwrap();
    let page: Value = api
        .get(&format!("/api/runs?limit=2&before={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["runs"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_before"], Value::Null);

    api.cancel(&ids[0]).await;
    let cancelled: Value = api
        .get("/api/runs?status=cancelled")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["runs"].as_array().unwrap().len(), 1);
    assert_eq!(cancelled["runs"][0]["id"], ids[0].as_str());
    for id in &ids[1..] {
        api.cancel(id).await;
    }
}

#[actix_web::test]
async fn events_page_by_seq() {
    let app = spawn_app().await;
    let api = app.api();
    let run = api.create_run(json!({"task": "t"})).await;
    let id = run["id"].as_str().unwrap();
    api.wait_for_status(id, "completed").await;
    let all = api.events(id).await;
    assert!(all.len() >= 4);

    let page: Value = api
        .get(&format!("/api/runs/{id}/events?after=1&limit=2"))
        .await
        .json()
        .await
        .unwrap();
    let seqs: Vec<i64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3]);
    let page: Value = api
        .get(&format!("/api/runs/{id}/events?after={}", all.len()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["events"], json!([]));
}

#[actix_web::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let api = app.api();
    assert_eq!(api.get("/healthz").await.status(), 200);
    assert_eq!(api.get("/readyz").await.status(), 200);
}

#[actix_web::test]
async fn model_errors_are_retried_and_a_client_error_fails_the_run() {
    let app = spawn_app().await;
    let api = app.api();
    app.llm.push(Reply::Status {
        code: 500,
        body: json!({"error": {"message": "boom"}}),
        retry_after: None,
    });
    app.llm.push(Reply::Status {
        code: 429,
        body: json!({"error": {"message": "slow down"}}),
        retry_after: Some(1),
    });
    app.llm.push(Reply::text("third time lucky"));
    let run = api.create_run(json!({"task": "t"})).await;
    let id = run["id"].as_str().unwrap();
    let done = api.wait_for_status(id, "completed").await;
    assert_eq!(done["result"], "third time lucky");
    let events = api.wait_for_events(id, "LLM_CALLED", 3).await;
    let attempts: Vec<i64> = events
        .iter()
        .filter(|e| e["type"] == "LLM_CALLED")
        .map(|e| e["payload"]["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3]);

    app.llm.push(Reply::Status {
        code: 400,
        body: json!({"error": {"message": "unknown model mock-model"}}),
        retry_after: None,
    });
    let run = api.create_run(json!({"task": "t"})).await;
    let id = run["id"].as_str().unwrap();
    let failed = api.wait_for_status(id, "failed").await;
    assert_eq!(failed["error"]["code"], "llm_error");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.contains("unknown model mock-model"), "{message}");
    assert!(!message.contains("test-key"));
}

#[actix_web::test]
async fn nul_characters_from_models_and_tools_never_wedge_a_run() {
    let app = spawn_app().await;
    let api = app.api();
    std::fs::write(app.workspace.path().join("bin.dat"), b"a\0b").unwrap();
    app.llm.push(Reply::tool_call(
        "c1",
        "read_file",
        json!({"path": "bin.dat", "\u{0}": 1}),
    ));
    app.llm.push(Reply::tool_call(
        "c2",
        "read_file",
        json!({"path": "bin.dat"}),
    ));
    app.llm.push(Reply::text("done\u{0}here"));
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let done = api.wait_for_status(id, "completed").await;
    assert_eq!(done["result"], "done\u{FFFD}here");
    let events = api.events(id).await;
    let outputs: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "TOOL_RESULT")
        .map(|e| e["payload"]["output"].as_str().unwrap())
        .collect();
    assert_eq!(outputs.len(), 2);
    assert!(outputs[1].contains("a\u{FFFD}b"), "{outputs:?}");

    assert_error(
        api.post_run(json!({"task": "a\u{0}b"})).await,
        400,
        "invalid_request",
    )
    .await;
}
