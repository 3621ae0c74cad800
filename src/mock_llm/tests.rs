//! HTTP tests of mock-llm: a server on port 0 in this process, called with
//! reqwest, for both protocols, streaming and not, failures, the test hooks
//! and the default fixtures.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{MockLlmServer, defaults, parse, start};

/// Starts a server with the rules of a fixture document.
async fn server_with(fixtures: &str) -> MockLlmServer {
    let rules = parse("test", fixtures).expect("valid test fixtures");
    start("127.0.0.1:0", rules).await.expect("mock-llm starts")
}

async fn post(server: &MockLlmServer, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", server.url()))
        .json(body)
        .send()
        .await
        .expect("mock-llm answers")
}

async fn post_json(server: &MockLlmServer, path: &str, body: &Value) -> Value {
    let response = post(server, path, body).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("a JSON answer")
}

async fn post_text(server: &MockLlmServer, path: &str, body: &Value) -> String {
    let response = post(server, path, body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "streams are server-sent events"
    );
    response.text().await.expect("a streamed answer")
}

fn openai_request(system: &str, task: &str) -> Value {
    json!({"model": "gpt-test", "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": task}
    ]})
}

fn anthropic_request(system: &str, task: &str) -> Value {
    json!({"model": "claude-test", "max_tokens": 1024, "system": system, "messages": [
        {"role": "user", "content": task}
    ]})
}

/// The frames of a server-sent event stream, as `(event name, data)`.
fn frames(stream: &str) -> Vec<(Option<String>, String)> {
    stream
        .split("\n\n")
        .filter(|frame| !frame.trim().is_empty())
        .map(|frame| {
            let mut event = None;
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = Some(name.to_string());
                } else if let Some(payload) = line.strip_prefix("data: ") {
                    data.push_str(payload);
                } else {
                    panic!("unexpected line in an event stream: {line:?}");
                }
            }
            (event, data)
        })
        .collect()
}

/// An OpenAI stream, put back together the way a client must.
#[derive(Debug, Default)]
struct OpenAiAssembled {
    /// The `content` pieces joined.
    text: String,
    /// `(id, name, arguments)` by index.
    calls: Vec<(String, String, String)>,
    /// How many fragments carried each call's arguments.
    argument_fragments: Vec<usize>,
    /// How many non-empty `content` pieces there were.
    text_fragments: usize,
    /// The `finish_reason` of the finishing chunk.
    finish_reason: Option<String>,
    /// The usage of the `choices: []` chunk, if one came.
    usage: Option<Value>,
    /// Whether `[DONE]` came.
    done: bool,
}

fn assemble_openai(stream: &str) -> OpenAiAssembled {
    let mut out = OpenAiAssembled::default();
    let frames = frames(stream);
    assert_eq!(
        frames.last().map(|(_, data)| data.as_str()),
        Some("[DONE]"),
        "a stream ends with [DONE]"
    );
    for (event, data) in frames {
        assert_eq!(event, None, "OpenAI streams name no events");
        if data == "[DONE]" {
            out.done = true;
            continue;
        }
        assert!(!out.done, "nothing follows [DONE]");
        let chunk: Value = serde_json::from_str(&data).expect("a JSON chunk");
        assert_eq!(chunk["object"], "chat.completion.chunk");
        let choices = chunk["choices"].as_array().expect("choices");
        if choices.is_empty() {
            out.usage = Some(chunk["usage"].clone());
            continue;
        }
        let choice = &choices[0];
        if let Some(reason) = choice["finish_reason"].as_str() {
            out.finish_reason = Some(reason.to_string());
        }
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str()
            && !text.is_empty()
        {
            out.text.push_str(text);
            out.text_fragments += 1;
        }
        for fragment in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = fragment["index"].as_u64().expect("index") as usize;
            if index == out.calls.len() {
                let id = fragment["id"]
                    .as_str()
                    .expect("the first fragment has the id");
                let name = fragment["function"]["name"]
                    .as_str()
                    .expect("the first fragment has the name");
                assert_eq!(fragment["type"], "function");
                out.calls.push((id.into(), name.into(), String::new()));
                out.argument_fragments.push(0);
            } else {
                assert!(
                    fragment.get("id").is_none() && fragment["function"].get("name").is_none(),
                    "later fragments carry only arguments: {fragment}"
                );
            }
            let piece = fragment["function"]["arguments"].as_str().unwrap_or("");
            if !piece.is_empty() {
                out.calls[index].2.push_str(piece);
                out.argument_fragments[index] += 1;
            }
        }
    }
    out
}

