//! The Anthropic Messages API wire format, with tool use, against
//! `{LLM_BASE_URL}/v1/messages`: the conversation mapped to strictly
//! alternating user and assistant turns, answers streamed over server-sent
//! events or asked for whole (`LLM_STREAMING=false`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

use super::sse::{self, Flow, STREAM_IDLE_TIMEOUT, SseEvent};
use super::{
    DeltaSink, Error, Message, ModelAnswer, ModelClient, ModelRequest, REQUEST_TIMEOUT,
    RequestedCall, Usage, http_client, read_json, send, shorten,
};
use crate::agents::AgentName;
use crate::config::{LlmSettings, Secret};

/// The API version every request names; the event and block shapes parsed
/// here are those of this version.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The most tokens one answer may use; the API requires a limit. 8192 leaves
/// room for a whole file in a `write_file` call and is within the output
/// limit of every current Claude model (the Claude 3 Haiku and Opus models,
/// limited to 4096, need `LLM_MODEL` set to a newer one).
pub const MAX_TOKENS: u64 = 8192;

/// Sent as a tool result's content when the tool printed nothing: the API
/// has refused an empty `tool_result` content with `is_error` set, and a
/// placeholder is never wrong.
const EMPTY_OUTPUT: &str = "(no output)";

pub struct AnthropicClient {
    /// One connection pool for every call; it has no total timeout, each
    /// request sets its own.
    http: reqwest::Client,
    /// `{base_url}/v1/messages`, built once.
    url: String,
    /// Kept to scrub the key from provider messages that echo it.
    api_key: Option<Secret>,
    /// The `x-api-key` header value, checked once at start and marked
    /// sensitive so no debug output of the request shows it.
    key_header: Option<HeaderValue>,
    /// The per-agent models and whether to stream.
    settings: LlmSettings,
    /// How long a stream may stay silent; a field so tests can shorten it.
    idle_timeout: Duration,
}

impl AnthropicClient {
    pub fn new(settings: &LlmSettings) -> anyhow::Result<AnthropicClient> {
        let key_header = match &settings.api_key {
            Some(key) => {
                // The error names no part of the key.
                let mut value = HeaderValue::from_str(key.expose()).map_err(|_| {
                    anyhow::anyhow!(
                        "ANTHROPIC_API_KEY holds characters that cannot go in an HTTP header"
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(AnthropicClient {
            http: http_client()?,
            url: format!("{}/v1/messages", settings.base_url),
            api_key: settings.api_key.clone(),
            key_header,
            settings: settings.clone(),
            idle_timeout: STREAM_IDLE_TIMEOUT,
        })
    }
}

impl ModelClient for AnthropicClient {
    fn provider(&self) -> &'static str {
        "anthropic"
    }

    fn model_for(&self, agent: AgentName) -> String {
        self.settings.model_for(agent).to_string()
    }

    fn complete(&self, request: ModelRequest) -> BoxFuture<'static, Result<ModelAnswer, Error>> {
        let streaming = self.settings.streaming;
        let mut builder = self
            .http
            .post(&self.url)
            .header("anthropic-version", ANTHROPIC_VERSION)
            .json(&request_body(&request, streaming));
        if let Some(key) = &self.key_header {
            builder = builder.header("x-api-key", key.clone());
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
            let mut answer = StreamedAnswer::default();
            sse::read_events(response, idle_timeout, |event| {
                answer.on_event(&event, on_delta.as_ref())
            })
            .await?;
            answer.finish()
        })
    }
}

/// The request body.
fn request_body(request: &ModelRequest, stream: bool) -> Value {
    let mut body = json!({
        "model": request.model,
        "max_tokens": MAX_TOKENS,
        "messages": messages(&request.messages),
        "stream": stream,
    });
    // The API refuses an empty system text; no system prompt is the same.
    if !request.system.is_empty() {
        body["system"] = json!(request.system);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": &*tool.parameters,
                })
            })
            .collect();
    }
    body
}

