//! The OpenAI Chat Completions wire format, with tool calling, against
//! `{LLM_BASE_URL}/chat/completions`: OpenAI itself or any compatible server
//! (vLLM, Ollama, llama.cpp, `mock-llm`), streamed over server-sent events or
//! asked for whole (`LLM_STREAMING=false`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use super::sse::{self, Flow, STREAM_IDLE_TIMEOUT};
use super::{
    DeltaSink, Error, Message, ModelAnswer, ModelClient, ModelRequest, REQUEST_TIMEOUT,
    RequestedCall, Usage, http_client, read_json, send, shorten,
};
use crate::agents::AgentName;
use crate::config::{LlmSettings, Secret};

pub struct OpenAiClient {
    /// One connection pool for every call; it has no total timeout, each
    /// request sets its own.
    http: reqwest::Client,
    /// `{base_url}/chat/completions`, built once.
    url: String,
    /// Sent only as a bearer token, never logged.
    api_key: Option<Secret>,
    /// The per-agent models and whether to stream.
    settings: LlmSettings,
    /// How long a stream may stay silent; a field so tests can shorten it.
    idle_timeout: Duration,
}

impl OpenAiClient {
    pub fn new(settings: &LlmSettings) -> anyhow::Result<OpenAiClient> {
        Ok(OpenAiClient {
            http: http_client()?,
            url: format!("{}/chat/completions", settings.base_url),
            api_key: settings.api_key.clone(),
            settings: settings.clone(),
            idle_timeout: STREAM_IDLE_TIMEOUT,
        })
    }
}

impl ModelClient for OpenAiClient {
    fn provider(&self) -> &'static str {
        "openai"
    }

    fn model_for(&self, agent: AgentName) -> String {
        self.settings.model_for(agent).to_string()
    }

    fn complete(&self, request: ModelRequest) -> BoxFuture<'static, Result<ModelAnswer, Error>> {
        let streaming = self.settings.streaming;
        let mut builder = self
            .http
            .post(&self.url)
            .json(&request_body(&request, streaming));
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key.expose());
        }
        if let Some(traceparent) = crate::telemetry::trace::current_traceparent() {
            builder = builder.header("traceparent", traceparent);
        }
        let api_key = self.api_key.clone();
        let idle_timeout = self.idle_timeout;
        let on_delta = request.on_delta;
        // Everything runs inside this future, nothing is spawned: dropping it
        // drops the response and so closes the connection.
        Box::pin(async move {
            if !streaming {
                let builder = builder.timeout(REQUEST_TIMEOUT);
                let response = send(builder, REQUEST_TIMEOUT, api_key.as_ref()).await?;
                return parse_answer(&read_json(response, REQUEST_TIMEOUT).await?);
            }
            let builder = builder.header(reqwest::header::ACCEPT, "text/event-stream");
            let response = send(builder, idle_timeout, api_key.as_ref()).await?;
            if is_json(&response) {
                // A server that cannot stream may ignore `stream` and answer
                // whole; watchers still get the text, in one piece.
                let answer = parse_answer(&read_json(response, REQUEST_TIMEOUT).await?)?;
                if let Some(sink) = &on_delta
                    && !answer.text.is_empty()
                {
                    sink(&answer.text);
                }
                return Ok(answer);
            }
            let mut answer = StreamedAnswer::default();
            sse::read_events(response, idle_timeout, |event| {
                answer.on_data(&event.data, on_delta.as_ref())
            })
            .await?;
            answer.finish()
        })
    }
}

/// Whether the response is a whole JSON answer rather than a stream.
fn is_json(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"))
}

/// The request body; `stream` asks for server-sent events, with the token
/// usage in a last chunk (OpenAI sends none in a stream otherwise).
fn request_body(request: &ModelRequest, stream: bool) -> Value {
    let mut messages = vec![json!({"role": "system", "content": request.system})];
    for message in request.messages.iter() {
        messages.push(match message {
            Message::User { text } => json!({"role": "user", "content": text}),
            Message::Assistant { text, tool_calls } => {
                let mut m = json!({"role": "assistant", "content": text});
                if !tool_calls.is_empty() {
                    m["tool_calls"] = tool_calls
                        .iter()
                        .map(|c| {
                            json!({
                                "id": c.call_id,
                                "type": "function",
                                "function": {"name": c.tool, "arguments": c.args.to_string()},
                            })
                        })
                        .collect();
                }
                m
            }
            Message::ToolResult {
                call_id, output, ..
            } => json!({"role": "tool", "tool_call_id": call_id, "content": output}),
        });
    }
    let mut body = json!({"model": request.model, "messages": messages});
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": &*t.parameters},
                })
            })
            .collect();
    }
    body
}