/// An Anthropic stream, put back together the way a client must.
#[derive(Debug, Default)]
struct AnthropicAssembled {
    /// The event names in order.
    events: Vec<String>,
    /// The `text_delta` pieces joined.
    text: String,
    /// `(id, name, partial_json joined)` in block order.
    calls: Vec<(String, String, String)>,
    /// How many `input_json_delta` pieces each call's input came in.
    argument_fragments: Vec<usize>,
    /// From `message_delta`.
    stop_reason: Option<String>,
    /// From `message_start`.
    input_tokens: Option<u64>,
    /// From `message_delta`.
    output_tokens: Option<u64>,
}

fn assemble_anthropic(stream: &str) -> AnthropicAssembled {
    let mut out = AnthropicAssembled::default();
    let mut open_block: Option<(u64, String)> = None;
    for (event, data) in frames(stream) {
        let event = event.expect("Anthropic streams name every event");
        let data: Value = serde_json::from_str(&data).expect("JSON data");
        assert_eq!(
            data["type"],
            event.as_str(),
            "the data repeats the event name"
        );
        match event.as_str() {
            "message_start" => {
                out.input_tokens = data["message"]["usage"]["input_tokens"].as_u64();
            }
            "content_block_start" => {
                assert!(open_block.is_none(), "blocks do not nest");
                let block = &data["content_block"];
                let kind = block["type"].as_str().expect("a block type").to_string();
                if kind == "tool_use" {
                    out.calls.push((
                        block["id"].as_str().expect("id").into(),
                        block["name"].as_str().expect("name").into(),
                        String::new(),
                    ));
                    out.argument_fragments.push(0);
                }
                open_block = Some((data["index"].as_u64().expect("index"), kind));
            }
            "content_block_delta" => {
                let (index, kind) = open_block.as_ref().expect("a delta inside a block");
                assert_eq!(data["index"].as_u64(), Some(*index));
                let delta = &data["delta"];
                match (kind.as_str(), delta["type"].as_str()) {
                    ("text", Some("text_delta")) => {
                        out.text.push_str(delta["text"].as_str().expect("text"))
                    }
                    ("tool_use", Some("input_json_delta")) => {
                        let last = out.calls.len() - 1;
                        out.calls[last]
                            .2
                            .push_str(delta["partial_json"].as_str().expect("partial_json"));
                        out.argument_fragments[last] += 1;
                    }
                    other => panic!("unexpected delta {other:?}"),
                }
            }
            "content_block_stop" => {
                let (index, _) = open_block.take().expect("a stop closes a block");
                assert_eq!(data["index"].as_u64(), Some(index));
            }
            "message_delta" => {
                out.stop_reason = data["delta"]["stop_reason"].as_str().map(Into::into);
                out.output_tokens = data["usage"]["output_tokens"].as_u64();
            }
            "message_stop" | "ping" => {}
            other => panic!("unexpected event {other}"),
        }
        out.events.push(event);
    }
    out
}

/// Arguments with what breaks naive clients: quotes, backslashes, newlines,
/// non-ASCII characters, nesting.
fn tricky_arguments() -> Value {
    json!({
        "path": "notes/été → \"plan\".md",
        "content": "line 1\nline \"2\"\t\\ done ✓",
        "nested": {"list": [1, 2.5, null, true], "empty": {}}
    })
}

