//! `agent-server runs …` (contract section 11): a command-line client of a
//! running server for operators who live in a terminal. It speaks the HTTP
//! API and the WebSocket like any other client, to `AGENT_SERVER_URL` with
//! `AGENT_SERVER_TOKEN` (default: the data dir's `admin-token`), prints
//! runs and events as readable lines, prints the server's own message when
//! it refuses, and exits with codes a script can use (`EXIT_*`).

use std::path::PathBuf;

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

/// The usage of `agent-server runs`.
pub const RUNS_USAGE: &str = "\
usage: agent-server runs list [--status S] [--q TEXT] [--agent A] [--created-by NAME] [--limit N] [--json]
       agent-server runs show ID [--json]
       agent-server runs approve ID [--feedback TEXT] [--add-tokens N] [--add-cost-usd USD]
       agent-server runs reject ID [--feedback TEXT]
       agent-server runs cancel ID [--reason TEXT]
       agent-server runs message ID TEXT
       agent-server runs pause ID [--reason TEXT]
       agent-server runs unpause ID
       agent-server runs fork ID --at SEQ [--message TEXT]
       agent-server runs tail ID
settings: AGENT_SERVER_URL (default http://127.0.0.1:3200), AGENT_SERVER_TOKEN (default: the
          admin-token file in AGENT_SERVER_DATA_DIR, default ./.agent-server)
exit codes: 0 done (tail: the run completed), 1 the server refused (its message is printed;
          tail: the run failed or was cancelled), 2 bad usage, 3 the server could not be reached
          or was unavailable";

/// Done; for `tail`, the run completed.
pub const EXIT_OK: u8 = 0;
/// The server refused the request (4xx), or the tailed run did not complete.
pub const EXIT_REFUSED: u8 = 1;
/// The command line is wrong.
pub const EXIT_USAGE: u8 = 2;
/// No answer: the server is unreachable, unavailable (5xx) or answered
/// something that is not the API.
pub const EXIT_UNREACHABLE: u8 = 3;

/// A parsed `runs` command.
#[derive(Debug, Clone, PartialEq)]
pub enum RunsCommand {
    List {
        query: Vec<(String, String)>,
        json: bool,
    },
    Show {
        id: String,
        json: bool,
    },
    Approve {
        id: String,
        feedback: Option<String>,
        add_tokens: Option<u64>,
        add_cost_usd: Option<f64>,
    },
    Reject {
        id: String,
        feedback: Option<String>,
    },
    Cancel {
        id: String,
        reason: Option<String>,
    },
    Message {
        id: String,
        text: String,
    },
    Pause {
        id: String,
        reason: Option<String>,
    },
    Unpause {
        id: String,
    },
    Fork {
        id: String,
        at_seq: i64,
        message: Option<String>,
    },
    Tail {
        id: String,
    },
}

/// Parses the words after `runs`.
pub fn parse_runs_command(args: &[String]) -> Result<RunsCommand, String> {
    let (verb, rest) = args.split_first().ok_or("a subcommand is needed")?;
    let mut positional = Vec::new();
    let mut options: Vec<(String, Option<String>)> = Vec::new();
    let mut words = rest.iter();
    while let Some(word) = words.next() {
        match word.strip_prefix("--") {
            Some("json") => options.push(("json".into(), None)),
            Some(name) if !name.is_empty() => {
                let value = words
                    .next()
                    .ok_or_else(|| format!("--{name} needs a value"))?;
                options.push((name.to_string(), Some(value.clone())));
            }
            _ => positional.push(word.clone()),
        }
    }
    let allowed: &[&str] = match verb.as_str() {
        "list" => &["status", "q", "agent", "created-by", "limit", "json"],
        "show" => &["json"],
        "approve" => &["feedback", "add-tokens", "add-cost-usd"],
        "reject" => &["feedback"],
        "cancel" | "pause" => &["reason"],
        "fork" => &["at", "message"],
        "message" | "unpause" | "tail" => &[],
        other => return Err(format!("unknown subcommand `{other}`")),
    };
    if let Some((name, _)) = options.iter().find(|(n, _)| !allowed.contains(&n.as_str())) {
        return Err(format!("`runs {verb}` has no option --{name}"));
    }
    let option = |name: &str| {
        options
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
    };
    let json = options.iter().any(|(n, _)| n == "json");
    let want = if verb == "list" {
        0
    } else if verb == "message" {
        2
    } else {
        1
    };
    if positional.len() != want {
        return Err(match want {
            0 => "`runs list` takes no run id".to_string(),
            2 => "`runs message` takes a run id and the text (quote it)".to_string(),
            _ => format!("`runs {verb}` takes one run id"),
        });
    }
    let id = positional.first().cloned().unwrap_or_default();
    let number = |name: &str| -> Result<Option<f64>, String> {
        option(name)
            .map(|v| {
                v.parse::<f64>()
                    .map_err(|_| format!("--{name} must be a number"))
            })
            .transpose()
    };
    Ok(match verb.as_str() {
        "list" => RunsCommand::List {
            query: options
                .iter()
                .filter_map(|(n, v)| Some((n.replace('-', "_"), v.clone()?)))
                .collect(),
            json,
        },
        "show" => RunsCommand::Show { id, json },
        "approve" => RunsCommand::Approve {
            id,
            feedback: option("feedback"),
            add_tokens: option("add-tokens")
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| "--add-tokens must be a whole number".to_string())
                })
                .transpose()?,
            add_cost_usd: number("add-cost-usd")?,
        },
        "reject" => RunsCommand::Reject {
            id,
            feedback: option("feedback"),
        },
        "cancel" => RunsCommand::Cancel {
            id,
            reason: option("reason"),
        },
        "pause" => RunsCommand::Pause {
            id,
            reason: option("reason"),
        },
        "unpause" => RunsCommand::Unpause { id },
        "message" => RunsCommand::Message {
            id,
            text: positional[1].clone(),
        },
        "fork" => RunsCommand::Fork {
            id,
            at_seq: option("at")
                .ok_or("`runs fork` needs --at SEQ")?
                .parse()
                .map_err(|_| "--at must be a whole number".to_string())?,
            message: option("message"),
        },
        _ => RunsCommand::Tail { id },
    })
}

