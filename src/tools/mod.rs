//! The tools an agent may call: their specs as the model sees them, argument checking, output capping and dispatch.
//!
//! Layout: `workspace` confines every path the model names to one directory (via
//! `openat2` with `RESOLVE_BENEATH`), `files` implements `read_file`, `write_file` and
//! `list_files` on top of it, `shell` runs commands with a timeout and kill-on-drop,
//! `sandbox` confines them (bubblewrap: no network, only the workspace writable, an
//! unprivileged user, limits) and owns who owns the workspace, and `loki` runs
//! `loki_query` against Loki's HTTP API. This file holds what they share:
//! the `ToolSpec`/`ToolContext`/`ToolOutcome` types, the JSON argument checks, the
//! head-and-tail output cap, and `execute`, which routes a call to its tool.

pub mod files;
pub mod loki;
pub mod sandbox;
pub mod schema;
pub mod shell;
pub mod workspace;

pub use workspace::Workspace;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::{Map, Value, json};

/// A tool as the model sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ToolSpec {
    /// The name the model uses to call the tool.
    pub name: Cow<'static, str>,
    /// Tells the model what the tool does and when to use it.
    pub description: Cow<'static, str>,
    /// JSON Schema of the arguments object, so the model knows what to send.
    /// Shared: every model call offers the same schemas.
    pub parameters: Arc<Value>,
}

/// Everything a tool needs to run; cheap to clone.
#[derive(Clone)]
pub struct ToolContext {
    /// The directory the tools are confined to; shared because many calls use it at once.
    pub workspace: Arc<Workspace>,
    /// The Loki that `loki_query` reads, built once from `LOKI_URL`; `None` when it is
    /// unset, and the tool then tells the model that no logs can be read.
    pub loki: Option<Arc<loki::LokiClient>>,
    /// How `shell` commands are confined, decided and checked once at start.
    pub sandbox: Arc<sandbox::Sandbox>,
    /// The MCP servers of `AGENT_MCP_CONFIG` and their tools (`SERVER__TOOL`).
    pub mcp: Arc<crate::mcp::Mcp>,
}

/// What a tool call produced; a failing tool is a result the model reads, never a panic or crash.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    /// Whether the tool did what was asked (for `shell`: the command exited with 0).
    pub ok: bool,
    /// The text shown to the model: the tool's output or a sentence explaining the failure.
    pub output: String,
    /// The command's exit code, for `shell` calls whose process exited normally.
    pub exit_code: Option<i32>,
}

impl ToolOutcome {
    /// A successful call whose result is `output`.
    pub fn success(output: impl Into<String>) -> Self {
        Self {
            ok: true,
            output: output.into(),
            exit_code: None,
        }
    }

    /// A failed call; `message` tells the model what went wrong.
    pub fn failure(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            output: message.into(),
            exit_code: None,
        }
    }
}

/// The most bytes of tool output handed to the model, so one call cannot flood its context.
pub const OUTPUT_CAP_BYTES: usize = 64 * 1024;

/// Names of every tool this module describes, in the order they are usually listed.
pub const TOOL_NAMES: &[&str] = &[
    "delegate",
    "shell",
    "read_file",
    "write_file",
    "list_files",
    "loki_query",
];

/// Whether a tool can change things (files, processes) and so may need a person's approval.
pub fn is_dangerous(tool: &str) -> bool {
    matches!(tool, "shell" | "write_file")
}

/// How careful to be with a call of `tool`: a built-in tool that is not
/// dangerous may run again after a crash, and a dangerous one may not; an
/// MCP tool says so itself (its annotations, `safe_tools`).
pub fn hazard(tool: &str, mcp: &crate::mcp::Mcp) -> crate::mcp::Hazard {
    mcp.hazard(tool).unwrap_or_else(|| {
        let dangerous = is_dangerous(tool);
        crate::mcp::Hazard {
            dangerous,
            repeatable: !dangerous,
        }
    })
}

