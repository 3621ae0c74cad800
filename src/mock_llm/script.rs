//! The script: which rule answers a conversation, and the answer it gives,
//! with placeholders filled in, deterministic tool-call ids and token
//! counts. Pure functions; the server keeps the counters they are given.

use std::time::Duration;

use serde_json::Value;

use super::conversation::{ChatRequest, Conversation, fnv1a};
use super::fixtures::{Match, Protocol, Rule};

/// Characters per streamed piece when a rule does not say: small enough
/// that any real answer arrives in many pieces and clients must join them.
pub const DEFAULT_CHUNK_CHARS: usize = 4;

/// `{{last_tool_result}}` is cut to this many characters, so quoting a
/// large file or log does not make an answer huge.
const MAX_QUOTED_RESULT_CHARS: usize = 2000;

/// The task is cut to this many characters in the no-match reply.
const MAX_QUOTED_TASK_CHARS: usize = 200;

/// Characters per token for the usage estimate, as for English text with
/// real tokenizers.
const CHARS_PER_TOKEN: usize = 4;

/// The answer to one request, independent of the protocol it goes out in.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The model named in the answer: the one the client asked for.
    pub model: String,
    /// Seeds the response id, so the same conversation gets the same id.
    pub seed: u64,
    /// The assistant's text; empty when the rule gave none.
    pub text: String,
    /// The tool calls, in order.
    pub tool_calls: Vec<PlannedCall>,
    /// The token counts to report.
    pub usage: TokenUsage,
    /// Characters per streamed piece.
    pub chunk_chars: usize,
    /// The pause between streamed events.
    pub chunk_delay: Duration,
}

/// One tool call of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedCall {
    /// Seeds the call's id.
    pub seed: u64,
    /// The tool's name.
    pub name: String,
    /// The arguments object, placeholders filled in.
    pub arguments: Value,
}

/// Token counts as both protocols report them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Tokens of the prompt.
    pub input_tokens: u64,
    /// Tokens of the answer.
    pub output_tokens: u64,
}

impl Answer {
    /// The response id in the protocol's style (`chatcmpl-…`, `msg_…`).
    pub fn response_id(&self, protocol: Protocol) -> String {
        match protocol {
            Protocol::OpenAi => format!("chatcmpl-{:016x}", self.seed),
            Protocol::Anthropic => format!("msg_{:016x}", self.seed),
        }
    }

    /// Whether the model stops to have tools run.
    pub fn calls_tools(&self) -> bool {
        !self.tool_calls.is_empty()
    }
}

impl PlannedCall {
    /// The call's id in the protocol's style (`call_…`, `toolu_…`).
    pub fn id(&self, protocol: Protocol) -> String {
        match protocol {
            Protocol::OpenAi => format!("call_{:016x}", self.seed),
            Protocol::Anthropic => format!("toolu_{:016x}", self.seed),
        }
    }

    /// The arguments as the JSON text OpenAI sends and Anthropic streams.
    pub fn arguments_json(&self) -> String {
        self.arguments.to_string()
    }
}

/// The index of the first rule whose conditions all hold.
pub fn first_match(rules: &[Rule], request: &ChatRequest) -> Option<usize> {
    rules.iter().position(|rule| matches(&rule.when, request))
}

/// Whether every condition of `when` holds for the request.
pub fn matches(when: &Match, request: &ChatRequest) -> bool {
    let conversation = &request.conversation;
    let last_result = conversation.last_tool_result();
    when.protocol.is_none_or(|p| p == request.protocol)
        && when.model.as_ref().is_none_or(|m| *m == request.model)
        && when
            .system_contains
            .as_ref()
            .is_none_or(|n| n.found_in(&conversation.system))
        && when
            .task_contains
            .as_ref()
            .is_none_or(|n| n.found_in(conversation.task()))
        && when
            .last_user_contains
            .as_ref()
            .is_none_or(|n| n.found_in(conversation.last_user()))
        && when
            .last_tool_result_contains
            .as_ref()
            .is_none_or(|n| last_result.is_some_and(|(_, text)| n.found_in(text)))
        && when
            .tool_results
            .is_none_or(|count| count == conversation.tool_result_count())
        && when
            .last_tool
            .as_ref()
            .is_none_or(|tool| last_result.is_some_and(|(last, _)| last == tool))
        && when
            .assistant_turns
            .is_none_or(|count| count == conversation.assistant_turn_count())
}

