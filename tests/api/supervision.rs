//! Supervision: a run actor whose journal write fails (here, because a second
//! writer got there first) stops, is restarted from its journal, continues
//! from what the journal says, and no other run notices.

use agent_server::agents::AgentName;
use agent_server::domain::{EventBody, Usage};
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::spawn_app;
use crate::mock_llm::Reply;

#[actix_web::test]
async fn a_failed_actor_restarts_from_its_journal_and_touches_no_other_run() {
    let app = spawn_app().await;
    let api = app.api();
    // The run's model call hangs, so its actor drives it (it is not parked).
    app.llm.push(Reply::Hang);
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    api.wait_for_status(&id, "running").await;
    app.llm.wait_for_requests(1).await;
    app.llm
        .push(Reply::tool_call("c2", "shell", json!({"command": "true"})));
    let other = api
        .create_run(json!({"task": "other", "agent": "coding"}))
        .await;
    let other_id = other["id"].as_str().unwrap().to_string();
    api.wait_for_approval(&other_id).await;

    // A second writer journals the model's answer behind the actor's back.
    let config: tokio_postgres::Config = app.database_url.parse().unwrap();
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    actix_rt::spawn(connection);
    let last_seq = api.run(&id).await["last_seq"].as_i64().unwrap();
    let (type_name, payload) = EventBody::AgentThought {
        agent: AgentName::Coding,
        model: "elsewhere".into(),
        text: "answered elsewhere".into(),
        tool_calls: vec![],
        usage: Usage::default(),
        cost_usd: None,
    }
    .to_columns();
    client
        .execute(
            "INSERT INTO run_events (run_id, seq, type, agent, at, key, payload)
             VALUES ($1, $2, $3, 'coding', $4, 'thought:1', $5)",
            &[
                &Uuid::parse_str(&id).unwrap(),
                &(last_seq + 1),
                &type_name,
                &Utc::now(),
                &payload,
            ],
        )
        .await
        .unwrap();

    // The actor's own write (the cancellation) names a taken seq and is
    // refused; the actor reloads, and then applies the cancellation once.
    let response = api.cancel(&id).await;
    assert_eq!(response.status(), 200);
    let events = api.events(&id).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "RUN_STARTED",
            "LLM_CALLED",
            "AGENT_THOUGHT",
            "RUN_CANCELLED"
        ]
    );
    assert_eq!(events[2]["payload"]["model"], "elsewhere");
    assert_eq!(api.run(&id).await["status"], "cancelled");

    // The other run never noticed.
    let other_now = api.run(&other_id).await;
    assert_eq!(other_now["status"], "waiting_approval");
    let other_approval = other_now["pending_approval"]["approval_id"]
        .as_str()
        .unwrap();
    app.llm.push(Reply::text("done"));
    assert_eq!(
        api.resume(&other_id, other_approval, "approved", None)
            .await
            .status(),
        200
    );
    api.wait_for_status(&other_id, "completed").await;
}
