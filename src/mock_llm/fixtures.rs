//! The fixture format: the rules that script mock-llm's answers, how they are
//! read from a file, a directory or a request body, and the default set
//! compiled into the binary.
//!
//! A fixture file is a JSON array of rules. The first rule whose `match`
//! holds for a conversation answers it; `infra/mock-llm/README.md` is the
//! user's description of every field, and this file is its source of truth.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// The default fixtures, compiled in so `mock-llm` with no `--fixtures` runs
/// the whole agent network's demo. Listed in the order their rules are tried;
/// each file matches on its own agent's system prompt, so the order between
/// files does not change any answer.
const DEFAULT_FIXTURES: &[(&str, &str)] = &[
    (
        "infra/mock-llm/orchestrator.json",
        include_str!("../../infra/mock-llm/orchestrator.json"),
    ),
    (
        "infra/mock-llm/coding.json",
        include_str!("../../infra/mock-llm/coding.json"),
    ),
    (
        "infra/mock-llm/log-analyzer.json",
        include_str!("../../infra/mock-llm/log-analyzer.json"),
    ),
];

/// The lowest status a `fail` may inject: anything below is not an error.
const MIN_FAIL_STATUS: u16 = 400;

/// The highest HTTP status there is.
const MAX_FAIL_STATUS: u16 = 599;

/// One scripted answer and the conversations it answers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Names the rule in logs and in `GET /_mock/requests`, so a test can
    /// see which rule answered; rules without one are named by position.
    #[serde(default)]
    pub name: Option<String>,
    /// What the conversation must look like; an absent `match` matches
    /// every conversation, which makes a catch-all rule.
    #[serde(rename = "match", default)]
    pub when: Match,
    /// What the model answers.
    pub reply: Reply,
    /// Milliseconds to wait before the first byte of the answer (or of the
    /// injected failure), to exercise clients' timeouts and cancellation.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// How many characters each streamed text or argument piece holds;
    /// small pieces make clients prove they join fragments exactly.
    #[serde(default)]
    pub chunk_chars: Option<usize>,
    /// Milliseconds to wait between streamed events, to exercise live
    /// deltas and cancellation in the middle of a stream.
    #[serde(default)]
    pub chunk_delay_ms: Option<u64>,
    /// Makes the first matching requests fail, to exercise retries.
    #[serde(default)]
    pub fail: Option<Fail>,
}

/// Conditions on the conversation; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Only requests of this protocol, for fixtures that test one client.
    #[serde(default)]
    pub protocol: Option<Protocol>,
    /// The request's `model`, exactly, for per-agent model settings.
    #[serde(default)]
    pub model: Option<String>,
    /// Text in the system prompt; the usual way to tell agents apart.
    #[serde(default)]
    pub system_contains: Option<Needles>,
    /// Text in the first user message: the task the agent was given.
    #[serde(default)]
    pub task_contains: Option<Needles>,
    /// Text in the latest user message, for conversations a human continues.
    #[serde(default)]
    pub last_user_contains: Option<Needles>,
    /// Text in the latest tool result, to react to what a tool returned
    /// (a rejection, an error, a file's content).
    #[serde(default)]
    pub last_tool_result_contains: Option<Needles>,
    /// How many tool results the conversation holds so far: 0 is the
    /// agent's first step.
    #[serde(default)]
    pub tool_results: Option<usize>,
    /// The tool whose result came last, to script one step after another.
    #[serde(default)]
    pub last_tool: Option<String>,
    /// How many assistant turns the conversation holds so far.
    #[serde(default)]
    pub assistant_turns: Option<usize>,
}

/// The wire protocol of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// OpenAI Chat Completions, `POST /v1/chat/completions`.
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic Messages, `POST /v1/messages`.
    Anthropic,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::OpenAi => "openai",
            Protocol::Anthropic => "anthropic",
        }
    }
}

/// Text to look for: one string, or a list of which any one will do.
/// Matching ignores case, so fixtures need not guess how a task is written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Needles {
    /// This text.
    One(String),
    /// Any one of these texts.
    AnyOf(Vec<String>),
}

impl Needles {
    /// Whether `haystack` contains one of the needles, ignoring case.
    pub fn found_in(&self, haystack: &str) -> bool {
        let haystack = haystack.to_lowercase();
        match self {
            Needles::One(needle) => haystack.contains(&needle.to_lowercase()),
            Needles::AnyOf(needles) => needles
                .iter()
                .any(|needle| haystack.contains(&needle.to_lowercase())),
        }
    }
}

/// What the model answers when a rule matches.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// The assistant's text; may hold `{{task}}`, `{{last_user}}`,
    /// `{{last_tool}}`, `{{last_tool_result}}` and `{{tool_results}}`.
    #[serde(default)]
    pub text: Option<String>,
    /// The tools the model calls, in order; their string arguments may hold
    /// the same placeholders as `text`.
    #[serde(default)]
    pub tool_calls: Vec<ToolCallSpec>,
    /// Token counts to report; a missing count is estimated from the text.
    #[serde(default)]
    pub usage: Option<UsageSpec>,
}