/// The answer a rule gives, or the no-match reply when `rule` is `None`.
/// `occurrence` counts earlier answers to the same conversation, so asking
/// twice gives fresh tool-call ids while a fresh server repeats them.
pub fn answer(rule: Option<&Rule>, request: &ChatRequest, occurrence: u32) -> Answer {
    let conversation = &request.conversation;
    let seed = fnv1a(format!("{:016x}/{occurrence}", conversation.fingerprint()).as_bytes());
    let (text, calls) = match rule {
        Some(rule) => {
            let vars = Vars::of(conversation);
            let text = rule
                .reply
                .text
                .as_deref()
                .map(|text| vars.render(text))
                .unwrap_or_default();
            let calls = rule
                .reply
                .tool_calls
                .iter()
                .enumerate()
                .map(|(index, call)| PlannedCall {
                    seed: fnv1a(format!("{seed:016x}/{index}").as_bytes()),
                    name: call.name.clone(),
                    arguments: vars.render_value(&call.arguments),
                })
                .collect();
            (text, calls)
        }
        None => (no_match_text(conversation), Vec::new()),
    };
    let usage_spec = rule.and_then(|rule| rule.reply.usage).unwrap_or_default();
    let output_chars = text.chars().count()
        + calls
            .iter()
            .map(|call: &PlannedCall| call.name.chars().count() + call.arguments_json().len())
            .sum::<usize>();
    let usage = TokenUsage {
        input_tokens: usage_spec
            .input_tokens
            .unwrap_or((conversation.char_count() / CHARS_PER_TOKEN) as u64),
        output_tokens: usage_spec
            .output_tokens
            .unwrap_or((output_chars / CHARS_PER_TOKEN) as u64),
    };
    Answer {
        model: request.model.clone(),
        seed,
        text,
        tool_calls: calls,
        usage,
        chunk_chars: rule
            .and_then(|rule| rule.chunk_chars)
            .unwrap_or(DEFAULT_CHUNK_CHARS),
        chunk_delay: Duration::from_millis(rule.and_then(|rule| rule.chunk_delay_ms).unwrap_or(0)),
    }
}

/// The reply when no rule matched: plain text, so a run still finishes, that
/// says why and quotes the task so the missing fixture is easy to write.
fn no_match_text(conversation: &Conversation) -> String {
    format!(
        "mock-llm: no fixture matched this conversation (first user message: \"{}\").",
        cut(conversation.task(), MAX_QUOTED_TASK_CHARS)
    )
}

