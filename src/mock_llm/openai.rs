//! The OpenAI Chat Completions wire format as mock-llm speaks it: requests
//! read into the shared conversation view, answers written as one
//! `chat.completion` or as a stream of `chat.completion.chunk` events, and
//! errors as `{"error": {"message", "type", ...}}`.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::conversation::{CallView, ChatRequest, Conversation, Turn, content_text};
use super::fixtures::Protocol;
use super::script::{Answer, pieces};

/// The model named when a request names none.
const DEFAULT_MODEL: &str = "mock-llm";

/// Reads a request body; the error is the message of a 400, worded like
/// OpenAI's. Like the real API it refuses a conversation whose tool calls
/// and tool results do not pair up, so client bugs show here first.
pub fn parse_request(body: &Value) -> Result<ChatRequest, String> {
    let messages = body["messages"]
        .as_array()
        .ok_or("`messages` is required and must be an array")?;
    let mut conversation = Conversation::default();
    let mut system_parts = Vec::new();
    // Tool names by call id, for the `tool` messages that only carry the id.
    let mut names_by_id: HashMap<String, String> = HashMap::new();
    // Calls of the latest assistant message still waiting for their result.
    let mut unanswered: Vec<String> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        if role != "tool" && !unanswered.is_empty() {
            return Err(format!(
                "messages[{index}]: an assistant message with `tool_calls` must be followed by tool messages responding to each `tool_call_id`; missing {}",
                unanswered.join(", ")
            ));
        }
        match role {
            "system" | "developer" => system_parts.push(content_text(&message["content"])),
            "user" => conversation.turns.push(Turn::User {
                text: content_text(&message["content"]),
            }),
            "assistant" => {
                let mut tool_calls = Vec::new();
                for call in message["tool_calls"].as_array().into_iter().flatten() {
                    let id = call["id"]
                        .as_str()
                        .ok_or(format!("messages[{index}]: a tool call has no `id`"))?;
                    let name = call["function"]["name"].as_str().ok_or(format!(
                        "messages[{index}]: tool call `{id}` has no `function.name`"
                    ))?;
                    let arguments = call["function"]["arguments"].as_str().unwrap_or_default();
                    names_by_id.insert(id.to_string(), name.to_string());
                    unanswered.push(id.to_string());
                    tool_calls.push(CallView {
                        name: name.to_string(),
                        // A client may have kept arguments it could not
                        // parse; they still count as sent.
                        arguments: serde_json::from_str(arguments)
                            .unwrap_or_else(|_| Value::String(arguments.to_string())),
                    });
                }
                conversation.turns.push(Turn::Assistant {
                    text: content_text(&message["content"]),
                    tool_calls,
                });
            }
            "tool" => {
                let id = message["tool_call_id"].as_str().unwrap_or_default();
                let Some(position) = unanswered.iter().position(|waiting| waiting == id) else {
                    return Err(format!(
                        "messages[{index}]: messages with role 'tool' must be a response to a preceding message with 'tool_calls' (no open call has id `{id}`)"
                    ));
                };
                unanswered.remove(position);
                conversation.turns.push(Turn::ToolResult {
                    tool: names_by_id.get(id).cloned().unwrap_or_default(),
                    text: content_text(&message["content"]),
                });
            }
            other => {
                return Err(format!(
                    "messages[{index}]: unsupported role `{other}`; expected system, developer, user, assistant or tool"
                ));
            }
        }
    }
    if !unanswered.is_empty() {
        return Err(format!(
            "the conversation ends with tool calls that have no tool message: {}",
            unanswered.join(", ")
        ));
    }
    conversation.system = system_parts.join("\n\n");
    Ok(ChatRequest {
        protocol: Protocol::OpenAi,
        model: body["model"].as_str().unwrap_or(DEFAULT_MODEL).to_string(),
        stream: body["stream"].as_bool().unwrap_or(false),
        include_usage: body["stream_options"]["include_usage"]
            .as_bool()
            .unwrap_or(false),
        conversation,
    })
}

/// The whole answer as one `chat.completion`.
pub fn response(answer: &Answer) -> Value {
    let mut message = json!({"role": "assistant", "content": content(answer)});
    if answer.calls_tools() {
        message["tool_calls"] = answer
            .tool_calls
            .iter()
            .map(|call| {
                json!({
                    "id": call.id(Protocol::OpenAi),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json()}
                })
            })
            .collect();
    }
    json!({
        "id": answer.response_id(Protocol::OpenAi),
        "object": "chat.completion",
        // mock-llm reports no real time, so answers stay reproducible.
        "created": 0,
        "model": answer.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(answer)
        }],
        "usage": usage(answer)
    })
}

