//! The WebSocket protocol (contract section 5): replay then live with no gap
//! and no duplicate under concurrent commits, `after`, run summaries, deltas,
//! malformed frames, the origin check, and the slow-client bound.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{TestApp, WAIT_LIMIT, spawn_app, spawn_app_with};
use crate::mock_llm::Reply;

struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    async fn connect(app: &TestApp) -> Ws {
        let request = crate::helpers::ws_request(&app.address, crate::helpers::ADMIN_TOKEN);
        let (stream, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("connecting");
        Ws { stream }
    }

    async fn send(&mut self, value: Value) {
        self.send_raw(&value.to_string()).await;
    }

    async fn send_raw(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("sending");
    }

    /// The next JSON frame (protocol pings are skipped).
    async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT_LIMIT, self.stream.next())
                .await
                .expect("a frame in time")
                .expect("the connection is open")
                .expect("a valid frame");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Event frames for `run_id` until a terminal entry; other frames skipped.
    async fn events_until_end(&mut self, run_id: &str) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let frame = self.next().await;
            if frame["type"] == "event" && frame["run_id"] == run_id {
                let event = frame["event"].clone();
                let end = matches!(
                    event["type"].as_str(),
                    Some("RUN_COMPLETED" | "RUN_FAILED" | "RUN_CANCELLED")
                );
                events.push(event);
                if end {
                    return events;
                }
            }
        }
    }
}

fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

#[actix_web::test]
async fn replay_then_live_has_no_gap_and_no_duplicate_under_concurrent_commits() {
    let app = spawn_app().await;
    let api = app.api();
    for i in 0..25 {
        app.llm.push(Reply::tool_call(
            &format!("call_{i}"),
            "list_files",
            json!({}),
        ));
    }
    app.llm.push(Reply::text("done"));
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();

    // Clients subscribe while the run commits, each at a different moment.
    let mut clients = Vec::new();
    for _ in 0..6 {
        let mut ws = Ws::connect(&app).await;
        ws.send(json!({"op": "subscribe", "run_id": id, "after": 0}))
            .await;
        let subscribed = ws.next().await;
        assert_eq!(subscribed, json!({"type": "subscribed", "run_id": id}));
        clients.push(ws);
        tokio::task::yield_now().await;
    }
    let journal = {
        api.wait_for_status(&id, "completed").await;
        api.events(&id).await
    };
    let expected: Vec<i64> = (1..=journal.len() as i64).collect();
    for mut ws in clients {
        let events = ws.events_until_end(&id).await;
        assert_eq!(seqs(&events), expected);
        assert_eq!(events, journal, "the same entries as the journal");
    }
}

#[actix_web::test]
async fn after_skips_what_the_client_has_and_live_events_follow() {
    let app = spawn_app().await;
    let api = app.api();
    app.llm
        .push(Reply::tool_call("c1", "shell", json!({"command": "true"})));
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let pending = api.wait_for_approval(&id).await;
    let last = api.run(&id).await["last_seq"].as_i64().unwrap();

    let mut ws = Ws::connect(&app).await;
    ws.send(json!({"op": "subscribe", "run_id": id, "after": 3}))
        .await;
    assert_eq!(ws.next().await["type"], "subscribed");
    let mut replayed = Vec::new();
    for _ in 3..last {
        replayed.push(ws.next().await["event"].clone());
    }
    assert_eq!(seqs(&replayed), (4..=last).collect::<Vec<_>>());

    // After everything: nothing replayed, only what comes next.
    let mut late = Ws::connect(&app).await;
    late.send(json!({"op": "subscribe", "run_id": id, "after": last}))
        .await;
    assert_eq!(late.next().await["type"], "subscribed");

    api.resume(
        &id,
        pending["approval_id"].as_str().unwrap(),
        "approved",
        None,
    )
    .await;
    let live = ws.events_until_end(&id).await;
    assert_eq!(live[0]["seq"], last + 1);
    assert_eq!(live[0]["type"], "RUN_RESUMED");
    let late_events = late.events_until_end(&id).await;
    assert_eq!(late_events, live);
}

#[actix_web::test]
async fn run_summaries_follow_every_change() {
    let app = spawn_app().await;
    let api = app.api();
    app.llm.push(Reply::tool_call(
        "c1",
        "write_file",
        json!({"path": "a", "content": "b"}),
    ));
    let mut ws = Ws::connect(&app).await;
    ws.send(json!({"op": "subscribe_runs"})).await;
    ws.send(json!({"op": "ping"})).await;
    assert_eq!(ws.next().await, json!({"type": "pong"}));

    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let mut statuses = Vec::new();
    loop {
        let frame = ws.next().await;
        assert_eq!(frame["type"], "run");
        assert_eq!(frame["run"]["id"], id.as_str());
        let status = frame["run"]["status"].as_str().unwrap().to_string();
        let waiting = status == "waiting_approval";
        statuses.push(status);
        if waiting {
            assert_eq!(frame["run"]["pending_approval"]["tool"], "write_file");
            // The HTTP API's detail view adds the run's forks.
            let mut detail = api.run(&id).await;
            assert_eq!(detail["forks"], json!([]));
            detail.as_object_mut().unwrap().remove("forks");
            assert_eq!(frame["run"], detail, "the same as the HTTP API");
            break;
        }
    }
    assert_eq!(statuses.first().unwrap(), "pending");
    assert!(statuses.contains(&"running".to_string()));
}

