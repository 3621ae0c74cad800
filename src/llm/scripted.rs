//! The built-in `scripted` model: deterministic answers chosen from the
//! conversation alone, so the whole network can be shown offline. The
//! orchestrator delegates by the task's words; the coding agent lists the
//! workspace, reads a file, asks to run a shell command and to write a file
//! (both need a human), then summarises; the log-analyzer queries Loki.

use futures_util::future::BoxFuture;
use serde_json::json;

use super::{Error, Message, ModelAnswer, ModelClient, ModelRequest, RequestedCall, Usage};
use crate::agents::AgentName;

/// The file the coding agent proposes to write.
const NOTES_FILE: &str = "agent-notes.md";

pub struct ScriptedModel;

impl ModelClient for ScriptedModel {
    fn provider(&self) -> &'static str {
        "scripted"
    }

    fn model_for(&self, _agent: AgentName) -> String {
        "scripted".into()
    }

    fn complete(&self, request: ModelRequest) -> BoxFuture<'static, Result<ModelAnswer, Error>> {
        let answer = respond(&request);
        Box::pin(async move { Ok(answer) })
    }
}

/// The answer for a conversation; a pure function of the request.
pub fn respond(request: &ModelRequest) -> ModelAnswer {
    let (text, calls) = match request.agent {
        AgentName::Orchestrator => orchestrate(&request.messages),
        AgentName::Coding => code(&request.messages),
        AgentName::LogAnalyzer => analyze_logs(&request.messages),
    };
    let input_chars: usize = request.system.len()
        + request
            .messages
            .iter()
            .map(|m| match m {
                Message::User { text } => text.len(),
                Message::Assistant { text, .. } => text.len(),
                Message::ToolResult { output, .. } => output.len(),
            })
            .sum::<usize>();
    ModelAnswer {
        model: "scripted".into(),
        usage: Usage {
            // About four characters a token, like real tokenizers on English.
            input_tokens: (input_chars / 4) as u64,
            output_tokens: (text.len() / 4 + 8 * calls.len()) as u64,
        },
        text,
        tool_calls: calls
            .into_iter()
            .map(|(tool, args)| RequestedCall {
                call_id: None,
                tool: tool.into(),
                args,
            })
            .collect(),
    }
}

type Calls = Vec<(&'static str, serde_json::Value)>;

fn task(messages: &[Message]) -> &str {
    messages
        .iter()
        .find_map(|m| match m {
            Message::User { text } => Some(text.as_str()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The results so far, by tool name, latest last.
fn results<'a>(messages: &'a [Message], tool: &str) -> Vec<(&'a str, bool)> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::ToolResult {
                tool: t,
                output,
                ok,
                ..
            } if t == tool => Some((output.as_str(), *ok)),
            _ => None,
        })
        .collect()
}

fn is_about_logs(task: &str) -> bool {
    let task = task.to_lowercase();
    [
        "log", "error", "latency", "incident", "timeout", "5xx", "outage",
    ]
    .iter()
    .any(|word| task.contains(word))
}

fn orchestrate(messages: &[Message]) -> (String, Calls) {
    let task = task(messages);
    if let Some((answer, _)) = results(messages, "delegate").last() {
        return (
            format!("Done. Here is what my team found and did:\n\n{answer}"),
            vec![],
        );
    }
    let agent = if is_about_logs(task) {
        "log-analyzer"
    } else {
        "coding"
    };
    (
        format!("This is work for the {agent} agent; I'm handing it over."),
        vec![("delegate", json!({"agent": agent, "task": task}))],
    )
}

fn code(messages: &[Message]) -> (String, Calls) {
    let listing = results(messages, "list_files");
    let reads = results(messages, "read_file");
    let shells = results(messages, "shell");
    let writes = results(messages, "write_file");
    let Some((listing, _)) = listing.last() else {
        return (
            "Let me look at the workspace first.".into(),
            vec![("list_files", json!({"path": "."}))],
        );
    };
    let first_file = listing
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.ends_with('/') && !l.contains(' '));
    if reads.is_empty()
        && let Some(file) = first_file
    {
        return (
            format!("The workspace has files; I'll read `{file}` to see what it holds."),
            vec![("read_file", json!({"path": file}))],
        );
    }
    if shells.is_empty() {
        return (
            "Next I want to run `ls -la && du -sh .` to see sizes and permissions. It only reads, but a human must approve it.".into(),
            vec![("shell", json!({"command": "ls -la && du -sh ."}))],
        );
    }
    if writes.is_empty() {
        let content = format!(
            "# Notes from agent-server\n\nTask: {}\n\nWorkspace listing:\n\n```\n{}\n```\n",
            task(messages),
            listing.trim_end()
        );
        return (
            format!(
                "I'll record what I found in `{NOTES_FILE}`; this writes a file, so it needs approval."
            ),
            vec![(
                "write_file",
                json!({"path": NOTES_FILE, "content": content}),
            )],
        );
    }
    let outcome = |name: &str, result: &[(&str, bool)]| match result.last() {
        Some((output, _)) if output.starts_with("DENIED") => {
            format!("- {name}: not done, {output}")
        }
        Some((_, true)) => format!("- {name}: done"),
        Some((output, false)) => format!("- {name}: failed: {output}"),
        None => format!("- {name}: skipped"),
    };
    let summary = [
        outcome("listed the workspace", &results(messages, "list_files")),
        outcome("read a file", &reads),
        outcome("ran `ls -la && du -sh .`", &shells),
        outcome(&format!("wrote {NOTES_FILE}"), &writes),
    ]
    .join("\n");
    (format!("Summary of my work:\n{summary}"), vec![])
}

fn analyze_logs(messages: &[Message]) -> (String, Calls) {
    match results(messages, "loki_query").last() {
        None => (
            "I'll look for recent errors across all services.".into(),
            vec![(
                "loki_query",
                json!({"query": "{job=~\".+\"} |~ \"(?i)error|timeout|panic\"", "since": "1h", "limit": 50}),
            )],
        ),
        Some((output, true)) => (
            format!("Diagnosis from the last hour of logs:\n\n{output}"),
            vec![],
        ),
        Some((output, false)) => (
            format!(
                "I could not read the logs: {output}. With Loki available I would have searched the last hour for errors, timeouts and panics."
            ),
            vec![],
        ),
    }
}
