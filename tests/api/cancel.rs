//! Cancellation: during a model call and during a shell command, the run
//! stops within two seconds and nothing runs afterwards.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{assert_error, processes_with, sleep_marker, spawn_app, wait_until};
use crate::mock_llm::Reply;

#[actix_web::test]
async fn cancelling_during_a_model_call_aborts_the_request() {
    let app = spawn_app().await;
    let api = app.api();
    app.llm.push(Reply::Hang);
    let run = api.create_run(json!({"task": "t"})).await;
    let id = run["id"].as_str().unwrap();
    app.llm.wait_for_requests(1).await;

    let started = Instant::now();
    let response = api.cancel(id).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(body["status"], "cancelled");

    // The model's connection is dropped.
    wait_until("the model request to be aborted", || async {
        (app.llm.aborted() == 1).then_some(())
    })
    .await;
    let events = api.events(id).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "RUN_CANCELLED");
    assert_eq!(last["payload"]["reason"], "test");
    assert_eq!(last["payload"]["by"], "admin");
    assert_error(api.cancel(id).await, 409, "already_finished").await;
}

#[actix_web::test]
async fn cancelling_during_a_shell_command_kills_everything_it_started() {
    let app = spawn_app().await;
    let api = app.api();
    let marker = sleep_marker();
    // A background job, and one that left for a session of its own.
    let command = format!("sleep {marker} & setsid -f sleep {marker}; wait");
    app.llm
        .push(Reply::tool_call("c1", "shell", json!({"command": command})));
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
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
    let sleeper = format!("sleep {marker}");
    wait_until("both sleeps to start", || async {
        let sleeps = processes_with(&marker)
            .into_iter()
            .filter(|(_, line)| *line == sleeper)
            .count();
        (sleeps == 2).then_some(())
    })
    .await;

    let started = Instant::now();
    let response = api.cancel(id).await;
    assert_eq!(response.status(), 200);
    wait_until("every process of the command to die", || async {
        processes_with(&marker).is_empty().then_some(())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    let types = api.event_types(id).await;
    assert_eq!(types.last().unwrap(), "RUN_CANCELLED");
    assert!(!types.contains(&"TOOL_RESULT".to_string()));
    // Nothing more is ever journaled.
    let count = types.len();
    assert_eq!(app.llm.requests().len(), 1);
    assert_eq!(api.event_types(id).await.len(), count);
}

#[actix_web::test]
async fn cancelling_while_waiting_for_approval_ends_the_wait() {
    let app = spawn_app().await;
    let api = app.api();
    app.llm.push(Reply::tool_call(
        "c1",
        "write_file",
        json!({"path": "a", "content": "b"}),
    ));
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let pending = api.wait_for_approval(id).await;
    let response = api.post(&format!("/api/runs/{id}/cancel"), json!({})).await;
    assert_eq!(response.status(), 200);
    let run: Value = response.json().await.unwrap();
    assert_eq!(run["status"], "cancelled");
    assert_eq!(run["pending_approval"], Value::Null);
    assert_error(
        api.resume(
            id,
            pending["approval_id"].as_str().unwrap(),
            "approved",
            None,
        )
        .await,
        409,
        "no_pending_approval",
    )
    .await;
    assert!(!app.workspace.path().join("a").exists());
}
