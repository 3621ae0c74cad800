//! Operator control (contract section 11) through the HTTP API: messages
//! into a running run and what the model is shown next, pause and unpause
//! (also across a kill -9), forks that redo nothing they copied (a ledger
//! file and the mock model's request log prove it), budgets in tokens and
//! USD that wait for an approver, and finding runs among 10,000.

use std::time::Instant;

use serde_json::{Value, json};

use crate::helpers::{
    Api, assert_error, fresh_database, spawn_app, spawn_app_on, spawn_app_with, wait_until,
};
use crate::mock_llm::{Gate, MockLlm, Reply};
use crate::process::Server;

async fn post(api: &Api, id: &str, action: &str, body: Value) -> reqwest::Response {
    api.post(&format!("/api/runs/{id}/{action}"), body).await
}

/// Whether any message of a model request mentions `text`.
fn mentions(request: &Value, text: &str) -> bool {
    request["messages"].to_string().contains(text)
}

/// The `seq` of the `nth` entry of `ty`.
fn seq_of(events: &[Value], ty: &str, nth: usize) -> i64 {
    events
        .iter()
        .filter(|e| e["type"] == ty)
        .nth(nth)
        .unwrap_or_else(|| panic!("no {ty} #{nth}"))["seq"]
        .as_i64()
        .unwrap()
}

