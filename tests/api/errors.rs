//! Every error case of contract section 3: bad input gets a clear error with
//! the contract's body, never a 500.

use serde_json::json;

use crate::helpers::{assert_error, spawn_app};
use crate::mock_llm::Reply;

#[actix_web::test]
async fn malformed_run_requests_are_400() {
    let app = spawn_app().await;
    let api = app.api();
    let long_task = "x".repeat(32_769);
    let cases = [
        json!({"task": "t", "surprise": 1}),
        json!({"task": ""}),
        json!({"task": "   "}),
        json!({"task": long_task}),
        json!({"task": 42}),
        json!({}),
        json!({"task": "t", "agent": "wizard"}),
        json!({"task": "t", "approval_timeout_secs": 0}),
        json!({"task": "t", "approval_timeout_secs": 259_201}),
        json!({"task": "t", "approval_timeout_secs": "soon"}),
        json!({"task": "t", "idempotency_key": "k".repeat(256)}),
        json!({"task": "t", "idempotency_key": ""}),
        json!(["task"]),
        json!("task"),
    ];
    for body in cases {
        assert_error(api.post_run(body.clone()).await, 400, "invalid_request").await;
    }
    for raw in ["{not json", "", "null", "{\"task\": \"t\"} trailing"] {
        let response = app
            .client
            .post(format!("{}/api/runs", app.address))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "invalid_request").await;
    }
    let list: serde_json::Value = api.get("/api/runs").await.json().await.unwrap();
    assert_eq!(list["runs"], json!([]), "no bad request created a run");
}

#[actix_web::test]
async fn the_longest_task_is_accepted_and_utf8_counts_characters() {
    let app = spawn_app().await;
    let api = app.api();
    app.llm.push(Reply::Hang);
    app.llm.push(Reply::Hang);
    let run = api.create_run(json!({"task": "x".repeat(32_768)})).await;
    api.cancel(run["id"].as_str().unwrap()).await;
    // 32,768 characters of 4 bytes each: over 128 KiB but within the limit.
    let run = api.create_run(json!({"task": "🦀".repeat(32_768)})).await;
    api.cancel(run["id"].as_str().unwrap()).await;
}

#[actix_web::test]
async fn bodies_over_256_kib_are_413() {
    let app = spawn_app().await;
    let body = format!("{{\"task\": \"{}\"}}", "x".repeat(300 * 1024));
    let response = app
        .client
        .post(format!("{}/api/runs", app.address))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "payload_too_large").await;
}

#[actix_web::test]
async fn unknown_runs_are_404_even_with_bad_ids() {
    let app = spawn_app().await;
    let api = app.api();
    let unknown = uuid::Uuid::new_v4();
    for path in [
        format!("/api/runs/{unknown}"),
        "/api/runs/not-a-uuid".to_string(),
        format!("/api/runs/{unknown}/events"),
        "/api/runs/123/events".to_string(),
        "/api/nothing-here".to_string(),
    ] {
        assert_error(api.get(&path).await, 404, "not_found").await;
    }
    let approval = uuid::Uuid::new_v4().to_string();
    assert_error(
        api.resume(&unknown.to_string(), &approval, "approved", None)
            .await,
        404,
        "not_found",
    )
    .await;
    assert_error(api.cancel(&unknown.to_string()).await, 404, "not_found").await;
    assert_error(api.cancel("nope").await, 404, "not_found").await;
}

#[actix_web::test]
async fn bad_query_parameters_are_400() {
    let app = spawn_app().await;
    let api = app.api();
    for query in [
        "limit=0",
        "limit=201",
        "limit=ten",
        "status=sleeping",
        "before=yesterday",
        "colour=blue",
    ] {
        assert_error(
            api.get(&format!("/api/runs?{query}")).await,
            400,
            "invalid_request",
        )
        .await;
    }
    let run = api.create_run(json!({"task": "t"})).await;
    let id = run["id"].as_str().unwrap();
    for query in ["after=-1", "limit=1001", "limit=0", "after=x"] {
        assert_error(
            api.get(&format!("/api/runs/{id}/events?{query}")).await,
            400,
            "invalid_request",
        )
        .await;
    }
}

#[actix_web::test]
async fn resume_refuses_what_is_not_waiting() {
    let app = spawn_app().await;
    let api = app.api();
    app.llm.push(Reply::tool_call(
        "c1",
        "shell",
        serde_json::json!({"command": "true"}),
    ));
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let pending = api.wait_for_approval(id).await;
    let approval_id = pending["approval_id"].as_str().unwrap();

    // Malformed decisions.
    for body in [
        json!({"approval_id": approval_id, "decision": "maybe"}),
        json!({"approval_id": "not-a-uuid", "decision": "approved"}),
        json!({"approval_id": approval_id}),
        json!({"approval_id": approval_id, "decision": "approved", "extra": true}),
        json!({"approval_id": approval_id, "decision": "rejected", "feedback": "f".repeat(8193)}),
    ] {
        assert_error(
            api.post(&format!("/api/runs/{id}/resume"), body).await,
            400,
            "invalid_request",
        )
        .await;
    }
    // Another id is not the one waiting.
    let other = uuid::Uuid::new_v4().to_string();
    assert_error(
        api.resume(id, &other, "approved", None).await,
        409,
        "no_pending_approval",
    )
    .await;

    assert_eq!(
        api.resume(id, approval_id, "approved", None).await.status(),
        200
    );
    let done = api.wait_for_status(id, "completed").await;
    assert_eq!(done["pending_approval"], serde_json::Value::Null);
    // Decided, and the run finished: still already_decided for that id.
    assert_error(
        api.resume(id, approval_id, "approved", None).await,
        409,
        "already_decided",
    )
    .await;
    assert_error(
        api.resume(id, &other, "approved", None).await,
        409,
        "no_pending_approval",
    )
    .await;
    // A finished run cannot be cancelled.
    assert_error(api.cancel(id).await, 409, "already_finished").await;
}

#[actix_web::test]
async fn wrong_methods_get_a_json_error() {
    let app = spawn_app().await;
    let response = app
        .client
        .delete(format!("{}/api/runs", app.address))
        .send()
        .await
        .unwrap();
    assert_error(response, 405, "method_not_allowed").await;
}
