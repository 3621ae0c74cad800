//! A small scripted OpenAI-compatible server inside the test process: it
//! answers `POST /v1/chat/completions` from a queue of replies and records
//! every request, so tests can assert on what the model received.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A whole Chat Completions response body.
    Answer(Value),
    /// An error status with a body and an optional `Retry-After`.
    Status {
        code: u16,
        body: Value,
        retry_after: Option<u64>,
    },
    /// Never answers: the request hangs until the client gives up.
    Hang,
    /// Answers with the inner reply once the gate is opened (`Gate::open`).
    Gated(Gate, Box<Reply>),
}

/// Holds a gated reply back until a test opens it.
#[derive(Debug, Clone)]
pub struct Gate(Arc<tokio::sync::Semaphore>);

impl Gate {
    pub fn new() -> Gate {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }

    pub fn open(&self) {
        self.0.add_permits(1);
    }

    /// `reply`, held back by this gate.
    pub fn hold(&self, reply: Reply) -> Reply {
        Reply::Gated(self.clone(), Box::new(reply))
    }
}

impl Reply {
    pub fn text(text: &str) -> Reply {
        Reply::Answer(json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": "mock-model",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
        }))
    }

    pub fn tool_call(id: &str, name: &str, args: Value) -> Reply {
        Reply::tool_calls(&[(id, name, args)])
    }

    pub fn tool_calls(calls: &[(&str, &str, Value)]) -> Reply {
        let calls: Vec<Value> = calls
            .iter()
            .map(|(id, name, args)| {
                json!({"id": id, "type": "function",
                       "function": {"name": name, "arguments": args.to_string()}})
            })
            .collect();
        Reply::Answer(json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": "mock-model",
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": null, "tool_calls": calls}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}
        }))
    }
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    requests: Vec<Value>,
    /// The `traceparent` header of each request, if it had one.
    traceparents: Vec<Option<String>>,
}

/// Counts hanging requests whose client went away.
struct HangGuard(Arc<AtomicUsize>);

impl Drop for HangGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Clone)]
pub struct MockLlm {
    /// The base URL to give as `LLM_BASE_URL` (ends in `/v1`).
    pub base_url: String,
    script: Arc<Mutex<Script>>,
    aborted: Arc<AtomicUsize>,
}

impl MockLlm {
    /// Starts the server on a free port of the current actix system.
    pub async fn start() -> MockLlm {
        let script = Arc::new(Mutex::new(Script::default()));
        let aborted = Arc::new(AtomicUsize::new(0));
        let data = web::Data::new((script.clone(), aborted.clone()));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::JsonConfig::default().limit(64 * 1024 * 1024))
                .route("/v1/chat/completions", web::post().to(complete))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("binding the mock LLM");
        let port = server.addrs()[0].port();
        actix_rt::spawn(server.run());
        MockLlm {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            script,
            aborted,
        }
    }

    pub fn push(&self, reply: Reply) {
        self.script.lock().unwrap().replies.push_back(reply);
    }

    /// Every request body received so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.script.lock().unwrap().requests.clone()
    }

    /// The `traceparent` header of every request so far, in order.
    pub fn traceparents(&self) -> Vec<Option<String>> {
        self.script.lock().unwrap().traceparents.clone()
    }

    /// How many hanging requests were abandoned by their client.
    pub fn aborted(&self) -> usize {
        self.aborted.load(Ordering::SeqCst)
    }

    /// Waits until `n` requests arrived.
    pub async fn wait_for_requests(&self, n: usize) -> Vec<Value> {
        crate::helpers::wait_until(&format!("{n} model requests"), || async {
            let requests = self.requests();
            (requests.len() >= n).then_some(requests)
        })
        .await
    }
}

type Shared = (Arc<Mutex<Script>>, Arc<AtomicUsize>);

async fn complete(
    req: actix_web::HttpRequest,
    body: web::Json<Value>,
    data: web::Data<Shared>,
) -> HttpResponse {
    let (script, aborted) = data.get_ref();
    let mut reply = {
        let mut script = script.lock().unwrap();
        script.requests.push(body.into_inner());
        let traceparent = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        script.traceparents.push(traceparent);
        script
            .replies
            .pop_front()
            .unwrap_or_else(|| Reply::text("done"))
    };
    while let Reply::Gated(gate, inner) = reply {
        if let Ok(permit) = gate.0.acquire().await {
            permit.forget();
        }
        reply = *inner;
    }
    match reply {
        Reply::Gated(..) => unreachable!("unwrapped above"),
        Reply::Answer(body) => HttpResponse::Ok().json(body),
        Reply::Status {
            code,
            body,
            retry_after,
        } => {
            let mut response =
                HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap());
            if let Some(secs) = retry_after {
                response.insert_header(("retry-after", secs.to_string()));
            }
            response.json(body)
        }
        Reply::Hang => {
            // Headers now, then a space every 50 ms and never the JSON: the
            // client waits for the body, and the first write after it hangs
            // up fails, which drops the stream and its guard.
            let guard = HangGuard(aborted.clone());
            let body = futures_util::stream::unfold(guard, |guard| async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((
                    Ok::<_, actix_web::Error>(web::Bytes::from_static(b" ")),
                    guard,
                ))
            });
            HttpResponse::Ok()
                .content_type("application/json")
                .streaming(body)
        }
    }
}