#[actix_web::test]
async fn a_message_is_journaled_and_read_before_the_next_model_call() {
    let app = spawn_app().await;
    let api = app.api();
    let gate = Gate::new();
    app.llm
        .push(gate.hold(Reply::tool_call("c1", "list_files", json!({}))));
    app.llm.push(Reply::text("looked only at src"));
    let run = api
        .create_run(json!({"task": "look around", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    app.llm.wait_for_requests(1).await;

    // While the model call is out: journaled at once, the call goes on.
    let response = post(&api, id, "messages", json!({"text": "only look at src/"})).await;
    assert_eq!(response.status(), 200);
    let answered: Value = response.json().await.unwrap();
    assert_eq!(answered["status"], "running");
    let events = api.events(id).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "OPERATOR_MESSAGE");
    assert_eq!(
        last["payload"],
        json!({"text": "only look at src/", "by": "admin"})
    );
    assert_eq!(app.llm.requests().len(), 1);

    gate.open();
    api.wait_for_status(id, "completed").await;
    let requests = app.llm.requests();
    assert_eq!(requests.len(), 2);
    assert!(!mentions(&requests[0], "only look at src/"));
    // Next call: the tool's result, then the message as the user's.
    let messages = requests[1]["messages"].as_array().unwrap();
    let n = messages.len();
    assert_eq!(messages[n - 2]["role"], "tool");
    assert_eq!(messages[n - 1]["role"], "user");
    assert!(mentions(&requests[1], "only look at src/"));
    assert!(messages[n - 1].to_string().contains("admin"));

    assert_error(
        post(&api, id, "messages", json!({"text": "late"})).await,
        409,
        "already_finished",
    )
    .await;
    for bad in [
        json!({"text": ""}),
        json!({"text": "  "}),
        json!({"text": "x".repeat(8193)}),
        json!({"text": "x", "by": "me"}),
        json!({}),
    ] {
        assert_error(
            post(&api, id, "messages", bad).await,
            400,
            "invalid_request",
        )
        .await;
    }
    assert_error(
        post(
            &api,
            "00000000-0000-0000-0000-000000000000",
            "messages",
            json!({"text": "x"}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    let viewer = api.new_token("watcher", &["viewer"]).await;
    assert_error(
        post(
            &api.with_token(&viewer),
            id,
            "messages",
            json!({"text": "x"}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
}

#[actix_web::test]
async fn a_message_sent_to_another_instance_waits_for_the_decision() {
    let database_url = fresh_database().await;
    let app = spawn_app_on(&database_url, &[]).await;
    let other = spawn_app_on(&database_url, &[]).await;
    let api = app.api();
    app.llm.push(Reply::tool_call(
        "c1",
        "shell",
        json!({"command": "echo hi"}),
    ));
    app.llm.push(Reply::text("kept the logs"));
    let run = api
        .create_run(json!({"task": "clean up", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let pending = api.wait_for_approval(id).await;

    let response = post(
        &other.api(),
        id,
        "messages",
        json!({"text": "keep the logs"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let answered: Value = response.json().await.unwrap();
    assert_eq!(answered["status"], "waiting_approval");
    assert_eq!(answered["pending_approval"], pending);
    let types = api.event_types(id).await;
    assert_eq!(
        types[types.len() - 2..],
        ["RUN_SUSPENDED", "OPERATOR_MESSAGE"]
    );

    let approval_id = pending["approval_id"].as_str().unwrap();
    assert_eq!(
        api.resume(id, approval_id, "approved", None).await.status(),
        200
    );
    api.wait_for_status(id, "completed").await;
    let requests = app.llm.requests();
    assert_eq!(requests.len(), 2);
    let messages = requests[1]["messages"].as_array().unwrap();
    let n = messages.len();
    assert_eq!(messages[n - 2]["role"], "tool");
    assert!(messages[n - 1].to_string().contains("keep the logs"));
}

#[actix_web::test]
async fn pause_lets_the_call_in_flight_finish_starts_nothing_and_unpause_goes_on() {
    let app = spawn_app().await;
    let api = app.api();
    let gate = Gate::new();
    app.llm
        .push(gate.hold(Reply::tool_call("c1", "list_files", json!({}))));
    app.llm.push(Reply::text("listed"));
    let run = api
        .create_run(json!({"task": "look around", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    app.llm.wait_for_requests(1).await;

    let response = post(&api, id, "pause", json!({"reason": "checking something"})).await;
    assert_eq!(response.status(), 200);
    let paused: Value = response.json().await.unwrap();
    assert_eq!(paused["status"], "paused");
    let events = api.events(id).await;
    assert_eq!(
        events.last().unwrap()["payload"],
        json!({"reason": "checking something", "by": "admin"})
    );
    assert_error(post(&api, id, "pause", json!({})).await, 409, "conflict").await;

    // The answer in flight is journaled; its tool does not start, and the
    // run is given back (parked) once nothing is left in flight.
    gate.open();
    wait_until("the paused run to park", || async {
        let run = api.run(id).await;
        let types = api.event_types(id).await;
        (run["owner"].is_null() && types.contains(&"TOOL_CALLED".to_string())).then_some(())
    })
    .await;
    let types = api.event_types(id).await;
    assert!(!types.contains(&"TOOL_STARTED".to_string()), "{types:?}");
    assert_eq!(api.run(id).await["status"], "paused");
    assert_eq!(app.llm.requests().len(), 1);

    let viewer = api.new_token("watcher", &["viewer"]).await;
    assert_error(
        post(&api.with_token(&viewer), id, "unpause", json!({})).await,
        403,
        "forbidden",
    )
    .await;
    let response = api
        .client
        .post(format!("{}/api/runs/{id}/unpause", api.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    api.wait_for_status(id, "completed").await;
    let types = api.event_types(id).await;
    let unpaused = types.iter().position(|t| t == "RUN_UNPAUSED").unwrap();
    assert_eq!(types[unpaused + 1], "TOOL_STARTED");
    assert_eq!(app.llm.requests().len(), 2);
    assert_error(
        post(&api, id, "unpause", json!({})).await,
        409,
        "already_finished",
    )
    .await;
    assert_error(
        post(&api, id, "pause", json!({})).await,
        409,
        "already_finished",
    )
    .await;
}

#[actix_web::test]
async fn a_paused_run_stays_paused_through_kill_9_and_calls_again_when_unpaused() {
    let database_url = fresh_database().await;
    let llm = MockLlm::start().await;
    let workspace = tempfile::tempdir().unwrap();
    llm.push(Reply::Hang);
    llm.push(Reply::text("answered after the pause"));
    let server = Server::start(&database_url, &llm, &workspace).await;
    let run = server
        .api
        .create_run(json!({"task": "think", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    llm.wait_for_requests(1).await;
    let response = post(&server.api, &id, "pause", json!({})).await;
    assert_eq!(response.status(), 200);
    server.kill_9();

    // Restarted: the run is paused and the call that never came back is not
    // sent again (it would be request 2, answered by the text below).
    let server = Server::start(&database_url, &llm, &workspace).await;
    let after = server.api.run(&id).await;
    assert_eq!(after["status"], "paused");
    let response = post(&server.api, &id, "unpause", json!({})).await;
    assert_eq!(response.status(), 200);
    let done = server.api.wait_for_status(&id, "completed").await;
    assert_eq!(done["result"], "answered after the pause");
    assert_eq!(llm.requests().len(), 2);
    let events = server.api.events(&id).await;
    let attempts: Vec<i64> = events
        .iter()
        .filter(|e| e["type"] == "LLM_CALLED")
        .map(|e| e["payload"]["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2]);
    let unpaused = seq_of(&events, "RUN_UNPAUSED", 0);
    assert_eq!(seq_of(&events, "LLM_CALLED", 1), unpaused + 1);
}

/// Lines in the workspace's ledger: one per run of the shell command.
fn ledger_lines(workspace: &std::path::Path) -> usize {
    std::fs::read_to_string(workspace.join("ledger.txt"))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

#[actix_web::test]
async fn forks_copy_the_journal_and_redo_nothing_it_holds() {
    let app = spawn_app().await;
    let api = app.api();
    let ledger = || ledger_lines(app.workspace.path());
    // The source: an approved shell command that appends to the ledger, a
    // listing, an answer.
    app.llm.push(Reply::tool_call(
        "c1",
        "shell",
        json!({"command": "echo ran >> ledger.txt"}),
    ));
    app.llm
        .push(Reply::tool_call("c2", "list_files", json!({})));
    app.llm.push(Reply::text("source done"));
    let run = api
        .create_run(json!({"task": "write the ledger", "agent": "coding"}))
        .await;
    let source = run["id"].as_str().unwrap().to_string();
    let pending = api.wait_for_approval(&source).await;
    let source_approval = pending["approval_id"].as_str().unwrap().to_string();
    api.resume(&source, &source_approval, "approved", None)
        .await;
    api.wait_for_status(&source, "completed").await;
    let source_events = api.events(&source).await;
    assert_eq!(ledger(), 1);
    assert_eq!(app.llm.requests().len(), 3);

    let fork = |at_seq: i64, message: Option<&str>| {
        let api = &api;
        let source = source.clone();
        let message = message.map(str::to_string);
        async move {
            let mut body = json!({"at_seq": at_seq});
            if let Some(message) = message {
                body["message"] = json!(message);
            }
            let response = post(api, &source, "fork", body).await;
            assert_eq!(response.status(), 201);
            let fork: Value = response.json().await.unwrap();
            assert_eq!(
                fork["forked_from"],
                json!({"run_id": source, "seq": at_seq})
            );
            assert_eq!(fork["created_by"], "admin");
            fork["id"].as_str().unwrap().to_string()
        }
    };
    // The fork's first entries are the source's, as they were.
    let check_copies = |fork_events: &[Value], at_seq: i64| {
        for (copy, original) in fork_events.iter().zip(&source_events).take(at_seq as usize) {
            assert_eq!(copy, original);
        }
        let forked = &fork_events[at_seq as usize];
        assert_eq!(forked["type"], "RUN_FORKED");
        assert_eq!(forked["payload"]["from_run_id"], source.as_str());
        assert_eq!(forked["payload"]["from_seq"], at_seq);
        assert_eq!(forked["payload"]["by"], "admin");
    };

    // 1. At the command's result, with a message: the model is asked once,
    // is shown the result and the message, and the command does not run.
    let at = seq_of(&source_events, "TOOL_RESULT", 0);
    app.llm.push(Reply::text("fork one done"));
    let one = fork(at, Some("now summarise the ledger")).await;
    api.wait_for_status(&one, "completed").await;
    let events = api.events(&one).await;
    check_copies(&events, at);
    assert_eq!(events[at as usize + 1]["type"], "OPERATOR_MESSAGE");
    assert_eq!(events[at as usize + 2]["type"], "LLM_CALLED");
    let requests = app.llm.requests();
    assert_eq!(requests.len(), 4);
    assert!(mentions(&requests[3], "now summarise the ledger"));
    assert_eq!(ledger(), 1);
    print_beside("fork at a tool result", &source_events, &events);

    // 2. At the pending approval: asked again with an id of the fork's own;
    // the source's id is not waiting in the fork; rejected, nothing runs.
    let at = seq_of(&source_events, "RUN_SUSPENDED", 0);
    app.llm.push(Reply::text("fork two gave up"));
    let two = fork(at, None).await;
    let waiting = api.wait_for_approval(&two).await;
    assert_ne!(waiting["approval_id"], source_approval.as_str());
    assert_eq!(waiting["args_sha256"], pending["args_sha256"]);
    assert_error(
        api.resume(&two, &source_approval, "approved", None).await,
        409,
        "no_pending_approval",
    )
    .await;
    let response = api
        .resume(
            &two,
            waiting["approval_id"].as_str().unwrap(),
            "rejected",
            Some("not again"),
        )
        .await;
    assert_eq!(response.status(), 200);
    api.wait_for_status(&two, "completed").await;
    check_copies(&api.events(&two).await, at);
    assert_eq!(app.llm.requests().len(), 5);
    assert_eq!(ledger(), 1);

    // 3. At the model's answer that asked for the listing: the listing runs
    // in the fork, the answer is not asked for again.
    let at = seq_of(&source_events, "AGENT_THOUGHT", 1);
    app.llm.push(Reply::text("fork three done"));
    let three = fork(at, None).await;
    api.wait_for_status(&three, "completed").await;
    let events = api.events(&three).await;
    check_copies(&events, at);
    let after: Vec<&str> = events[at as usize..]
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        after,
        [
            "RUN_FORKED",
            "TOOL_CALLED",
            "TOOL_STARTED",
            "TOOL_RESULT",
            "LLM_CALLED",
            "AGENT_THOUGHT",
            "RUN_COMPLETED"
        ]
    );
    let requests = app.llm.requests();
    assert_eq!(requests.len(), 6);
    assert!(requests[5]["messages"].to_string().contains("ledger.txt"));
    assert_eq!(ledger(), 1);

    // The source lists its forks, oldest first.
    let detail = api.run(&source).await;
    let forks: Vec<(&str, i64)> = detail["forks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["run_id"].as_str().unwrap(), f["seq"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        forks,
        [
            (one.as_str(), seq_of(&source_events, "TOOL_RESULT", 0)),
            (two.as_str(), seq_of(&source_events, "RUN_SUSPENDED", 0)),
            (three.as_str(), seq_of(&source_events, "AGENT_THOUGHT", 1)),
        ]
    );

    // Refused: before the first entry, past the last, at the terminal one.
    let last = source_events.len() as i64;
    for at_seq in [0, -1, last + 1, last] {
        assert_error(
            post(&api, &source, "fork", json!({"at_seq": at_seq})).await,
            400,
            "invalid_request",
        )
        .await;
    }
    for bad in [json!({}), json!({"at_seq": "3"}), json!({"at_seq": 1.5})] {
        assert_error(
            post(&api, &source, "fork", bad).await,
            400,
            "invalid_request",
        )
        .await;
    }
}

/// Prints a fork's journal beside its source's (types and keys).
fn print_beside(title: &str, source: &[Value], fork: &[Value]) {
    println!("{title}:");
    println!("{:<44} fork", "source");
    let line = |e: Option<&Value>| {
        e.map(|e| {
            format!(
                "{:>2} {} {}",
                e["seq"],
                e["type"].as_str().unwrap(),
                e["key"].as_str().unwrap()
            )
        })
        .unwrap_or_default()
    };
    for i in 0..source.len().max(fork.len()) {
        println!("{:<44} {}", line(source.get(i)), line(fork.get(i)));
    }
}

#[actix_web::test]
async fn a_token_budget_waits_for_an_approver_who_raises_or_rejects_it() {
    let app = spawn_app().await;
    let api = app.api();
    // Each tool-calling answer reports 27 tokens.
    app.llm
        .push(Reply::tool_call("c1", "list_files", json!({})));
    app.llm
        .push(Reply::tool_call("c2", "list_files", json!({})));
    app.llm.push(Reply::text("within the new budget"));
    let run = api
        .create_run(json!({"task": "spend", "agent": "coding", "budget": {"max_tokens": 30}}))
        .await;
    assert_eq!(
        run["budget"],
        json!({"max_tokens": 30, "max_cost_usd": null, "used_tokens": 0, "used_cost_usd": 0.0})
    );
    let id = run["id"].as_str().unwrap();
    let pending = api.wait_for_approval(id).await;
    assert_eq!(pending["kind"], "budget");
    assert_eq!(pending["args"]["used_tokens"], 54);
    assert_eq!(pending["args"]["max_tokens"], 30);
    let events = api.events(id).await;
    let exceeded = events.last().unwrap();
    assert_eq!(exceeded["type"], "BUDGET_EXCEEDED");
    assert_eq!(exceeded["payload"]["approval_id"], pending["approval_id"]);
    assert_eq!(exceeded["payload"]["used_tokens"], 54);
    assert_eq!(exceeded["payload"]["max_tokens"], 30);
    assert!(exceeded["payload"]["max_cost_usd"].is_null());
    assert_eq!(app.llm.requests().len(), 2);
    let run = api.run(id).await;
    assert_eq!(run["budget"]["used_tokens"], 54);

    let approval_id = pending["approval_id"].as_str().unwrap();
    let raise = |extra: Value| {
        let mut body = json!({"approval_id": approval_id, "decision": "approved"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        post(&api, id, "resume", body)
    };
    // Nothing added, too little, or arguments: refused, nothing journaled.
    assert_error(raise(json!({})).await, 400, "invalid_request").await;
    assert_error(
        raise(json!({"add_tokens": 10})).await,
        400,
        "invalid_request",
    )
    .await;
    assert_error(
        raise(json!({"add_tokens": 100, "args": {"command": "x"}})).await,
        400,
        "invalid_request",
    )
    .await;
    assert_error(
        raise(json!({"add_tokens": 0})).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(api.events(id).await.len(), events.len());

    let response = raise(json!({"add_tokens": 100})).await;
    assert_eq!(response.status(), 200);
    let done = api.wait_for_status(id, "completed").await;
    assert_eq!(done["result"], "within the new budget");
    assert_eq!(done["budget"]["max_tokens"], 130);
    assert_eq!(done["budget"]["used_tokens"], 70);
    let events = api.events(id).await;
    let raised = events
        .iter()
        .find(|e| e["type"] == "BUDGET_RAISED")
        .unwrap();
    assert_eq!(
        raised["payload"],
        json!({"approval_id": approval_id, "max_tokens": 130, "max_cost_usd": null, "by": "admin"})
    );
    assert_eq!(app.llm.requests().len(), 3);

    // Rejected: the run fails with `budget_exceeded`.
    app.llm
        .push(Reply::tool_call("c3", "list_files", json!({})));
    let run = api
        .create_run(json!({"task": "spend less", "agent": "coding", "budget": {"max_tokens": 10}}))
        .await;
    let id = run["id"].as_str().unwrap();
    let pending = api.wait_for_approval(id).await;
    let response = api
        .resume(
            id,
            pending["approval_id"].as_str().unwrap(),
            "rejected",
            Some("too expensive"),
        )
        .await;
    assert_eq!(response.status(), 200);
    let failed = api.wait_for_status(id, "failed").await;
    assert_eq!(failed["error"]["code"], "budget_exceeded");
    let types = api.event_types(id).await;
    assert_eq!(
        types[types.len() - 3..],
        ["BUDGET_EXCEEDED", "RUN_RESUMED", "RUN_FAILED"]
    );
    assert_eq!(app.llm.requests().len(), 4);
}

#[actix_web::test]
async fn a_usd_budget_counts_the_prices_and_the_default_budget_applies() {
    // 1 USD per input token: a tool-calling answer (20 in) costs 20 USD,
    // a text answer (11 in) 11 USD.
    let app = spawn_app_with(&[
        (
            "AGENT_MODEL_PRICES",
            r#"{"mock-model": {"input_per_mtok": 1000000, "output_per_mtok": 0}}"#,
        ),
        ("AGENT_RUN_MAX_TOKENS", "1000000"),
    ])
    .await;
    let api = app.api();
    let run = api
        .create_run(json!({"task": "default budget", "agent": "coding"}))
        .await;
    assert_eq!(run["budget"]["max_tokens"], 1_000_000);
    api.wait_for_status(run["id"].as_str().unwrap(), "completed")
        .await;

    app.llm
        .push(Reply::tool_call("c1", "list_files", json!({})));
    app.llm
        .push(Reply::tool_call("c2", "list_files", json!({})));
    app.llm.push(Reply::text("paid for"));
    let run = api
        .create_run(json!({"task": "spend", "agent": "coding", "budget": {"max_cost_usd": 25}}))
        .await;
    assert!(run["budget"]["max_tokens"].is_null());
    let id = run["id"].as_str().unwrap();
    let pending = api.wait_for_approval(id).await;
    assert_eq!(pending["kind"], "budget");
    assert_eq!(pending["args"]["used_cost_usd"], 40.0);
    let response = post(
        &api,
        id,
        "resume",
        json!({"approval_id": pending["approval_id"], "decision": "approved", "add_cost_usd": 100}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let done = api.wait_for_status(id, "completed").await;
    assert_eq!(done["cost_usd"], 51.0);
    assert_eq!(done["budget"]["used_cost_usd"], 51.0);
    assert_eq!(done["budget"]["max_cost_usd"], 125.0);
    let events = api.events(id).await;
    let costs: Vec<f64> = events
        .iter()
        .filter(|e| e["type"] == "AGENT_THOUGHT")
        .map(|e| e["payload"]["cost_usd"].as_f64().unwrap())
        .collect();
    assert_eq!(costs, [20.0, 20.0, 11.0]);
    // The cost counter per agent and model (the first run cost 11 too).
    let metrics = api.get("/metrics").await.text().await.unwrap();
    let samples = crate::metrics::parse(&metrics);
    let cost = crate::metrics::value(
        &samples,
        "agentops_llm_cost_usd_total",
        &[("agent", "coding"), ("model", "mock-model")],
    );
    assert_eq!(cost, 62.0);
    // Rejected in USD: the run fails, and nothing more is spent.
    app.llm
        .push(Reply::tool_call("c3", "list_files", json!({})));
    let run = api
        .create_run(
            json!({"task": "spend again", "agent": "coding", "budget": {"max_cost_usd": 5}}),
        )
        .await;
    let id = run["id"].as_str().unwrap();
    let pending = api.wait_for_approval(id).await;
    assert_eq!(pending["args"]["used_cost_usd"], 20.0);
    assert_eq!(pending["args"]["max_cost_usd"], 5.0);
    let requests = app.llm.requests().len();
    let response = api
        .resume(
            id,
            pending["approval_id"].as_str().unwrap(),
            "rejected",
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    let failed = api.wait_for_status(id, "failed").await;
    assert_eq!(failed["error"]["code"], "budget_exceeded");
    assert_eq!(failed["cost_usd"], 20.0);
    assert_eq!(app.llm.requests().len(), requests);
    for bad in [
        json!({"max_tokens": 0}),
        json!({"max_tokens": 1.5}),
        json!({"max_cost_usd": 0}),
        json!({"max_cost_usd": -1}),
        json!({"max_usd": 1}),
    ] {
        assert_error(
            api.post_run(json!({"task": "t", "budget": bad})).await,
            400,
            "invalid_request",
        )
        .await;
    }
}

#[actix_web::test]
async fn search_filters_and_pages_among_ten_thousand_runs() {
    let app = spawn_app().await;
    let api = app.api();
    let (client, connection) = tokio_postgres::connect(&app.database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    actix_rt::spawn(connection);
    // 10,000 finished runs: every 1,000th mentions a needle, every 7th is
    // the log-analyzer's, every 3rd is bob's.
    client
        .execute(
            "INSERT INTO runs (id, status, agent, task, approval_timeout_secs, created_at,
                               updated_at, created_by)
             SELECT gen_random_uuid(), 'completed',
                    CASE WHEN n % 7 = 0 THEN 'log-analyzer' ELSE 'coding' END,
                    'task ' || n || CASE WHEN n % 1000 = 0 THEN ' find the NeeDle 100%' ELSE '' END,
                    60, now() - n * interval '1 second', now(),
                    CASE WHEN n % 3 = 0 THEN 'bob' ELSE 'admin' END
             FROM generate_series(1, 10000) AS n",
            &[],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO run_events (run_id, seq, type, agent, at, key, payload)
             SELECT id, 1, 'RUN_STARTED', agent, created_at, 'run-started',
                    jsonb_build_object('task', task, 'agent', agent,
                                       'approval_timeout_secs', 60, 'created_by', created_by)
             FROM runs",
            &[],
        )
        .await
        .unwrap();
    let list = |query: &str| {
        let api = &api;
        let query = query.to_string();
        async move {
            let started = Instant::now();
            let response = api.get(&format!("/api/runs?{query}")).await;
            assert_eq!(response.status(), 200, "{query}");
            let body: Value = response.json().await.unwrap();
            println!("GET /api/runs?{query}: {:?}", started.elapsed());
            body
        }
    };
    let tasks = |body: &Value| -> Vec<String> {
        body["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["task"].as_str().unwrap().to_string())
            .collect()
    };

    let found = list("q=needle").await;
    let found_tasks = tasks(&found);
    assert_eq!(found_tasks.len(), 10);
    assert!(found_tasks.iter().all(|t| t.contains("NeeDle")));
    // Newest first: n = 1000 was created last of them.
    assert_eq!(found_tasks[0], "task 1000 find the NeeDle 100%");
    // `%` and `_` are literal.
    assert_eq!(tasks(&list("q=100%25").await).len(), 10);
    assert_eq!(tasks(&list("q=task_1").await).len(), 0);
    // Filters combine: needles of the log-analyzer (n = 7000) by bob (n % 3
    // = 0: 3000, 6000, 9000): none; needles of bob: three.
    let bob = tasks(&list("q=needle&created_by=bob").await);
    assert_eq!(bob.len(), 3);
    assert_eq!(
        tasks(&list("q=needle&agent=log-analyzer").await),
        ["task 7000 find the NeeDle 100%"]
    );
    assert!(tasks(&list("q=needle&agent=log-analyzer&created_by=bob").await).is_empty());
    // Paging past the first page with the cursor.
    let mut seen = Vec::new();
    let mut query = "q=needle&limit=4".to_string();
    loop {
        let page = list(&query).await;
        seen.extend(tasks(&page));
        match page["next_before"].as_str() {
            Some(cursor) => query = format!("q=needle&limit=4&before={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, found_tasks);
    let analyzers = list("agent=log-analyzer&limit=200").await;
    assert_eq!(tasks(&analyzers).len(), 200);
    assert!(
        analyzers["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["agent"] == "log-analyzer")
    );
    assert_error(
        api.get("/api/runs?agent=robot").await,
        400,
        "invalid_request",
    )
    .await;
    assert_error(
        api.get(&format!("/api/runs?q={}", "x".repeat(201))).await,
        400,
        "invalid_request",
    )
    .await;
    // A blank search box filters nothing.
    assert_eq!(tasks(&list("q=&limit=5").await).len(), 5);
}
