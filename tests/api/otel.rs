//! OpenTelemetry export, decoded by an OTLP/HTTP receiver in the test: a
//! delegated run with an approval is one trace of GenAI spans, joined to the
//! caller's trace; work resumed after a kill -9 joins the same trace; log
//! lines inside a run carry its trace id, on stdout and over OTLP; the model
//! receives a `traceparent` of that trace; the metrics, with the standard
//! GenAI client instruments, are pushed over OTLP and flushed at shutdown;
//! the standard variables name the service and choose the sampler; a Loki
//! query carries the run's trace, and every log line of a run names its
//! run, trace and span.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

use crate::helpers::{fresh_database, settings_map, wait_until};
use crate::mock_llm::{MockLlm, Reply};
use crate::process::Server;

/// The trace the caller of `POST /api/runs` is in.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A span as the receiver decoded it.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    trace_id: String,
    span_id: String,
    parent: String,
    pub(crate) name: String,
    pub(crate) attributes: HashMap<String, Value>,
}

/// Decoded OTLP attributes.
type Attributes = HashMap<String, Value>;
/// A metric's data point: its attributes and the point as sent.
type Point = (Attributes, Value);

/// What the receiver got besides spans: each OTLP JSON export body.
#[derive(Clone, Default)]
struct Bodies {
    metrics: Arc<Mutex<Vec<Value>>>,
    logs: Arc<Mutex<Vec<Value>>>,
}

/// Receives OTLP/HTTP JSON exports of the three signals.
#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) endpoint: String,
    spans: Arc<Mutex<Vec<Span>>>,
    bodies: Bodies,
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let bodies = Bodies::default();
        let data = web::Data::new(spans.clone());
        let other = web::Data::new(bodies.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(other.clone())
                .app_data(web::JsonConfig::default().limit(64 * 1024 * 1024))
                .route("/v1/traces", web::post().to(receive))
                // Metrics and logs are kept as sent, decoded when asked.
                .route("/v1/{signal}", web::post().to(keep))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let port = server.addrs()[0].port();
        actix_rt::spawn(server.run());
        Receiver {
            endpoint: format!("http://127.0.0.1:{port}"),
            spans,
            bodies,
        }
    }

    /// The data points of metric `name` in the last export that has it, with
    /// their attributes decoded, and the exporting resource's attributes.
    fn metric(&self, name: &str) -> (Vec<Point>, Attributes) {
        let bodies = self.bodies.metrics.lock().unwrap();
        for body in bodies.iter().rev() {
            for resource in body["resourceMetrics"].as_array().into_iter().flatten() {
                for scope in resource["scopeMetrics"].as_array().into_iter().flatten() {
                    for metric in scope["metrics"].as_array().into_iter().flatten() {
                        if metric["name"] != name {
                            continue;
                        }
                        let data = ["sum", "histogram", "gauge"]
                            .iter()
                            .find_map(|kind| metric.get(*kind))
                            .unwrap_or_else(|| panic!("{name} has no data: {metric}"));
                        let points = data["dataPoints"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|point| (attributes(&point["attributes"]), point.clone()))
                            .collect();
                        return (points, attributes(&resource["resource"]["attributes"]));
                    }
                }
            }
        }
        panic!("no export has the metric {name}")
    }

    /// Every log record received, with its trace id and attributes decoded.
    fn log_records(&self) -> Vec<(String, String, HashMap<String, Value>)> {
        let bodies = self.bodies.logs.lock().unwrap();
        let mut records = Vec::new();
        for body in bodies.iter() {
            for resource in body["resourceLogs"].as_array().into_iter().flatten() {
                for scope in resource["scopeLogs"].as_array().into_iter().flatten() {
                    for record in scope["logRecords"].as_array().into_iter().flatten() {
                        records.push((
                            record["traceId"]
                                .as_str()
                                .unwrap_or_default()
                                .to_lowercase(),
                            attribute_value(&record["body"])
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                            attributes(&record["attributes"]),
                        ));
                    }
                }
            }
        }
        records
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    pub(crate) async fn wait_for(&self, what: &str, check: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        wait_until(what, || async {
            let spans = self.spans();
            check(&spans).then_some(spans)
        })
        .await
    }
}