#[actix_web::test]
async fn model_text_streams_as_delta_frames() {
    let mock = agent_server::mock_llm::start(
        "127.0.0.1:0",
        agent_server::mock_llm::parse(
            "t",
            r#"[{"reply": {"text": "streamed, piece by piece"}, "chunk_chars": 3, "latency_ms": 200}]"#,
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let app = spawn_app_with(&[("LLM_BASE_URL", &mock.openai_base_url())]).await;
    let api = app.api();
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let mut ws = Ws::connect(&app).await;
    ws.send(json!({"op": "subscribe", "run_id": id})).await;
    let mut text = String::new();
    loop {
        let frame = ws.next().await;
        if frame["type"] == "delta" {
            assert_eq!(frame["agent"], "coding");
            text.push_str(frame["text"].as_str().unwrap());
        }
        if frame["type"] == "event" && frame["event"]["type"] == "RUN_COMPLETED" {
            break;
        }
    }
    assert_eq!(text, "streamed, piece by piece");
}

#[actix_web::test]
async fn malformed_frames_get_an_error_and_the_connection_stays_open() {
    let app = spawn_app().await;
    let mut ws = Ws::connect(&app).await;
    for (frame, code) in [
        ("not json", "invalid_message"),
        ("[1, 2]", "invalid_message"),
        ("{}", "invalid_message"),
        (r#"{"op": "fly"}"#, "unknown_op"),
        (r#"{"op": "subscribe"}"#, "invalid_run_id"),
        (r#"{"op": "subscribe", "run_id": "nope"}"#, "invalid_run_id"),
        (r#"{"op": "subscribe", "run_id": 7}"#, "invalid_run_id"),
        (
            r#"{"op": "subscribe", "run_id": "8e7d5f5e-1c1a-4f4e-9a52-4b8e2b1c0d11", "after": "x"}"#,
            "invalid_after",
        ),
        (
            r#"{"op": "subscribe", "run_id": "8e7d5f5e-1c1a-4f4e-9a52-4b8e2b1c0d11", "after": 1.5}"#,
            "invalid_after",
        ),
        (
            r#"{"op": "subscribe", "run_id": "8e7d5f5e-1c1a-4f4e-9a52-4b8e2b1c0d11", "after": -1}"#,
            "invalid_after",
        ),
        (
            r#"{"op": "subscribe", "run_id": "8e7d5f5e-1c1a-4f4e-9a52-4b8e2b1c0d11"}"#,
            "not_found",
        ),
    ] {
        ws.send_raw(frame).await;
        let reply = ws.next().await;
        assert_eq!(reply["type"], "error", "{frame}");
        assert_eq!(reply["code"], code, "{frame}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    ws.send(json!({"op": "ping"})).await;
    assert_eq!(ws.next().await, json!({"type": "pong"}));
}

async fn connect_with_origin(app: &TestApp, origin: &str) -> Result<(), u16> {
    let mut request = crate::helpers::ws_request(&app.address, crate::helpers::ADMIN_TOKEN);
    request
        .headers_mut()
        .insert("Origin", origin.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => Ok(()),
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("{other}"),
    }
}

#[actix_web::test]
async fn other_origins_are_refused_before_the_upgrade() {
    let app = spawn_app_with(&[("AGENT_SERVER_ALLOWED_ORIGINS", "https://ops.example.com")]).await;
    assert_eq!(
        connect_with_origin(&app, "http://evil.example").await,
        Err(403)
    );
    assert_eq!(connect_with_origin(&app, "null").await, Err(403));
    assert_eq!(connect_with_origin(&app, &app.address).await, Ok(()));
    assert_eq!(
        connect_with_origin(&app, "https://ops.example.com").await,
        Ok(())
    );
}

#[actix_web::test]
async fn a_client_that_does_not_read_is_cut_off_without_slowing_the_runs() {
    let app = spawn_app_with(&[
        ("AGENT_SERVER_WS_QUEUE", "8"),
        ("AGENT_RATE_LIMIT_RUNS_PER_MIN", "1000"),
    ])
    .await;
    let api = app.api();
    // Many runs, each ending with a large result, so the run summaries fill
    // the socket's buffers and then the connection's queue.
    let runs = 300;
    let big = "x".repeat(60 * 1024);
    for _ in 0..runs {
        app.llm.push(Reply::text(&big));
    }
    let mut stuck = Ws::connect(&app).await;
    stuck.send(json!({"op": "subscribe_runs"})).await;
    stuck.send(json!({"op": "ping"})).await;
    assert_eq!(stuck.next().await, json!({"type": "pong"}));

    for _ in 0..runs {
        api.create_run(json!({"task": "t", "agent": "coding"}))
            .await;
    }
    // The client reads nothing while the runs go on; they are not held back.
    crate::helpers::wait_until("200 runs to complete", || async {
        let page: Value = api
            .get("/api/runs?status=completed&limit=200")
            .await
            .json()
            .await
            .unwrap();
        let done = page["runs"].as_array().unwrap().len();
        (done == 200).then_some(())
    })
    .await;
    let mut fresh = Ws::connect(&app).await;
    fresh.send(json!({"op": "ping"})).await;
    assert_eq!(
        fresh.next().await,
        json!({"type": "pong"}),
        "others are served"
    );

    // When it finally reads, it finds it was closed as too slow.
    let close = loop {
        match tokio::time::timeout(WAIT_LIMIT, stuck.stream.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            Some(Err(error)) => panic!("the connection broke instead of closing: {error}"),
            None => panic!("the connection ended without a close frame"),
        }
    };
    let close = close.expect("a close frame with a reason");
    assert_eq!(close.code, CloseCode::from(4008));
    assert!(close.reason.contains("after"), "{}", close.reason);
}