/// One tool call in a scripted reply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCallSpec {
    /// The tool's name as the agent knows it (`list_files`, `delegate`).
    pub name: String,
    /// The arguments object; both protocols need an object here.
    #[serde(default = "empty_object")]
    pub arguments: Value,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// Token counts a fixture reports instead of the estimate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageSpec {
    /// Tokens of the prompt.
    #[serde(default)]
    pub input_tokens: Option<u64>,
    /// Tokens of the answer.
    #[serde(default)]
    pub output_tokens: Option<u64>,
}

/// Injected failures: the first `times` matching requests get `status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fail {
    /// The HTTP status, 400 to 599; 429 and 5xx are what clients retry.
    pub status: u16,
    /// How many matching requests fail before the rule answers normally.
    pub times: u32,
    /// Seconds for a `Retry-After` header, to test that clients honour it.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// The message in the protocol's error body; a default names the rule.
    #[serde(default)]
    pub message: Option<String>,
}

impl Rule {
    /// The rule's name, or its position (1-based) when it has none.
    pub fn display_name(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("rule {}", index + 1))
    }
}

/// Why fixtures could not be used; each message names the file and the rule.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not read fixtures from {path}: {source}")]
    Read {
        /// The file or directory that could not be read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    #[error("{origin} is not a JSON array of fixture rules: {source}")]
    Parse {
        /// The file (or request) the document came from.
        origin: String,
        /// serde's message, with line and column.
        source: serde_json::Error,
    },
    #[error("{origin}, {rule}: {reason}")]
    Invalid {
        /// The file (or request) the rule came from.
        origin: String,
        /// The rule's name, or its position.
        rule: String,
        /// What is wrong, as a sentence for the fixture's author.
        reason: String,
    },
    #[error("{path} holds no .json fixture files")]
    NoFiles {
        /// The directory without fixtures.
        path: PathBuf,
    },
}

/// Parses one fixture document (a JSON array of rules) and checks every
/// rule; `origin` names the document in error messages.
pub fn parse(origin: &str, json: &str) -> Result<Vec<Rule>, Error> {
    let rules: Vec<Rule> = serde_json::from_str(json).map_err(|source| Error::Parse {
        origin: origin.to_string(),
        source,
    })?;
    for (index, rule) in rules.iter().enumerate() {
        check(rule).map_err(|reason| Error::Invalid {
            origin: origin.to_string(),
            rule: rule.display_name(index),
            reason,
        })?;
    }
    Ok(rules)
}

/// Reads rules from a JSON file, or from every `*.json` file of a directory
/// in file-name order (so `10-…`, `20-…` prefixes order the rules).
pub fn load(path: &Path) -> Result<Vec<Rule>, Error> {
    let read_error = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    if !path.is_dir() {
        let json = std::fs::read_to_string(path).map_err(read_error)?;
        return parse(&path.display().to_string(), &json);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_error)? {
        let file = entry.map_err(read_error)?.path();
        if file.is_file() && file.extension().is_some_and(|ext| ext == "json") {
            files.push(file);
        }
    }
    if files.is_empty() {
        return Err(Error::NoFiles {
            path: path.to_path_buf(),
        });
    }
    files.sort();
    let mut rules = Vec::new();
    for file in files {
        rules.extend(load(&file)?);
    }
    Ok(rules)
}

/// The default rules: the agent network's demo from `infra/mock-llm/`.
pub fn defaults() -> Result<Vec<Rule>, Error> {
    let mut rules = Vec::new();
    for (origin, json) in DEFAULT_FIXTURES {
        rules.extend(parse(origin, json)?);
    }
    Ok(rules)
}

