//! The HTTP side of mock-llm: the routes, the shared state (rules, failure
//! counters, the request log), and the handle a test or the binary holds.
//!
//! Every model request is recorded, parsed into the conversation view,
//! matched against the rules, and answered in the protocol it came in;
//! the only decisions taken here are which rule answers and whether it
//! fails this time, both under one lock so concurrent requests count
//! failures exactly.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use futures_util::Stream;
use serde::Serialize;
use serde_json::{Value, json};

use super::conversation::ChatRequest;
use super::fixtures::{self, Protocol, Rule};
use super::script::{self, Answer};
use super::{anthropic, openai};

/// The largest request body accepted: conversations carry whole tool
/// outputs, so far more than actix's 256 KiB default.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Seconds a stopping server lets open answers finish: a mock has nothing
/// to save, and tests should not wait the default 30 seconds.
const SHUTDOWN_TIMEOUT_SECS: u64 = 2;

/// One request as `GET /_mock/requests` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedRequest {
    /// Which protocol's route received it.
    pub protocol: Protocol,
    /// The path it was sent to.
    pub path: String,
    /// The body as sent: JSON when it parsed, else the raw text.
    pub body: Value,
    /// The rule that answered (or failed it); `None` for no match or for a
    /// request refused as malformed.
    pub rule: Option<String>,
    /// The status the request got.
    pub status: u16,
}

/// A running mock-llm; stops when dropped.
pub struct MockLlmServer {
    /// Where it listens, with the real port when port 0 was asked for.
    addr: SocketAddr,
    /// Stops the server.
    handle: ServerHandle,
    /// The rules and the request log, shared with the workers.
    state: web::Data<State>,
    /// The server's task; `None` once it was awaited.
    task: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

/// Starts mock-llm in this process, for tests: bound to `addr` (port 0 picks
/// a free port), one worker, and no signal handling so the test runner
/// keeps its own. The server stops when the handle is dropped.
pub async fn start(addr: &str, rules: Vec<Rule>) -> io::Result<MockLlmServer> {
    launch(addr, rules, false)
}

/// Starts mock-llm as the `mock-llm` binary runs it: like `start`, but
/// SIGINT and SIGTERM stop it; `MockLlmServer::wait` returns then.
pub async fn serve(addr: &str, rules: Vec<Rule>) -> io::Result<MockLlmServer> {
    launch(addr, rules, true)
}

fn launch(addr: &str, rules: Vec<Rule>, handle_signals: bool) -> io::Result<MockLlmServer> {
    let listener = std::net::TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let state = web::Data::new(State::new(rules));
    let app_state = state.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .configure(routes)
    })
    .workers(1)
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
    .listen(listener)?;
    if !handle_signals {
        server = server.disable_signals();
    }
    let server = server.run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    tracing::info!(%addr, handle_signals, "mock-llm started");
    Ok(MockLlmServer {
        addr,
        handle,
        state,
        task: Some(task),
    })
}

impl MockLlmServer {
    /// The address it listens on, with the real port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL an OpenAI client takes (`LLM_BASE_URL` for `openai`).
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// The base URL an Anthropic client takes (`LLM_BASE_URL` for
    /// `anthropic`).
    pub fn anthropic_base_url(&self) -> String {
        self.url()
    }