/// The conversation as the API wants it: turns that alternate between user
/// and assistant, each a list of content blocks. Tool results are user
/// content, so results that follow each other (and any user text after
/// them) become one user turn, the results first.
fn messages(conversation: &[Message]) -> Vec<Value> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in conversation {
        let (role, blocks) = match message {
            Message::User { text } => ("user", text_block(text).into_iter().collect()),
            Message::Assistant { text, tool_calls } => {
                let mut blocks: Vec<Value> = text_block(text).into_iter().collect();
                blocks.extend(tool_calls.iter().map(|call| {
                    // The API takes only an object as input; arguments the
                    // model once sent as something else are kept, wrapped.
                    let input = if call.args.is_object() {
                        call.args.clone()
                    } else {
                        json!({"value": call.args})
                    };
                    json!({"type": "tool_use", "id": call.call_id, "name": call.tool, "input": input})
                }));
                ("assistant", blocks)
            }
            Message::ToolResult {
                call_id,
                ok,
                output,
                ..
            } => {
                let content = if output.is_empty() {
                    EMPTY_OUTPUT
                } else {
                    output
                };
                (
                    "user",
                    vec![json!({
                        "type": "tool_result",
                        "tool_use_id": call_id,
                        "content": content,
                        "is_error": !ok,
                    })],
                )
            }
        };
        // A turn with nothing to say would be refused; leaving it out lets
        // its neighbours merge instead.
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last_role, last_blocks)) if *last_role == role => last_blocks.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    turns
        .into_iter()
        .map(|(role, mut blocks)| {
            // Tool results must open their user turn; a stable sort keeps
            // each kind in its own order.
            blocks.sort_by_key(|block| block["type"] != "tool_result");
            json!({"role": role, "content": blocks})
        })
        .collect()
}

/// A text block, or none for text that is empty or only whitespace, which
/// the API refuses.
fn text_block(text: &str) -> Option<Value> {
    (!text.trim().is_empty()).then(|| json!({"type": "text", "text": text}))
}

/// Reads a whole (non-streamed) answer.
fn parse_answer(body: &Value) -> Result<ModelAnswer, Error> {
    let Some(content) = body["content"].as_array() else {
        return Err(Error::InvalidResponse("no content in the answer".into()));
    };
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in content {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => {
                let Some(name) = block["name"].as_str() else {
                    return Err(Error::InvalidResponse("a tool use without a name".into()));
                };
                tool_calls.push(RequestedCall {
                    call_id: block["id"].as_str().map(str::to_string),
                    tool: name.to_string(),
                    args: match &block["input"] {
                        Value::Null => json!({}),
                        input => input.clone(),
                    },
                });
            }
            // Thinking and other blocks are not part of the answer.
            _ => {}
        }
    }
    Ok(ModelAnswer {
        model: body["model"].as_str().unwrap_or_default().to_string(),
        text,
        tool_calls,
        usage: Usage {
            input_tokens: body["usage"]["input_tokens"].as_u64().unwrap_or(0),
            output_tokens: body["usage"]["output_tokens"].as_u64().unwrap_or(0),
        },
    })
}

/// An answer being assembled from stream events. Pure: fed one event at a
/// time, so the tests drive it without HTTP.
#[derive(Debug, Default)]
struct StreamedAnswer {
    /// From `message_start`.
    model: String,
    /// The text so far; each piece also went to the delta sink.
    text: String,
    /// Tool-use blocks by their content-block index; a `BTreeMap` so the
    /// calls come out in the order the model wrote them.
    tool_uses: BTreeMap<u64, ToolUse>,
    /// Input tokens from `message_start`, output tokens from the last
    /// `message_delta` (its count is cumulative).
    usage: Usage,
    /// From `message_delta`: why the model stopped.
    stop_reason: Option<String>,
    /// `message_stop` arrived: the stream ended as it should.
    stopped: bool,
}

/// One tool-use block as far as it has arrived.
#[derive(Debug)]
struct ToolUse {
    /// From `content_block_start`.
    id: String,
    /// From `content_block_start`.
    name: String,
    /// The input's JSON text, concatenated exactly as the pieces arrive.
    partial_json: String,
    /// The parsed input, once `content_block_stop` ends the block.
    input: Option<Value>,
}

