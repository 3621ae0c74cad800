//! agent-server as an MCP server (contract section 12): the official SDK's
//! client over Streamable HTTP drives runs through `POST /mcp` as a person
//! would through the API (roles, approvals bound to the arguments shown,
//! identities in the journal), and the transport answers raw requests as
//! the specification asks.

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{ClientInitializeError, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Api, assert_error, spawn_app, wait_until};
use crate::mock_llm::{Gate, Reply};

type Client = RunningService<RoleClient, ()>;

/// An MCP session with the server at `address`, sending `token` if any.
async fn connect(address: &str, token: Option<&str>) -> Result<Client, ClientInitializeError> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(format!("{address}/mcp"));
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    ().serve(transport).await
}

/// Calls `tool` with `arguments` and returns the whole result.
async fn call(client: &Client, tool: &'static str, arguments: Value) -> CallToolResult {
    let Value::Object(arguments) = arguments else {
        panic!("arguments are an object");
    };
    client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(arguments))
        .await
        .unwrap_or_else(|e| panic!("calling {tool}: {e}"))
}

/// Calls `tool`, asserts it succeeded, and returns its structured answer
/// after checking that the text block holds the same JSON.
async fn answer(client: &Client, tool: &'static str, arguments: Value) -> Value {
    let result = call(client, tool, arguments).await;
    assert_ne!(result.is_error, Some(true), "{tool}: {result:?}");
    let structured = result
        .structured_content
        .clone()
        .expect("structured content");
    assert_eq!(text_json(&result), structured, "{tool}");
    structured
}

/// Calls `tool`, asserts it failed as a tool result, and returns the API
/// error code its text carries.
async fn refusal(client: &Client, tool: &'static str, arguments: Value) -> String {
    let result = call(client, tool, arguments).await;
    assert_eq!(result.is_error, Some(true), "{tool}: {result:?}");
    let body = text_json(&result);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body["error"]["code"].as_str().unwrap().to_string()
}

/// The JSON in the result's one text block.
fn text_json(result: &CallToolResult) -> Value {
    assert_eq!(result.content.len(), 1, "{result:?}");
    let text = &result.content[0].as_text().expect("a text block").text;
    serde_json::from_str(text).expect("JSON text")
}

/// Sends one JSON-RPC message to `/mcp` as admin, as a client would.
async fn post(api: &Api, body: Value) -> reqwest::Response {
    api.client
        .post(format!("{}/mcp", api.address))
        .header(ACCEPT, "application/json, text/event-stream")
        .json(&body)
        .send()
        .await
        .expect("POST /mcp")
}

/// The `by`-like field of the first journal entry of `ty`.
fn author(events: &[Value], ty: &str, field: &str) -> Value {
    events
        .iter()
        .find(|e| e["type"] == ty)
        .unwrap_or_else(|| panic!("no {ty}"))["payload"][field]
        .clone()
}