/// Reads a whole (non-streamed) answer.
fn parse_answer(body: &Value) -> Result<ModelAnswer, Error> {
    let message = &body["choices"][0]["message"];
    if !message.is_object() {
        return Err(Error::InvalidResponse(
            "no choices[0].message in the answer".into(),
        ));
    }
    let text = message["content"].as_str().unwrap_or_default().to_string();
    let mut tool_calls = Vec::new();
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let function = &call["function"];
        let Some(name) = function["name"].as_str() else {
            return Err(Error::InvalidResponse("a tool call without a name".into()));
        };
        tool_calls.push(RequestedCall {
            call_id: call["id"].as_str().map(str::to_string),
            tool: name.to_string(),
            args: parse_arguments(function["arguments"].as_str().unwrap_or("{}")),
        });
    }
    Ok(ModelAnswer {
        model: body["model"].as_str().unwrap_or_default().to_string(),
        text,
        tool_calls,
        usage: parse_usage(&body["usage"]),
    })
}

/// A tool call's arguments, which OpenAI sends as JSON text. Arguments that
/// are not JSON reach the tool as a string, and the tool tells the model what
/// is wrong with them; none at all means an empty object.
fn parse_arguments(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.into()))
    }
}

fn parse_usage(usage: &Value) -> Usage {
    Usage {
        input_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0),
        output_tokens: usage["completion_tokens"].as_u64().unwrap_or(0),
    }
}

/// An answer being assembled from stream chunks. Pure: fed one event's data
/// at a time, so the tests drive it without HTTP.
#[derive(Debug, Default)]
struct StreamedAnswer {
    /// The model that answered, from the first chunk that names it.
    model: String,
    /// The text so far; each piece also went to the delta sink.
    text: String,
    /// Tool calls by the `index` the fragments carry; a `BTreeMap` so they
    /// come out in that order however the fragments interleave.
    calls: BTreeMap<u64, PartialCall>,
    /// Set by the chunk that ends the choice (`stop`, `tool_calls`, `length`).
    finish_reason: Option<String>,
    /// From the last chunk, whose `choices` is empty.
    usage: Usage,
    /// `data: [DONE]` arrived: the stream ended as it should.
    done: bool,
}

/// One tool call as far as its fragments have arrived.
#[derive(Debug, Default)]
struct PartialCall {
    /// From the first fragment.
    id: Option<String>,
    /// From the first fragment.
    name: String,
    /// The JSON text, concatenated exactly as the pieces arrive.
    arguments: String,
}