fn several_calls_fixture() -> String {
    json!([{
        "name": "several",
        "reply": {
            "text": "I will do three things.",
            "tool_calls": [
                {"name": "list_files", "arguments": {"path": "."}},
                {"name": "write_file", "arguments": tricky_arguments()},
                {"name": "shell", "arguments": {"command": "echo 'a' && ls -la | head -n 3"}}
            ]
        },
        "chunk_chars": 3
    }])
    .to_string()
}

#[actix_web::test]
async fn openai_answers_text_with_fixture_usage() {
    let server = server_with(
        r#"[{"reply": {"text": "Hello there.", "usage": {"input_tokens": 11, "output_tokens": 7}}}]"#,
    )
    .await;

    let body = post_json(&server, "/v1/chat/completions", &openai_request("s", "hi")).await;

    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-test");
    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Hello there.");
    assert!(choice["message"].get("tool_calls").is_none());
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})
    );
}

#[actix_web::test]
async fn openai_answers_one_tool_call() {
    let server = server_with(
        r#"[{"reply": {"tool_calls": [{"name": "read_file", "arguments": {"path": "README.md"}}]}}]"#,
    )
    .await;

    let request = openai_request("You are a test agent.", "Read the README, please.");

    let body = post_json(&server, "/v1/chat/completions", &request).await;

    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let calls = message["tool_calls"].as_array().expect("tool calls");
    assert_eq!(calls.len(), 1);
    assert!(
        calls[0]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_"))
    );
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "read_file");
    let arguments: Value = serde_json::from_str(
        calls[0]["function"]["arguments"]
            .as_str()
            .expect("a string"),
    )
    .expect("arguments are JSON text");
    assert_eq!(arguments, json!({"path": "README.md"}));
    // Estimated at four characters a token: 45 prompt characters, and the
    // call's name and arguments text (9 + 20 characters).
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})
    );
}

#[actix_web::test]
async fn openai_streams_several_tool_calls_in_small_fragments() {
    let server = server_with(&several_calls_fixture()).await;
    let mut request = openai_request("s", "do it");
    let whole = post_json(&server, "/v1/chat/completions", &request).await;
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});

    let stream = post_text(&server, "/v1/chat/completions", &request).await;

    let assembled = assemble_openai(&stream);
    assert!(stream.starts_with("data: {"), "{stream}");
    assert_eq!(assembled.text, "I will do three things.");
    assert!(assembled.text_fragments >= 7, "{assembled:?}");
    let names: Vec<_> = assembled.calls.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(names, ["list_files", "write_file", "shell"]);
    let whole_calls = whole["choices"][0]["message"]["tool_calls"]
        .as_array()
        .expect("tool calls");
    for (index, (id, _, arguments)) in assembled.calls.iter().enumerate() {
        assert!(id.starts_with("call_"));
        assert_eq!(
            arguments,
            whole_calls[index]["function"]["arguments"]
                .as_str()
                .expect("a string"),
            "streamed arguments join to exactly the whole answer's"
        );
        assert!(assembled.argument_fragments[index] > 1);
    }
    let tricky: Value = serde_json::from_str(&assembled.calls[1].2).expect("JSON");
    assert_eq!(tricky, tricky_arguments());
    let ids: std::collections::HashSet<_> = assembled.calls.iter().map(|c| &c.0).collect();
    assert_eq!(ids.len(), 3, "ids are distinct");
    assert_eq!(assembled.finish_reason.as_deref(), Some("tool_calls"));
    let usage = assembled.usage.expect("a usage chunk");
    assert_eq!(usage, whole["usage"], "usage is the same either way");
}