/// The spec of a built-in tool, or `None` if there is no tool with that
/// name. Built once: a model call offers them all, every call.
pub fn spec(tool: &str) -> Option<ToolSpec> {
    static SPECS: std::sync::OnceLock<Vec<ToolSpec>> = std::sync::OnceLock::new();
    SPECS
        .get_or_init(|| TOOL_NAMES.iter().filter_map(|t| build_spec(t)).collect())
        .iter()
        .find(|spec| spec.name == tool)
        .cloned()
}

fn build_spec(tool: &str) -> Option<ToolSpec> {
    let (name, description, parameters) = match tool {
        "delegate" => (
            "delegate",
            "Hand a self-contained task to a specialist sub-agent and get back its final answer. \
             Use `coding` for work on code and files in the workspace and `log-analyzer` for \
             investigating logs. The sub-agent does not see this conversation, so `task` must \
             contain everything it needs: the goal, relevant paths or identifiers, and what to \
             report back.",
            json!({
                "type": "object",
                "properties": {
                    "agent": {
                        "type": "string",
                        "enum": ["coding", "log-analyzer"],
                        "description": "Which sub-agent to hand the task to."
                    },
                    "task": {
                        "type": "string",
                        "description": "The complete task description for the sub-agent."
                    }
                },
                "required": ["agent", "task"],
                "additionalProperties": false
            }),
        ),
        "shell" => (
            "shell",
            "Run a command with `sh -c` in the workspace directory and get its exit code and \
             output: stdout, then stderr after a `--- stderr ---` line. There is no stdin, so \
             interactive programs will not work. The command runs in a sandbox as an \
             unprivileged user: there is no network (unless the operator turned it on), only \
             the workspace is writable, `/tmp` is private and empty for every command, memory \
             and the number of processes are limited, and the environment holds only PATH, \
             HOME (the workspace), LANG and TERM. The command, and everything it started, is \
             killed after `timeout_secs` seconds (default 60, at most 600) and when the call \
             ends, so do not rely on background processes surviving. Output over 64 KiB keeps \
             its beginning and end with a marker saying how much was cut; filter long output \
             (grep, head, tail) to see what matters.",
            json!({
                "type": "object",
                "properties": {
                    "command": {
                        "type": "string",
                        "minLength": 1,
                        "description": "The shell command line to run, e.g. `cargo test 2>&1 | tail -n 50`."
                    },
                    "timeout_secs": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": shell::MAX_TIMEOUT_SECS,
                        "description": "Seconds before the command is killed (default 60)."
                    }
                },
                "required": ["command"],
                "additionalProperties": false
            }),
        ),
        "read_file" => (
            "read_file",
            "Read a text file from the workspace. `path` is relative to the workspace root and \
             may not leave it. Invalid UTF-8 bytes are shown as U+FFFD. Files over 64 KiB are \
             shown as their beginning and end with a marker saying how many bytes were left out; \
             use the shell tool (e.g. `sed -n '100,200p' FILE`) to read a specific part.",
            json!({
                "type": "object",
                "properties": {
                    "path": {
                        "type": "string",
                        "description": "File path relative to the workspace root, e.g. `src/main.rs`."
                    }
                },
                "required": ["path"],
                "additionalProperties": false
            }),
        ),
        "write_file" => (
            "write_file",
            "Create a file in the workspace, or replace the whole content of an existing one, \
             with exactly `content`. Missing parent directories are created. `path` is relative \
             to the workspace root and may not leave it. To change part of a large file, read it \
             first and write back the full new content.",
            json!({
                "type": "object",
                "properties": {
                    "path": {
                        "type": "string",
                        "description": "File path relative to the workspace root, e.g. `notes/plan.md`."
                    },
                    "content": {
                        "type": "string",
                        "description": "The complete new content of the file."
                    }
                },
                "required": ["path", "content"],
                "additionalProperties": false
            }),
        ),
        "list_files" => (
            "list_files",
            "List one directory of the workspace (not recursive), one entry per line, sorted by \
             name. Directories end with `/` and symbolic links are shown as `name -> target`. At \
             most 1000 entries are shown. `path` is relative to the workspace root and defaults \
             to the root itself.",
            json!({
                "type": "object",
                "properties": {
                    "path": {
                        "type": "string",
                        "description": "Directory relative to the workspace root; defaults to `.`."
                    }
                },
                "additionalProperties": false
            }),
        ),
        "loki_query" => (
            "loki_query",
            "Search logs stored in Grafana Loki with a LogQL query. A log query returns the \
             newest matching lines, shown oldest first, one per line as `timestamp {labels} \
             line` (labels shared by every line are printed once at the top). A metric query, \
             e.g. `sum by (level) (count_over_time({app=\"api\"}[5m]))`, returns time series. \
             Start with a narrow stream selector and line filter, e.g. `{app=\"api\"} |= \
             \"error\"`, and widen it only if nothing is found. `since` is how far back to look, \
             as a duration like `15m`, `1h` or `2d` (default 1h, at most 30d); `limit` is the \
             most log lines to return (default 100, at most 5000).",
            json!({
                "type": "object",
                "properties": {
                    "query": {
                        "type": "string",
                        "description": "A LogQL query, e.g. `{namespace=\"prod\", app=\"api\"} |= \"timeout\"`."
                    },
                    "since": {
                        "type": "string",
                        "description": "How far back to search, as a duration such as `30m`, `1h`, `1h30m` or `7d` (default 1h, at most 30d)."
                    },
                    "limit": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": loki::MAX_LIMIT,
                        "description": "The most log lines to return, newest kept (default 100)."
                    }
                },
                "required": ["query"],
                "additionalProperties": false
            }),
        ),
        _ => return None,
    };
    Some(ToolSpec {
        name: name.into(),
        description: description.into(),
        parameters: Arc::new(parameters),
    })
}

