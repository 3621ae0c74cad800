//! Supervision: a run actor whose journal write fails (here, because a second
//! writer got there first) stops, is restarted from its journal, continues
//! from what the journal says, and no other run notices.

use agent_server::domain::EventBody;
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{assert_error, spawn_app};
use crate::mock_llm::Reply;

#[actix_web::test]
async fn a_failed_actor_restarts_from_its_journal_and_touches_no_other_run() {
    let app = spawn_app().await;
    let api = app.api();
    app.llm.push(Reply::tool_call(
        "c1",
        "shell",
        json!({"command": "echo once >> ledger.txt"}),
    ));
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let pending = api.wait_for_approval(&id).await;
    let approval_id: Uuid = pending["approval_id"].as_str().unwrap().parse().unwrap();
    app.llm
        .push(Reply::tool_call("c2", "shell", json!({"command": "true"})));
    let other = api
        .create_run(json!({"task": "other", "agent": "coding"}))
        .await;
    let other_id = other["id"].as_str().unwrap().to_string();
    api.wait_for_approval(&other_id).await;

    // A second writer journals the decision behind the actor's back.
    let config: tokio_postgres::Config = app.database_url.parse().unwrap();
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    actix_rt::spawn(connection);
    let last_seq = api.run(&id).await["last_seq"].as_i64().unwrap();
    let (type_name, payload) = EventBody::RunResumed {
        approval_id,
        decision: agent_server::domain::Decision::Approved,
        feedback: None,
        decided_by: "someone else".into(),
        edited_args: None,
    }
    .to_columns();
    client
        .execute(
            "INSERT INTO run_events (run_id, seq, type, agent, at, key, payload)
             VALUES ($1, $2, $3, 'coding', $4, $5, $6)",
            &[
                &Uuid::parse_str(&id).unwrap(),
                &(last_seq + 1),
                &type_name,
                &Utc::now(),
                &format!("resumed:{approval_id}"),
                &payload,
            ],
        )
        .await
        .unwrap();

    // The actor's own write of the same decision is refused; it reloads.
    let response = api
        .resume(&id, &approval_id.to_string(), "approved", None)
        .await;
    assert_error(response, 503, "unavailable").await;

    // Rebuilt from the journal, the run acts on the decision it holds, once.
    let done = api.wait_for_status(&id, "completed").await;
    assert_eq!(done["status"], "completed");
    let ledger = std::fs::read_to_string(app.workspace.path().join("ledger.txt")).unwrap();
    assert_eq!(ledger, "once\n");
    let events = api.events(&id).await;
    let resumed: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "RUN_RESUMED")
        .collect();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0]["payload"]["decided_by"], "someone else");
    assert_error(
        api.resume(&id, &approval_id.to_string(), "approved", None)
            .await,
        409,
        "already_decided",
    )
    .await;

    // The other run never noticed.
    let other_now = api.run(&other_id).await;
    assert_eq!(other_now["status"], "waiting_approval");
    let other_approval = other_now["pending_approval"]["approval_id"]
        .as_str()
        .unwrap();
    assert_eq!(
        api.resume(&other_id, other_approval, "approved", None)
            .await
            .status(),
        200
    );
    api.wait_for_status(&other_id, "completed").await;
}