/// Why a command did not succeed, with the exit code it means.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server's own message for a refusal (4xx).
    #[error("{message} ({code})")]
    Refused { code: String, message: String },
    #[error("{0}")]
    Unreachable(String),
    /// `tail`: the run ended without completing.
    #[error("the run ended {0}")]
    NotCompleted(String),
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Refused { .. } | ClientError::NotCompleted(_) => EXIT_REFUSED,
            ClientError::Unreachable(_) => EXIT_UNREACHABLE,
        }
    }
}

/// Where the server is and who is asking.
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// From `AGENT_SERVER_URL` and `AGENT_SERVER_TOKEN` (or the data dir's
    /// `admin-token`), read through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Client> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let base = get("AGENT_SERVER_URL")
            .unwrap_or_else(|| "http://127.0.0.1:3200".into())
            .trim_end_matches('/')
            .to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("AGENT_SERVER_URL: `{base}` is not an http:// or https:// URL");
        }
        let token = match get("AGENT_SERVER_TOKEN") {
            Some(token) => token.trim().to_string(),
            None => {
                let dir = PathBuf::from(
                    get("AGENT_SERVER_DATA_DIR").unwrap_or_else(|| "./.agent-server".into()),
                );
                let file = dir.join("admin-token");
                std::fs::read_to_string(&file)
                    .with_context(|| {
                        format!(
                            "AGENT_SERVER_TOKEN is not set and {} cannot be read",
                            file.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        Ok(Client {
            base,
            token,
            http: reqwest::Client::new(),
        })
    }

    /// Sends a request and reads the JSON answer; a refusal becomes the
    /// server's message.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ClientError::Unreachable(format!("cannot reach {}: {e}", self.base)))?;
        let status = response.status();
        let answer: Value = response.json().await.map_err(|e| {
            ClientError::Unreachable(format!("{} answered {status} without JSON: {e}", self.base))
        })?;
        if status.is_success() {
            return Ok(answer);
        }
        let code = answer["error"]["code"]
            .as_str()
            .unwrap_or("error")
            .to_string();
        let message = answer["error"]["message"]
            .as_str()
            .unwrap_or("the server refused the request")
            .to_string();
        if status.is_server_error() {
            return Err(ClientError::Unreachable(format!("{message} ({code})")));
        }
        Err(ClientError::Refused { code, message })
    }

    async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

/// Runs `command`, printing to stdout.
pub async fn runs(client: &Client, command: RunsCommand) -> Result<(), ClientError> {
    match command {
        RunsCommand::List { query, json } => {
            let query: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", encode(v)))
                .collect();
            let page = client
                .get(&format!("/api/runs?{}", query.join("&")))
                .await?;
            if json {
                println!("{page}");
            } else {
                for run in page["runs"].as_array().into_iter().flatten() {
                    println!("{}", run_line(run));
                }
            }
        }
        RunsCommand::Show { id, json } => {
            let run = client.get(&format!("/api/runs/{}", encode(&id))).await?;
            if json {
                println!("{run}");
            } else {
                print!("{}", run_details(&run));
            }
        }
        RunsCommand::Approve {
            id,
            feedback,
            add_tokens,
            add_cost_usd,
        } => {
            // The decision names the arguments printed here, so it cannot
            // approve something else than what the operator read.
            let run = client.get(&format!("/api/runs/{}", encode(&id))).await?;
            let pending = pending_of(&run)?;
            println!("approving {}", pending_line(pending));
            let mut body = json!({
                "approval_id": pending["approval_id"],
                "decision": "approved",
                "feedback": feedback,
                "args_sha256": pending["args_sha256"],
            });
            if let Some(n) = add_tokens {
                body["add_tokens"] = json!(n);
            }
            if let Some(usd) = add_cost_usd {
                body["add_cost_usd"] = json!(usd);
            }
            client
                .post(&format!("/api/runs/{}/resume", encode(&id)), body)
                .await?;
            println!("approved");
        }
        RunsCommand::Reject { id, feedback } => {
            let run = client.get(&format!("/api/runs/{}", encode(&id))).await?;
            let pending = pending_of(&run)?;
            println!("rejecting {}", pending_line(pending));
            let body = json!({
                "approval_id": pending["approval_id"],
                "decision": "rejected",
                "feedback": feedback,
                "args_sha256": pending["args_sha256"],
            });
            client
                .post(&format!("/api/runs/{}/resume", encode(&id)), body)
                .await?;
            println!("rejected");
        }
        RunsCommand::Cancel { id, reason } => {
            let run = client
                .post(
                    &format!("/api/runs/{}/cancel", encode(&id)),
                    json!({"reason": reason}),
                )
                .await?;
            println!("{}", run_line(&run));
        }
        RunsCommand::Message { id, text } => {
            let run = client
                .post(
                    &format!("/api/runs/{}/messages", encode(&id)),
                    json!({"text": text}),
                )
                .await?;
            println!("{}", run_line(&run));
        }
        RunsCommand::Pause { id, reason } => {
            let run = client
                .post(
                    &format!("/api/runs/{}/pause", encode(&id)),
                    json!({"reason": reason}),
                )
                .await?;
            println!("{}", run_line(&run));
        }
        RunsCommand::Unpause { id } => {
            let run = client
                .post(&format!("/api/runs/{}/unpause", encode(&id)), json!({}))
                .await?;
            println!("{}", run_line(&run));
        }
        RunsCommand::Fork {
            id,
            at_seq,
            message,
        } => {
            let mut body = json!({"at_seq": at_seq});
            if let Some(message) = message {
                body["message"] = json!(message);
            }
            let run = client
                .post(&format!("/api/runs/{}/fork", encode(&id)), body)
                .await?;
            println!("{}", run_line(&run));
        }
        RunsCommand::Tail { id } => tail(client, &id).await?,
    }
    Ok(())
}

/// Follows the run's journal over the WebSocket, one line per committed
/// event, until it ends.
async fn tail(client: &Client, id: &str) -> Result<(), ClientError> {
    // A known run first, so a typo is the server's 404, not a silent wait.
    client.get(&format!("/api/runs/{}", encode(id))).await?;
    let ws_url = format!("{}/api/ws", client.base.replacen("http", "ws", 1));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            ws_url.as_str(),
        )
        .map_err(|e| ClientError::Unreachable(format!("{ws_url}: {e}")))?;
    let bearer = format!("Bearer {}", client.token)
        .parse()
        .map_err(|_| ClientError::Unreachable("the token is not a valid header value".into()))?;
    request.headers_mut().insert("authorization", bearer);
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| ClientError::Unreachable(format!("cannot open {ws_url}: {e}")))?;
    let subscribe = json!({"op": "subscribe", "run_id": id, "after": 0}).to_string();
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(subscribe))
        .await
        .map_err(|e| ClientError::Unreachable(format!("{ws_url}: {e}")))?;
    while let Some(frame) = socket.next().await {
        let frame = frame.map_err(|e| ClientError::Unreachable(format!("{ws_url}: {e}")))?;
        let tokio_tungstenite::tungstenite::Message::Text(text) = frame else {
            continue;
        };
        let Ok(message) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match message["type"].as_str() {
            Some("event") => {
                let event = &message["event"];
                println!("{}", event_line(event));
                match event["type"].as_str() {
                    Some("RUN_COMPLETED") => return Ok(()),
                    Some("RUN_FAILED") => return Err(ClientError::NotCompleted("failed".into())),
                    Some("RUN_CANCELLED") => {
                        return Err(ClientError::NotCompleted("cancelled".into()));
                    }
                    _ => {}
                }
            }
            Some("error") => {
                return Err(ClientError::Refused {
                    code: message["code"].as_str().unwrap_or("error").into(),
                    message: message["message"].as_str().unwrap_or_default().into(),
                });
            }
            _ => {}
        }
    }
    Err(ClientError::Unreachable(
        "the server closed the connection before the run ended".into(),
    ))
}