/// OTLP JSON: attribute values are `{"stringValue"}`, `{"intValue"}` (a
/// string), `{"doubleValue"}` or `{"boolValue"}`.
fn attribute_value(value: &Value) -> Value {
    for key in ["stringValue", "boolValue", "doubleValue"] {
        if let Some(v) = value.get(key) {
            return v.clone();
        }
    }
    match value.get("intValue") {
        Some(Value::String(s)) => json!(s.parse::<i64>().unwrap()),
        Some(v) => v.clone(),
        None => Value::Null,
    }
}

async fn keep(
    signal: web::Path<String>,
    body: web::Json<Value>,
    bodies: web::Data<Bodies>,
) -> HttpResponse {
    let list = match signal.as_str() {
        "metrics" => &bodies.metrics,
        "logs" => &bodies.logs,
        _ => return HttpResponse::NotFound().finish(),
    };
    list.lock().unwrap().push(body.into_inner());
    HttpResponse::Ok().json(json!({}))
}

/// An OTLP JSON attribute list as a map.
fn attributes(list: &Value) -> HashMap<String, Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|kv| {
            (
                kv["key"].as_str().unwrap().to_string(),
                attribute_value(&kv["value"]),
            )
        })
        .collect()
}

/// A number OTLP JSON may write as a string (64-bit integers).
fn number(value: &Value) -> f64 {
    match value {
        Value::String(s) => s.parse().unwrap(),
        other => other
            .as_f64()
            .unwrap_or_else(|| panic!("not a number: {other}")),
    }
}

async fn receive(body: web::Json<Value>, spans: web::Data<Arc<Mutex<Vec<Span>>>>) -> HttpResponse {
    let mut spans = spans.lock().unwrap();
    for resource in body["resourceSpans"].as_array().into_iter().flatten() {
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let attributes = attributes(&span["attributes"]);
                spans.push(Span {
                    trace_id: span["traceId"].as_str().unwrap_or_default().to_lowercase(),
                    span_id: span["spanId"].as_str().unwrap_or_default().to_lowercase(),
                    parent: span["parentSpanId"]
                        .as_str()
                        .unwrap_or_default()
                        .to_lowercase(),
                    name: span["name"].as_str().unwrap_or_default().to_string(),
                    attributes,
                });
            }
        }
    }
    HttpResponse::Ok().json(json!({}))
}

fn find<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span {name}: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

/// A server exporting to `receiver` in the JSON encoding it decodes, with
/// `extra` settings on top.
async fn traced_server_with(
    database_url: &str,
    llm: &MockLlm,
    workspace: &tempfile::TempDir,
    receiver: &Receiver,
    extra: &[(&str, &str)],
) -> Server {
    let mut vars = settings_map(
        database_url,
        llm,
        workspace.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            // Metrics leave only when the server stops: the test sees that
            // the last figures are flushed then.
            ("OTEL_METRIC_EXPORT_INTERVAL", "3600000"),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
        ],
    );
    for (key, value) in extra {
        vars.insert(key.to_string(), value.to_string());
    }
    Server::start_with(vars).await
}

async fn traced_server(
    database_url: &str,
    llm: &MockLlm,
    workspace: &tempfile::TempDir,
    receiver: &Receiver,
) -> Server {
    traced_server_with(database_url, llm, workspace, receiver, &[]).await
}

