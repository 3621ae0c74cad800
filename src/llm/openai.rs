//! The OpenAI Chat Completions wire format, with tool calling, against
//! `{LLM_BASE_URL}/chat/completions`: OpenAI itself or any compatible server
//! (vLLM, Ollama, llama.cpp, `mock-llm`).

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use super::{
    Error, Message, ModelAnswer, ModelClient, ModelRequest, REQUEST_TIMEOUT, RequestedCall, Usage,
};
use crate::agents::AgentName;
use crate::config::{LlmSettings, Secret};

/// Provider error messages are cut to this many characters before they reach
/// the journal: enough to explain, short enough to read.
const MAX_ERROR_MESSAGE: usize = 500;

pub struct OpenAiClient {
    http: reqwest::Client,
    url: String,
    api_key: Option<Secret>,
    settings: LlmSettings,
}

impl OpenAiClient {
    pub fn new(settings: &LlmSettings) -> anyhow::Result<OpenAiClient> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(OpenAiClient {
            http,
            url: format!("{}/chat/completions", settings.base_url),
            api_key: settings.api_key.clone(),
            settings: settings.clone(),
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
        let mut builder = self.http.post(&self.url).json(&request_body(&request));
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key.expose());
        }
        Box::pin(async move {
            let response = builder.send().await.map_err(transport_error)?;
            let status = response.status();
            if !status.is_success() {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|secs| secs.is_finite() && *secs >= 0.0)
                    .map(Duration::from_secs_f64);
                let body = response.text().await.unwrap_or_default();
                return Err(Error::Status {
                    status: status.as_u16(),
                    message: error_message(&body),
                    retry_after,
                });
            }
            let body: Value = response.json().await.map_err(|e| {
                if e.is_timeout() {
                    Error::Timeout(REQUEST_TIMEOUT)
                } else {
                    Error::InvalidResponse(e.to_string())
                }
            })?;
            parse_answer(&body)
        })
    }
}

fn transport_error(error: reqwest::Error) -> Error {
    if error.is_timeout() {
        Error::Timeout(REQUEST_TIMEOUT)
    } else {
        // Without the URL: it is ours, and the user knows it.
        Error::Connection(error.without_url().to_string())
    }
}

/// The provider's own error message, from `{"error": {"message"}}` when it
/// sends one.
fn error_message(body: &str) -> String {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    let message: String = message.chars().take(MAX_ERROR_MESSAGE).collect();
    if message.is_empty() {
        "no error message".into()
    } else {
        message
    }
}

fn request_body(request: &ModelRequest) -> Value {
    let mut messages = vec![json!({"role": "system", "content": request.system})];
    for message in &request.messages {
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
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                })
            })
            .collect();
    }
    body
}

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
        let arguments = function["arguments"].as_str().unwrap_or("{}");
        // Arguments that are not JSON reach the tool as a string, and the
        // tool tells the model what is wrong with them.
        let args = if arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.into()))
        };
        tool_calls.push(RequestedCall {
            call_id: call["id"].as_str().map(str::to_string),
            tool: name.to_string(),
            args,
        });
    }
    Ok(ModelAnswer {
        model: body["model"].as_str().unwrap_or_default().to_string(),
        text,
        tool_calls,
        usage: Usage {
            input_tokens: body["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
            output_tokens: body["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ToolCall;

    #[test]
    fn the_request_carries_the_conversation_and_tools() {
        let request = ModelRequest {
            run_id: uuid::Uuid::nil(),
            agent: AgentName::Coding,
            model: "m".into(),
            system: "sys".into(),
            messages: vec![
                Message::User {
                    text: "task".into(),
                },
                Message::Assistant {
                    text: String::new(),
                    tool_calls: vec![ToolCall {
                        call_id: "c1".into(),
                        tool: "list_files".into(),
                        args: json!({"path": "."}),
                    }],
                },
                Message::ToolResult {
                    call_id: "c1".into(),
                    tool: "list_files".into(),
                    ok: true,
                    output: "a.txt".into(),
                },
            ],
            tools: vec![crate::tools::spec("list_files").unwrap()],
            on_delta: None,
        };
        let body = request_body(&request);
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"path\":\".\"}"
        );
        assert_eq!(body["messages"][3]["tool_call_id"], "c1");
        assert_eq!(body["tools"][0]["function"]["name"], "list_files");
    }

    #[test]
    fn answers_with_tool_calls_and_usage_parse() {
        let body = json!({
            "model": "gpt-x",
            "choices": [{"message": {"content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":\"ls\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "read_file", "arguments": "not json"}}
            ]}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3}
        });
        let answer = parse_answer(&body).unwrap();
        assert_eq!(answer.tool_calls[0].args, json!({"command": "ls"}));
        assert_eq!(answer.tool_calls[1].args, json!("not json"));
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
    fn provider_errors_keep_their_message() {
        assert_eq!(
            error_message(r#"{"error":{"message":"bad model"}}"#),
            "bad model"
        );
        assert_eq!(error_message(""), "no error message");
    }
}