/// Checks arguments against the tool's schema (for arguments a human
/// edited before approving); an MCP tool's schema is the server's.
pub async fn check_args(tool: &str, args: &Value, mcp: &crate::mcp::Mcp) -> Result<(), String> {
    let parameters = if mcp.owns(tool) {
        mcp.input_schema(tool).await?
    } else {
        spec(tool)
            .ok_or_else(|| format!("there is no tool `{tool}`"))?
            .parameters
    };
    schema::validate(&parameters, args).map_err(|e| format!("{tool}: {e}"))
}

/// Runs one tool call. Any failure, including bad arguments, becomes an outcome with `ok: false`.
///
/// `delegate` is handled by the run itself, so it counts as unknown to this function.
/// The returned future may be dropped at any time: a running shell command is then
/// killed together with its process group, and a Loki request is aborted.
pub async fn execute(tool: &str, args: &Value, ctx: &ToolContext) -> ToolOutcome {
    let outcome = match tool {
        mcp if ctx.mcp.owns(mcp) => ctx.mcp.call(mcp, args).await,
        "shell" => shell::run(args, ctx).await,
        "read_file" => files::read_file(args, ctx).await,
        "write_file" => files::write_file(args, ctx).await,
        "list_files" => files::list_files(args, ctx).await,
        "loki_query" => loki::run(args, ctx).await,
        other => ToolOutcome::failure(format!(
            "unknown tool {other}; this executor runs shell, read_file, write_file, list_files \
             and loki_query"
        )),
    };
    tracing::debug!(tool, ok = outcome.ok, exit_code = ?outcome.exit_code, "tool call finished");
    outcome
}

/// Why a tool's arguments were refused; the message is what the model reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// The arguments were not a JSON object.
    #[error("{tool}: arguments must be a JSON object, got {got}")]
    NotObject {
        /// The tool that was called.
        tool: &'static str,
        /// The JSON type that was sent instead.
        got: &'static str,
    },
    /// A required field was absent.
    #[error("{tool}: missing {kind} field `{field}`")]
    Missing {
        /// The tool that was called.
        tool: &'static str,
        /// The field that was missing.
        field: &'static str,
        /// The JSON type the field must have.
        kind: &'static str,
    },
    /// A field had the wrong JSON type.
    #[error("{tool}: field `{field}` must be {kind}, got {got}")]
    WrongType {
        /// The tool that was called.
        tool: &'static str,
        /// The field with the wrong type.
        field: &'static str,
        /// The JSON type the field must have, with an article ("a string").
        kind: &'static str,
        /// The JSON type that was sent instead.
        got: &'static str,
    },
    /// A field the tool does not know was sent.
    #[error("{tool}: unknown field `{field}`; allowed fields are {allowed}")]
    Unknown {
        /// The tool that was called.
        tool: &'static str,
        /// The unexpected field, as sent.
        field: String,
        /// The allowed field names, formatted for the message.
        allowed: String,
    },
    /// A field had the right type but a value the tool cannot use.
    #[error("{tool}: field `{field}` {reason}")]
    Invalid {
        /// The tool that was called.
        tool: &'static str,
        /// The field with the bad value.
        field: &'static str,
        /// What is wrong with the value, completing the sentence.
        reason: String,
    },
}