#[actix_web::test]
async fn openai_streams_text_and_sends_usage_only_when_asked() {
    let server = server_with(
        r#"[{"reply": {"text": "A streamed answer, in pieces.", "usage": {"input_tokens": 5, "output_tokens": 6}}, "chunk_chars": 5}]"#,
    )
    .await;
    let mut request = openai_request("s", "hi");
    request["stream"] = json!(true);

    let without = assemble_openai(&post_text(&server, "/v1/chat/completions", &request).await);
    request["stream_options"] = json!({"include_usage": true});
    let with = assemble_openai(&post_text(&server, "/v1/chat/completions", &request).await);

    assert_eq!(without.text, "A streamed answer, in pieces.");
    assert_eq!(without.text_fragments, 6);
    assert_eq!(without.finish_reason.as_deref(), Some("stop"));
    assert!(without.calls.is_empty());
    assert_eq!(without.usage, None);
    assert_eq!(with.text, without.text);
    assert_eq!(
        with.usage,
        Some(json!({"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}))
    );
}

#[actix_web::test]
async fn anthropic_answers_text_only() {
    let server = server_with(
        r#"[{"reply": {"text": "Plain answer.", "usage": {"input_tokens": 3, "output_tokens": 2}}}]"#,
    )
    .await;

    let body = post_json(&server, "/v1/messages", &anthropic_request("s", "hi")).await;

    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-test");
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("msg_")));
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "Plain answer."}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 3, "output_tokens": 2})
    );
}

#[actix_web::test]
async fn anthropic_answers_text_and_several_tool_calls() {
    let server = server_with(&several_calls_fixture()).await;

    let body = post_json(&server, "/v1/messages", &anthropic_request("s", "do it")).await;

    let content = body["content"].as_array().expect("content");
    assert_eq!(content.len(), 4);
    assert_eq!(
        content[0],
        json!({"type": "text", "text": "I will do three things."})
    );
    assert_eq!(content[2]["type"], "tool_use");
    assert_eq!(content[2]["name"], "write_file");
    assert_eq!(content[2]["input"], tricky_arguments());
    assert!(content[1..].iter().all(|block| {
        block["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("toolu_"))
    }));
    assert_eq!(body["stop_reason"], "tool_use");
    assert!(body["usage"]["input_tokens"].as_u64() > Some(0));
    assert!(body["usage"]["output_tokens"].as_u64() > Some(0));
}

#[actix_web::test]
async fn anthropic_streams_text_and_tool_input_in_small_fragments() {
    let server = server_with(&several_calls_fixture()).await;
    let whole = post_json(&server, "/v1/messages", &anthropic_request("s", "do it")).await;
    let mut request = anthropic_request("s", "do it");
    request["stream"] = json!(true);

    let stream = post_text(&server, "/v1/messages", &request).await;

    let assembled = assemble_anthropic(&stream);
    assert_eq!(
        assembled.events.first().map(String::as_str),
        Some("message_start")
    );
    assert_eq!(
        assembled.events.last().map(String::as_str),
        Some("message_stop")
    );
    assert_eq!(
        assembled.events[assembled.events.len() - 2],
        "message_delta"
    );
    assert_eq!(assembled.text, "I will do three things.");
    assert_eq!(assembled.calls.len(), 3);
    for (index, (id, name, partial_json)) in assembled.calls.iter().enumerate() {
        let block = &whole["content"][index + 1];
        assert!(id.starts_with("toolu_"));
        assert_eq!(name, block["name"].as_str().expect("name"));
        let input: Value = serde_json::from_str(partial_json).expect("joined JSON");
        assert_eq!(
            input, block["input"],
            "the pieces join to exactly the input"
        );
        assert!(assembled.argument_fragments[index] > 1);
    }
    assert_eq!(assembled.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(
        assembled.input_tokens,
        whole["usage"]["input_tokens"].as_u64()
    );
    assert_eq!(
        assembled.output_tokens,
        whole["usage"]["output_tokens"].as_u64()
    );
}

#[actix_web::test]
async fn a_failing_rule_answers_500_then_succeeds() {
    let server = server_with(
        r#"[{"name": "flaky", "reply": {"text": "finally"}, "fail": {"status": 500, "times": 2}}]"#,
    )
    .await;
    let request = openai_request("s", "hi");

    let first = post(&server, "/v1/chat/completions", &request).await;
    let second = post(&server, "/v1/chat/completions", &request).await;
    let third = post_json(&server, "/v1/chat/completions", &request).await;

    assert_eq!(first.status(), 500);
    assert!(first.headers().get("retry-after").is_none());
    let error: Value = first.json().await.expect("an error body");
    assert_eq!(error["error"]["type"], "server_error");
    assert_eq!(
        error["error"]["message"],
        "mock-llm: failure 1 of 2 injected by fixture `flaky`"
    );
    assert_eq!(second.status(), 500);
    assert_eq!(third["choices"][0]["message"]["content"], "finally");
    let statuses: Vec<_> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
}

#[actix_web::test]
async fn a_rate_limit_sends_retry_after_and_the_protocol_error_body() {
    let server = server_with(
        r#"[{"reply": {"text": "ok"}, "fail": {"status": 429, "times": 1, "retry_after": 7, "message": "slow down"}}]"#,
    )
    .await;
    let request = anthropic_request("s", "hi");

    let limited = post(&server, "/v1/messages", &request).await;
    let after = post_json(&server, "/v1/messages", &request).await;

    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "7");
    let error: Value = limited.json().await.expect("an error body");
    assert_eq!(
        error,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
    );
    assert_eq!(after["content"][0]["text"], "ok");
}

#[actix_web::test]
async fn malformed_requests_get_400_in_the_protocol_error_shape() {
    let server = server_with(r#"[{"reply": {"text": "ok"}}]"#).await;
    let client = reqwest::Client::new();

    let not_json = client
        .post(format!("{}/v1/chat/completions", server.url()))
        .body("{not json")
        .send()
        .await
        .expect("an answer");
    let orphan_result = post(
        &server,
        "/v1/messages",
        &json!({"messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_x", "content": "?"}
        ]}]}),
    )
    .await;

    assert_eq!(not_json.status(), 400);
    let error: Value = not_json.json().await.expect("an error body");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not valid JSON"))
    );
    assert_eq!(orphan_result.status(), 400);
    let error: Value = orphan_result.json().await.expect("an error body");
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    let recorded = server.requests();
    assert_eq!(recorded[0].body, json!("{not json"), "raw text is kept");
    assert_eq!(recorded[1].status, 400);
}