/// Splits `text` into pieces of `chunk_chars` characters (never inside a
/// character), the last one possibly shorter; no pieces for empty text.
pub fn pieces(text: &str, chunk_chars: usize) -> Vec<&str> {
    let chunk_chars = chunk_chars.max(1);
    let mut pieces = Vec::new();
    let mut start = 0;
    for (count, (offset, _)) in text.char_indices().enumerate() {
        if count > 0 && count % chunk_chars == 0 {
            pieces.push(&text[start..offset]);
            start = offset;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// The first `max` characters of `text`, with an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((offset, _)) => format!("{}…", &text[..offset]),
        None => text.to_string(),
    }
}

/// The values placeholders stand for.
struct Vars {
    /// `{{task}}`: the first user message.
    task: String,
    /// `{{last_user}}`: the latest user message.
    last_user: String,
    /// `{{last_tool}}`: the tool whose result came last.
    last_tool: String,
    /// `{{last_tool_result}}`: its text, cut.
    last_tool_result: String,
    /// `{{tool_results}}`: how many results there are.
    tool_results: String,
}

impl Vars {
    fn of(conversation: &Conversation) -> Vars {
        let (last_tool, last_tool_result) = conversation.last_tool_result().unwrap_or_default();
        Vars {
            task: conversation.task().to_string(),
            last_user: conversation.last_user().to_string(),
            last_tool: last_tool.to_string(),
            last_tool_result: cut(last_tool_result, MAX_QUOTED_RESULT_CHARS),
            tool_results: conversation.tool_result_count().to_string(),
        }
    }

    fn lookup(&self, name: &str) -> Option<&str> {
        match name {
            "task" => Some(&self.task),
            "last_user" => Some(&self.last_user),
            "last_tool" => Some(&self.last_tool),
            "last_tool_result" => Some(&self.last_tool_result),
            "tool_results" => Some(&self.tool_results),
            _ => None,
        }
    }

    /// Fills placeholders in one pass, so a value that itself contains
    /// `{{…}}` (a tool result quoting a template) is left as it is; unknown
    /// placeholders stay as written.
    fn render(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(open) = rest.find("{{") {
            out.push_str(&rest[..open]);
            let after_open = &rest[open + 2..];
            match after_open.find("}}") {
                Some(close) => {
                    let name = after_open[..close].trim();
                    match self.lookup(name) {
                        Some(value) => out.push_str(value),
                        None => out.push_str(&rest[open..open + 2 + close + 2]),
                    }
                    rest = &after_open[close + 2..];
                }
                None => {
                    out.push_str(&rest[open..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// Fills placeholders in every string of a JSON value (keys stay as
    /// written), so substituted text never breaks the JSON.
    fn render_value(&self, value: &Value) -> Value {
        match value {
            Value::String(text) => Value::String(self.render(text)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|item| self.render_value(item)).collect())
            }
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(key, item)| (key.clone(), self.render_value(item)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::mock_llm::conversation::{CallView, Turn};
    use crate::mock_llm::fixtures::parse;

    fn request(system: &str, turns: Vec<Turn>) -> ChatRequest {
        ChatRequest {
            protocol: Protocol::OpenAi,
            model: "m".into(),
            stream: false,
            include_usage: false,
            conversation: Conversation {
                system: system.into(),
                turns,
            },
        }
    }

    fn user(text: &str) -> Turn {
        Turn::User { text: text.into() }
    }

    fn called(name: &str) -> Turn {
        Turn::Assistant {
            text: String::new(),
            tool_calls: vec![CallView {
                name: name.into(),
                arguments: json!({}),
            }],
        }
    }

    fn result(tool: &str, text: &str) -> Turn {
        Turn::ToolResult {
            tool: tool.into(),
            text: text.into(),
        }
    }

    fn rule(json: &str) -> Rule {
        parse("test", &format!("[{json}]"))
            .expect("valid rule")
            .remove(0)
    }

    #[test]
    fn each_condition_is_checked() {
        let req = request(
            "You are a coding agent",
            vec![
                user("Fix the build"),
                called("list_files"),
                result("list_files", "README.md\nsrc/"),
            ],
        );
        let holds = [
            r#"{}"#,
            r#"{"protocol": "openai"}"#,
            r#"{"model": "m"}"#,
            r#"{"system_contains": "coding agent"}"#,
            r#"{"task_contains": ["deploy", "BUILD"]}"#,
            r#"{"last_user_contains": "fix"}"#,
            r#"{"last_tool_result_contains": "readme"}"#,
            r#"{"tool_results": 1}"#,
            r#"{"last_tool": "list_files"}"#,
            r#"{"assistant_turns": 1}"#,
            r#"{"system_contains": "coding", "tool_results": 1, "last_tool": "list_files"}"#,
        ];
        for when in holds {
            let rule = rule(&format!(r#"{{"match": {when}, "reply": {{"text": "x"}}}}"#));
            assert!(matches(&rule.when, &req), "{when} should hold");
        }
        let fails = [
            r#"{"protocol": "anthropic"}"#,
            r#"{"model": "other"}"#,
            r#"{"system_contains": "orchestrator"}"#,
            r#"{"task_contains": ["deploy", "logs"]}"#,
            r#"{"last_tool_result_contains": "Cargo.toml"}"#,
            r#"{"tool_results": 0}"#,
            r#"{"last_tool": "read_file"}"#,
            r#"{"assistant_turns": 0}"#,
            r#"{"system_contains": "coding", "tool_results": 2}"#,
        ];
        for when in fails {
            let rule = rule(&format!(r#"{{"match": {when}, "reply": {{"text": "x"}}}}"#));
            assert!(!matches(&rule.when, &req), "{when} should not hold");
        }
    }

    #[test]
    fn tool_conditions_need_a_tool_result() {
        let req = request("s", vec![user("task")]);
        let rule = rule(r#"{"match": {"last_tool_result_contains": ""}, "reply": {"text": "x"}}"#);
        assert!(!matches(&rule.when, &req));
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let rules = parse(
            "test",
            r#"[{"name": "logs", "match": {"task_contains": "logs"}, "reply": {"text": "a"}},
                {"name": "any", "reply": {"text": "b"}},
                {"name": "never", "reply": {"text": "c"}}]"#,
        )
        .expect("valid");
        assert_eq!(
            first_match(&rules, &request("s", vec![user("read the logs")])),
            Some(0)
        );
        assert_eq!(
            first_match(&rules, &request("s", vec![user("fix it")])),
            Some(1)
        );
        assert_eq!(first_match(&rules[..0], &request("s", vec![])), None);
    }

    #[test]
    fn placeholders_are_filled_once_in_text_and_arguments() {
        let req = request(
            "s",
            vec![
                user("the task"),
                called("shell"),
                result("shell", "out {{task}}"),
                user("and now"),
            ],
        );
        let rule = rule(
            r#"{"reply": {"text": "{{task}}|{{last_user}}|{{last_tool}}|{{ last_tool_result }}|{{tool_results}}|{{unknown}}|{{open",
                          "tool_calls": [{"name": "delegate", "arguments": {"task": "Do: {{task}}", "n": [1, "{{tool_results}}"]}}]}}"#,
        );
        let answer = answer(Some(&rule), &req, 0);
        assert_eq!(
            answer.text,
            "the task|and now|shell|out {{task}}|1|{{unknown}}|{{open"
        );
        assert_eq!(
            answer.tool_calls[0].arguments,
            json!({"task": "Do: the task", "n": [1, "1"]})
        );
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let req = request("s", vec![user("task")]);
        let rule = rule(
            r#"{"reply": {"tool_calls": [{"name": "a"}, {"name": "b"}]}, "chunk_chars": 2, "chunk_delay_ms": 3}"#,
        );
        let first = answer(Some(&rule), &req, 0);
        let again = answer(Some(&rule), &req, 0);
        let later = answer(Some(&rule), &req, 1);
        assert_eq!(first, again);
        assert_ne!(first.tool_calls[0].seed, first.tool_calls[1].seed);
        assert_ne!(first.tool_calls[0].seed, later.tool_calls[0].seed);
        assert!(
            first.tool_calls[0]
                .id(Protocol::OpenAi)
                .starts_with("call_")
        );
        assert!(
            first.tool_calls[0]
                .id(Protocol::Anthropic)
                .starts_with("toolu_")
        );
        assert!(first.response_id(Protocol::OpenAi).starts_with("chatcmpl-"));
        assert!(first.response_id(Protocol::Anthropic).starts_with("msg_"));
        assert_eq!(first.chunk_chars, 2);
        assert_eq!(first.chunk_delay, Duration::from_millis(3));
    }

    #[test]
    fn usage_comes_from_the_fixture_or_is_estimated() {
        let req = request("12345678", vec![user("abcd")]);
        let estimated = answer(Some(&rule(r#"{"reply": {"text": "12345678"}}"#)), &req, 0);
        assert_eq!(
            estimated.usage,
            TokenUsage {
                input_tokens: 3,
                output_tokens: 2
            }
        );
        let given = answer(
            Some(&rule(
                r#"{"reply": {"text": "x", "usage": {"output_tokens": 42}}}"#,
            )),
            &req,
            0,
        );
        assert_eq!(
            given.usage,
            TokenUsage {
                input_tokens: 3,
                output_tokens: 42
            }
        );
    }

    #[test]
    fn without_a_rule_the_reply_names_the_task() {
        let answer = answer(None, &request("s", vec![user("Summarise the repo")]), 0);
        assert_eq!(
            answer.text,
            "mock-llm: no fixture matched this conversation (first user message: \"Summarise the repo\")."
        );
        assert!(answer.tool_calls.is_empty());
        assert_eq!(answer.chunk_chars, DEFAULT_CHUNK_CHARS);
    }

    #[test]
    fn pieces_split_by_characters() {
        assert_eq!(pieces("abcdefg", 3), ["abc", "def", "g"]);
        assert_eq!(pieces("abc", 3), ["abc"]);
        assert_eq!(pieces("héllo→", 2), ["hé", "ll", "o→"]);
        assert!(pieces("", 4).is_empty());
        assert_eq!(pieces("ab", 0), ["a", "b"]);
        assert_eq!(pieces("héllo→", 2).concat(), "héllo→");
    }

    #[test]
    fn cut_adds_an_ellipsis_only_when_needed() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "abc…");
    }
}