/// A tool's arguments after the shape check: an object holding only known fields.
pub(crate) struct Args<'a> {
    /// The tool the arguments are for, named in every error message.
    tool: &'static str,
    /// The argument object itself.
    map: &'a Map<String, Value>,
}

impl<'a> Args<'a> {
    /// Checks that `args` is an object whose fields are all in `allowed`.
    pub(crate) fn parse(
        tool: &'static str,
        args: &'a Value,
        allowed: &[&str],
    ) -> Result<Self, ArgError> {
        let map = args.as_object().ok_or(ArgError::NotObject {
            tool,
            got: json_type(args),
        })?;
        if let Some(field) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            let allowed = allowed
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ArgError::Unknown {
                tool,
                field: field.clone(),
                allowed,
            });
        }
        Ok(Self { tool, map })
    }

    /// A required string field.
    pub(crate) fn string(&self, field: &'static str) -> Result<&'a str, ArgError> {
        self.opt_string(field)?.ok_or(ArgError::Missing {
            tool: self.tool,
            field,
            kind: "string",
        })
    }

    /// An optional string field; JSON `null` counts as absent because models often send it.
    pub(crate) fn opt_string(&self, field: &'static str) -> Result<Option<&'a str>, ArgError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(ArgError::WrongType {
                tool: self.tool,
                field,
                kind: "a string",
                got: json_type(other),
            }),
        }
    }

    /// An optional non-negative integer field; JSON `null` counts as absent.
    pub(crate) fn opt_u64(&self, field: &'static str) -> Result<Option<u64>, ArgError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) => Ok(Some(v)),
                None if n.is_i64() => Err(ArgError::Invalid {
                    tool: self.tool,
                    field,
                    reason: format!("must not be negative, got {n}"),
                }),
                None => Err(ArgError::WrongType {
                    tool: self.tool,
                    field,
                    kind: "a whole number",
                    got: "a fractional number",
                }),
            },
            Some(other) => Err(ArgError::WrongType {
                tool: self.tool,
                field,
                kind: "an integer",
                got: json_type(other),
            }),
        }
    }
}

/// The JSON type of a value, with an article, for error messages.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Shortens `s` to at most [`OUTPUT_CAP_BYTES`], keeping its head and tail around a marker line.
///
/// The marker says how many bytes were cut. Cuts fall on UTF-8 character boundaries.
pub fn cap_output(s: &str) -> String {
    if s.len() <= OUTPUT_CAP_BYTES {
        s.to_owned()
    } else {
        splice(s, s, s.len() as u64, true, OUTPUT_CAP_BYTES)
    }
}

/// The marker put where text was cut out.
fn cut_marker(cut: u64) -> String {
    format!("\n[... {cut} bytes cut ...]\n")
}

/// The largest character boundary of `s` at or below `i`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The smallest character boundary of `s` at or above `i`.
fn ceil_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Text known by its beginning and end, with possibly some bytes in between already dropped.
#[derive(Debug)]
pub(crate) struct Excerpt {
    /// The beginning of the text.
    head: String,
    /// The end of the text; empty when `head` holds all of it.
    tail: String,
    /// Length of the whole text in bytes, counting what was dropped between head and tail.
    total: u64,
}

impl Excerpt {
    /// An excerpt that holds all of `text`.
    pub(crate) fn whole(text: String) -> Self {
        let total = text.len() as u64;
        Self {
            head: text,
            tail: String::new(),
            total,
        }
    }