#[actix_web::test]
async fn requests_are_recorded_in_order_and_cleared() {
    let server = server_with(r#"[{"name": "only", "reply": {"text": "ok"}}]"#).await;
    let client = reqwest::Client::new();
    let openai = openai_request("s", "first");
    let anthropic = anthropic_request("s", "second");
    post_json(&server, "/v1/chat/completions", &openai).await;
    post_json(&server, "/v1/messages", &anthropic).await;

    let listed: Value = client
        .get(format!("{}/_mock/requests", server.url()))
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("JSON");
    let cleared = client
        .delete(format!("{}/_mock/requests", server.url()))
        .send()
        .await
        .expect("an answer");
    let after: Value = client
        .get(format!("{}/_mock/requests", server.url()))
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("JSON");

    assert_eq!(
        listed,
        json!({"requests": [
            {"protocol": "openai", "path": "/v1/chat/completions", "body": openai, "rule": "only", "status": 200},
            {"protocol": "anthropic", "path": "/v1/messages", "body": anthropic, "rule": "only", "status": 200}
        ]})
    );
    assert_eq!(cleared.status(), 204);
    assert_eq!(after, json!({"requests": []}));
    assert!(server.requests().is_empty());
}

#[actix_web::test]
async fn fixtures_are_replaced_at_run_time() {
    let server = server_with(r#"[{"name": "old", "reply": {"text": "old"}}]"#).await;
    let client = reqwest::Client::new();
    let url = format!("{}/_mock/fixtures", server.url());

    let replaced = client
        .post(&url)
        .body(r#"[{"name": "new", "reply": {"text": "new"}}]"#)
        .send()
        .await
        .expect("an answer");
    let refused = client
        .post(&url)
        .body(r#"[{"name": "bad", "reply": {"text": "x"}, "fail": {"status": 200, "times": 1}}]"#)
        .send()
        .await
        .expect("an answer");
    let body = post_json(&server, "/v1/chat/completions", &openai_request("s", "hi")).await;

    assert_eq!(replaced.status(), 200);
    assert_eq!(
        replaced.json::<Value>().await.expect("JSON"),
        json!({"rules": 1})
    );
    assert_eq!(refused.status(), 400);
    let error: Value = refused.json().await.expect("JSON");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("POST /_mock/fixtures, bad: `fail.status`")),
        "{error}"
    );
    assert_eq!(body["choices"][0]["message"]["content"], "new");
}

#[actix_web::test]
async fn rules_set_through_the_handle_reset_failure_counts() {
    let fixture = r#"[{"reply": {"text": "ok"}, "fail": {"status": 503, "times": 1}}]"#;
    let server = server_with(fixture).await;
    let request = openai_request("s", "hi");
    assert_eq!(
        post(&server, "/v1/chat/completions", &request)
            .await
            .status(),
        503
    );

    server.set_rules(parse("again", fixture).expect("valid"));

    assert_eq!(
        post(&server, "/v1/chat/completions", &request)
            .await
            .status(),
        503
    );
    assert_eq!(
        post(&server, "/v1/chat/completions", &request)
            .await
            .status(),
        200
    );
}

#[actix_web::test]
async fn an_unmatched_conversation_gets_a_plain_reply_naming_the_task() {
    let server =
        server_with(r#"[{"match": {"system_contains": "nobody"}, "reply": {"text": "x"}}]"#).await;

    let body = post_json(
        &server,
        "/v1/messages",
        &anthropic_request("s", "Tidy the repo"),
    )
    .await;

    assert_eq!(
        body["content"][0]["text"],
        "mock-llm: no fixture matched this conversation (first user message: \"Tidy the repo\")."
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(server.requests()[0].rule, None);
}

#[actix_web::test]
async fn latency_delays_the_answer_and_chunk_delay_paces_the_stream() {
    let server = server_with(
        r#"[{"match": {"task_contains": "slow"}, "reply": {"text": "late"}, "latency_ms": 300},
            {"reply": {"text": "0123456789"}, "chunk_chars": 1, "chunk_delay_ms": 30}]"#,
    )
    .await;
    let mut paced = openai_request("s", "paced");
    paced["stream"] = json!(true);

    let started = Instant::now();
    post_json(
        &server,
        "/v1/chat/completions",
        &openai_request("s", "slow"),
    )
    .await;
    let slow = started.elapsed();
    let started = Instant::now();
    let mut response = post(&server, "/v1/chat/completions", &paced).await;
    let first_chunk_after = started.elapsed();
    let mut chunks = 0;
    while response.chunk().await.expect("a chunk").is_some() {
        chunks += 1;
    }
    let streamed = started.elapsed();

    assert!(slow >= Duration::from_millis(300), "{slow:?}");
    assert!(
        first_chunk_after < streamed,
        "the answer starts before its paced end"
    );
    // Role, ten pieces, the finish and [DONE]: twelve pauses of 30 ms.
    assert!(streamed >= Duration::from_millis(12 * 30), "{streamed:?}");
    assert!(chunks > 1, "the events arrive separately");
}

/// On a plain Tokio runtime too, as the README promises.
#[tokio::test]
async fn health_and_unknown_routes() {
    let server = server_with(r#"[{"reply": {"text": "ok"}}]"#).await;
    let client = reqwest::Client::new();

    let health = client
        .get(format!("{}/healthz", server.url()))
        .send()
        .await
        .expect("an answer");
    let unknown = client
        .get(format!("{}/v1/models", server.url()))
        .send()
        .await
        .expect("an answer");

    assert_eq!(health.status(), 200);
    assert_eq!(unknown.status(), 404);
    server.stop().await;
}

#[actix_web::test]
async fn tool_call_ids_repeat_on_a_fresh_server_and_change_when_asked_again() {
    let fixture = r#"[{"reply": {"tool_calls": [{"name": "list_files"}]}}]"#;
    let request = openai_request("s", "hi");
    let id_of = |body: Value| body["choices"][0]["message"]["tool_calls"][0]["id"].clone();
    let one = server_with(fixture).await;
    let two = server_with(fixture).await;

    let first = id_of(post_json(&one, "/v1/chat/completions", &request).await);
    let fresh = id_of(post_json(&two, "/v1/chat/completions", &request).await);
    let again = id_of(post_json(&one, "/v1/chat/completions", &request).await);

    assert_eq!(first, fresh);
    assert_ne!(first, again);
    assert_ne!(one.port(), two.port());
}

/// A stand-in for running a tool, so conversations can go on.
fn fake_tool_output(name: &str) -> &'static str {
    match name {
        "list_files" => "README.md\nsrc/\n",
        "read_file" => "# Demo project\n",
        "shell" => "exit code 0\ntotal 8\n-rw-r--r-- 1 root root 15 README.md",
        "write_file" => "wrote 120 bytes to NOTES.md",
        "loki_query" => "2026-01-01T10:00:00Z {service=\"api\"} error: upstream timeout",
        "delegate" => "Summary of my work: all good.",
        _ => "unknown tool",
    }
}

/// One OpenAI step: asks, appends the answer and fake tool results to the
/// conversation, and returns the calls as `(name, arguments)` and the text.
async fn openai_step(
    server: &MockLlmServer,
    messages: &mut Vec<Value>,
) -> (Vec<(String, Value)>, String) {
    let body = post_json(
        server,
        "/v1/chat/completions",
        &json!({"model": "gpt-test", "messages": messages}),
    )
    .await;
    let message = body["choices"][0]["message"].clone();
    messages.push(message.clone());
    let mut calls = Vec::new();
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let name = call["function"]["name"].as_str().expect("name").to_string();
        let arguments: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().expect("a string"))
                .expect("JSON arguments");
        messages.push(
            json!({"role": "tool", "tool_call_id": call["id"], "content": fake_tool_output(&name)}),
        );
        calls.push((name, arguments));
    }
    let text = message["content"].as_str().unwrap_or_default().to_string();
    (calls, text)
}

#[actix_web::test]
async fn the_default_fixtures_drive_a_coding_conversation() {
    let server = start("127.0.0.1:0", defaults().expect("valid defaults"))
        .await
        .expect("mock-llm starts");
    let task = "Tidy up the project notes";
    let mut messages = vec![
        json!({"role": "system", "content": crate::agents::AgentName::Coding.system_prompt()}),
        json!({"role": "user", "content": task}),
    ];

    let mut steps = Vec::new();
    let final_text = loop {
        let (calls, text) = openai_step(&server, &mut messages).await;
        if calls.is_empty() {
            break text;
        }
        assert_eq!(calls.len(), 1);
        steps.extend(calls);
        assert!(steps.len() <= 4, "the script ends: {steps:?}");
    };

    let names: Vec<_> = steps.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["list_files", "read_file", "shell", "write_file"]);
    assert_eq!(steps[0].1, json!({"path": "."}));
    assert_eq!(steps[1].1, json!({"path": "README.md"}));
    assert_eq!(steps[2].1, json!({"command": "ls -la"}));
    assert_eq!(steps[3].1["path"], "NOTES.md");
    let notes = steps[3].1["content"].as_str().expect("content");
    assert!(
        notes.contains(task) && notes.contains("-rw-r--r--"),
        "{notes}"
    );
    assert!(final_text.starts_with("Summary of my work"), "{final_text}");
    let rules: Vec<_> = server
        .requests()
        .into_iter()
        .filter_map(|r| r.rule)
        .collect();
    assert_eq!(rules.len(), 5);
    assert!(
        rules.iter().all(|rule| rule.starts_with("coding: ")),
        "{rules:?}"
    );
}