fn pending_of(run: &Value) -> Result<&Value, ClientError> {
    match &run["pending_approval"] {
        Value::Null => Err(ClientError::Refused {
            code: "no_pending_approval".into(),
            message: format!(
                "run {} has no approval waiting (status {})",
                text(&run["id"]),
                text(&run["status"])
            ),
        }),
        pending => Ok(pending),
    }
}

/// A query-string value, percent-encoded.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// One line of text, cut to `max` characters.
fn clip(value: &str, max: usize) -> String {
    let one_line = value.replace(['\n', '\r', '\t'], " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A run as one line: id, status, agent, creator, task.
pub fn run_line(run: &Value) -> String {
    format!(
        "{}  {:<16} {:<12} {:<10} {}",
        text(&run["id"]),
        text(&run["status"]),
        text(&run["agent"]),
        text(&run["created_by"]),
        clip(&text(&run["task"]), 60)
    )
}

fn pending_line(pending: &Value) -> String {
    format!(
        "{} of {} ({}): {}",
        text(&pending["tool"]),
        text(&pending["agent"]),
        text(&pending["kind"]),
        clip(&pending["args"].to_string(), 200)
    )
}

/// A run in detail, a field a line.
fn run_details(run: &Value) -> String {
    let mut out = String::new();
    for field in [
        "id",
        "status",
        "agent",
        "task",
        "created_by",
        "created_at",
        "updated_at",
        "owner",
        "last_seq",
        "result",
    ] {
        out.push_str(&format!("{field:<12} {}\n", text(&run[field])));
    }
    if let Some(error) = run["error"].as_object() {
        out.push_str(&format!(
            "{:<12} {}: {}\n",
            "error",
            text(&error["code"]),
            text(&error["message"])
        ));
    }
    let tokens: u64 = run["usage"]
        .as_object()
        .into_iter()
        .flat_map(|usage| usage.values())
        .map(|u| u["input_tokens"].as_u64().unwrap_or(0) + u["output_tokens"].as_u64().unwrap_or(0))
        .sum();
    out.push_str(&format!(
        "{:<12} {tokens} tokens, {:.4} USD\n",
        "usage",
        run["cost_usd"].as_f64().unwrap_or(0.0)
    ));
    if let Some(budget) = run["budget"].as_object() {
        out.push_str(&format!(
            "{:<12} tokens {} of {}, USD {} of {}\n",
            "budget",
            text(&budget["used_tokens"]),
            text(&budget["max_tokens"]),
            text(&budget["used_cost_usd"]),
            text(&budget["max_cost_usd"])
        ));
    }
    if let Some(from) = run["forked_from"].as_object() {
        out.push_str(&format!(
            "{:<12} {} at seq {}\n",
            "forked_from",
            text(&from["run_id"]),
            text(&from["seq"])
        ));
    }
    for fork in run["forks"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<12} {} at seq {}\n",
            "fork",
            text(&fork["run_id"]),
            text(&fork["seq"])
        ));
    }
    if !run["pending_approval"].is_null() {
        out.push_str(&format!(
            "{:<12} {} (approval {})\n",
            "waiting",
            pending_line(&run["pending_approval"]),
            text(&run["pending_approval"]["approval_id"])
        ));
    }
    out
}

