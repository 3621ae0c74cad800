//! The agent network: delegation and the answer's way back, per-agent usage
//! and models, long runs, the iteration limit, and a crash inside a
//! delegated agent.

use serde_json::{Value, json};

use crate::helpers::{fresh_database, spawn_app, spawn_app_with};
use crate::mock_llm::{MockLlm, Reply};
use crate::process::Server;

fn system_prompt(request: &Value) -> &str {
    request["messages"][0]["content"].as_str().unwrap()
}

fn tool_names(request: &Value) -> Vec<&str> {
    request["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect()
}

fn tool_messages(request: &Value) -> Vec<&Value> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect()
}

#[actix_web::test]
async fn the_orchestrator_delegates_and_receives_the_answer_once() {
    let app = spawn_app_with(&[("LLM_MODEL_CODING", "coder-model")]).await;
    let api = app.api();
    app.llm.push(Reply::tool_call(
        "call_d",
        "delegate",
        json!({"agent": "coding", "task": "count the files in src"}),
    ));
    app.llm
        .push(Reply::tool_call("call_l", "list_files", json!({})));
    app.llm.push(Reply::text("There are 0 files."));
    app.llm
        .push(Reply::text("The coding agent counted 0 files."));

    let run = api
        .create_run(json!({"task": "how big is the project?"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let done = api.wait_for_status(id, "completed").await;

    assert_eq!(done["result"], "The coding agent counted 0 files.");
    let requests = app.llm.requests();
    assert_eq!(requests.len(), 4);
    // The orchestrator: its own prompt, tools and model.
    assert!(system_prompt(&requests[0]).starts_with("You are the orchestrator"));
    assert_eq!(
        tool_names(&requests[0]),
        ["delegate", "read_file", "list_files"]
    );
    assert_eq!(requests[0]["model"], "mock-model");
    // The coding agent starts a fresh conversation with the delegated task.
    assert!(system_prompt(&requests[1]).starts_with("You are a coding agent"));
    assert_eq!(requests[1]["model"], "coder-model");
    assert_eq!(requests[1]["messages"].as_array().unwrap().len(), 2);
    assert_eq!(
        requests[1]["messages"][1]["content"],
        "count the files in src"
    );
    assert_eq!(
        tool_names(&requests[1]),
        ["shell", "read_file", "write_file", "list_files"]
    );
    // Its answer returns to the orchestrator as the delegate result, once.
    let back = tool_messages(&requests[3]);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0]["tool_call_id"], "call_d");
    assert_eq!(back[0]["content"], "There are 0 files.");

    let events = api.events(id).await;
    let trail: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap(),
                e["agent"].as_str().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(
        trail,
        [
            "RUN_STARTED orchestrator",
            "LLM_CALLED orchestrator",
            "AGENT_THOUGHT orchestrator",
            "TOOL_CALLED orchestrator",
            "AGENT_STARTED coding",
            "LLM_CALLED coding",
            "AGENT_THOUGHT coding",
            "TOOL_CALLED coding",
            "TOOL_STARTED coding",
            "TOOL_RESULT coding",
            "LLM_CALLED coding",
            "AGENT_THOUGHT coding",
            "AGENT_FINISHED coding",
            "TOOL_RESULT orchestrator",
            "LLM_CALLED orchestrator",
            "AGENT_THOUGHT orchestrator",
            "RUN_COMPLETED orchestrator",
        ]
    );
    assert_eq!(
        done["usage"]["orchestrator"],
        json!({"input_tokens": 31, "output_tokens": 12})
    );
    assert_eq!(
        done["usage"]["coding"],
        json!({"input_tokens": 31, "output_tokens": 12})
    );
}

#[actix_web::test]
async fn the_log_analyzer_gets_its_own_tools() {
    let app = spawn_app().await;
    let api = app.api();
    app.llm.push(Reply::tool_call(
        "call_d",
        "delegate",
        json!({"agent": "log-analyzer", "task": "why did checkout fail at noon?"}),
    ));
    app.llm
        .push(Reply::text("Timeouts to the payment service."));
    app.llm
        .push(Reply::text("Checkout failed on payment timeouts."));
    let run = api.create_run(json!({"task": "checkout errors"})).await;
    let id = run["id"].as_str().unwrap();
    api.wait_for_status(id, "completed").await;
    let requests = app.llm.requests();
    assert!(system_prompt(&requests[1]).starts_with("You are a log-analysis agent"));
    assert_eq!(
        tool_names(&requests[1]),
        ["loki_query", "read_file", "list_files"]
    );
    let run = api.run(id).await;
    assert!(
        run["usage"]["log-analyzer"]["input_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[actix_web::test]
async fn a_run_started_on_the_coding_agent_runs_it_alone() {
    let app = spawn_app().await;
    let api = app.api();
    app.llm.push(Reply::text("done alone"));
    let run = api
        .create_run(json!({"task": "fix it", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let done = api.wait_for_status(id, "completed").await;
    assert_eq!(done["result"], "done alone");
    let requests = app.llm.requests();
    assert!(system_prompt(&requests[0]).starts_with("You are a coding agent"));
    assert_eq!(requests[0]["messages"][1]["content"], "fix it");
    assert!(
        !api.event_types(id)
            .await
            .contains(&"AGENT_STARTED".to_string())
    );
}

#[actix_web::test]
async fn a_run_of_25_tool_calls_completes() {
    let app = spawn_app().await;
    let api = app.api();
    for i in 0..25 {
        app.llm.push(Reply::tool_call(
            &format!("call_{i}"),
            "list_files",
            json!({}),
        ));
    }
    app.llm.push(Reply::text("25 listings later"));
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let done = api.wait_for_status(id, "completed").await;
    assert_eq!(done["result"], "25 listings later");
    let types = api.event_types(id).await;
    assert_eq!(types.iter().filter(|t| *t == "TOOL_RESULT").count(), 25);
    assert_eq!(types.iter().filter(|t| *t == "LLM_CALLED").count(), 26);
    // The last request carries the whole conversation.
    assert_eq!(tool_messages(app.llm.requests().last().unwrap()).len(), 25);
}

#[actix_web::test]
async fn the_iteration_limit_fails_the_run() {
    let app = spawn_app_with(&[("AGENT_MAX_ITERATIONS", "3")]).await;
    let api = app.api();
    for i in 0..5 {
        app.llm.push(Reply::tool_call(
            &format!("call_{i}"),
            "list_files",
            json!({}),
        ));
    }
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let failed = api.wait_for_status(id, "failed").await;
    assert_eq!(failed["error"]["code"], "iteration_limit");
    assert_eq!(app.llm.requests().len(), 3);
}

#[actix_web::test]
async fn a_crash_inside_a_delegated_agent_resumes_inside_it() {
    let database_url = fresh_database().await;
    let llm = MockLlm::start().await;
    let workspace = tempfile::tempdir().unwrap();
    llm.push(Reply::tool_call(
        "call_d",
        "delegate",
        json!({"agent": "coding", "task": "look around"}),
    ));
    llm.push(Reply::tool_call("call_l", "list_files", json!({})));
    llm.push(Reply::Hang);
    llm.push(Reply::text("child: looked around"));
    llm.push(Reply::text("parent: all done"));

    let server = Server::start(&database_url, &llm, &workspace).await;
    let run = server.api.create_run(json!({"task": "t"})).await;
    let id = run["id"].as_str().unwrap().to_string();
    llm.wait_for_requests(3).await;
    server.kill_9();

    let server = Server::start(&database_url, &llm, &workspace).await;
    let done = server.api.wait_for_status(&id, "completed").await;
    assert_eq!(done["result"], "parent: all done");
    let requests = llm.requests();
    assert_eq!(requests.len(), 5);
    // The re-sent call is the child's, with the child's conversation.
    assert!(system_prompt(&requests[3]).starts_with("You are a coding agent"));
    assert_eq!(requests[3]["messages"], requests[2]["messages"]);
    // The orchestrator receives the child's answer once.
    let back = tool_messages(&requests[4]);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0]["content"], "child: looked around");
    let events = server.api.events(&id).await;
    let count = |t: &str| events.iter().filter(|e| e["type"] == t).count();
    assert_eq!(count("AGENT_STARTED"), 1);
    assert_eq!(count("AGENT_FINISHED"), 1);
    let attempts: Vec<(String, i64)> = events
        .iter()
        .filter(|e| e["type"] == "LLM_CALLED")
        .map(|e| {
            (
                e["agent"].as_str().unwrap().to_string(),
                e["payload"]["attempt"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            ("orchestrator".to_string(), 1),
            ("coding".to_string(), 1),
            ("coding".to_string(), 1),
            ("coding".to_string(), 2),
            ("orchestrator".to_string(), 1),
        ]
    );
}