    /// Every model request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().requests.clone()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        self.state.lock().requests.clear();
    }

    /// Replaces the rules, as `POST /_mock/fixtures` does.
    pub fn set_rules(&self, rules: Vec<Rule>) {
        self.state.lock().replace_rules(rules);
    }

    /// Stops the server at once and waits until it has stopped.
    pub async fn stop(mut self) {
        self.handle.stop(false).await;
        if let Some(task) = self.task.take() {
            // The server ended either way; how it ended does not matter here.
            let _ = task.await;
        }
    }

    /// Waits until the server stops (for `serve`: on SIGINT or SIGTERM).
    pub async fn wait(mut self) -> io::Result<()> {
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for MockLlmServer {
    fn drop(&mut self) {
        if self.task.is_some() {
            // `stop` sends its command at once; the returned future only
            // waits for the outcome, which a drop cannot do.
            drop(self.handle.stop(false));
        }
    }
}

/// What every worker shares.
struct State {
    /// A std mutex, not a tokio one: it is never held across an await, and
    /// each critical section is a few lookups.
    inner: Mutex<Inner>,
}

/// The mutable state behind `State`'s lock.
struct Inner {
    /// The rules, first match wins.
    rules: Vec<Rule>,
    /// How many requests each rule (by index) has failed so far.
    failed: Vec<u32>,
    /// How many answers each conversation (by fingerprint) got so far, so
    /// asking again gives fresh tool-call ids.
    answered: HashMap<u64, u32>,
    /// Every model request, in order.
    requests: Vec<RecordedRequest>,
}

impl State {
    fn new(rules: Vec<Rule>) -> State {
        let mut inner = Inner {
            rules: Vec::new(),
            failed: Vec::new(),
            answered: HashMap::new(),
            requests: Vec::new(),
        };
        inner.replace_rules(rules);
        State {
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated
        // in a way that matters to a mock, so a poisoned lock is used as is.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn replace_rules(&mut self, rules: Vec<Rule>) {
        self.failed = vec![0; rules.len()];
        self.rules = rules;
        self.answered.clear();
    }

    /// Records a request and decides what it gets.
    fn plan(
        &mut self,
        protocol: Protocol,
        path: &str,
        body: Value,
        request: Result<ChatRequest, String>,
    ) -> Plan {
        let mut record = RecordedRequest {
            protocol,
            path: path.to_string(),
            body,
            rule: None,
            status: 200,
        };
        let plan = match request {
            Err(message) => Plan::Fail {
                latency: Duration::ZERO,
                status: 400,
                retry_after: None,
                message,
            },
            Ok(request) => {
                let index = script::first_match(&self.rules, &request);
                let rule = index.map(|i| &self.rules[i]);
                let name = index.map(|i| self.rules[i].display_name(i));
                record.rule = name.clone();
                let latency = Duration::from_millis(rule.and_then(|r| r.latency_ms).unwrap_or(0));
                let failing = index.zip(rule.and_then(|r| r.fail.as_ref()));
                match failing {
                    Some((i, fail)) if self.failed[i] < fail.times => {
                        self.failed[i] += 1;
                        Plan::Fail {
                            latency,
                            status: fail.status,
                            retry_after: fail.retry_after,
                            message: fail.message.clone().unwrap_or_else(|| {
                                format!(
                                    "mock-llm: failure {} of {} injected by fixture `{}`",
                                    self.failed[i],
                                    fail.times,
                                    name.clone().unwrap_or_default()
                                )
                            }),
                        }
                    }
                    _ => {
                        let count = self
                            .answered
                            .entry(request.conversation.fingerprint())
                            .or_insert(0);
                        let answer = script::answer(rule, &request, *count);
                        *count += 1;
                        Plan::Answer {
                            latency,
                            stream: request.stream,
                            include_usage: request.include_usage,
                            answer,
                        }
                    }
                }
            }
        };
        if let Plan::Fail { status, .. } = &plan {
            record.status = *status;
        }
        self.requests.push(record);
        plan
    }
}

/// What a model request gets.
enum Plan {
    /// A scripted answer.
    Answer {
        /// The pause before the first byte.
        latency: Duration,
        /// Whether to send it as server-sent events.
        stream: bool,
        /// Whether an OpenAI stream ends with a usage chunk.
        include_usage: bool,
        /// What to say.
        answer: Answer,
    },
    /// An error in the protocol's shape: injected, or a malformed request.
    Fail {
        /// The pause before the first byte.
        latency: Duration,
        /// The HTTP status.
        status: u16,
        /// Seconds for a `Retry-After` header.
        retry_after: Option<u64>,
        /// The error body's message.
        message: String,
    },
}

fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/v1/chat/completions", web::post().to(openai_chat))
        // For clients whose base URL leaves out the `/v1`.
        .route("/chat/completions", web::post().to(openai_chat))
        .route("/v1/messages", web::post().to(anthropic_messages))
        .route("/_mock/requests", web::get().to(list_requests))
        .route("/_mock/requests", web::delete().to(clear_requests))
        .route("/_mock/fixtures", web::post().to(replace_fixtures))
        .route("/healthz", web::get().to(healthz))
        .default_service(web::to(not_found));
}

async fn openai_chat(state: web::Data<State>, request: HttpRequest, body: Bytes) -> HttpResponse {
    respond(&state, Protocol::OpenAi, request.path(), body).await
}

async fn anthropic_messages(
    state: web::Data<State>,
    request: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    respond(&state, Protocol::Anthropic, request.path(), body).await
}

/// Answers one model request.
#[tracing::instrument(skip(state, protocol, body), fields(protocol = protocol.as_str()))]
async fn respond(state: &State, protocol: Protocol, path: &str, body: Bytes) -> HttpResponse {
    let json = serde_json::from_slice::<Value>(&body);
    let request = match &json {
        Ok(value) => match protocol {
            Protocol::OpenAi => openai::parse_request(value),
            Protocol::Anthropic => anthropic::parse_request(value),
        },
        Err(error) => Err(format!("the request body is not valid JSON: {error}")),
    };
    let recorded = json.unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    let plan = state.lock().plan(protocol, path, recorded, request);
    match plan {
        Plan::Fail {
            latency,
            status,
            retry_after,
            message,
        } => {
            tokio::time::sleep(latency).await;
            tracing::info!(status, %message, "mock-llm failed a request");
            error_response(protocol, status, retry_after, &message)
        }
        Plan::Answer {
            latency,
            stream,
            include_usage,
            answer,
        } => {
            tokio::time::sleep(latency).await;
            tracing::info!(
                stream,
                tool_calls = answer.tool_calls.len(),
                "mock-llm answered"
            );
            if stream {
                let events = match protocol {
                    Protocol::OpenAi => openai::stream_events(&answer, include_usage),
                    Protocol::Anthropic => anthropic::stream_events(&answer),
                };
                HttpResponse::Ok()
                    .content_type("text/event-stream")
                    .insert_header((header::CACHE_CONTROL, "no-cache"))
                    .streaming(paced(events, answer.chunk_delay))
            } else {
                HttpResponse::Ok().json(match protocol {
                    Protocol::OpenAi => openai::response(&answer),
                    Protocol::Anthropic => anthropic::response(&answer),
                })
            }
        }
    }
}

/// The events as a body stream, with `delay` before every event but the
/// first.
fn paced(events: Vec<String>, delay: Duration) -> impl Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::unfold(
        (events.into_iter(), true),
        move |(mut events, first)| async move {
            let event = events.next()?;
            if !first && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some((Ok(Bytes::from(event)), (events, false)))
        },
    )
}