#[actix_web::test]
async fn the_default_coding_script_adapts_to_a_rejected_command() {
    let server = start("127.0.0.1:0", defaults().expect("valid defaults"))
        .await
        .expect("mock-llm starts");
    let system = crate::agents::AgentName::Coding.system_prompt();
    let call = |id: &str, name: &str, arguments: &str| {
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}
        ]})
    };
    let messages = json!([
        {"role": "system", "content": system},
        {"role": "user", "content": "Check the repo"},
        call("c1", "shell", "{\"command\":\"ls -la\"}"),
        {"role": "tool", "tool_call_id": "c1", "content": "DENIED: a human rejected this `shell` call, so it was NOT run. Feedback: \"no\"."}
    ]);

    let body = post_json(
        &server,
        "/v1/chat/completions",
        &json!({"model": "m", "messages": messages}),
    )
    .await;

    let message = &body["choices"][0]["message"];
    assert!(
        message["content"]
            .as_str()
            .is_some_and(|t| t.contains("not approved"))
    );
    assert_eq!(message["tool_calls"][0]["function"]["name"], "write_file");
}

#[actix_web::test]
async fn the_default_fixtures_route_the_orchestrator_and_the_log_analyzer() {
    let server = start("127.0.0.1:0", defaults().expect("valid defaults"))
        .await
        .expect("mock-llm starts");
    let orchestrator = crate::agents::AgentName::Orchestrator.system_prompt();
    let log_analyzer = crate::agents::AgentName::LogAnalyzer.system_prompt();
    let first_call = |body: &Value| {
        let block = &body["content"][1];
        assert_eq!(block["type"], "tool_use", "{body}");
        (
            block["name"].clone(),
            block["input"].clone(),
            block["id"].clone(),
        )
    };

    let logs = post_json(
        &server,
        "/v1/messages",
        &anthropic_request(orchestrator, "Why is latency up since noon?"),
    )
    .await;
    let code = post_json(
        &server,
        "/v1/messages",
        &anthropic_request(orchestrator, "Add a CONTRIBUTING file"),
    )
    .await;
    let (_, _, delegate_id) = first_call(&logs);
    let report = post_json(
        &server,
        "/v1/messages",
        &json!({"model": "m", "system": orchestrator, "messages": [
            {"role": "user", "content": "Why is latency up since noon?"},
            {"role": "assistant", "content": logs["content"]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": delegate_id, "content": "Diagnosis: the db is slow."}]}
        ]}),
    )
    .await;
    let query = post_json(
        &server,
        "/v1/messages",
        &anthropic_request(log_analyzer, "Why is latency up since noon?"),
    )
    .await;
    let (_, _, query_id) = first_call(&query);
    let diagnosis = post_json(
        &server,
        "/v1/messages",
        &json!({"model": "m", "system": log_analyzer, "messages": [
            {"role": "user", "content": "Why is latency up since noon?"},
            {"role": "assistant", "content": query["content"]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": query_id, "content": fake_tool_output("loki_query")}]}
        ]}),
    )
    .await;

    assert_eq!(
        (first_call(&logs).0, first_call(&logs).1),
        (
            json!("delegate"),
            json!({"agent": "log-analyzer", "task": "Why is latency up since noon?"})
        )
    );
    assert_eq!(
        first_call(&code).1,
        json!({"agent": "coding", "task": "Add a CONTRIBUTING file"})
    );
    assert_eq!(report["stop_reason"], "end_turn");
    assert!(
        report["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("Diagnosis: the db is slow."))
    );
    assert_eq!(
        (first_call(&query).0, first_call(&query).1),
        (
            json!("loki_query"),
            json!({"query": "{job=~\".+\"} |= \"error\"", "since": "1h", "limit": 50})
        )
    );
    assert!(
        diagnosis["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("upstream timeout")),
        "{diagnosis}"
    );
}
