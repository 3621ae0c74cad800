//! Access (contract section 9): every route needs a credential and a role,
//! tokens are shown once and revoked within a second, identities reach the
//! journal, approvals are bound to the arguments shown and may edit them,
//! four eyes, rate limits, the dashboard's session and its CSRF check, and
//! the request rules a browser could be tricked into breaking.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_TOKEN, Api, TestApp, assert_error, raw_http, spawn_app, spawn_app_on, spawn_app_with,
    wait_until, ws_request,
};
use crate::mock_llm::Reply;

/// Sends `method path` with `body` (JSON) through `api`'s client.
async fn call(api: &Api, method: &Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = api
        .client
        .request(method.clone(), format!("{}{path}", api.address));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("sending")
}

/// A run of the coding agent waiting for approval of `args` for `shell`;
/// the model answers `done` after the call.
async fn waiting_shell_run(app: &TestApp, api: &Api, args: Value) -> (String, Value) {
    app.llm.push(Reply::tool_call("call_1", "shell", args));
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let pending = api.wait_for_approval(&id).await;
    app.llm.push(Reply::text("done"));
    (id, pending)
}

#[actix_web::test]
async fn every_route_needs_a_credential_and_the_right_role() {
    let app = spawn_app().await;
    let admin = app.api();
    let tokens = [
        ("viewer", admin.new_token("v", &["viewer"]).await),
        ("operator", admin.new_token("o", &["operator"]).await),
        ("approver", admin.new_token("a", &["approver"]).await),
        ("admin", ADMIN_TOKEN.to_string()),
    ];
    let nobody = uuid::Uuid::new_v4();
    // Each route with a request that changes nothing when allowed (an
    // unknown run, an invalid body), and the roles that may call it.
    let routes: Vec<(Method, String, Option<Value>, &[&str])> = vec![
        (
            Method::GET,
            "/api/runs".into(),
            None,
            &["viewer", "operator", "approver", "admin"],
        ),
        (
            Method::GET,
            format!("/api/runs/{nobody}"),
            None,
            &["viewer", "operator", "approver", "admin"],
        ),
        (
            Method::GET,
            format!("/api/runs/{nobody}/events"),
            None,
            &["viewer", "operator", "approver", "admin"],
        ),
        (
            Method::GET,
            "/api/me".into(),
            None,
            &["viewer", "operator", "approver", "admin"],
        ),
        (
            Method::POST,
            "/api/runs".into(),
            Some(json!({})),
            &["operator", "admin"],
        ),
        (
            Method::POST,
            format!("/api/runs/{nobody}/cancel"),
            None,
            &["operator", "admin"],
        ),
        (
            Method::POST,
            format!("/api/runs/{nobody}/resume"),
            Some(json!({"approval_id": nobody.to_string(), "decision": "approved"})),
            &["approver", "admin"],
        ),
        // Any role may speak MCP; each tool then checks its own
        // (tests/api/mcp_server.rs).
        (
            Method::POST,
            "/mcp".into(),
            Some(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})),
            &["viewer", "operator", "approver", "admin"],
        ),
        (Method::GET, "/api/tokens".into(), None, &["admin"]),
        (
            Method::POST,
            "/api/tokens".into(),
            Some(json!({})),
            &["admin"],
        ),
        (
            Method::DELETE,
            "/api/tokens/nobody".into(),
            None,
            &["admin"],
        ),
    ];
    for (method, path, body, allowed) in &routes {
        let what = format!("{method} {path}");
        let anonymous = call(&admin.anonymous(), method, path, body.clone()).await;
        assert_eq!(anonymous.headers()["www-authenticate"], "Bearer", "{what}");
        assert_error(anonymous, 401, "unauthorized").await;
        let bogus = admin
            .with_token("ast_0000000000000000000000000000000000000000000000000000000000000000");
        assert_error(
            call(&bogus, method, path, body.clone()).await,
            401,
            "unauthorized",
        )
        .await;
        let malformed = admin
            .anonymous()
            .client
            .request(method.clone(), format!("{}{path}", admin.address))
            .header("Authorization", format!("Basic {ADMIN_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_error(malformed, 401, "unauthorized").await;
        for (role, token) in &tokens {
            let response = call(&admin.with_token(token), method, path, body.clone()).await;
            if allowed.contains(role) {
                assert!(
                    ![401, 403].contains(&response.status().as_u16()),
                    "{role} may {what}: {}",
                    response.status()
                );
            } else {
                assert_error(response, 403, "forbidden").await;
            }
        }
    }

    // The WebSocket upgrade too.
    let refused = tokio_tungstenite::connect_async(format!(
        "{}/api/ws",
        app.address.replace("http://", "ws://")
    ))
    .await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 401),
        "{refused:?}"
    );
    tokio_tungstenite::connect_async(ws_request(&app.address, &tokens[0].1))
        .await
        .expect("a viewer opens the WebSocket");

    // Open without a credential.
    for path in ["/healthz", "/readyz", "/metrics", "/"] {
        let response = admin.anonymous().get(path).await;
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[actix_web::test]
async fn tokens_are_shown_once_and_revocation_is_felt_everywhere_within_a_second() {
    let app = spawn_app().await;
    let admin = app.api();
    let response = admin
        .post(
            "/api/tokens",
            json!({"name": "ci-bot", "roles": ["viewer", "operator"]}),
        )
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["name"], "ci-bot");
    assert_eq!(created["roles"], json!(["viewer", "operator"]));
    let token = created["token"].as_str().unwrap().to_string();
    assert!(token.len() >= 64, "at least 32 random bytes: {token}");

    let ci = admin.with_token(&token);
    let me: Value = ci.get("/api/me").await.json().await.unwrap();
    assert_eq!(
        me,
        json!({"name": "ci-bot", "roles": ["viewer", "operator"]})
    );

    // A name is never given twice; names and roles are checked.
    let again = admin
        .post(
            "/api/tokens",
            json!({"name": "ci-bot", "roles": ["viewer"]}),
        )
        .await;
    assert_error(again, 409, "conflict").await;
    for body in [
        json!({"name": "CI", "roles": ["viewer"]}),
        json!({"name": "x".repeat(65), "roles": ["viewer"]}),
        json!({"name": "ok", "roles": ["root"]}),
        json!({"name": "ok", "roles": []}),
        json!({"name": "ok", "roles": ["viewer"], "token": "mine"}),
    ] {
        assert_error(
            admin.post("/api/tokens", body).await,
            400,
            "invalid_request",
        )
        .await;
    }

    // Listed without its value or hash; its last use is kept (in batches).
    let listed = wait_until("ci-bot's last use to be recorded", || async {
        let list: Value = admin.get("/api/tokens").await.json().await.unwrap();
        let ci = list["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "ci-bot")
            .cloned()
            .unwrap();
        (!ci["last_used_at"].is_null()).then_some(list)
    })
    .await;
    let text = listed.to_string();
    assert!(!text.contains(&token));
    assert!(!text.contains(&agent_server::auth::hex(
        &agent_server::auth::credential_hash(&token)
    )));
    let ci_entry = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci-bot")
        .unwrap();
    assert_eq!(ci_entry["created_by"], "admin");
    assert!(ci_entry["revoked_at"].is_null());
    let mut keys: Vec<&String> = ci_entry.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "created_at",
            "created_by",
            "last_used_at",
            "name",
            "revoked_at",
            "roles"
        ]
    );

    // A second instance on the same database knows the token too.
    let other = spawn_app_on(&app.database_url, &[]).await;
    let ci_there = other.api().with_token(&token);
    assert_eq!(ci_there.get("/api/runs").await.status(), 200);

    let revoked_at = Instant::now();
    assert_eq!(
        admin
            .client
            .delete(format!("{}/api/tokens/ci-bot", admin.address))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_error(ci.get("/api/runs").await, 401, "unauthorized").await;
    wait_until("the other instance to refuse the revoked token", || async {
        (ci_there.get("/api/runs").await.status() == 401).then_some(())
    })
    .await;
    assert!(
        revoked_at.elapsed() < Duration::from_secs(1),
        "refused everywhere after {:?}",
        revoked_at.elapsed()
    );
    let unknown = admin
        .client
        .delete(format!("{}/api/tokens/nobody", admin.address))
        .send()
        .await
        .unwrap();
    assert_error(unknown, 404, "not_found").await;
    let list: Value = admin.get("/api/tokens").await.json().await.unwrap();
    assert!(
        list["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "ci-bot" && !t["revoked_at"].is_null())
    );
}

#[actix_web::test]
async fn the_journal_says_who_did_what() {
    let app = spawn_app().await;
    let admin = app.api();
    let operator = admin.with_token(&admin.new_token("olga", &["operator"]).await);
    let approver = admin.with_token(&admin.new_token("arne", &["approver"]).await);
    let (id, pending) = waiting_shell_run(&app, &operator, json!({"command": "true"})).await;
    assert_eq!(operator.run(&id).await["created_by"], "olga");

    let response = approver
        .resume(
            &id,
            pending["approval_id"].as_str().unwrap(),
            "approved",
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    let events = operator.wait_for_events(&id, "RUN_RESUMED", 1).await;
    let started = &events[0];
    assert_eq!(started["payload"]["created_by"], "olga");
    let resumed = events.iter().find(|e| e["type"] == "RUN_RESUMED").unwrap();
    assert_eq!(resumed["payload"]["decided_by"], "arne");
    assert!(resumed["payload"]["edited_args"].is_null());
    operator.wait_for_status(&id, "completed").await;

    // Cancelled by the operator.
    let (id, _) = waiting_shell_run(&app, &operator, json!({"command": "true"})).await;
    assert_eq!(operator.cancel(&id).await.status(), 200);
    let events = operator.events(&id).await;
    assert_eq!(events.last().unwrap()["payload"]["by"], "olga");

    // Listing shows the creator of each run.
    let list: Value = admin.get("/api/runs").await.json().await.unwrap();
    assert!(
        list["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["created_by"] == "olga")
    );
}

#[actix_web::test]
async fn four_eyes_keep_a_creator_from_deciding_its_own_runs() {
    let app = spawn_app_with(&[("AGENT_REQUIRE_SECOND_APPROVER", "true")]).await;
    let admin = app.api();
    let both = admin.with_token(&admin.new_token("solo", &["operator", "approver"]).await);
    let other = admin.with_token(&admin.new_token("second", &["approver"]).await);
    let (id, pending) = waiting_shell_run(&app, &both, json!({"command": "true"})).await;
    let approval = pending["approval_id"].as_str().unwrap();

    let refused = both.resume(&id, approval, "approved", None).await;
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("four eyes"),
        "{body}"
    );
    assert_eq!(both.run(&id).await["status"], "waiting_approval");

    assert_eq!(
        other.resume(&id, approval, "approved", None).await.status(),
        200
    );
    both.wait_for_status(&id, "completed").await;
}

#[actix_web::test]
async fn a_decision_must_name_the_arguments_that_were_shown() {
    let app = spawn_app().await;
    let api = app.api();
    let args = json!({"command": "echo hi", "timeout_secs": 5});
    let (id, pending) = waiting_shell_run(&app, &api, args.clone()).await;
    let hash = agent_server::jcs::sha256_hex(&args);
    assert_eq!(pending["args_sha256"], hash);
    assert_eq!(pending["kind"], "tool");
    let events = api.events(&id).await;
    let suspended = events
        .iter()
        .find(|e| e["type"] == "RUN_SUSPENDED")
        .unwrap();
    assert_eq!(suspended["payload"]["args_sha256"], hash);
    let approval = pending["approval_id"].as_str().unwrap();

    let stale = agent_server::jcs::sha256_hex(&json!({"command": "echo hello"}));
    let before = api.events(&id).await.len();
    let mismatch = api
        .post(
            &format!("/api/runs/{id}/resume"),
            json!({"approval_id": approval, "decision": "approved", "args_sha256": stale}),
        )
        .await;
    assert_error(mismatch, 409, "conflict").await;
    let malformed = api
        .post(
            &format!("/api/runs/{id}/resume"),
            json!({"approval_id": approval, "decision": "approved", "args_sha256": "abc"}),
        )
        .await;
    assert_error(malformed, 400, "invalid_request").await;
    assert_eq!(api.events(&id).await.len(), before, "nothing journaled");
    assert_eq!(api.run(&id).await["status"], "waiting_approval");

    let matching = api
        .post(
            &format!("/api/runs/{id}/resume"),
            json!({"approval_id": approval, "decision": "approved", "args_sha256": hash}),
        )
        .await;
    assert_eq!(matching.status(), 200);
    api.wait_for_status(&id, "completed").await;
}

#[actix_web::test]
async fn edited_arguments_reach_the_tool_and_the_model_is_told() {
    let app = spawn_app().await;
    let api = app.api();
    let (id, pending) =
        waiting_shell_run(&app, &api, json!({"command": "echo model > edited.txt"})).await;
    let approval = pending["approval_id"].as_str().unwrap();
    let path = format!("/api/runs/{id}/resume");
    let resume = |body: Value| api.post(&path, body);

    // Arguments that do not fit the tool's schema, or go with a rejection.
    for body in [
        json!({"approval_id": approval, "decision": "approved", "args": {"command": 5}}),
        json!({"approval_id": approval, "decision": "approved", "args": {"command": "ls", "as_root": true}}),
        json!({"approval_id": approval, "decision": "approved", "args": "ls"}),
        json!({"approval_id": approval, "decision": "rejected", "args": {"command": "ls"}}),
    ] {
        assert_error(resume(body.clone()).await, 400, "invalid_request").await;
    }
    assert_eq!(api.run(&id).await["status"], "waiting_approval");

    let edited = json!({"command": "echo human > edited.txt && echo wrote it"});
    let response = resume(json!({
        "approval_id": approval,
        "decision": "approved",
        "args_sha256": pending["args_sha256"],
        "args": edited,
    }))
    .await;
    assert_eq!(response.status(), 200);
    api.wait_for_status(&id, "completed").await;

    assert_eq!(
        std::fs::read_to_string(app.workspace.path().join("edited.txt")).unwrap(),
        "human\n"
    );
    let events = api.events(&id).await;
    let resumed = events.iter().find(|e| e["type"] == "RUN_RESUMED").unwrap();
    assert_eq!(resumed["payload"]["edited_args"], edited);
    let result = events.iter().find(|e| e["type"] == "TOOL_RESULT").unwrap();
    let output = result["payload"]["output"].as_str().unwrap();
    assert!(
        output.contains("a human approver changed the arguments"),
        "{output}"
    );
    assert!(output.contains("echo human > edited.txt"), "{output}");
    assert!(output.contains("wrote it"), "{output}");
    // The model reads the same words in its next request.
    let last_request = app.llm.requests().last().unwrap().clone();
    let tool_message = last_request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap()
        .to_string();
    assert!(
        tool_message.contains("did NOT run with the arguments you gave"),
        "{tool_message}"
    );
}

#[actix_web::test]
async fn rate_limits_answer_429_and_create_nothing() {
    let app = spawn_app_with(&[
        ("AGENT_RATE_LIMIT_RUNS_PER_MIN", "3"),
        ("AGENT_MAX_OPEN_RUNS_PER_TOKEN", "1000"),
    ])
    .await;
    let admin = app.api();
    let busy = admin.with_token(&admin.new_token("busy", &["operator"]).await);
    for _ in 0..12 {
        app.llm.push(Reply::text("done"));
    }
    for i in 0..3 {
        let run = busy
            .create_run(json!({"task": format!("t{i}"), "idempotency_key": format!("k{i}")}))
            .await;
        assert_eq!(run["created_by"], "busy");
    }
    let limited = busy.post_run(json!({"task": "one too many"})).await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_error(limited, 429, "rate_limited").await;
    // A repeated idempotency key is not a new run and is answered.
    let repeated = busy
        .post_run(json!({"task": "t0", "idempotency_key": "k0"}))
        .await;
    assert_eq!(repeated.status(), 200);
    // Other tokens have their own budget.
    assert_eq!(
        admin.post_run(json!({"task": "admin's"})).await.status(),
        201
    );
    let list: Value = admin.get("/api/runs").await.json().await.unwrap();
    assert_eq!(
        list["runs"].as_array().unwrap().len(),
        4,
        "nothing created past the limit"
    );

    // Open runs.
    let app = spawn_app_with(&[("AGENT_MAX_OPEN_RUNS_PER_TOKEN", "2")]).await;
    let api = app.api();
    let mut open = Vec::new();
    for i in 0..2 {
        app.llm.push(Reply::tool_call(
            &format!("call_{i}"),
            "shell",
            json!({"command": "true"}),
        ));
        let run = api
            .create_run(json!({"task": "t", "agent": "coding"}))
            .await;
        let id = run["id"].as_str().unwrap().to_string();
        api.wait_for_approval(&id).await;
        open.push(id);
    }
    let first = &open[0];
    let limited = api.post_run(json!({"task": "third"})).await;
    assert!(limited.headers().contains_key("retry-after"));
    assert_error(limited, 429, "rate_limited").await;
    assert_eq!(api.cancel(first).await.status(), 200);
    assert_eq!(api.post_run(json!({"task": "third"})).await.status(), 201);
}

/// The session cookie of a `Set-Cookie` answer, and the header itself.
fn session_cookie(response: &reqwest::Response) -> (String, String) {
    let header = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    let value = header
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("agent_server_session=")
        .expect("the session cookie")
        .to_string();
    (value, header)
}

#[actix_web::test]
async fn the_dashboard_session_is_a_cookie_that_only_the_page_can_use() {
    let app = spawn_app().await;
    let admin = app.api();
    let token = admin.new_token("webby", &["operator"]).await;
    let browser = admin.anonymous();
    let sign_in = |token: &str| {
        browser
            .client
            .post(format!("{}/api/session", browser.address))
            .json(&json!({"token": token}))
            .send()
    };
    assert_error(sign_in("ast_nope").await.unwrap(), 401, "unauthorized").await;

    let response = sign_in(&token).await.unwrap();
    assert_eq!(response.status(), 204);
    let (cookie, header) = session_cookie(&response);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(header.contains(attribute), "{header}");
    }
    assert!(!cookie.contains(&token), "the cookie is not the token");
    let with_cookie = |method: Method, path: &str| {
        browser
            .client
            .request(method, format!("{}{path}", browser.address))
            .header("Cookie", format!("agent_server_session={cookie}"))
    };

    let me: Value = with_cookie(Method::GET, "/api/me")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "webby");

    // A change with the cookie must come from the page's own origin.
    let task = json!({"task": "from the page"});
    let no_origin = with_cookie(Method::POST, "/api/runs")
        .json(&task)
        .send()
        .await
        .unwrap();
    assert_error(no_origin, 403, "forbidden").await;
    let cross_site = with_cookie(Method::POST, "/api/runs")
        .header("Origin", "http://evil.example")
        .json(&task)
        .send()
        .await
        .unwrap();
    assert_error(cross_site, 403, "forbidden").await;
    let list: Value = admin.get("/api/runs").await.json().await.unwrap();
    assert!(list["runs"].as_array().unwrap().is_empty());
    app.llm.push(Reply::text("done"));
    let same_origin = with_cookie(Method::POST, "/api/runs")
        .header("Origin", &app.address)
        .json(&task)
        .send()
        .await
        .unwrap();
    assert_eq!(same_origin.status(), 201);

    // The WebSocket takes the cookie.
    let mut request = ws_request(&app.address, "unused");
    request.headers_mut().remove("Authorization");
    request.headers_mut().insert(
        "Cookie",
        format!("agent_server_session={cookie}").parse().unwrap(),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .expect("the WebSocket opens with the cookie");

    // Signing out ends the session and clears the cookie.
    let out = with_cookie(Method::DELETE, "/api/session")
        .header("Origin", &app.address)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let (cleared, header) = session_cookie(&out);
    assert!(
        cleared.is_empty() && header.contains("Max-Age=0"),
        "{header}"
    );
    let after = with_cookie(Method::GET, "/api/me").send().await.unwrap();
    assert_error(after, 401, "unauthorized").await;

    // Revoking the token ends its sessions.
    let (cookie, _) = session_cookie(&sign_in(&token).await.unwrap());
    let me = browser
        .client
        .get(format!("{}/api/me", browser.address))
        .header("Cookie", format!("agent_server_session={cookie}"));
    assert_eq!(me.try_clone().unwrap().send().await.unwrap().status(), 200);
    admin
        .client
        .delete(format!("{}/api/tokens/webby", admin.address))
        .send()
        .await
        .unwrap();
    assert_error(me.send().await.unwrap(), 401, "unauthorized").await;
}

#[actix_web::test]
async fn a_body_must_be_declared_json() {
    let app = spawn_app().await;
    let api = app.api();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = api
            .client
            .post(format!("{}/api/runs", api.address))
            .body(r#"{"task": "smuggled"}"#);
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_error(response, 415, "unsupported_media_type").await;
    }
    let list: Value = api.get("/api/runs").await.json().await.unwrap();
    assert!(
        list["runs"].as_array().unwrap().is_empty(),
        "nothing created"
    );
    // A JSON type with parameters is JSON.
    app.llm.push(Reply::text("done"));
    let response = api
        .client
        .post(format!("{}/api/runs", api.address))
        .header("Content-Type", "application/json; charset=utf-8")
        .body(r#"{"task": "declared"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

/// A raw request with its own `Host`.
fn request_for_host(path: &str, host: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

#[actix_web::test]
async fn only_allowed_host_names_are_answered() {
    let app = spawn_app_with(&[("AGENT_SERVER_ALLOWED_HOSTS", "agents.example.com")]).await;
    let rebound = raw_http(&app.address, &request_for_host("/api/runs", "evil.example")).await;
    assert_eq!(rebound.status, 421);
    assert_eq!(rebound.error_code(), "misdirected_request");
    let own = raw_http(
        &app.address,
        &request_for_host("/api/runs", "agents.example.com"),
    )
    .await;
    assert_eq!(own.status, 200);
    let probe = raw_http(&app.address, &request_for_host("/healthz", "10.0.0.7:3200")).await;
    assert_eq!(probe.status, 200, "probes are exempt");

    // Without access checks, only the loopback names are answered, and
    // everyone is `anonymous` with every role.
    let open = spawn_app_with(&[("AGENT_SERVER_AUTH", "none")]).await;
    let port = open.address.rsplit(':').next().unwrap();
    let rebound = raw_http(
        &open.address,
        &request_for_host("/api/runs", &format!("evil.example:{port}")),
    )
    .await;
    assert_eq!(rebound.status, 421);
    let local = raw_http(
        &open.address,
        &request_for_host("/api/me", &format!("localhost:{port}")),
    )
    .await;
    assert_eq!(local.status, 200);
    let me: Value = serde_json::from_str(&local.body).unwrap();
    assert_eq!(me["name"], "anonymous");
    open.llm.push(Reply::text("done"));
    let run = open
        .api()
        .anonymous()
        .create_run(json!({"task": "t"}))
        .await;
    assert_eq!(run["created_by"], "anonymous");
}

#[actix_web::test]
async fn head_works_wherever_get_does() {
    let app = spawn_app().await;
    let api = app.api();
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/",
        "/api/runs",
        "/api/me",
    ] {
        let response = api
            .client
            .head(format!("{}{path}", api.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "HEAD {path}");
        assert!(
            response.bytes().await.unwrap().is_empty(),
            "HEAD {path} has no body"
        );
    }
    let response = api
        .client
        .request(Method::PUT, format!("{}/api/runs", api.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET, HEAD, POST");
    assert_error(response, 405, "method_not_allowed").await;
}

#[actix_web::test]
async fn a_body_that_stops_arriving_is_cut_after_10_seconds() {
    let app = spawn_app().await;
    let request = format!(
        "POST /api/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"task\": "
    );
    let started = Instant::now();
    let response = raw_http(&app.address, request.as_bytes()).await;
    assert_eq!(response.status, 408);
    assert_eq!(response.error_code(), "request_timeout");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    let list: Value = app.api().get("/api/runs").await.json().await.unwrap();
    assert!(list["runs"].as_array().unwrap().is_empty());
}

#[actix_web::test]
async fn the_http_parsers_own_errors_have_the_json_body() {
    let app = spawn_app().await;
    for request in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
    ] {
        let response = raw_http(&app.address, request).await;
        assert_eq!(response.status, 400, "{request:?}");
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.error_code(), "invalid_request");
    }
    // A request head that never ends.
    let response = raw_http(&app.address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    assert_eq!(response.status, 408);
    assert_eq!(response.error_code(), "request_timeout");
    // The server answers the next client as before.
    assert_eq!(app.api().get("/healthz").await.status(), 200);
}

#[actix_web::test]
async fn a_revoked_token_closes_its_live_connections() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let app = spawn_app().await;
    let admin = app.api();
    let token = admin.new_token("watcher", &["viewer"]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(&app.address, &token))
        .await
        .unwrap();
    let revoked_at = Instant::now();
    let response = admin
        .client
        .delete(format!("{}/api/tokens/watcher", admin.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let close = loop {
        match tokio::time::timeout(crate::helpers::WAIT_LIMIT, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 4001, "{close:?}");
    assert!(
        revoked_at.elapsed() < Duration::from_secs(3),
        "{:?}",
        revoked_at.elapsed()
    );
}