/// The answer as server-sent events, each a complete `data: …\n\n` frame:
/// the role, the text in pieces, each tool call (id and name first, then
/// its arguments in pieces), the finish reason, the usage chunk when asked
/// for, and `[DONE]`.
pub fn stream_events(answer: &Answer, include_usage: bool) -> Vec<String> {
    let chunk = |delta: Value, finish: Option<&str>| {
        let mut chunk = json!({
            "id": answer.response_id(Protocol::OpenAi),
            "object": "chat.completion.chunk",
            "created": 0,
            "model": answer.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        });
        if include_usage {
            // The real API sends `usage: null` on every chunk but the last.
            chunk["usage"] = Value::Null;
        }
        frame(&chunk)
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    for piece in pieces(&answer.text, answer.chunk_chars) {
        events.push(chunk(json!({"content": piece}), None));
    }
    for (index, call) in answer.tool_calls.iter().enumerate() {
        events.push(chunk(
            json!({"tool_calls": [{
                "index": index,
                "id": call.id(Protocol::OpenAi),
                "type": "function",
                "function": {"name": call.name, "arguments": ""}
            }]}),
            None,
        ));
        for piece in pieces(&call.arguments_json(), answer.chunk_chars) {
            events.push(chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    events.push(chunk(json!({}), Some(finish_reason(answer))));
    if include_usage {
        events.push(frame(&json!({
            "id": answer.response_id(Protocol::OpenAi),
            "object": "chat.completion.chunk",
            "created": 0,
            "model": answer.model,
            "choices": [],
            "usage": usage(answer)
        })));
    }
    events.push("data: [DONE]\n\n".to_string());
    events
}

/// An error body as OpenAI sends it; `type` and `code` follow the status.
pub fn error_body(status: u16, message: &str) -> Value {
    let (kind, code) = match status {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        404 => ("invalid_request_error", Some("model_not_found")),
        429 => ("requests", Some("rate_limit_exceeded")),
        500..=599 => ("server_error", None),
        _ => ("invalid_request_error", None),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// The message content: the text, or null when the model only calls tools.
fn content(answer: &Answer) -> Value {
    if answer.text.is_empty() && answer.calls_tools() {
        Value::Null
    } else {
        Value::String(answer.text.clone())
    }
}

fn finish_reason(answer: &Answer) -> &'static str {
    if answer.calls_tools() {
        "tool_calls"
    } else {
        "stop"
    }
}

fn usage(answer: &Answer) -> Value {
    json!({
        "prompt_tokens": answer.usage.input_tokens,
        "completion_tokens": answer.usage.output_tokens,
        "total_tokens": answer.usage.input_tokens + answer.usage.output_tokens
    })
}

fn frame(data: &Value) -> String {
    format!("data: {data}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_with_tool_results_reads_into_the_shared_view() {
        let body = json!({
            "model": "gpt-test",
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [
                {"role": "system", "content": "You are a coding agent"},
                {"role": "user", "content": [{"type": "text", "text": "Fix it"}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "list_files", "arguments": "{\"path\":\".\"}"}},
                    {"id": "c2", "type": "function", "function": {"name": "read_file", "arguments": "oops"}}
                ]},
                {"role": "tool", "tool_call_id": "c2", "content": "file text"},
                {"role": "tool", "tool_call_id": "c1", "content": "README.md"}
            ]
        });
        let request = parse_request(&body).expect("valid request");
        assert_eq!(request.model, "gpt-test");
        assert!(request.stream && request.include_usage);
        let conversation = &request.conversation;
        assert_eq!(conversation.system, "You are a coding agent");
        assert_eq!(conversation.task(), "Fix it");
        assert_eq!(
            conversation.turns[1],
            Turn::Assistant {
                text: String::new(),
                tool_calls: vec![
                    CallView {
                        name: "list_files".into(),
                        arguments: json!({"path": "."})
                    },
                    CallView {
                        name: "read_file".into(),
                        arguments: json!("oops")
                    },
                ]
            }
        );
        assert_eq!(
            conversation.last_tool_result(),
            Some(("list_files", "README.md"))
        );
        assert_eq!(conversation.tool_result_count(), 2);
    }

    #[test]
    fn defaults_apply_when_options_are_absent() {
        let request =
            parse_request(&json!({"messages": [{"role": "user", "content": "hi"}]})).expect("ok");
        assert_eq!(request.model, DEFAULT_MODEL);
        assert!(!request.stream && !request.include_usage);
    }

    #[test]
    fn malformed_conversations_are_refused() {
        let cases = [
            (json!({}), "`messages` is required"),
            (
                json!({"messages": [{"role": "robot", "content": "x"}]}),
                "unsupported role `robot`",
            ),
            (
                json!({"messages": [{"role": "tool", "tool_call_id": "c9", "content": "x"}]}),
                "no open call has id `c9`",
            ),
            (
                json!({"messages": [
                    {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "shell", "arguments": "{}"}}]},
                    {"role": "user", "content": "next"}
                ]}),
                "missing c1",
            ),
            (
                json!({"messages": [
                    {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "shell", "arguments": "{}"}}]}
                ]}),
                "have no tool message: c1",
            ),
        ];
        for (body, expected) in cases {
            let error = parse_request(&body).expect_err(expected);
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn error_bodies_follow_the_status() {
        assert_eq!(
            error_body(429, "slow")["error"]["code"],
            "rate_limit_exceeded"
        );
        assert_eq!(error_body(503, "down")["error"]["type"], "server_error");
        assert_eq!(error_body(400, "bad")["error"]["message"], "bad");
    }
}
