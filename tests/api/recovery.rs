//! Crash recovery with the real binary as a subprocess and `kill -9`: the
//! run resumes where it stopped, with nothing lost and nothing done twice.

use serde_json::{Value, json};

use crate::helpers::{assert_error, fresh_database, wait_until};
use crate::mock_llm::{MockLlm, Reply};
use crate::process::Server;

#[actix_web::test]
async fn a_run_waiting_for_approval_keeps_waiting_after_kill_9() {
    let database_url = fresh_database().await;
    let llm = MockLlm::start().await;
    let workspace = tempfile::tempdir().unwrap();
    llm.push(Reply::tool_call(
        "c1",
        "shell",
        json!({"command": "echo hi"}),
    ));
    llm.push(Reply::text("finished"));

    let server = Server::start(&database_url, &llm, &workspace).await;
    let run = server
        .api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let before = server.api.wait_for_approval(&id).await;
    server.kill_9();

    let server = Server::start(&database_url, &llm, &workspace).await;
    let after = server.api.run(&id).await;
    assert_eq!(after["status"], "waiting_approval");
    assert_eq!(after["pending_approval"], before);
    let response = server
        .api
        .resume(
            &id,
            before["approval_id"].as_str().unwrap(),
            "approved",
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    let done = server.api.wait_for_status(&id, "completed").await;
    assert_eq!(done["result"], "finished");
    assert_eq!(llm.requests().len(), 2);
}

#[actix_web::test]
async fn a_model_call_in_flight_is_sent_again_after_kill_9() {
    let database_url = fresh_database().await;
    let llm = MockLlm::start().await;
    let workspace = tempfile::tempdir().unwrap();
    llm.push(Reply::Hang);
    llm.push(Reply::text("answered the second time"));

    let server = Server::start(&database_url, &llm, &workspace).await;
    let run = server.api.create_run(json!({"task": "t"})).await;
    let id = run["id"].as_str().unwrap().to_string();
    llm.wait_for_requests(1).await;
    server.kill_9();

    let server = Server::start(&database_url, &llm, &workspace).await;
    let done = server.api.wait_for_status(&id, "completed").await;
    assert_eq!(done["result"], "answered the second time");
    let events = server.api.events(&id).await;
    let attempts: Vec<i64> = events
        .iter()
        .filter(|e| e["type"] == "LLM_CALLED")
        .map(|e| e["payload"]["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2]);
    let requests = llm.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0]["messages"], requests[1]["messages"],
        "the same call, re-sent"
    );
}

#[actix_web::test]
async fn an_approved_dangerous_tool_never_runs_twice_after_kill_9() {
    let database_url = fresh_database().await;
    let llm = MockLlm::start().await;
    let workspace = tempfile::tempdir().unwrap();
    let command = "echo run >> ledger.txt; echo started > started; sleep 30";
    llm.push(Reply::tool_call("c1", "shell", json!({"command": command})));
    llm.push(Reply::text("stopped as asked"));

    let server = Server::start(&database_url, &llm, &workspace).await;
    let run = server
        .api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let first = server.api.wait_for_approval(&id).await;
    let first_id = first["approval_id"].as_str().unwrap().to_string();
    server.api.resume(&id, &first_id, "approved", None).await;
    let ledger = workspace.path().join("ledger.txt");
    let started = workspace.path().join("started");
    wait_until("the command to start", || async {
        started.exists().then_some(())
    })
    .await;
    // The sandbox ends the command with the server, so only a re-run could
    // write to the ledger again.
    server.kill_9();

    let server = Server::start(&database_url, &llm, &workspace).await;
    let again = server.api.wait_for_approval(&id).await;
    assert_ne!(again["approval_id"], first["approval_id"]);
    assert_eq!(again["call_id"], "c1");
    let events = server.api.events(&id).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        &types[types.len() - 4..],
        [
            "RUN_RESUMED",
            "TOOL_STARTED",
            "TOOL_INTERRUPTED",
            "RUN_SUSPENDED"
        ]
    );
    assert_eq!(events.last().unwrap()["payload"]["interrupted"], true);
    assert_eq!(
        std::fs::read_to_string(&ledger).unwrap(),
        "run\n",
        "not run again silently"
    );
    assert_error(
        server.api.resume(&id, &first_id, "approved", None).await,
        409,
        "already_decided",
    )
    .await;

    // The human declines to run it again; the run finishes on the same
    // database, and the ledger proves the command ran exactly once.
    let response = server
        .api
        .resume(
            &id,
            again["approval_id"].as_str().unwrap(),
            "rejected",
            Some("it already ran"),
        )
        .await;
    assert_eq!(response.status(), 200);
    let done = server.api.wait_for_status(&id, "completed").await;
    assert_eq!(done["result"], "stopped as asked");
    assert_eq!(std::fs::read_to_string(&ledger).unwrap(), "run\n");
    let results: Vec<Value> = server
        .api
        .events(&id)
        .await
        .into_iter()
        .filter(|e| e["type"] == "TOOL_RESULT")
        .collect();
    assert_eq!(results.len(), 1, "one result for the one call");
}

#[actix_web::test]
async fn the_approval_deadline_survives_a_restart() {
    let database_url = fresh_database().await;
    let llm = MockLlm::start().await;
    let workspace = tempfile::tempdir().unwrap();
    llm.push(Reply::tool_call(
        "c1",
        "write_file",
        json!({"path": "x", "content": "y"}),
    ));
    llm.push(Reply::text("nobody answered"));

    let server = Server::start(&database_url, &llm, &workspace).await;
    let run = server
        .api
        .create_run(json!({"task": "t", "agent": "coding", "approval_timeout_secs": 2}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let pending = server.api.wait_for_approval(&id).await;
    server.kill_9();

    let server = Server::start(&database_url, &llm, &workspace).await;
    let done = server.api.wait_for_status(&id, "completed").await;
    assert_eq!(done["result"], "nobody answered");
    let events = server.api.events(&id).await;
    let resumed = events.iter().find(|e| e["type"] == "RUN_RESUMED").unwrap();
    assert_eq!(resumed["payload"]["decision"], "expired");
    assert_eq!(resumed["payload"]["approval_id"], pending["approval_id"]);
    let decided_at = chrono::DateTime::parse_from_rfc3339(resumed["at"].as_str().unwrap()).unwrap();
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(pending["expires_at"].as_str().unwrap()).unwrap();
    assert!(decided_at >= expires_at, "not before its deadline");
    assert!(!workspace.path().join("x").exists());
}
