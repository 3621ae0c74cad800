//! The Anthropic Messages wire format as mock-llm speaks it: requests read
//! into the shared conversation view, answers written as one `message` or
//! as the event stream (`message_start`, content blocks with `text_delta`
//! and `input_json_delta` pieces, `message_delta`, `message_stop`), and
//! errors as `{"type": "error", "error": {"type", "message"}}`.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::conversation::{CallView, ChatRequest, Conversation, Turn, content_text};
use super::fixtures::Protocol;
use super::script::{Answer, pieces};

/// The model named when a request names none.
const DEFAULT_MODEL: &str = "mock-llm";

/// Reads a request body; the error is the message of a 400, worded like
/// Anthropic's. Like the real API it insists that every `tool_use` gets its
/// `tool_result` in the very next user message.
pub fn parse_request(body: &Value) -> Result<ChatRequest, String> {
    let messages = body["messages"]
        .as_array()
        .ok_or("messages: Field required (an array of messages)")?;
    let mut conversation = Conversation {
        system: content_text(&body["system"]),
        turns: Vec::new(),
    };
    // Tool names by `tool_use` id, for results that only carry the id.
    let mut names_by_id: HashMap<String, String> = HashMap::new();
    // The previous assistant message's calls still waiting for results.
    let mut unanswered: Vec<String> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let content = &message["content"];
        match message["role"].as_str().unwrap_or_default() {
            "user" => {
                let blocks = match content {
                    Value::Array(blocks) => blocks.as_slice(),
                    _ => &[],
                };
                for block in blocks.iter().filter(|b| b["type"] == "tool_result") {
                    let id = block["tool_use_id"].as_str().unwrap_or_default();
                    let Some(position) = unanswered.iter().position(|waiting| waiting == id) else {
                        return Err(format!(
                            "messages.{index}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                        ));
                    };
                    unanswered.remove(position);
                    conversation.turns.push(Turn::ToolResult {
                        tool: names_by_id.get(id).cloned().unwrap_or_default(),
                        text: content_text(&block["content"]),
                    });
                }
                if !unanswered.is_empty() {
                    return Err(missing_results(index, &unanswered));
                }
                let text = content_text(content);
                let only_results =
                    !blocks.is_empty() && blocks.iter().all(|block| block["type"] == "tool_result");
                if !only_results {
                    conversation.turns.push(Turn::User { text });
                }
            }
            "assistant" => {
                if !unanswered.is_empty() {
                    return Err(missing_results(index, &unanswered));
                }
                let mut tool_calls = Vec::new();
                let blocks = content.as_array().map(Vec::as_slice).unwrap_or_default();
                for block in blocks.iter().filter(|b| b["type"] == "tool_use") {
                    let id = block["id"]
                        .as_str()
                        .ok_or(format!("messages.{index}: a `tool_use` block has no `id`"))?;
                    let name = block["name"].as_str().ok_or(format!(
                        "messages.{index}: `tool_use` block `{id}` has no `name`"
                    ))?;
                    names_by_id.insert(id.to_string(), name.to_string());
                    unanswered.push(id.to_string());
                    tool_calls.push(CallView {
                        name: name.to_string(),
                        arguments: block["input"].clone(),
                    });
                }
                conversation.turns.push(Turn::Assistant {
                    text: content_text(content),
                    tool_calls,
                });
            }
            other => {
                return Err(format!(
                    "messages.{index}.role: Input should be 'user' or 'assistant', not `{other}`"
                ));
            }
        }
    }
    if !unanswered.is_empty() {
        return Err(missing_results(messages.len(), &unanswered));
    }
    Ok(ChatRequest {
        protocol: Protocol::Anthropic,
        model: body["model"].as_str().unwrap_or(DEFAULT_MODEL).to_string(),
        stream: body["stream"].as_bool().unwrap_or(false),
        include_usage: true,
        conversation,
    })
}

fn missing_results(index: usize, unanswered: &[String]) -> String {
    format!(
        "messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
        unanswered.join(", ")
    )
}

/// The whole answer as one `message`.
pub fn response(answer: &Answer) -> Value {
    let mut content = Vec::new();
    if !answer.text.is_empty() {
        content.push(json!({"type": "text", "text": answer.text}));
    }
    for call in &answer.tool_calls {
        content.push(json!({
            "type": "tool_use",
            "id": call.id(Protocol::Anthropic),
            "name": call.name,
            "input": call.arguments
        }));
    }
    json!({
        "id": answer.response_id(Protocol::Anthropic),
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": content,
        "stop_reason": stop_reason(answer),
        "stop_sequence": null,
        "usage": {
            "input_tokens": answer.usage.input_tokens,
            "output_tokens": answer.usage.output_tokens
        }
    })
}

/// The answer as server-sent events, each a complete `event: …\ndata: …\n\n`
/// frame, in the order the real API sends them (a `ping` included, so
/// clients prove they skip events they do not know).
pub fn stream_events(answer: &Answer) -> Vec<String> {
    let mut events = vec![
        frame(
            "message_start",
            &json!({
                "type": "message_start",
                "message": {
                    "id": answer.response_id(Protocol::Anthropic),
                    "type": "message",
                    "role": "assistant",
                    "model": answer.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {"input_tokens": answer.usage.input_tokens, "output_tokens": 0}
                }
            }),
        ),
        frame("ping", &json!({"type": "ping"})),
    ];
    let mut index = 0;
    if !answer.text.is_empty() {
        events.push(block_start(index, json!({"type": "text", "text": ""})));
        for piece in pieces(&answer.text, answer.chunk_chars) {
            events.push(block_delta(
                index,
                json!({"type": "text_delta", "text": piece}),
            ));
        }
        events.push(block_stop(index));
        index += 1;
    }
    for call in &answer.tool_calls {
        events.push(block_start(
            index,
            json!({"type": "tool_use", "id": call.id(Protocol::Anthropic), "name": call.name, "input": {}}),
        ));
        for piece in pieces(&call.arguments_json(), answer.chunk_chars) {
            events.push(block_delta(
                index,
                json!({"type": "input_json_delta", "partial_json": piece}),
            ));
        }
        events.push(block_stop(index));
        index += 1;
    }
    events.push(frame(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(answer), "stop_sequence": null},
            "usage": {"output_tokens": answer.usage.output_tokens}
        }),
    ));
    events.push(frame("message_stop", &json!({"type": "message_stop"})));
    events
}