impl ToolUse {
    /// Parses the input when the block is complete. No input at all is an
    /// empty object; input that is not JSON reaches the tool as a string,
    /// and the tool tells the model what is wrong with it.
    fn close(&mut self) {
        if self.input.is_some() {
            return;
        }
        let text = std::mem::take(&mut self.partial_json);
        self.input = Some(if text.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        });
    }
}

impl StreamedAnswer {
    /// Takes one event; text goes to `on_delta` as it comes.
    fn on_event(&mut self, event: &SseEvent, on_delta: Option<&DeltaSink>) -> Result<Flow, Error> {
        let data: Value = serde_json::from_str(&event.data).map_err(|error| {
            Error::InvalidResponse(format!("a stream event is not JSON ({error})"))
        })?;
        // The data names its own type; the event name says the same.
        let kind = data["type"]
            .as_str()
            .or(event.event.as_deref())
            .unwrap_or_default();
        match kind {
            "message_start" => {
                let message = &data["message"];
                self.model = message["model"].as_str().unwrap_or_default().to_string();
                self.usage.input_tokens = message["usage"]["input_tokens"].as_u64().unwrap_or(0);
                self.usage.output_tokens = message["usage"]["output_tokens"].as_u64().unwrap_or(0);
            }
            "content_block_start" => {
                let index = block_index(&data)?;
                let block = &data["content_block"];
                match block["type"].as_str() {
                    Some("text") => {
                        self.add_text(block["text"].as_str().unwrap_or_default(), on_delta)
                    }
                    Some("tool_use") => {
                        let Some(name) = block["name"].as_str() else {
                            return Err(Error::InvalidResponse("a tool use without a name".into()));
                        };
                        self.tool_uses.insert(
                            index,
                            ToolUse {
                                id: block["id"].as_str().unwrap_or_default().to_string(),
                                name: name.to_string(),
                                partial_json: String::new(),
                                input: None,
                            },
                        );
                    }
                    // Thinking and other blocks are not part of the answer.
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        self.add_text(delta["text"].as_str().unwrap_or_default(), on_delta)
                    }
                    Some("input_json_delta") => {
                        let index = block_index(&data)?;
                        let Some(tool_use) = self.tool_uses.get_mut(&index) else {
                            return Err(Error::InvalidResponse(format!(
                                "tool input for content block {index}, which is not a tool use"
                            )));
                        };
                        tool_use
                            .partial_json
                            .push_str(delta["partial_json"].as_str().unwrap_or_default());
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some(tool_use) = self.tool_uses.get_mut(&block_index(&data)?) {
                    tool_use.close();
                }
            }
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(reason.to_string());
                }
                let usage = &data["usage"];
                if let Some(output) = usage["output_tokens"].as_u64() {
                    self.usage.output_tokens = output;
                }
                // Newer versions may repeat the input count here, cumulative.
                if let Some(input) = usage["input_tokens"].as_u64() {
                    self.usage.input_tokens = input;
                }
            }
            "message_stop" => {
                self.stopped = true;
                return Ok(Flow::Stop);
            }
            "error" => return Err(stream_error(&data["error"])),
            // `ping` keeps the connection alive; event types added later are
            // to be ignored, as Anthropic's versioning policy asks.
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn add_text(&mut self, text: &str, on_delta: Option<&DeltaSink>) {
        if text.is_empty() {
            return;
        }
        self.text.push_str(text);
        if let Some(sink) = on_delta {
            sink(text);
        }
    }

    /// The answer, once the stream has ended.
    fn finish(self) -> Result<ModelAnswer, Error> {
        // A stop reason without `message_stop` is a complete answer from a
        // proxy that closes early; neither means the stream broke off.
        if !self.stopped && self.stop_reason.is_none() {
            return Err(Error::Connection(
                "the answer stream ended before the answer was complete".into(),
            ));
        }
        if let Some(reason) = &self.stop_reason {
            tracing::debug!(stop_reason = %reason, "model answer streamed");
        }
        let tool_calls = self
            .tool_uses
            .into_values()
            .map(|mut tool_use| {
                tool_use.close();
                RequestedCall {
                    call_id: Some(tool_use.id).filter(|id| !id.is_empty()),
                    tool: tool_use.name,
                    args: tool_use.input.unwrap_or_else(|| json!({})),
                }
            })
            .collect();
        Ok(ModelAnswer {
            model: self.model,
            text: self.text,
            tool_calls,
            usage: self.usage,
        })
    }
}

fn block_index(data: &Value) -> Result<u64, Error> {
    data["index"]
        .as_u64()
        .ok_or_else(|| Error::InvalidResponse("a content-block event without an index".into()))
}

/// An `error` event inside the stream, sent after the `200`. Its type is
/// mapped to the status the same error gets before a stream starts, so
/// `overloaded_error` (529) and `api_error` (500) are retried like those.
fn stream_error(error: &Value) -> Error {
    let kind = error["type"].as_str().unwrap_or_default();
    let message = shorten(error["message"].as_str().unwrap_or("no error message"));
    let status = match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "api_error" => 500,
        "overloaded_error" => 529,
        // An error type this code does not know is most likely the
        // provider's trouble: worth another attempt.
        _ => {
            return Error::Connection(format!(
                "the provider broke off the stream ({kind}): {message}"
            ));
        }
    };
    Error::Status {
        status,
        message,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::LlmProvider;
    use crate::llm::ToolCall;
    use crate::llm::sse::SseParser;
    use crate::llm::sse::testing::{Canned, serve};

    fn settings(base_url: &str, streaming: bool) -> LlmSettings {
        LlmSettings {
            provider: LlmProvider::Anthropic,
            model: "claude-x".into(),
            agent_models: HashMap::new(),
            base_url: base_url.into(),
            api_key: Some(Secret::new("sk-ant-test-key".into())),
            streaming,
        }
    }

    fn call(id: &str, tool: &str, args: Value) -> ToolCall {
        ToolCall {
            call_id: id.into(),
            tool: tool.into(),
            args,
        }
    }

    fn result(id: &str, ok: bool, output: &str) -> Message {
        Message::ToolResult {
            call_id: id.into(),
            tool: "t".into(),
            ok,
            output: output.into(),
        }
    }

    fn request_with(messages: Vec<Message>, on_delta: Option<DeltaSink>) -> ModelRequest {
        ModelRequest {
            run_id: uuid::Uuid::nil(),
            agent: AgentName::Coding,
            model: "claude-m".into(),
            system: "sys".into(),
            messages: std::sync::Arc::new(messages),
            tools: vec![crate::tools::spec("list_files").unwrap()],
            on_delta,
        }
    }

    fn conversation_request(on_delta: Option<DeltaSink>) -> ModelRequest {
        request_with(
            vec![
                Message::User {
                    text: "task".into(),
                },
                Message::Assistant {
                    text: "Looking.".into(),
                    tool_calls: vec![
                        call("toolu_1", "list_files", json!({"path": "."})),
                        call("toolu_2", "shell", json!("ls")),
                    ],
                },
                result("toolu_1", true, "a.txt"),
                result("toolu_2", false, ""),
            ],
            on_delta,
        )
    }

    /// A sink that records every delta.
    fn recording_sink() -> (DeltaSink, Arc<Mutex<Vec<String>>>) {
        let deltas = Arc::new(Mutex::new(Vec::new()));
        let log = deltas.clone();
        let sink: DeltaSink = Arc::new(move |text: &str| log.lock().unwrap().push(text.into()));
        (sink, deltas)
    }

    /// An event stream of the given events, as Anthropic writes it: each
    /// named after the type its data carries.
    fn sse(events: &[Value]) -> String {
        events
            .iter()
            .map(|data| {
                format!(
                    "event: {}\ndata: {data}\n\n",
                    data["type"].as_str().unwrap()
                )
            })
            .collect()
    }

    fn text_delta(index: u64, text: &str) -> Value {
        json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}})
    }

    fn json_delta(index: u64, partial_json: &str) -> Value {
        json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": partial_json}})
    }

    fn block_start(index: u64, block: Value) -> Value {
        json!({"type": "content_block_start", "index": index, "content_block": block})
    }

    fn block_stop(index: u64) -> Value {
        json!({"type": "content_block_stop", "index": index})
    }

    fn message_start() -> Value {
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x-2025", "content": [], "stop_reason": null, "usage": {"input_tokens": 25, "output_tokens": 1}}})
    }

    /// Text, then two tool uses whose input arrives in awkward pieces, with
    /// pings in between.
    fn tool_stream() -> String {
        sse(&[
            message_start(),
            block_start(0, json!({"type": "text", "text": ""})),
            json!({"type": "ping"}),
            text_delta(0, "Let me "),
            text_delta(0, "look ✓."),
            block_stop(0),
            block_start(
                1,
                json!({"type": "tool_use", "id": "toolu_a", "name": "shell", "input": {}}),
            ),
            json_delta(1, ""),
            json_delta(1, "{\"comm"),
            json_delta(1, "and\": \"ls -l"),
            json_delta(1, "a\"}"),
            block_stop(1),
            block_start(
                2,
                json!({"type": "tool_use", "id": "toolu_b", "name": "read_file", "input": {}}),
            ),
            json_delta(2, "{\"pa"),
            json_delta(2, "th\": \"é.txt\"}"),
            block_stop(2),
            block_start(
                3,
                json!({"type": "tool_use", "id": "toolu_c", "name": "list_files", "input": {}}),
            ),
            block_stop(3),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 89}}),
            json!({"type": "message_stop"}),
        ])
    }

    /// Feeds `stream` in pieces of `size` bytes, as the HTTP reader would.
    fn feed(stream: &str, size: usize, sink: Option<&DeltaSink>) -> Result<ModelAnswer, Error> {
        let mut parser = SseParser::new();
        let mut answer = StreamedAnswer::default();
        for piece in stream.as_bytes().chunks(size) {
            let flow = parser.feed(piece, &mut |event| answer.on_event(&event, sink))?;
            if flow == Flow::Stop {
                break;
            }
        }
        answer.finish()
    }

    #[test]
    fn the_request_carries_the_conversation_and_tools() {
        let body = request_body(&conversation_request(None), true);
        assert_eq!(body["model"], "claude-m");
        assert_eq!(body["max_tokens"], MAX_TOKENS);
        assert_eq!(body["system"], "sys");
        assert_eq!(body["stream"], true);
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "task"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Looking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "list_files", "input": {"path": "."}},
                    {"type": "tool_use", "id": "toolu_2", "name": "shell", "input": {"value": "ls"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt", "is_error": false},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": EMPTY_OUTPUT, "is_error": true},
                ]},
            ])
        );
        assert_eq!(body["tools"][0]["name"], "list_files");
        assert!(body["tools"][0]["description"].is_string());
        assert!(body["tools"][0]["input_schema"].is_object());
        assert_eq!(
            request_body(&conversation_request(None), false)["stream"],
            false
        );
    }

    #[test]
    fn turns_alternate_and_tool_results_open_their_turn() {
        let request = request_with(
            vec![
                Message::User {
                    text: "first".into(),
                },
                Message::User {
                    text: "second".into(),
                },
                Message::Assistant {
                    text: String::new(),
                    tool_calls: vec![call("t1", "list_files", json!({}))],
                },
                result("t1", true, "x"),
                Message::User {
                    text: "and a note".into(),
                },
                Message::Assistant {
                    text: " \n".into(),
                    tool_calls: vec![],
                },
                Message::Assistant {
                    text: "Thinking".into(),
                    tool_calls: vec![],
                },
                Message::Assistant {
                    text: "Done".into(),
                    tool_calls: vec![call("t2", "shell", json!({"command": "ls"}))],
                },
                Message::User {
                    text: "before the result".into(),
                },
                result("t2", false, "denied"),
            ],
            None,
        );
        let mut request = request;
        request.system = String::new();
        request.tools.clear();

        let body = request_body(&request, false);

        assert!(body.get("system").is_none());
        assert!(body.get("tools").is_none());
        let messages = body["messages"].as_array().unwrap();
        let roles: Vec<&str> = messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "assistant", "user", "assistant", "user"]);
        assert_eq!(
            messages[0]["content"],
            json!([{"type": "text", "text": "first"}, {"type": "text", "text": "second"}])
        );
        // An empty text is left out rather than sent empty.
        assert_eq!(
            messages[1]["content"],
            json!([{"type": "tool_use", "id": "t1", "name": "list_files", "input": {}}])
        );
        assert_eq!(
            messages[2]["content"],
            json!([
                {"type": "tool_result", "tool_use_id": "t1", "content": "x", "is_error": false},
                {"type": "text", "text": "and a note"},
            ])
        );
        assert_eq!(
            messages[3]["content"],
            json!([
                {"type": "text", "text": "Thinking"},
                {"type": "text", "text": "Done"},
                {"type": "tool_use", "id": "t2", "name": "shell", "input": {"command": "ls"}},
            ])
        );
        assert_eq!(
            messages[4]["content"],
            json!([
                {"type": "tool_result", "tool_use_id": "t2", "content": "denied", "is_error": true},
                {"type": "text", "text": "before the result"},
            ])
        );
    }

    #[test]
    fn whole_answers_parse() {
        let text_only = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x-2025",
            "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 10, "output_tokens": 2}
        });
        let answer = parse_answer(&text_only).unwrap();
        assert_eq!(answer.model, "claude-x-2025");
        assert_eq!(answer.text, "Hello there");
        assert!(answer.tool_calls.is_empty());
        assert_eq!(
            answer.usage,
            Usage {
                input_tokens: 10,
                output_tokens: 2
            }
        );

        let one_call = json!({
            "model": "claude-x-2025",
            "content": [
                {"type": "text", "text": "Listing."},
                {"type": "tool_use", "id": "toolu_1", "name": "list_files", "input": {"path": "."}}
            ],
            "usage": {"input_tokens": 10, "output_tokens": 20}
        });
        let answer = parse_answer(&one_call).unwrap();
        assert_eq!(
            answer.tool_calls,
            vec![RequestedCall {
                call_id: Some("toolu_1".into()),
                tool: "list_files".into(),
                args: json!({"path": "."}),
            }]
        );

        let several = json!({
            "model": "claude-x-2025",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "tool_use", "id": "toolu_1", "name": "shell", "input": {"command": "ls"}},
                {"type": "tool_use", "id": "toolu_2", "name": "read_file", "input": {"path": "a"}},
                {"type": "tool_use", "id": "toolu_3", "name": "list_files"}
            ],
            "usage": {"input_tokens": 1, "output_tokens": 2}
        });
        let answer = parse_answer(&several).unwrap();
        assert_eq!(answer.text, "");
        let names: Vec<&str> = answer.tool_calls.iter().map(|c| c.tool.as_str()).collect();
        assert_eq!(names, ["shell", "read_file", "list_files"]);
        assert_eq!(answer.tool_calls[2].args, json!({}));

        assert!(parse_answer(&json!({"type": "message"})).is_err());
    }

    #[test]
    fn streamed_text_reaches_the_sink_in_order_however_the_stream_is_cut() {
        let stream = sse(&[
            message_start(),
            block_start(0, json!({"type": "text", "text": ""})),
            text_delta(0, "Hel"),
            text_delta(0, "lo, "),
            text_delta(0, "wörld ✓"),
            block_stop(0),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 15}}),
            json!({"type": "message_stop"}),
        ]);
        for size in [1, 2, 3, 5, 7, 64, stream.len()] {
            let (sink, deltas) = recording_sink();
            let answer = feed(&stream, size, Some(&sink)).unwrap();
            assert_eq!(answer.text, "Hello, wörld ✓", "pieces of {size}");
            assert_eq!(*deltas.lock().unwrap(), ["Hel", "lo, ", "wörld ✓"]);
            assert_eq!(answer.model, "claude-x-2025");
            assert_eq!(
                answer.usage,
                Usage {
                    input_tokens: 25,
                    output_tokens: 15
                }
            );
        }
    }

    #[test]
    fn streamed_tool_input_is_assembled_exactly_and_in_block_order() {
        let stream = tool_stream();
        for size in [1, 3, 10, 100, stream.len()] {
            let (sink, deltas) = recording_sink();
            let answer = feed(&stream, size, Some(&sink)).unwrap();
            assert_eq!(answer.text, "Let me look ✓.");
            // Tool input is not text: it never reaches the sink.
            assert_eq!(deltas.lock().unwrap().concat(), "Let me look ✓.");
            assert_eq!(
                answer.tool_calls,
                vec![
                    RequestedCall {
                        call_id: Some("toolu_a".into()),
                        tool: "shell".into(),
                        args: json!({"command": "ls -la"}),
                    },
                    RequestedCall {
                        call_id: Some("toolu_b".into()),
                        tool: "read_file".into(),
                        args: json!({"path": "é.txt"}),
                    },
                    RequestedCall {
                        call_id: Some("toolu_c".into()),
                        tool: "list_files".into(),
                        args: json!({}),
                    },
                ],
                "pieces of {size}"
            );
            assert_eq!(
                answer.usage,
                Usage {
                    input_tokens: 25,
                    output_tokens: 89
                }
            );
        }
    }

    #[test]
    fn an_error_event_fails_the_call() {
        let overloaded = sse(&[
            message_start(),
            block_start(0, json!({"type": "text", "text": ""})),
            text_delta(0, "partial"),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ]);
        let error = feed(&overloaded, 6, None).unwrap_err();
        assert!(
            matches!(&error, Error::Status { status: 529, message, .. } if message == "Overloaded"),
            "{error:?}"
        );
        assert!(error.is_retryable());

        let invalid = sse(&[
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long"}}),
        ]);
        let error = feed(&invalid, 6, None).unwrap_err();
        assert!(
            matches!(&error, Error::Status { status: 400, .. }),
            "{error:?}"
        );
        assert!(!error.is_retryable());

        let unknown =
            sse(&[json!({"type": "error", "error": {"type": "brand_new_error", "message": "?"}})]);
        assert!(feed(&unknown, 6, None).unwrap_err().is_retryable());

        let error = feed("event: message_start\ndata: {oops\n\n", 6, None).unwrap_err();
        assert!(matches!(error, Error::InvalidResponse(_)));
    }

    #[test]
    fn a_truncated_stream_is_a_retryable_connection_error() {
        let whole = tool_stream();
        let cut = whole.find("event: message_delta").unwrap();
        for end in [0, 10, whole.len() / 2, cut] {
            let error = feed(&whole[..end], 7, None).unwrap_err();
            assert!(matches!(error, Error::Connection(_)), "cut at {end}");
            assert!(error.is_retryable());
        }
        // Cut just before `message_stop`: the stop reason already arrived.
        let end = whole.find("event: message_stop").unwrap();
        assert_eq!(feed(&whole[..end], 7, None).unwrap().tool_calls.len(), 3);
    }

    #[test]
    fn unknown_events_and_blocks_are_ignored() {
        let stream = sse(&[
            message_start(),
            block_start(0, json!({"type": "thinking", "thinking": ""})),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "x"}}),
            block_stop(0),
            json!({"type": "some_future_event", "index": 9}),
            block_start(1, json!({"type": "text", "text": "Hi"})),
            block_stop(1),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}),
            json!({"type": "message_stop"}),
        ]);
        let (sink, deltas) = recording_sink();
        let answer = feed(&stream, 11, Some(&sink)).unwrap();
        assert_eq!(answer.text, "Hi");
        assert_eq!(*deltas.lock().unwrap(), ["Hi"]);
        assert!(answer.tool_calls.is_empty());
    }

    #[actix_web::test]
    async fn a_streamed_answer_over_http() {
        let (url, seen) = serve(Canned::stream(&tool_stream(), 13));
        let client = AnthropicClient::new(&settings(&url, true)).unwrap();
        let (sink, deltas) = recording_sink();

        let answer = client
            .complete(conversation_request(Some(sink)))
            .await
            .unwrap();

        assert_eq!(answer.text, "Let me look ✓.");
        assert_eq!(deltas.lock().unwrap().concat(), "Let me look ✓.");
        assert_eq!(answer.tool_calls.len(), 3);
        assert_eq!(answer.tool_calls[1].args, json!({"path": "é.txt"}));
        assert_eq!(answer.usage.output_tokens, 89);
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].path, "/v1/messages");
        assert_eq!(seen[0].header("x-api-key"), Some("sk-ant-test-key"));
        assert_eq!(seen[0].header("anthropic-version"), Some(ANTHROPIC_VERSION));
        assert_eq!(seen[0].header("authorization"), None);
        assert_eq!(seen[0].body["stream"], true);
        assert_eq!(seen[0].body["model"], "claude-m");
    }

    #[actix_web::test]
    async fn a_whole_answer_over_http() {
        let body = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x-2025",
            "content": [
                {"type": "text", "text": "Listing."},
                {"type": "tool_use", "id": "toolu_1", "name": "list_files", "input": {"path": "."}}
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 20}
        });
        let (url, seen) = serve(Canned::json(200, &body));
        let client = AnthropicClient::new(&settings(&url, false)).unwrap();

        let answer = client.complete(conversation_request(None)).await.unwrap();

        assert_eq!(answer.text, "Listing.");
        assert_eq!(answer.tool_calls[0].call_id.as_deref(), Some("toolu_1"));
        assert_eq!(answer.usage.input_tokens, 10);
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].path, "/v1/messages");
        assert_eq!(seen[0].header("x-api-key"), Some("sk-ant-test-key"));
        assert_eq!(seen[0].header("anthropic-version"), Some(ANTHROPIC_VERSION));
        assert_eq!(seen[0].body["stream"], false);
    }

    #[actix_web::test]
    async fn rate_limits_carry_retry_after() {
        for streaming in [true, false] {
            let mut canned = Canned::json(
                429,
                &json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your rate limit"}}),
            );
            canned.headers.push(("retry-after", "2"));
            let (url, _) = serve(canned);
            let client = AnthropicClient::new(&settings(&url, streaming)).unwrap();

            let error = client
                .complete(conversation_request(None))
                .await
                .unwrap_err();

            assert!(
                matches!(&error, Error::Status { status: 429, message, retry_after: Some(wait) }
                    if message.starts_with("Number of request tokens") && *wait == Duration::from_secs(2)),
                "{error:?}"
            );
            assert!(error.is_retryable());
        }
    }

    #[actix_web::test]
    async fn a_bad_request_keeps_the_providers_message() {
        let (url, _) = serve(Canned::json(
            400,
            &json!({"type": "error", "error": {"type": "invalid_request_error", "message": "messages: roles must alternate"}}),
        ));
        let client = AnthropicClient::new(&settings(&url, true)).unwrap();

        let error = client
            .complete(conversation_request(None))
            .await
            .unwrap_err();

        assert!(
            matches!(&error, Error::Status { status: 400, message, retry_after: None }
                if message == "messages: roles must alternate"),
            "{error:?}"
        );
        assert!(!error.is_retryable());
    }

    #[actix_web::test]
    async fn overloaded_is_retryable() {
        let (url, _) = serve(Canned::json(
            529,
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ));
        let client = AnthropicClient::new(&settings(&url, false)).unwrap();

        let error = client
            .complete(conversation_request(None))
            .await
            .unwrap_err();

        assert!(
            matches!(&error, Error::Status { status: 529, .. }),
            "{error:?}"
        );
        assert!(error.is_retryable());
    }

    #[actix_web::test]
    async fn a_silent_stream_times_out() {
        let mut canned = Canned::stream(
            &sse(&[
                message_start(),
                block_start(0, json!({"type": "text", "text": ""})),
                text_delta(0, "Hel"),
            ]),
            5,
        );
        canned.hang = true;
        let (url, _) = serve(canned);
        let mut client = AnthropicClient::new(&settings(&url, true)).unwrap();
        client.idle_timeout = Duration::from_millis(300);
        let (sink, deltas) = recording_sink();

        let error = client
            .complete(conversation_request(Some(sink)))
            .await
            .unwrap_err();

        assert!(matches!(error, Error::Timeout(_)), "{error:?}");
        assert!(error.is_retryable());
        assert_eq!(*deltas.lock().unwrap(), ["Hel"]);
    }
}
