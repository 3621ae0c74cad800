//! `agent-server runs …`, the command-line client (contract section 11), as
//! an operator uses it: the real binary against a real server, driving a
//! run end to end, with its output and exit codes.

use std::process::Stdio;

use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::helpers::{ADMIN_TOKEN, TestApp, spawn_app};
use crate::mock_llm::Reply;

/// What one run of the client printed, and how it exited.
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn command(app: &TestApp, token: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-server"));
    command
        .arg("runs")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AGENT_SERVER_URL", &app.address)
        .env("AGENT_SERVER_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn runs(app: &TestApp, args: &[&str]) -> Outcome {
    runs_as(app, ADMIN_TOKEN, args).await
}

async fn runs_as(app: &TestApp, token: &str, args: &[&str]) -> Outcome {
    let output = command(app, token, args).output().await.unwrap();
    Outcome {
        code: output.status.code().unwrap(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

#[actix_web::test]
async fn the_client_drives_a_run_end_to_end() {
    let app = spawn_app().await;
    let api = app.api();
    app.llm.push(Reply::tool_call(
        "c1",
        "shell",
        json!({"command": "echo from the terminal"}),
    ));
    app.llm.push(Reply::text("ran it as asked"));
    let run = api
        .create_run(json!({"task": "run a command for the terminal test", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    api.wait_for_approval(&id).await;

    // `tail` follows from the first entry until the run ends.
    let mut tail = command(&app, ADMIN_TOKEN, &["tail", &id]).spawn().unwrap();

    let list = runs(&app, &["list", "--q", "terminal test"]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert_eq!(list.stdout.lines().count(), 1);
    assert!(list.stdout.contains(&id) && list.stdout.contains("waiting_approval"));
    let list = runs(&app, &["list", "--q", "terminal test", "--json"]).await;
    let page: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(page["runs"][0]["id"], id.as_str());

    let show = runs(&app, &["show", &id]).await;
    assert_eq!(show.code, 0);
    assert!(show.stdout.contains("waiting") && show.stdout.contains("echo from the terminal"));

    let message = runs(&app, &["message", &id, "say what you ran"]).await;
    assert_eq!(message.code, 0, "{}", message.stderr);

    // A viewer may not approve: the server's message, exit 1.
    let viewer = api.new_token("terminal-viewer", &["viewer"]).await;
    let refused = runs_as(&app, &viewer, &["approve", &id]).await;
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("forbidden"), "{}", refused.stderr);

    let approve = runs(&app, &["approve", &id, "--feedback", "fine"]).await;
    assert_eq!(approve.code, 0, "{}", approve.stderr);
    assert!(approve.stdout.contains("echo from the terminal"));

    let mut out = String::new();
    tail.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    let status = tail.wait().await.unwrap();
    assert_eq!(status.code(), Some(0), "{out}");
    let types: Vec<&str> = out
        .lines()
        .map(|line| line.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(types, api.event_types(&id).await);
    assert!(out.contains("approved by admin: fine"), "{out}");
    assert!(out.contains("admin: say what you ran"), "{out}");
    assert!(out.lines().last().unwrap().contains("ran it as asked"));
    // The model read the message after the command's result.
    assert!(
        app.llm.requests()[1]["messages"]
            .to_string()
            .contains("say what you ran")
    );

    // Refusals print the server's message and exit 1; so does a tail of a
    // run that did not complete.
    let late = runs(&app, &["cancel", &id]).await;
    assert_eq!(late.code, 1);
    assert!(late.stderr.contains("already finished"), "{}", late.stderr);
    let unknown = runs(&app, &["show", "00000000-0000-0000-0000-000000000000"]).await;
    assert_eq!(unknown.code, 1);
    assert!(unknown.stderr.contains("not_found"), "{}", unknown.stderr);
    app.llm.push(Reply::Hang);
    let doomed = api
        .create_run(json!({"task": "to be cancelled", "agent": "coding"}))
        .await;
    let doomed = doomed["id"].as_str().unwrap().to_string();
    let cancel = runs(&app, &["cancel", &doomed, "--reason", "not needed"]).await;
    assert_eq!(cancel.code, 0, "{}", cancel.stderr);
    assert!(cancel.stdout.contains("cancelled"));
    let tail = runs(&app, &["tail", &doomed]).await;
    assert_eq!(tail.code, 1);
    assert!(tail.stdout.contains("RUN_CANCELLED"));

    // Bad usage exits 2; a server that cannot be reached, 3.
    let usage = runs(&app, &["approve"]).await;
    assert_eq!(usage.code, 2);
    assert!(usage.stderr.contains("usage"));
    let mut offline = command(&app, ADMIN_TOKEN, &["list"]);
    offline.env("AGENT_SERVER_URL", "http://127.0.0.1:9");
    let output = offline.output().await.unwrap();
    assert_eq!(output.status.code(), Some(3));
}