#[actix_web::test]
async fn a_delegated_run_with_an_approval_is_one_trace_of_genai_spans() {
    let receiver = Receiver::start().await;
    let database_url = fresh_database().await;
    let llm = MockLlm::start().await;
    let workspace = tempfile::tempdir().unwrap();
    llm.push(Reply::tool_call(
        "call_d",
        "delegate",
        json!({"agent": "coding", "task": "run it"}),
    ));
    llm.push(Reply::tool_call(
        "call_s",
        "shell",
        json!({"command": "echo hi"}),
    ));
    llm.push(Reply::text("ran it"));
    llm.push(Reply::text("all done"));
    let server = traced_server(&database_url, &llm, &workspace, &receiver).await;

    let response = server
        .api
        .client
        .post(format!("{}/api/runs", server.api.address))
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .json(&json!({"task": "please run it"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let run: Value = response.json().await.unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    assert_eq!(
        run["trace_id"], CALLER_TRACE,
        "the run joins the caller's trace"
    );
    let pending = server.api.wait_for_approval(&id).await;
    server
        .api
        .resume(
            &id,
            pending["approval_id"].as_str().unwrap(),
            "approved",
            None,
        )
        .await;
    server.api.wait_for_status(&id, "completed").await;

    let spans = receiver
        .wait_for("the root span", |spans| {
            spans.iter().any(|s| s.name == "invoke_agent orchestrator")
        })
        .await;
    let ours: Vec<&Span> = spans
        .iter()
        .filter(|s| s.attributes.contains_key("run.id"))
        .collect();
    assert!(ours.iter().all(|s| s.trace_id == CALLER_TRACE), "one trace");

    let root = find(&spans, "invoke_agent orchestrator");
    assert_eq!(root.parent, CALLER_SPAN);
    assert_eq!(root.attributes["gen_ai.operation.name"], "invoke_agent");
    assert_eq!(root.attributes["gen_ai.agent.name"], "orchestrator");
    assert_eq!(root.attributes["gen_ai.conversation.id"], id.as_str());
    let child = find(&spans, "invoke_agent coding");
    assert_eq!(
        child.parent, root.span_id,
        "the delegated agent sits under the orchestrator"
    );

    let chats: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "chat mock-model")
        .collect();
    assert_eq!(chats.len(), 4);
    for chat in &chats {
        assert_eq!(chat.trace_id, CALLER_TRACE);
        assert_eq!(chat.attributes["gen_ai.operation.name"], "chat");
        assert_eq!(chat.attributes["gen_ai.provider.name"], "openai");
        assert_eq!(chat.attributes["gen_ai.request.model"], "mock-model");
        assert_eq!(chat.attributes["gen_ai.response.model"], "mock-model");
        let tokens = &chat.attributes["gen_ai.usage.input_tokens"];
        assert!(
            tokens.as_i64().is_some_and(|n| n > 0),
            "{:?}",
            chat.attributes
        );
        assert!(chat.attributes.contains_key("gen_ai.usage.output_tokens"));
        assert!(
            chat.attributes
                .contains_key("gen_ai.response.finish_reasons")
        );
        assert_eq!(chat.attributes["run.id"], id.as_str());
    }
    let coding_chats = chats
        .iter()
        .filter(|c| c.attributes["gen_ai.agent.name"] == "coding");
    assert!(
        coding_chats.clone().count() == 2
            && coding_chats.into_iter().all(|c| c.parent == child.span_id)
    );

    let tool = find(&spans, "execute_tool shell");
    assert_eq!(tool.parent, child.span_id);
    assert_eq!(tool.attributes["gen_ai.tool.name"], "shell");
    assert_eq!(tool.attributes["gen_ai.tool.call.id"], "call_s");
    // The HTTP server's span of the request that created the run is in the
    // caller's trace too, under the caller's span.
    let request = find(&spans, "POST /api/runs");
    assert_eq!(request.trace_id, CALLER_TRACE);
    assert_eq!(request.parent, CALLER_SPAN);
    let write = find(&spans, "INSERT run_events");
    assert_eq!(write.attributes["db.system.name"], "postgresql");
    assert_eq!(write.trace_id, CALLER_TRACE);
    let wait = find(&spans, "hitl.wait_for_approval");
    assert_eq!(wait.parent, child.span_id);
    assert_eq!(wait.attributes["hitl.decision"], "approved");
    assert_eq!(wait.attributes["gen_ai.tool.name"], "shell");

    // The model received a `traceparent` of the run's trace.
    let traceparents = llm.traceparents();
    assert_eq!(traceparents.len(), 4);
    for header in traceparents {
        let header = header.expect("a traceparent on every model request");
        assert!(
            header.starts_with(&format!("00-{CALLER_TRACE}-")),
            "{header}"
        );
    }

    // A log line written inside a run's span carries its trace id.
    let lines = server.stdout.lock().unwrap().clone();
    let logged = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["run_id"] == id.as_str() && l["trace_id"] == CALLER_TRACE);
    let logged = logged.expect("a log line of the run with its trace id");
    for key in ["timestamp", "level", "target", "message", "span_id"] {
        assert!(logged.get(key).is_some(), "{key} in {logged}");
    }
    assert!(server.terminate().success());

    // The same log line went over OTLP with the run's trace context.
    let records = receiver.log_records();
    let message = logged["message"].as_str().unwrap();
    assert!(
        records
            .iter()
            .any(|(trace, body, attributes)| trace == CALLER_TRACE
                && body == message
                && attributes.get("run_id") == Some(&json!(id))),
        "no OTLP log record of the run: {records:?}"
    );

    // Metrics, pushed when the server stopped: the contract's instruments
    // and the standard GenAI ones, 4 model calls with their tokens.
    let (tokens, resource) = receiver.metric("agentops_llm_tokens_total");
    assert_eq!(resource["service.name"], "agent-server");
    assert!(
        tokens
            .iter()
            .any(|(labels, point)| labels["agent"] == "coding"
                && labels["type"] == "input"
                && number(&point["asInt"]) > 0.0)
    );
    let (usage, _) = receiver.metric("gen_ai.client.token.usage");
    for kind in ["input", "output"] {
        let calls: f64 = usage
            .iter()
            .filter(|(labels, _)| labels["gen_ai.token.type"] == kind)
            .map(|(labels, point)| {
                assert_eq!(labels["gen_ai.operation.name"], "chat");
                assert_eq!(labels["gen_ai.provider.name"], "openai");
                assert_eq!(labels["gen_ai.request.model"], "mock-model");
                assert_eq!(labels["gen_ai.response.model"], "mock-model");
                number(&point["count"])
            })
            .sum();
        assert_eq!(calls, 4.0, "{kind} tokens of 4 model calls");
    }
    let (durations, _) = receiver.metric("gen_ai.client.operation.duration");
    let calls: f64 = durations
        .iter()
        .map(|(_, point)| number(&point["count"]))
        .sum();
    assert_eq!(calls, 4.0);
}

#[actix_web::test]
async fn work_resumed_after_kill_9_joins_the_same_trace() {
    let receiver = Receiver::start().await;
    let database_url = fresh_database().await;
    let llm = MockLlm::start().await;
    let workspace = tempfile::tempdir().unwrap();
    llm.push(Reply::tool_call("c1", "shell", json!({"command": "true"})));
    llm.push(Reply::text("done"));

    let server = traced_server(&database_url, &llm, &workspace, &receiver).await;
    let run = server
        .api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let trace_id = run["trace_id"].as_str().unwrap().to_string();
    assert_eq!(trace_id.len(), 32);
    let pending = server.api.wait_for_approval(&id).await;
    server.kill_9();

    let server = traced_server(&database_url, &llm, &workspace, &receiver).await;
    server
        .api
        .resume(
            &id,
            pending["approval_id"].as_str().unwrap(),
            "approved",
            None,
        )
        .await;
    server.api.wait_for_status(&id, "completed").await;
    let spans = receiver
        .wait_for("the resumed run's spans", |spans| {
            spans.iter().any(|s| s.name == "invoke_agent coding")
        })
        .await;
    for name in [
        "run.resumed",
        "hitl.wait_for_approval",
        "execute_tool shell",
        "invoke_agent coding",
    ] {
        assert_eq!(
            find(&spans, name).trace_id,
            trace_id,
            "{name} after the restart"
        );
    }
    assert!(server.terminate().success());
}

/// Reads WebSocket frames until `done` holds for one of them; returns them
/// all as text.
async fn frames_until(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    done: impl Fn(&Value) -> bool,
) -> String {
    use futures_util::StreamExt;
    let mut text = String::new();
    loop {
        let frame = tokio::time::timeout(crate::helpers::WAIT_LIMIT, ws.next())
            .await
            .expect("a WebSocket frame in time")
            .expect("the WebSocket stays open")
            .expect("a readable frame");
        if let tokio_tungstenite::tungstenite::Message::Text(frame) = frame {
            text.push_str(&frame);
            text.push('\n');
            if done(&serde_json::from_str(&frame).unwrap()) {
                return text;
            }
        }
    }
}

#[actix_web::test]
async fn no_secret_reaches_a_log_a_span_a_metric_the_journal_a_frame_or_the_model() {
    use futures_util::SinkExt;
    const KEY: &str = "sk-test-very-secret-4711";
    let receiver = Receiver::start().await;
    let database_url = fresh_database().await;
    let llm = MockLlm::start().await;
    let workspace = tempfile::tempdir().unwrap();
    // The provider echoes the key back in its error, as some do; the next
    // run goes through a tool.
    llm.push(Reply::Status {
        code: 401,
        body: json!({"error": {"message": format!("Incorrect API key provided: {KEY}")}}),
        retry_after: None,
    });
    llm.push(Reply::tool_call("call_1", "list_files", json!({})));
    llm.push(Reply::text("listed"));
    let server = traced_server_with(
        &database_url,
        &llm,
        &workspace,
        &receiver,
        &[("RUST_LOG", "debug"), ("OPENAI_API_KEY", KEY)],
    )
    .await;
    let admin = &server.api;

    // A token of its own, and a dashboard session made from it.
    let token = admin.new_token("ops", &["operator"]).await;
    let ops = admin.with_token(&token);
    let signed_in = admin
        .anonymous()
        .client
        .post(format!("{}/api/session", admin.address))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    let session = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("agent_server_session=")
        .to_string();
    let me = admin
        .anonymous()
        .client
        .get(format!("{}/api/me", admin.address))
        .header("Cookie", format!("agent_server_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let (mut ws, _) =
        tokio_tungstenite::connect_async(crate::helpers::ws_request(&admin.address, &token))
            .await
            .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({"op": "subscribe_runs"}).to_string(),
    ))
    .await
    .unwrap();

    let run = ops
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let failed_id = run["id"].as_str().unwrap().to_string();
    let failed = ops.wait_for_status(&failed_id, "failed").await;
    assert_eq!(failed["error"]["code"], "llm_error");
    let run = ops
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let done_id = run["id"].as_str().unwrap().to_string();
    let frames = frames_until(&mut ws, |frame| {
        frame["type"] == "run"
            && frame["run"]["id"] == done_id.as_str()
            && frame["run"]["status"] == "completed"
    })
    .await;

    let mut journal = String::new();
    for id in [&failed_id, &done_id] {
        journal.push_str(
            &admin
                .get(&format!("/api/runs/{id}/events"))
                .await
                .text()
                .await
                .unwrap(),
        );
    }
    let metrics = admin.get("/metrics").await.text().await.unwrap();
    receiver
        .wait_for("the root span", |spans| {
            spans.iter().any(|s| s.name == "invoke_agent coding")
        })
        .await;
    let spans = format!("{:?}", receiver.spans());
    let model_requests = format!("{:?}", llm.requests());
    let stdout = server.stdout.clone();
    assert!(server.terminate().success());
    let logs = stdout.lock().unwrap().join("\n");
    let exported_logs = format!("{:?}", receiver.bodies.logs.lock().unwrap());
    let exported_metrics = format!("{:?}", receiver.bodies.metrics.lock().unwrap());
    assert!(exported_logs.contains("model call failed"));
    assert!(
        logs.contains("token created"),
        "the logs cover the token's life"
    );

    let hash = |value: &str| agent_server::auth::hex(&agent_server::auth::credential_hash(value));
    let secrets = [
        ("the API key", KEY.to_string()),
        ("the admin token", crate::helpers::ADMIN_TOKEN.to_string()),
        ("the admin token's hash", hash(crate::helpers::ADMIN_TOKEN)),
        ("a token", token.clone()),
        ("a token's hash", hash(&token)),
        ("the session", session.clone()),
        ("the session's hash", hash(&session)),
    ];
    for (place, text) in [
        ("the runs", format!("{failed}")),
        ("the journal", journal),
        ("the metrics", metrics),
        ("the spans", spans),
        ("the logs", logs),
        ("the OTLP logs", exported_logs),
        ("the OTLP metrics", exported_metrics),
        ("the WebSocket frames", frames),
        ("the model requests", model_requests),
    ] {
        for (what, secret) in &secrets {
            assert!(!text.contains(secret.as_str()), "{what} reached {place}");
        }
    }
}

#[actix_web::test]
async fn the_standard_variables_name_the_service_and_choose_the_sampler() {
    let receiver = Receiver::start().await;
    let database_url = fresh_database().await;
    let llm = MockLlm::start().await;
    let workspace = tempfile::tempdir().unwrap();
    llm.push(Reply::text("done"));
    let server = traced_server_with(
        &database_url,
        &llm,
        &workspace,
        &receiver,
        &[
            ("OTEL_SERVICE_NAME", "ops-agents"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "team=sre,deployment.environment.name=staging",
            ),
            ("OTEL_TRACES_SAMPLER", "always_off"),
        ],
    )
    .await;
    let run = server
        .api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    server.api.wait_for_status(&id, "completed").await;
    assert!(server.terminate().success());

    // Sampled out: the run still has its trace id, but no span leaves.
    assert_eq!(run["trace_id"].as_str().unwrap().len(), 32);
    assert!(receiver.spans().is_empty(), "{:?}", receiver.spans());
    // Logs and metrics still do, from the named service.
    assert!(!receiver.log_records().is_empty());
    let (_, resource) = receiver.metric("agentops_runs_finished_total");
    assert_eq!(resource["service.name"], "ops-agents");
    assert_eq!(resource["team"], "sre");
    assert_eq!(resource["deployment.environment.name"], "staging");
}

/// A Loki that answers every query with no lines and keeps the
/// `traceparent` of each request.
async fn recording_loki() -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let kept = seen.clone();
    let server = HttpServer::new(move || {
        let kept = kept.clone();
        App::new().route(
            "/loki/api/v1/query_range",
            web::get().to(move |req: actix_web::HttpRequest| {
                let kept = kept.clone();
                async move {
                    let traceparent = req
                        .headers()
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    kept.lock().unwrap().push(traceparent);
                    HttpResponse::Ok().json(json!({
                        "status": "success",
                        "data": {"resultType": "streams", "result": []}
                    }))
                }
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let url = format!("http://{}", server.addrs()[0]);
    actix_web::rt::spawn(server.run());
    (url, seen)
}

#[actix_web::test]
async fn loki_requests_carry_the_trace_and_every_run_log_line_names_its_run_and_span() {
    let receiver = Receiver::start().await;
    let (loki, seen) = recording_loki().await;
    let database_url = fresh_database().await;
    let llm = MockLlm::start().await;
    let workspace = tempfile::tempdir().unwrap();
    llm.push(Reply::tool_call(
        "q1",
        "loki_query",
        json!({"query": "{app=\"api\"}"}),
    ));
    llm.push(Reply::text("no logs"));
    llm.push(Reply::tool_call(
        "w1",
        "write_file",
        json!({"path": "x", "content": "y"}),
    ));
    llm.push(Reply::text("written"));
    let server = traced_server_with(
        &database_url,
        &llm,
        &workspace,
        &receiver,
        &[("LOKI_URL", &loki)],
    )
    .await;

    let run = server
        .api
        .create_run(json!({"task": "read logs", "agent": "log-analyzer"}))
        .await;
    let reading = run["id"].as_str().unwrap().to_string();
    let done = server.api.wait_for_status(&reading, "completed").await;
    let trace_id = done["trace_id"].as_str().unwrap().to_string();
    let traceparents = seen.lock().unwrap().clone();
    assert_eq!(traceparents.len(), 1);
    let traceparent = traceparents[0].as_deref().expect("a traceparent to Loki");
    assert!(
        traceparent.contains(&trace_id),
        "{traceparent} in {trace_id}"
    );

    let run = server
        .api
        .create_run(json!({"task": "write", "agent": "coding"}))
        .await;
    let writing = run["id"].as_str().unwrap().to_string();
    let pending = server.api.wait_for_approval(&writing).await;
    server
        .api
        .resume(
            &writing,
            pending["approval_id"].as_str().unwrap(),
            "approved",
            None,
        )
        .await;
    server.api.wait_for_status(&writing, "completed").await;

    let lines: Vec<Value> = wait_until("the runs' log lines", || async {
        let lines: Vec<Value> = server
            .stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["run_id"] == writing.as_str())
            .collect();
        lines
            .iter()
            .any(|l| l["message"] == "run finished")
            .then_some(lines)
    })
    .await;
    for message in ["run created", "waiting for approval", "run finished"] {
        let line = lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("`{message}` with the run's run_id: {lines:#?}"));
        assert!(line["trace_id"].is_string(), "{line}");
        assert!(line["span_id"].is_string(), "{line}");
    }
    for line in &lines {
        assert!(line["span_id"].is_string(), "every line of the run: {line}");
    }
}