#[actix_web::test]
async fn an_mcp_client_drives_a_run_through_its_approval() {
    // Arrange
    let app = spawn_app().await;
    let api = app.api();
    let args = json!({"command": "echo from-mcp"});
    app.llm
        .push(Reply::tool_call("call_1", "shell", args.clone()));
    app.llm.push(Reply::text("done"));
    let client = connect(&app.address, Some(ADMIN_TOKEN)).await.unwrap();

    // Act and assert: the handshake and the catalogue.
    let server = client.peer_info().expect("the server's handshake answer");
    assert_eq!(server.server_info.as_ref().unwrap().name, "agent-server");
    assert!(server.capabilities.tools.is_some());
    assert!(server.instructions.as_ref().is_some_and(|i| !i.is_empty()));
    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "cancel_run",
            "create_run",
            "decide_approval",
            "get_run",
            "list_pending_approvals",
            "list_runs",
            "send_message"
        ]
    );
    let read_only = |name: &str| {
        tools
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()
            .read_only_hint
    };
    assert_eq!(read_only("get_run"), Some(true));
    assert_eq!(read_only("decide_approval"), Some(false));

    // A run that waits for approval of a shell command.
    let run = answer(
        &client,
        "create_run",
        json!({"task": "echo something", "agent": "coding"}),
    )
    .await;
    let id = run["id"].as_str().unwrap().to_string();
    assert_eq!(run["created_by"], "admin");
    let waiting = wait_until("the run to wait for approval", || async {
        let run = answer(&client, "get_run", json!({"run_id": id})).await;
        (run["status"] == "waiting_approval").then_some(run)
    })
    .await;
    let listed = answer(&client, "list_runs", json!({"limit": 10})).await;
    assert_eq!(listed["runs"][0]["id"], id.as_str());
    assert!(listed.get("next_before").is_some());
    let pending = answer(&client, "list_pending_approvals", json!({})).await;
    assert_eq!(pending["runs"].as_array().unwrap().len(), 1);
    let approval = &pending["runs"][0]["pending_approval"];
    assert_eq!(approval, &waiting["pending_approval"]);
    assert_eq!(approval["tool"], "shell");
    let hash = agent_server::jcs::sha256_hex(&args);
    assert_eq!(approval["args_sha256"], hash);
    let approval_id = approval["approval_id"].as_str().unwrap();

    // A decision naming other arguments is refused, as by the API.
    let stale = agent_server::jcs::sha256_hex(&json!({"command": "rm -rf /"}));
    let decision = json!({"run_id": id, "approval_id": approval_id, "decision": "approved"});
    let mut mismatch = decision.clone();
    mismatch["args_sha256"] = json!(stale);
    assert_eq!(
        refusal(&client, "decide_approval", mismatch).await,
        "conflict"
    );
    let mut matching = decision.clone();
    matching["args_sha256"] = json!(hash);
    let decided = answer(&client, "decide_approval", matching).await;
    assert_eq!(
        decided,
        json!({"run_id": id, "approval_id": approval_id, "decision": "approved"})
    );
    assert_eq!(
        refusal(&client, "decide_approval", decision).await,
        "already_decided"
    );
    let done = api.wait_for_status(&id, "completed").await;
    assert_eq!(done["result"], "done");
    let events = api.events(&id).await;
    assert_eq!(author(&events, "RUN_STARTED", "created_by"), "admin");
    assert_eq!(author(&events, "RUN_RESUMED", "decided_by"), "admin");
    assert_eq!(
        answer(&client, "list_pending_approvals", json!({})).await["runs"],
        json!([])
    );

    // Another run, steered while its model call is out, then cancelled.
    let gate = Gate::new();
    app.llm.push(gate.hold(Reply::text("too late")));
    let second = answer(&client, "create_run", json!({"task": "think slowly"})).await;
    let second_id = second["id"].as_str().unwrap().to_string();
    app.llm.wait_for_requests(3).await;
    let steered = answer(
        &client,
        "send_message",
        json!({"run_id": second_id, "text": "only the summary, please"}),
    )
    .await;
    assert_eq!(steered["id"], second_id.as_str());
    assert_eq!(steered["status"], "running");
    let cancelled = answer(
        &client,
        "cancel_run",
        json!({"run_id": second_id, "reason": "changed my mind"}),
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled");
    let events = api.events(&second_id).await;
    assert_eq!(author(&events, "OPERATOR_MESSAGE", "by"), "admin");
    assert_eq!(author(&events, "RUN_CANCELLED", "by"), "admin");
    assert_eq!(
        author(&events, "RUN_CANCELLED", "reason"),
        "changed my mind"
    );

    // What the API refuses, the tools refuse with the same codes.
    assert_eq!(
        refusal(&client, "cancel_run", json!({"run_id": second_id})).await,
        "already_finished"
    );
    assert_eq!(
        refusal(&client, "get_run", json!({"run_id": "not-a-run"})).await,
        "not_found"
    );
    assert_eq!(
        refusal(&client, "create_run", json!({"task": "   "})).await,
        "invalid_request"
    );
    assert_eq!(
        refusal(&client, "create_run", json!({"task": "t", "colour": "red"})).await,
        "invalid_request"
    );
    assert_eq!(
        refusal(
            &client,
            "list_pending_approvals",
            json!({"status": "failed"})
        )
        .await,
        "invalid_request"
    );
    assert_eq!(
        refusal(&client, "send_message", json!({"text": "no run named"})).await,
        "invalid_request"
    );
    gate.open();
    client.cancel().await.unwrap();
}