fn error_response(
    protocol: Protocol,
    status: u16,
    retry_after: Option<u64>,
    message: &str,
) -> HttpResponse {
    // Fixture statuses are checked to be 400..=599 when loaded, and the
    // others are ours; 500 is a safe answer should one ever be invalid.
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(code);
    if let Some(secs) = retry_after {
        response.insert_header((header::RETRY_AFTER, secs.to_string()));
    }
    response.json(match protocol {
        Protocol::OpenAi => openai::error_body(status, message),
        Protocol::Anthropic => anthropic::error_body(status, message),
    })
}

async fn list_requests(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"requests": state.lock().requests}))
}

async fn clear_requests(state: web::Data<State>) -> HttpResponse {
    state.lock().requests.clear();
    HttpResponse::NoContent().finish()
}

async fn replace_fixtures(state: web::Data<State>, body: Bytes) -> HttpResponse {
    let text = String::from_utf8_lossy(&body);
    match fixtures::parse("POST /_mock/fixtures", &text) {
        Ok(rules) => {
            let count = rules.len();
            state.lock().replace_rules(rules);
            tracing::info!(rules = count, "mock-llm fixtures replaced");
            HttpResponse::Ok().json(json!({"rules": count}))
        }
        Err(error) => {
            HttpResponse::BadRequest().json(json!({"error": {"message": error.to_string()}}))
        }
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn not_found(request: HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().json(json!({"error": {"message": format!(
        "mock-llm has no route for {} {}; models are at POST /v1/chat/completions (OpenAI) and POST /v1/messages (Anthropic)",
        request.method(),
        request.path()
    )}}))
}