/// The checks serde cannot express; the error is a sentence for the author.
fn check(rule: &Rule) -> Result<(), String> {
    let reply = &rule.reply;
    if reply.text.is_none() && reply.tool_calls.is_empty() {
        return Err("`reply` needs `text`, `tool_calls` or both".into());
    }
    for call in &reply.tool_calls {
        if call.name.trim().is_empty() {
            return Err("a tool call has an empty `name`".into());
        }
        if !call.arguments.is_object() {
            return Err(format!(
                "the `arguments` of `{}` must be a JSON object",
                call.name
            ));
        }
    }
    if rule.chunk_chars == Some(0) {
        return Err("`chunk_chars` must be at least 1".into());
    }
    if let Some(fail) = &rule.fail
        && !(MIN_FAIL_STATUS..=MAX_FAIL_STATUS).contains(&fail.status)
    {
        return Err(format!(
            "`fail.status` must be an error status ({MIN_FAIL_STATUS} to {MAX_FAIL_STATUS}), not {}",
            fail.status
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_full_rule_parses() {
        let rules = parse(
            "test",
            r#"[{
                "name": "first step",
                "match": {"system_contains": "coding", "task_contains": ["a", "b"],
                          "last_tool_result_contains": "ok", "tool_results": 2,
                          "last_tool": "shell", "protocol": "anthropic", "model": "m",
                          "last_user_contains": "x", "assistant_turns": 1},
                "reply": {"text": "hi", "tool_calls": [{"name": "shell", "arguments": {"command": "ls"}}],
                          "usage": {"input_tokens": 7}},
                "latency_ms": 5, "chunk_chars": 2, "chunk_delay_ms": 1,
                "fail": {"status": 429, "times": 1, "retry_after": 3, "message": "slow down"}
            }]"#,
        )
        .expect("valid fixture");
        let rule = &rules[0];
        assert_eq!(rule.name.as_deref(), Some("first step"));
        assert_eq!(rule.when.protocol, Some(Protocol::Anthropic));
        assert_eq!(
            rule.when.task_contains,
            Some(Needles::AnyOf(vec!["a".into(), "b".into()]))
        );
        assert_eq!(rule.when.tool_results, Some(2));
        assert_eq!(rule.reply.tool_calls[0].arguments, json!({"command": "ls"}));
        assert_eq!(
            rule.reply.usage,
            Some(UsageSpec {
                input_tokens: Some(7),
                output_tokens: None
            })
        );
        assert_eq!(rule.fail.as_ref().map(|f| f.retry_after), Some(Some(3)));
    }

    #[test]
    fn a_minimal_rule_matches_everything_and_has_no_extras() {
        let rules = parse("test", r#"[{"reply": {"text": "hello"}}]"#).expect("valid fixture");
        assert_eq!(rules[0].when, Match::default());
        assert_eq!(rules[0].display_name(0), "rule 1");
        assert!(rules[0].fail.is_none());
    }

    #[test]
    fn arguments_default_to_an_empty_object() {
        let rules = parse(
            "test",
            r#"[{"reply": {"tool_calls": [{"name": "list_files"}]}}]"#,
        )
        .expect("valid fixture");
        assert_eq!(rules[0].reply.tool_calls[0].arguments, json!({}));
    }

    #[test]
    fn typos_and_bad_values_are_refused_with_the_rule_named() {
        let cases = [
            (r#"[{"reply": {"txt": "x"}}]"#, "unknown field `txt`"),
            (
                r#"[{"match": {"task": "x"}, "reply": {"text": "x"}}]"#,
                "unknown field `task`",
            ),
            (r#"[{"name": "r", "reply": {}}]"#, "r: `reply` needs"),
            (
                r#"[{"reply": {"tool_calls": [{"name": "shell", "arguments": "ls"}]}}]"#,
                "must be a JSON object",
            ),
            (
                r#"[{"reply": {"text": "x"}, "chunk_chars": 0}]"#,
                "`chunk_chars` must be at least 1",
            ),
            (
                r#"[{"reply": {"text": "x"}, "fail": {"status": 200, "times": 1}}]"#,
                "not 200",
            ),
            (r#"{"reply": {"text": "x"}}"#, "not a JSON array"),
        ];
        for (json, expected) in cases {
            let error = parse("file.json", json).expect_err(json).to_string();
            assert!(error.contains(expected), "{json}: {error}");
            assert!(error.contains("file.json"), "{error}");
        }
    }

    #[test]
    fn needles_ignore_case_and_accept_any_of_a_list() {
        assert!(Needles::One("LOGS".into()).found_in("check the logs"));
        assert!(!Needles::One("logs".into()).found_in("check the code"));
        let any = Needles::AnyOf(vec!["latency".into(), "error".into()]);
        assert!(any.found_in("Why the Errors?"));
        assert!(!any.found_in("refactor"));
    }

    #[test]
    fn a_directory_is_read_in_file_name_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("20-b.json"),
            r#"[{"name": "b", "reply": {"text": "b"}}]"#,
        )
        .expect("write");
        std::fs::write(
            dir.path().join("10-a.json"),
            r#"[{"name": "a", "reply": {"text": "a"}}]"#,
        )
        .expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not a fixture").expect("write");
        let names: Vec<_> = load(dir.path())
            .expect("load")
            .into_iter()
            .filter_map(|rule| rule.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn loading_names_what_is_missing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let error = load(dir.path()).expect_err("empty dir").to_string();
        assert!(error.contains("holds no .json fixture files"), "{error}");
        let error = load(&dir.path().join("missing.json"))
            .expect_err("missing file")
            .to_string();
        assert!(error.contains("could not read fixtures"), "{error}");
    }

    #[test]
    fn the_default_fixtures_parse() {
        let rules = defaults().expect("the default fixtures are valid");
        assert!(rules.len() >= 8, "{} rules", rules.len());
        assert!(rules.iter().all(|rule| rule.name.is_some()));
    }
}