#[actix_web::test]
async fn each_tool_needs_the_role_of_its_http_twin() {
    let app = spawn_app().await;
    let api = app.api();
    let viewer = api.new_token("watcher", &["viewer"]).await;
    let approver = api.new_token("checker", &["approver"]).await;
    let as_viewer = connect(&app.address, Some(&viewer)).await.unwrap();
    let as_approver = connect(&app.address, Some(&approver)).await.unwrap();

    assert_eq!(
        refusal(&as_viewer, "create_run", json!({"task": "t"})).await,
        "forbidden"
    );
    let nobody = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        refusal(&as_viewer, "cancel_run", json!({"run_id": nobody})).await,
        "forbidden"
    );
    assert_eq!(
        refusal(
            &as_viewer,
            "decide_approval",
            json!({"run_id": nobody, "approval_id": nobody, "decision": "approved"})
        )
        .await,
        "forbidden"
    );
    assert_eq!(
        refusal(
            &as_approver,
            "send_message",
            json!({"run_id": nobody, "text": "hi"})
        )
        .await,
        "forbidden"
    );
    // The approver may decide: an unknown run is then the answer.
    assert_eq!(
        refusal(
            &as_approver,
            "decide_approval",
            json!({"run_id": nobody, "approval_id": nobody, "decision": "approved"})
        )
        .await,
        "not_found"
    );
    assert_eq!(
        answer(&as_viewer, "list_runs", json!({})).await,
        json!({"runs": [], "next_before": null})
    );
    assert!(
        api.get("/api/runs").await.json::<Value>().await.unwrap()["runs"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    as_viewer.cancel().await.unwrap();
    as_approver.cancel().await.unwrap();
}

#[actix_web::test]
async fn without_a_credential_the_handshake_gets_401() {
    let app = spawn_app().await;
    let api = app.api();

    let Err(refused) = connect(&app.address, None).await else {
        panic!("no session without a token");
    };
    let unknown = connect(&app.address, Some("ast_not-a-token")).await;

    assert!(
        format!("{refused:?}").contains("AuthRequired"),
        "{refused:?}"
    );
    assert!(unknown.is_err());
    let raw = api
        .anonymous()
        .client
        .post(format!("{}/mcp", app.address))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["www-authenticate"], "Bearer");
    assert_error(raw, 401, "unauthorized").await;
}

#[actix_web::test]
async fn the_transport_answers_as_streamable_http_says() {
    let app = spawn_app().await;
    let api = app.api();

    // No stream from the server, no session to end.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = api
            .client
            .request(method.clone(), format!("{}/mcp", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["allow"], "POST", "{method}");
        assert_error(response, 405, "method_not_allowed").await;
    }

    // The handshake: the client's revision, our name, tools only.
    let response = post(
        &api,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("mcp-session-id").is_none());
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], 1);
    assert_eq!(body["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(body["result"]["serverInfo"]["name"], "agent-server");
    assert_eq!(
        body["result"]["serverInfo"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        body["result"]["capabilities"],
        json!({"tools": {"listChanged": false}})
    );

    // A notification is accepted without a body.
    let response = post(
        &api,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(response.status(), 202);
    assert!(response.bytes().await.unwrap().is_empty());

    // Methods and parameters, answered as JSON-RPC errors.
    let error_code = |body: Value| body["error"]["code"].as_i64().unwrap();
    let unknown = post(
        &api,
        json!({"jsonrpc": "2.0", "id": "u", "method": "resources/list"}),
    )
    .await;
    assert_eq!(unknown.status(), 200);
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(unknown["id"], "u");
    assert_eq!(error_code(unknown), -32601);
    for params in [json!({"name": 5}), json!({"name": "no_such_tool"})] {
        let misfit = post(
            &api,
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}),
        )
        .await;
        assert_eq!(error_code(misfit.json().await.unwrap()), -32602, "{params}");
    }
    let pong: Value = post(&api, json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(pong, json!({"jsonrpc": "2.0", "id": 3, "result": {}}));

    // What is not one message of a revision spoken here is an HTTP error.
    let batch = post(&api, json!([{"jsonrpc": "2.0", "id": 4, "method": "ping"}])).await;
    assert_error(batch, 400, "invalid_request").await;
    let future = api
        .client
        .post(format!("{}/mcp", app.address))
        .header("MCP-Protocol-Version", "2099-01-01")
        .json(&json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_error(future, 400, "invalid_request").await;
    let html_only = api
        .client
        .post(format!("{}/mcp", app.address))
        .header(ACCEPT, "text/html")
        .json(&json!({"jsonrpc": "2.0", "id": 6, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_error(html_only, 406, "not_acceptable").await;
    let known = api
        .client
        .post(format!("{}/mcp", app.address))
        .header("MCP-Protocol-Version", "2025-11-25")
        .json(&json!({"jsonrpc": "2.0", "id": 7, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(known.status(), 200);
}