    /// Bytes the text would take if shown in full.
    pub(crate) fn len(&self) -> u64 {
        self.total
    }

    /// The text in at most `limit` bytes: whole if it fits, else head, cut marker and tail.
    pub(crate) fn fit(self, limit: usize) -> String {
        if (self.head.len() + self.tail.len()) as u64 == self.total {
            let mut text = self.head;
            text.push_str(&self.tail);
            if text.len() <= limit {
                return text;
            }
            splice(&text, &text, self.total, true, limit)
        } else {
            splice(&self.head, &self.tail, self.total, false, limit)
        }
    }
}

/// Joins the start of `head` and the end of `tail` around a cut marker, in at most `limit` bytes.
///
/// `total` is the length of the whole text. `contiguous` says that `head` and `tail` are
/// the same complete text, so the two kept parts must not overlap.
fn splice(head: &str, tail: &str, total: u64, contiguous: bool, limit: usize) -> String {
    // The marker for the whole length is at least as long as the real one, so it is a safe reservation.
    let reserved = cut_marker(total).len();
    if limit <= reserved {
        return head[..floor_boundary(head, limit)].to_owned();
    }
    let budget = limit - reserved;
    let head_end = floor_boundary(head, budget / 2);
    let tail_budget = (budget - head_end).min(tail.len());
    let mut tail_start = ceil_boundary(tail, tail.len() - tail_budget);
    if contiguous {
        // Never show a byte twice; only reachable if the text fit, which callers rule out.
        tail_start = tail_start.max(head_end);
    }
    let kept = (head_end + tail.len() - tail_start) as u64;
    let mut out = String::with_capacity(limit);
    out.push_str(&head[..head_end]);
    out.push_str(&cut_marker(total.saturating_sub(kept)));
    out.push_str(&tail[tail_start..]);
    out
}

/// Collects a byte stream of unknown length in bounded memory: its first and last bytes.
#[derive(Debug)]
pub(crate) struct CappedBuffer {
    /// The first `keep` bytes seen.
    head: Vec<u8>,
    /// The last bytes seen after the head filled up, at most `keep` of them.
    tail: VecDeque<u8>,
    /// Every byte seen or skipped, so the cut marker can say how much was dropped.
    total: u64,
    /// How many bytes each of head and tail keeps.
    keep: usize,
}

impl Default for CappedBuffer {
    fn default() -> Self {
        Self::new(OUTPUT_CAP_BYTES)
    }
}

impl CappedBuffer {
    /// A buffer keeping at most `keep` bytes of head and `keep` bytes of tail.
    pub(crate) fn new(keep: usize) -> Self {
        Self {
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
            keep,
        }
    }

    /// Whether nothing has been seen.
    pub(crate) fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Appends bytes, dropping the oldest non-head bytes once the tail is full.
    pub(crate) fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.keep - self.head.len();
        let into_head = room.min(bytes.len());
        self.head.extend_from_slice(&bytes[..into_head]);
        bytes = &bytes[into_head..];
        if bytes.len() >= self.keep {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.keep..]);
            return;
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.keep);
        self.tail.drain(..overflow);
        self.tail.extend(bytes);
    }

    /// Records `n` bytes that were passed over without reading them (e.g. seeked past).
    ///
    /// The tail collected so far no longer adjoins what follows, so it counts as dropped.
    pub(crate) fn skip(&mut self, n: u64) {
        self.total += n;
        self.tail.clear();
    }

    /// Decodes the kept bytes (invalid UTF-8 becomes U+FFFD) into an excerpt.
    pub(crate) fn into_excerpt(self) -> Excerpt {
        let mut tail = Vec::from(self.tail);
        let held = (self.head.len() + tail.len()) as u64;
        if held == self.total {
            let mut all = self.head;
            all.append(&mut tail);
            return Excerpt::whole(String::from_utf8_lossy(&all).into_owned());
        }
        // Characters split by the cut would decode as U+FFFD, so their pieces are dropped too.
        let head_bytes = without_partial_last_char(&self.head);
        let tail_bytes = without_leading_continuations(&tail);
        let shown_bytes = (head_bytes.len() + tail_bytes.len()) as u64;
        let head = String::from_utf8_lossy(head_bytes).into_owned();
        let tail_text = String::from_utf8_lossy(tail_bytes).into_owned();
        // Decoding may lengthen invalid bytes, so the total is what is shown plus what is not.
        let total = (head.len() + tail_text.len()) as u64 + (self.total - shown_bytes);
        Excerpt {
            head,
            tail: tail_text,
            total,
        }
    }
}