/// A journal event as one readable line: seq, time, type, agent, and
/// what it says.
pub fn event_line(event: &Value) -> String {
    let p = &event["payload"];
    let what = match event["type"].as_str().unwrap_or_default() {
        "RUN_STARTED" => format!(
            "by {}: {}",
            text(&p["created_by"]),
            clip(&text(&p["task"]), 100)
        ),
        "AGENT_STARTED" => clip(&text(&p["task"]), 100),
        "LLM_CALLED" => format!("{} attempt {}", text(&p["model"]), text(&p["attempt"])),
        "AGENT_THOUGHT" => {
            let calls: Vec<String> = p["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| text(&c["tool"]))
                .collect();
            let said = clip(&text(&p["text"]), 100);
            if calls.is_empty() {
                said
            } else {
                format!("{said} → {}", calls.join(", "))
            }
        }
        "TOOL_CALLED" => format!("{} {}", text(&p["tool"]), clip(&p["args"].to_string(), 100)),
        "RUN_SUSPENDED" => format!(
            "waits for approval of {} {}",
            text(&p["tool"]),
            clip(&p["args"].to_string(), 80)
        ),
        "RUN_RESUMED" => format!(
            "{} by {}{}",
            text(&p["decision"]),
            text(&p["decided_by"]),
            p["feedback"]
                .as_str()
                .map(|f| format!(": {}", clip(f, 80)))
                .unwrap_or_default()
        ),
        "TOOL_STARTED" | "TOOL_INTERRUPTED" => text(&p["tool"]),
        "TOOL_RESULT" => format!(
            "{} {} {}",
            text(&p["tool"]),
            if p["ok"] == true { "ok" } else { "failed" },
            clip(&text(&p["output"]), 80)
        ),
        "AGENT_FINISHED" | "RUN_COMPLETED" => clip(&text(&p["result"]), 100),
        "RUN_FAILED" => format!(
            "{}: {}",
            text(&p["error"]["code"]),
            text(&p["error"]["message"])
        ),
        "RUN_CANCELLED" | "RUN_PAUSED" => format!(
            "by {} {}",
            text(&p["by"]),
            p["reason"].as_str().unwrap_or_default()
        ),
        "RUN_UNPAUSED" => format!("by {}", text(&p["by"])),
        "OPERATOR_MESSAGE" => format!("{}: {}", text(&p["by"]), clip(&text(&p["text"]), 100)),
        "RUN_FORKED" => format!(
            "from {} at seq {} by {}",
            text(&p["from_run_id"]),
            text(&p["from_seq"]),
            text(&p["by"])
        ),
        "BUDGET_EXCEEDED" => format!(
            "tokens {} of {}, USD {} of {}",
            text(&p["used_tokens"]),
            text(&p["max_tokens"]),
            text(&p["used_cost_usd"]),
            text(&p["max_cost_usd"])
        ),
        "BUDGET_RAISED" => format!(
            "to tokens {}, USD {} by {}",
            text(&p["max_tokens"]),
            text(&p["max_cost_usd"]),
            text(&p["by"])
        ),
        _ => clip(&p.to_string(), 100),
    };
    let at = text(&event["at"]);
    let time = at.get(11..19).unwrap_or(&at);
    format!(
        "{:>4} {time} {:<17} {:<12} {what}",
        text(&event["seq"]),
        text(&event["type"]),
        event["agent"].as_str().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn runs_commands_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_runs_command(&words("list --status paused --q bug --created-by bob")),
            Ok(RunsCommand::List {
                query: vec![
                    ("status".into(), "paused".into()),
                    ("q".into(), "bug".into()),
                    ("created_by".into(), "bob".into())
                ],
                json: false
            })
        );
        assert_eq!(
            parse_runs_command(&words("approve R --add-tokens 500")),
            Ok(RunsCommand::Approve {
                id: "R".into(),
                feedback: None,
                add_tokens: Some(500),
                add_cost_usd: None
            })
        );
        let mut message = words("message R");
        message.push("stop and think".into());
        assert_eq!(
            parse_runs_command(&message),
            Ok(RunsCommand::Message {
                id: "R".into(),
                text: "stop and think".into()
            })
        );
        assert_eq!(
            parse_runs_command(&words("fork R --at 7")),
            Ok(RunsCommand::Fork {
                id: "R".into(),
                at_seq: 7,
                message: None
            })
        );
        for bad in [
            "",
            "list R",
            "show",
            "show A B",
            "approve R --reason x",
            "approve R --add-tokens many",
            "fork R",
            "message R",
            "tail R --follow x",
            "explode R",
            "reject R --feedback",
        ] {
            assert!(parse_runs_command(&words(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_read_as_one_line_each() {
        let line = event_line(&json!({
            "seq": 12, "type": "RUN_RESUMED", "agent": "coding", "at": "2026-12-04T10:11:12.5Z",
            "key": "k", "payload": {"decision": "rejected", "decided_by": "bob", "feedback": "not\nnow"}
        }));
        assert_eq!(
            line,
            "  12 10:11:12 RUN_RESUMED       coding       rejected by bob: not now"
        );
        assert_eq!(encode("a b&c"), "a%20b%26c");
        assert_eq!(clip("abcdef", 4), "abc…");
    }
}