/// An error body as Anthropic sends it; the error type follows the status.
pub fn error_body(status: u16, message: &str) -> Value {
    let kind = match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

fn stop_reason(answer: &Answer) -> &'static str {
    if answer.calls_tools() {
        "tool_use"
    } else {
        "end_turn"
    }
}

fn block_start(index: usize, block: Value) -> String {
    frame(
        "content_block_start",
        &json!({"type": "content_block_start", "index": index, "content_block": block}),
    )
}

fn block_delta(index: usize, delta: Value) -> String {
    frame(
        "content_block_delta",
        &json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

fn block_stop(index: usize) -> String {
    frame(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": index}),
    )
}

fn frame(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_with_tool_results_reads_into_the_shared_view() {
        let body = json!({
            "model": "claude-test",
            "system": [{"type": "text", "text": "You are a log-analysis agent"}],
            "stream": true,
            "messages": [
                {"role": "user", "content": "Why the errors?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Looking."},
                    {"type": "tool_use", "id": "t1", "name": "loki_query", "input": {"query": "{job=\"a\"}"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "3 lines"}]},
                    {"type": "text", "text": "Also check the db."}
                ]}
            ]
        });
        let request = parse_request(&body).expect("valid request");
        assert_eq!(request.model, "claude-test");
        assert!(request.stream && request.include_usage);
        let conversation = &request.conversation;
        assert_eq!(conversation.system, "You are a log-analysis agent");
        assert_eq!(conversation.task(), "Why the errors?");
        assert_eq!(conversation.last_user(), "Also check the db.");
        assert_eq!(
            conversation.turns[1],
            Turn::Assistant {
                text: "Looking.".into(),
                tool_calls: vec![CallView {
                    name: "loki_query".into(),
                    arguments: json!({"query": "{job=\"a\"}"})
                }]
            }
        );
        assert_eq!(
            conversation.last_tool_result(),
            Some(("loki_query", "3 lines"))
        );
    }

    #[test]
    fn a_message_of_only_results_adds_no_user_turn() {
        let body = json!({"messages": [
            {"role": "user", "content": "task"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "list_files", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a"}]}
        ]});
        let request = parse_request(&body).expect("valid request");
        assert_eq!(request.conversation.turns.len(), 3);
        assert_eq!(request.conversation.last_user(), "task");
        assert_eq!(request.model, DEFAULT_MODEL);
        assert!(!request.stream);
    }

    #[test]
    fn malformed_conversations_are_refused() {
        let use_t1 = json!({"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shell", "input": {}}]});
        let cases = [
            (json!({}), "messages: Field required"),
            (
                json!({"messages": [{"role": "system", "content": "x"}]}),
                "Input should be 'user' or 'assistant'",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t9", "content": "x"}]}]}),
                "unexpected `tool_use_id` found in `tool_result` blocks: t9",
            ),
            (
                json!({"messages": [use_t1.clone(), {"role": "user", "content": "no results"}]}),
                "without `tool_result` blocks immediately after: t1",
            ),
            (
                json!({"messages": [use_t1]}),
                "without `tool_result` blocks immediately after: t1",
            ),
        ];
        for (body, expected) in cases {
            let error = parse_request(&body).expect_err(expected);
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn error_bodies_follow_the_status() {
        let body = error_body(429, "slow");
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(error_body(500, "x")["error"]["type"], "api_error");
        assert_eq!(error_body(529, "x")["error"]["type"], "overloaded_error");
    }
}