/// `bytes` without a multi-byte character that is cut off at the end.
fn without_partial_last_char(bytes: &[u8]) -> &[u8] {
    let start = bytes.len().saturating_sub(3);
    for i in (start..bytes.len()).rev() {
        let b = bytes[i];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let needed = match b {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if bytes.len() - i < needed {
            &bytes[..i]
        } else {
            bytes
        };
    }
    bytes
}

/// `bytes` without the continuation bytes of a character whose start was cut off.
fn without_leading_continuations(bytes: &[u8]) -> &[u8] {
    let skip = bytes
        .iter()
        .take(3)
        .take_while(|b| **b & 0xC0 == 0x80)
        .count();
    &bytes[skip..]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tempfile::TempDir;

    /// The byte count in the single cut marker of `s`.
    pub(crate) fn cut_count(s: &str) -> u64 {
        let start = s.find("\n[... ").expect("marker present") + "\n[... ".len();
        let end = start + s[start..].find(' ').expect("marker complete");
        s[start..end].parse().expect("marker count")
    }

    /// Checks that `capped` is `original` with exactly the marked number of bytes cut from the middle.
    fn assert_head_tail_of(original: &str, capped: &str) {
        assert!(capped.len() <= OUTPUT_CAP_BYTES, "{} bytes", capped.len());
        let cut = cut_count(capped);
        let marker = cut_marker(cut);
        let (head, tail) = capped.split_once(&marker).expect("marker");
        assert!(original.starts_with(head));
        assert!(original.ends_with(tail));
        assert_eq!(head.len() + tail.len() + cut as usize, original.len());
        // Roughly balanced, and using nearly all the room.
        assert!(
            head.len().abs_diff(tail.len()) < 8,
            "{} vs {}",
            head.len(),
            tail.len()
        );
        assert!(capped.len() > OUTPUT_CAP_BYTES - 16);
    }

    #[test]
    fn cap_output_leaves_short_text_alone() {
        assert_eq!(cap_output(""), "");
        assert_eq!(cap_output("hello"), "hello");
        let exact = "x".repeat(OUTPUT_CAP_BYTES);
        assert_eq!(cap_output(&exact), exact);
    }

    #[test]
    fn cap_output_keeps_head_and_tail() {
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        let capped = cap_output(&text);
        assert_head_tail_of(&text, &capped);
        assert!(capped.starts_with("line 0\n"));
        assert!(capped.ends_with("line 19999\n"));
        let one_over = "y".repeat(OUTPUT_CAP_BYTES + 1);
        assert_head_tail_of(&one_over, &cap_output(&one_over));
    }

    #[test]
    fn cap_output_never_splits_characters() {
        for unit in ["é", "€", "🦀", "a€🦀é"] {
            for extra in 0..4 {
                let text = format!("{}{}", "b".repeat(extra), unit.repeat(40_000));
                let capped = cap_output(&text);
                assert_head_tail_of(&text, &capped);
                assert!(!capped.contains('\u{FFFD}'));
            }
        }
    }

    #[test]
    fn excerpt_fit_handles_tiny_limits() {
        let text = "x".repeat(100);
        assert_eq!(Excerpt::whole(text.clone()).fit(5), "xxxxx");
        let fitted = Excerpt::whole(text).fit(40);
        assert!(fitted.len() <= 40);
        assert!(fitted.contains("bytes cut"));
    }

    #[test]
    fn capped_buffer_keeps_small_input_whole() {
        let mut buf = CappedBuffer::new(8);
        assert!(buf.is_empty());
        buf.push(b"abc");
        buf.push(b"defghijklm");
        assert_eq!(buf.into_excerpt().fit(100), "abcdefghijklm");
    }

    #[test]
    fn capped_buffer_bounds_memory_and_counts_the_gap() {
        let mut buf = CappedBuffer::new(4);
        for chunk in [&b"0123"[..], b"45", b"6789abcdef", b"gh", b"i"] {
            buf.push(chunk);
            assert!(buf.head.len() <= 4 && buf.tail.len() <= 4);
        }
        let excerpt = buf.into_excerpt();
        assert_eq!(excerpt.len(), 19);
        assert_eq!(excerpt.head, "0123");
        assert_eq!(excerpt.tail, "fghi");
        let fitted = excerpt.fit(100);
        assert_eq!(fitted, format!("0123{}fghi", cut_marker(11)));
    }

    #[test]
    fn capped_buffer_drops_characters_split_by_the_cut() {
        let mut buf = CappedBuffer::new(5);
        // Head ends inside "€" (3 bytes) and the tail starts inside "🦀" (4 bytes).
        buf.push("abc€".as_bytes());
        buf.push(&[b'z'; 50]);
        buf.push("🦀xy".as_bytes());
        let excerpt = buf.into_excerpt();
        assert_eq!(excerpt.head, "abc");
        assert_eq!(excerpt.tail, "xy");
        let total = 3 + 3 + 50 + 4 + 2;
        assert_eq!(excerpt.len(), total);
        assert_eq!(excerpt.fit(1000), format!("abc{}xy", cut_marker(total - 5)));
    }

    #[test]
    fn capped_buffer_skip_counts_unread_bytes() {
        let mut buf = CappedBuffer::new(3);
        buf.push(b"abcde");
        buf.skip(10);
        buf.push(b"xyz");
        let excerpt = buf.into_excerpt();
        assert_eq!(excerpt.len(), 18);
        assert_eq!(excerpt.fit(100), format!("abc{}xyz", cut_marker(12)));
    }

    #[test]
    fn specs_cover_every_tool_with_strict_schemas() {
        for name in TOOL_NAMES {
            let spec = spec(name).expect("spec exists");
            assert_eq!(spec.name, *name);
            assert!(spec.description.len() > 40);
            assert_eq!(spec.parameters["type"], "object");
            assert_eq!(spec.parameters["additionalProperties"], false);
            let properties = spec.parameters["properties"].as_object().unwrap();
            for required in spec.parameters["required"].as_array().into_iter().flatten() {
                assert!(properties.contains_key(required.as_str().unwrap()));
            }
            serde_json::to_string(&spec).unwrap();
        }
        assert!(spec("rm_rf").is_none());
        let delegate = spec("delegate").unwrap();
        assert_eq!(
            delegate.parameters["properties"]["agent"]["enum"],
            json!(["coding", "log-analyzer"])
        );
        assert_eq!(
            spec("list_files").unwrap().parameters.get("required"),
            None,
            "list_files has no required fields"
        );
    }

    #[test]
    fn the_shell_description_tells_the_model_about_the_sandbox() {
        let description = spec("shell").unwrap().description;
        for words in [
            "no network",
            "only the workspace is writable",
            "`/tmp` is private and empty for every command",
        ] {
            assert!(description.contains(words), "{words}");
        }
    }

    #[test]
    fn only_shell_and_write_file_are_dangerous() {
        let dangerous: Vec<&str> = TOOL_NAMES
            .iter()
            .copied()
            .filter(|t| is_dangerous(t))
            .collect();
        assert_eq!(dangerous, ["shell", "write_file"]);
        assert!(!is_dangerous("unknown"));
    }

    #[tokio::test]
    async fn unknown_tools_fail_politely() {
        let dir = TempDir::new().unwrap();
        let ctx = ToolContext {
            workspace: Arc::new(Workspace::open(dir.path()).unwrap()),
            loki: None,
            sandbox: Arc::new(sandbox::Sandbox::unconfined()),
            mcp: Default::default(),
        };
        for tool in ["nope", "delegate"] {
            let out = execute(tool, &json!({}), &ctx).await;
            assert!(!out.ok);
            assert!(out.output.starts_with(&format!("unknown tool {tool}")));
            assert_eq!(out.exit_code, None);
        }
    }
}