impl StreamedAnswer {
    /// Takes one event's data; text goes to `on_delta` as it comes.
    fn on_data(&mut self, data: &str, on_delta: Option<&DeltaSink>) -> Result<Flow, Error> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(Flow::Stop);
        }
        let chunk: Value = serde_json::from_str(data).map_err(|error| {
            Error::InvalidResponse(format!("a stream chunk is not JSON ({error})"))
        })?;
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            return Err(stream_error(error));
        }
        // vLLM and others may send their error object bare.
        if chunk["object"] == "error" {
            return Err(stream_error(&chunk));
        }
        if self.model.is_empty()
            && let Some(model) = chunk["model"].as_str()
        {
            self.model = model.to_string();
        }
        if chunk["usage"].is_object() {
            self.usage = parse_usage(&chunk["usage"]);
        }
        // Only one choice is asked for; the usage chunk has none.
        let Some(choice) = chunk["choices"].get(0) else {
            return Ok(Flow::Continue);
        };
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str()
            && !text.is_empty()
        {
            self.text.push_str(text);
            if let Some(sink) = on_delta {
                sink(text);
            }
        }
        for (position, fragment) in delta["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            // `index` is how fragments find their call; a server that leaves
            // it out sends each call whole, in order.
            let index = fragment["index"].as_u64().unwrap_or(position as u64);
            let call = self.calls.entry(index).or_default();
            if call.id.is_none() {
                call.id = fragment["id"]
                    .as_str()
                    .filter(|id| !id.is_empty())
                    .map(str::to_string);
            }
            // Set once: some compatible servers repeat the name in every
            // fragment, and it never arrives in pieces.
            if call.name.is_empty()
                && let Some(name) = fragment["function"]["name"].as_str()
            {
                call.name = name.to_string();
            }
            if let Some(piece) = fragment["function"]["arguments"].as_str() {
                call.arguments.push_str(piece);
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(reason.to_string());
        }
        Ok(Flow::Continue)
    }

    /// The answer, once the stream has ended.
    fn finish(self) -> Result<ModelAnswer, Error> {
        // A finish reason without `[DONE]` is a complete answer from a server
        // that closes early; neither means the stream broke off.
        if !self.done && self.finish_reason.is_none() {
            return Err(Error::Connection(
                "the answer stream ended before the answer was complete".into(),
            ));
        }
        if let Some(reason) = &self.finish_reason {
            tracing::debug!(finish_reason = %reason, "model answer streamed");
        }
        let mut tool_calls = Vec::with_capacity(self.calls.len());
        for call in self.calls.into_values() {
            if call.name.is_empty() {
                return Err(Error::InvalidResponse("a tool call without a name".into()));
            }
            tool_calls.push(RequestedCall {
                call_id: call.id,
                tool: call.name,
                args: parse_arguments(&call.arguments),
            });
        }
        Ok(ModelAnswer {
            model: self.model,
            text: self.text,
            tool_calls,
            usage: self.usage,
        })
    }
}

/// An error object inside the stream, sent after the `200`. A client error
/// with a code (a bad request found late) will fail again; anything else is
/// the provider's trouble and worth another attempt.
fn stream_error(error: &Value) -> Error {
    let message = shorten(error["message"].as_str().unwrap_or("no error message"));
    let code = error["code"]
        .as_u64()
        .or_else(|| error["code"].as_str().and_then(|c| c.parse().ok()));
    match code {
        Some(code) if (400..500).contains(&code) && code != 408 && code != 429 => {
            Error::InvalidResponse(format!(
                "the provider failed the stream ({code}): {message}"
            ))
        }
        _ => Error::Connection(format!("the provider broke off the stream: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::LlmProvider;
    use crate::llm::ToolCall;
    use crate::llm::error_message;
    use crate::llm::sse::SseParser;
    use crate::llm::sse::testing::{Canned, serve};

    fn settings(base_url: &str, streaming: bool) -> LlmSettings {
        LlmSettings {
            provider: LlmProvider::OpenAi,
            model: "gpt-x".into(),
            agent_models: HashMap::new(),
            base_url: base_url.into(),
            api_key: Some(Secret::new("sk-test-key".into())),
            streaming,
        }
    }

    fn conversation_request(on_delta: Option<DeltaSink>) -> ModelRequest {
        ModelRequest {
            run_id: uuid::Uuid::nil(),
            agent: AgentName::Coding,
            model: "m".into(),
            system: "sys".into(),
            messages: std::sync::Arc::new(vec![
                Message::User {
                    text: "task".into(),
                },
                Message::Assistant {
                    text: "Looking.".into(),
                    tool_calls: vec![
                        ToolCall {
                            call_id: "c1".into(),
                            tool: "list_files".into(),
                            args: json!({"path": "."}),
                        },
                        ToolCall {
                            call_id: "c2".into(),
                            tool: "read_file".into(),
                            args: json!({"path": "a.txt"}),
                        },
                    ],
                },
                Message::ToolResult {
                    call_id: "c1".into(),
                    tool: "list_files".into(),
                    ok: true,
                    output: "a.txt".into(),
                },
                Message::ToolResult {
                    call_id: "c2".into(),
                    tool: "read_file".into(),
                    ok: false,
                    output: "no such file".into(),
                },
            ]),
            tools: vec![crate::tools::spec("list_files").unwrap()],
            on_delta,
        }
    }

    /// A sink that records every delta.
    fn recording_sink() -> (DeltaSink, Arc<Mutex<Vec<String>>>) {
        let deltas = Arc::new(Mutex::new(Vec::new()));
        let log = deltas.clone();
        let sink: DeltaSink = Arc::new(move |text: &str| log.lock().unwrap().push(text.into()));
        (sink, deltas)
    }

    /// An event stream of the given chunks, as OpenAI writes it.
    fn sse(chunks: &[Value]) -> String {
        chunks
            .iter()
            .map(|chunk| format!("data: {chunk}\n\n"))
            .collect::<String>()
            + "data: [DONE]\n\n"
    }

    fn content(text: &str) -> Value {
        json!({"model": "gpt-x-2024", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    }

    fn tool_fragment(index: u64, id: Option<&str>, name: Option<&str>, arguments: &str) -> Value {
        let mut fragment = json!({"index": index, "function": {"arguments": arguments}});
        if let Some(id) = id {
            fragment["id"] = json!(id);
            fragment["type"] = json!("function");
        }
        if let Some(name) = name {
            fragment["function"]["name"] = json!(name);
        }
        json!({"model": "gpt-x-2024", "choices": [{"index": 0, "delta": {"tool_calls": [fragment]}, "finish_reason": null}]})
    }

    fn finish(reason: &str) -> Value {
        json!({"model": "gpt-x-2024", "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
    }

    fn usage(input: u64, output: u64) -> Value {
        json!({"model": "gpt-x-2024", "choices": [], "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}})
    }

    /// A stream with text and two tool calls whose fragments interleave, the
    /// arguments split into awkward pieces.
    fn tool_stream() -> String {
        sse(&[
            json!({"model": "gpt-x-2024", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}),
            content("Let me "),
            content("look ✓."),
            tool_fragment(0, Some("call_a"), Some("shell"), ""),
            tool_fragment(0, None, None, "{\"comm"),
            tool_fragment(1, Some("call_b"), Some("read_file"), "{\"pa"),
            tool_fragment(0, None, None, "and\": \"ls -l"),
            tool_fragment(1, None, None, "th\": \"é.txt\"}"),
            tool_fragment(0, None, None, "a\"}"),
            finish("tool_calls"),
            usage(42, 17),
        ])
    }

    /// Feeds `stream` in pieces of `size` bytes, as the HTTP reader would.
    fn feed(stream: &str, size: usize, sink: Option<&DeltaSink>) -> Result<ModelAnswer, Error> {
        let mut parser = SseParser::new();
        let mut answer = StreamedAnswer::default();
        for piece in stream.as_bytes().chunks(size) {
            let flow = parser.feed(piece, &mut |event| answer.on_data(&event.data, sink))?;
            if flow == Flow::Stop {
                break;
            }
        }
        answer.finish()
    }

    #[test]
    fn the_request_carries_the_conversation_and_tools() {
        let request = conversation_request(None);
        let body = request_body(&request, false);
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "sys"})
        );
        assert_eq!(
            body["messages"][1],
            json!({"role": "user", "content": "task"})
        );
        assert_eq!(body["messages"][2]["content"], "Looking.");
        assert_eq!(body["messages"][2]["tool_calls"][0]["id"], "c1");
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"path\":\".\"}"
        );
        assert_eq!(
            body["messages"][2]["tool_calls"][1]["function"]["name"],
            "read_file"
        );
        assert_eq!(
            body["messages"][3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "a.txt"})
        );
        assert_eq!(body["messages"][4]["tool_call_id"], "c2");
        assert_eq!(body["tools"][0]["function"]["name"], "list_files");
        assert!(body["tools"][0]["function"]["parameters"].is_object());
        assert!(body.get("stream").is_none());

        let body = request_body(&request, true);
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn answers_with_tool_calls_and_usage_parse() {
        let body = json!({
            "model": "gpt-x",
            "choices": [{"message": {"content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":\"ls\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "read_file", "arguments": "not json"}},
                {"id": "call_3", "type": "function", "function": {"name": "list_files", "arguments": ""}}
            ]}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3}
        });
        let answer = parse_answer(&body).unwrap();
        assert_eq!(answer.model, "gpt-x");
        assert_eq!(answer.text, "");
        assert_eq!(answer.tool_calls.len(), 3);
        assert_eq!(answer.tool_calls[0].call_id.as_deref(), Some("call_1"));
        assert_eq!(answer.tool_calls[0].args, json!({"command": "ls"}));
        assert_eq!(answer.tool_calls[1].args, json!("not json"));
        assert_eq!(answer.tool_calls[2].args, json!({}));
        assert_eq!(
            answer.usage,
            Usage {
                input_tokens: 12,
                output_tokens: 3
            }
        );
        assert!(parse_answer(&json!({"choices": []})).is_err());
    }

    #[test]
    fn a_text_answer_parses() {
        let body = json!({
            "model": "gpt-x",
            "choices": [{"message": {"role": "assistant", "content": "Done."}, "finish_reason": "stop"}],
        });
        let answer = parse_answer(&body).unwrap();
        assert_eq!(answer.text, "Done.");
        assert!(answer.tool_calls.is_empty());
        assert_eq!(answer.usage, Usage::default());
    }

    #[test]
    fn provider_errors_keep_their_message_but_never_the_key() {
        let key = Secret::new("sk-test-key".into());
        assert_eq!(
            error_message(r#"{"error":{"message":"bad model"}}"#, Some(&key)),
            "bad model"
        );
        assert_eq!(
            error_message(
                r#"{"error":{"message":"Incorrect API key provided: sk-test-key."}}"#,
                Some(&key)
            ),
            "Incorrect API key provided: ***."
        );
        assert_eq!(error_message("  upstream down ", None), "upstream down");
        assert_eq!(error_message("", None), "no error message");
        assert_eq!(error_message(&"x".repeat(2000), None).len(), 500);
    }

    #[test]
    fn streamed_text_reaches_the_sink_in_order_however_the_stream_is_cut() {
        let stream = sse(&[
            content("Hel"),
            content("lo, "),
            content("wörld ✓"),
            finish("stop"),
            usage(5, 4),
        ]);
        for size in [1, 2, 3, 5, 7, 64, stream.len()] {
            let (sink, deltas) = recording_sink();
            let answer = feed(&stream, size, Some(&sink)).unwrap();
            assert_eq!(answer.text, "Hello, wörld ✓", "pieces of {size}");
            assert_eq!(*deltas.lock().unwrap(), ["Hel", "lo, ", "wörld ✓"]);
            assert_eq!(answer.model, "gpt-x-2024");
            assert!(answer.tool_calls.is_empty());
            assert_eq!(
                answer.usage,
                Usage {
                    input_tokens: 5,
                    output_tokens: 4
                }
            );
        }
    }

    #[test]
    fn streamed_tool_calls_are_assembled_exactly_and_in_index_order() {
        let stream = tool_stream();
        for size in [1, 3, 10, 100, stream.len()] {
            let (sink, deltas) = recording_sink();
            let answer = feed(&stream, size, Some(&sink)).unwrap();
            assert_eq!(answer.text, "Let me look ✓.");
            // Tool-call JSON is not text: it never reaches the sink.
            assert_eq!(deltas.lock().unwrap().concat(), "Let me look ✓.");
            assert_eq!(
                answer.tool_calls,
                vec![
                    RequestedCall {
                        call_id: Some("call_a".into()),
                        tool: "shell".into(),
                        args: json!({"command": "ls -la"}),
                    },
                    RequestedCall {
                        call_id: Some("call_b".into()),
                        tool: "read_file".into(),
                        args: json!({"path": "é.txt"}),
                    },
                ],
                "pieces of {size}"
            );
            assert_eq!(
                answer.usage,
                Usage {
                    input_tokens: 42,
                    output_tokens: 17
                }
            );
        }
    }

    #[test]
    fn an_error_inside_the_stream_fails_the_call() {
        let stream = format!(
            "{}data: {}\n\n",
            sse(&[content("partial")]).trim_end_matches("data: [DONE]\n\n"),
            json!({"error": {"message": "The server had an error", "type": "server_error"}})
        );
        let error = feed(&stream, 4, None).unwrap_err();
        assert!(matches!(&error, Error::Connection(m) if m.contains("The server had an error")));
        assert!(error.is_retryable());

        let bad_request = json!({"object": "error", "message": "context too long", "type": "BadRequestError", "code": 400});
        for chunk in [json!({"error": bad_request}), bad_request] {
            let error = feed(&format!("data: {chunk}\n\n"), 4, None).unwrap_err();
            assert!(matches!(&error, Error::InvalidResponse(m) if m.contains("context too long")));
            assert!(!error.is_retryable());
        }

        let error = feed("data: {not json\n\n", 4, None).unwrap_err();
        assert!(matches!(error, Error::InvalidResponse(_)));
    }

    #[test]
    fn a_truncated_stream_is_a_retryable_connection_error() {
        let whole = tool_stream();
        // Cut before the finish reason: mid-arguments, mid-line, mid-event.
        let cut = whole.find("\"finish_reason\":\"tool_calls\"").unwrap();
        for end in [0, 10, whole.len() / 2, cut] {
            let error = feed(&whole[..end], 7, None).unwrap_err();
            assert!(matches!(error, Error::Connection(_)), "cut at {end}");
            assert!(error.is_retryable());
        }
    }

    #[test]
    fn a_finish_reason_without_done_is_a_complete_answer() {
        let stream = format!("data: {}\n\ndata: {}\n\n", content("ok"), finish("stop"));
        assert_eq!(feed(&stream, 5, None).unwrap().text, "ok");
    }

    #[actix_web::test]
    async fn a_streamed_answer_over_http() {
        let (url, seen) = serve(Canned::stream(&tool_stream(), 9));
        let client = OpenAiClient::new(&settings(&url, true)).unwrap();
        let (sink, deltas) = recording_sink();

        let answer = client
            .complete(conversation_request(Some(sink)))
            .await
            .unwrap();

        assert_eq!(answer.text, "Let me look ✓.");
        assert_eq!(deltas.lock().unwrap().concat(), "Let me look ✓.");
        assert_eq!(answer.tool_calls.len(), 2);
        assert_eq!(answer.tool_calls[0].args, json!({"command": "ls -la"}));
        assert_eq!(answer.usage.input_tokens, 42);
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].path, "/chat/completions");
        assert_eq!(seen[0].header("authorization"), Some("Bearer sk-test-key"));
        assert_eq!(seen[0].header("accept"), Some("text/event-stream"));
        assert_eq!(seen[0].body["stream"], true);
        assert_eq!(seen[0].body["model"], "m");
    }

    #[actix_web::test]
    async fn a_whole_answer_over_http() {
        let body = json!({
            "model": "gpt-x",
            "choices": [{"message": {"content": "Hi", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":\"ls\"}"}}
            ]}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3}
        });
        let (url, seen) = serve(Canned::json(200, &body));
        let client = OpenAiClient::new(&settings(&format!("{url}/v1"), false)).unwrap();

        let answer = client.complete(conversation_request(None)).await.unwrap();

        assert_eq!(answer.text, "Hi");
        assert_eq!(answer.tool_calls[0].tool, "shell");
        assert_eq!(answer.usage.output_tokens, 3);
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].path, "/v1/chat/completions");
        assert_eq!(seen[0].header("authorization"), Some("Bearer sk-test-key"));
        assert!(seen[0].body.get("stream").is_none());
    }

    #[actix_web::test]
    async fn a_server_that_cannot_stream_may_answer_whole() {
        let body = json!({"model": "local", "choices": [{"message": {"content": "Whole."}}]});
        let (url, _) = serve(Canned::json(200, &body));
        let client = OpenAiClient::new(&settings(&url, true)).unwrap();
        let (sink, deltas) = recording_sink();

        let answer = client
            .complete(conversation_request(Some(sink)))
            .await
            .unwrap();

        assert_eq!(answer.text, "Whole.");
        assert_eq!(*deltas.lock().unwrap(), ["Whole."]);
    }

    #[actix_web::test]
    async fn rate_limits_carry_retry_after() {
        for streaming in [true, false] {
            let mut canned = Canned::json(
                429,
                &json!({"error": {"message": "Rate limit reached", "type": "requests"}}),
            );
            canned.headers.push(("retry-after", "2"));
            let (url, _) = serve(canned);
            let client = OpenAiClient::new(&settings(&url, streaming)).unwrap();

            let error = client
                .complete(conversation_request(None))
                .await
                .unwrap_err();

            assert!(
                matches!(&error, Error::Status { status: 429, message, retry_after: Some(wait) }
                    if message == "Rate limit reached" && *wait == Duration::from_secs(2)),
                "{error:?}"
            );
            assert!(error.is_retryable());
        }
    }

    #[actix_web::test]
    async fn a_bad_request_keeps_the_providers_message() {
        let (url, _) = serve(Canned::json(
            400,
            &json!({"error": {"message": "Invalid model 'm'", "type": "invalid_request_error"}}),
        ));
        let client = OpenAiClient::new(&settings(&url, true)).unwrap();

        let error = client
            .complete(conversation_request(None))
            .await
            .unwrap_err();

        assert!(
            matches!(&error, Error::Status { status: 400, message, retry_after: None }
                if message == "Invalid model 'm'"),
            "{error:?}"
        );
        assert!(!error.is_retryable());
        assert!(!error.to_string().contains("sk-test-key"));
    }

    #[actix_web::test]
    async fn a_silent_stream_times_out_and_a_cut_one_is_retryable() {
        let mut canned = Canned::stream(&format!("data: {}\n\n", content("Hel")), 4);
        canned.hang = true;
        let (url, _) = serve(canned);
        let mut client = OpenAiClient::new(&settings(&url, true)).unwrap();
        client.idle_timeout = Duration::from_millis(300);
        let (sink, deltas) = recording_sink();

        let error = client
            .complete(conversation_request(Some(sink)))
            .await
            .unwrap_err();

        assert!(matches!(error, Error::Timeout(_)), "{error:?}");
        assert_eq!(*deltas.lock().unwrap(), ["Hel"]);

        let (url, _) = serve(Canned::stream(&format!("data: {}\n\n", content("Hel")), 4));
        let client = OpenAiClient::new(&settings(&url, true)).unwrap();
        let error = client
            .complete(conversation_request(None))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Connection(_)), "{error:?}");
    }

    #[actix_web::test]
    async fn dropping_the_call_closes_the_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A bare TCP server, so the test sees exactly when the client closes:
        // it sends one event, then keeps silent and waits for end-of-file.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = vec![0; 64 * 1024];
            let _request = socket.read(&mut buffer).await.unwrap();
            let event = format!("data: {}\n\n", content("Hel"));
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            let chunk = format!("{:x}\r\n{event}\r\n", event.len());
            socket.write_all(head.as_bytes()).await.unwrap();
            socket.write_all(chunk.as_bytes()).await.unwrap();
            // Anything more the client sends is the rest of its request;
            // the read that returns 0 is the connection closing.
            loop {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => return std::time::Instant::now(),
                    Ok(_) => {}
                }
            }
        });
        let client = OpenAiClient::new(&settings(&url, true)).unwrap();
        let (sink, deltas) = recording_sink();
        let mut call = client.complete(conversation_request(Some(sink)));

        let outcome = tokio::time::timeout(Duration::from_millis(300), &mut call).await;
        assert!(
            outcome.is_err(),
            "the stream never ends, so the call cannot"
        );
        assert_eq!(*deltas.lock().unwrap(), ["Hel"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !server.is_finished(),
            "the connection is open while the call lives"
        );
        let dropped_at = std::time::Instant::now();
        drop(call);

        let closed_at = tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .expect("the connection closes when the call is dropped")
            .unwrap();
        assert!(closed_at >= dropped_at);
    }

    #[actix_web::test]
    async fn an_unreachable_server_is_a_connection_error() {
        // A port that was free a moment ago: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client =
            OpenAiClient::new(&settings(&format!("http://127.0.0.1:{port}"), true)).unwrap();
        let error = client
            .complete(conversation_request(None))
            .await
            .unwrap_err();
        assert!(matches!(&error, Error::Connection(_)), "{error:?}");
        assert!(error.is_retryable());
    }
}
