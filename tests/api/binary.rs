//! The binary as a user runs it: settings errors, the embedded cluster, the
//! scripted demo, and a clean stop on SIGTERM.

use std::collections::HashMap;

use serde_json::json;

use crate::process::{Server, server_command};

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn an_invalid_setting_stops_the_server_with_one_line_naming_it() {
    for (variable, value) in [
        ("AGENT_MAX_ITERATIONS", "zero"),
        ("AGENT_SERVER_ADDR", "nowhere"),
        ("LLM_PROVIDER", "oracle"),
    ] {
        let output = server_command(vars(&[(variable, value)]))
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("running agent-server");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(variable), "{stderr}");
    }
}

#[test]
fn missing_postgresql_binaries_say_how_to_get_them() {
    let data = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let output = server_command(vars(&[
        ("AGENT_SERVER_DATA_DIR", data.path().to_str().unwrap()),
        ("AGENT_SERVER_PG_BINDIR", empty.path().to_str().unwrap()),
        ("AGENT_SERVER_ADDR", "127.0.0.1:0"),
    ]))
    .stderr(std::process::Stdio::piped())
    .output()
    .expect("running agent-server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("apt-get install postgresql"), "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}

/// The README's first command: embedded PostgreSQL, the scripted model, the
/// whole demo through the network of agents, and a clean stop.
#[actix_web::test]
async fn the_embedded_scripted_demo_runs_and_stops_cleanly() {
    let data = tempfile::Builder::new()
        .prefix("agent-server-demo-")
        .tempdir()
        .unwrap();
    let data_dir = data.path().to_str().unwrap().to_string();
    let settings = vars(&[
        ("AGENT_SERVER_DATA_DIR", &data_dir),
        ("AGENT_SERVER_ADDR", "127.0.0.1:0"),
    ]);
    std::fs::create_dir_all(data.path().join("workspace")).unwrap();
    std::fs::write(data.path().join("workspace/hello.txt"), "hello\n").unwrap();

    let server = Server::start_with(settings.clone()).await;
    let api = &server.api;
    let run = api
        .create_run(json!({"task": "tidy up the repository"}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let shell = api.wait_for_approval(&id).await;
    assert_eq!(shell["tool"], "shell");
    assert_eq!(shell["agent"], "coding");
    api.resume(
        &id,
        shell["approval_id"].as_str().unwrap(),
        "approved",
        None,
    )
    .await;
    let write = crate::helpers::wait_until("the write_file approval", || async {
        let run = api.run(&id).await;
        (run["pending_approval"]["tool"] == "write_file").then_some(run["pending_approval"].clone())
    })
    .await;
    assert_eq!(write["args"]["path"], "agent-notes.md");

    // A clean stop in the middle of the run: exit 0, cluster stopped.
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        !data.path().join("pg/data/postmaster.pid").exists(),
        "the cluster was stopped"
    );

    // The next start reuses the cluster, and the run goes on.
    let server = Server::start_with(settings).await;
    let api = &server.api;
    let still = api.run(&id).await;
    assert_eq!(still["pending_approval"], write);
    api.resume(
        &id,
        write["approval_id"].as_str().unwrap(),
        "approved",
        None,
    )
    .await;
    let done = api.wait_for_status(&id, "completed").await;
    let result = done["result"].as_str().unwrap();
    assert!(result.contains("wrote agent-notes.md: done"), "{result}");
    assert!(data.path().join("workspace/agent-notes.md").exists());
    let usage = done["usage"].as_object().unwrap();
    assert!(usage.contains_key("orchestrator") && usage.contains_key("coding"));
    let types = api.event_types(&id).await;
    assert_eq!(types.iter().filter(|t| *t == "AGENT_STARTED").count(), 1);
    assert_eq!(types.iter().filter(|t| *t == "AGENT_FINISHED").count(), 1);
    assert!(server.terminate().success());
}

#[actix_web::test]
async fn sigterm_closes_websockets_and_stops_promptly() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let database_url = crate::helpers::fresh_database().await;
    let llm = crate::mock_llm::MockLlm::start().await;
    let workspace = tempfile::tempdir().unwrap();
    let server = Server::start(&database_url, &llm, &workspace).await;
    let request = crate::helpers::ws_request(&server.api.address, crate::helpers::ADMIN_TOKEN);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let close = loop {
        match ws.next().await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(close.unwrap().code, CloseCode::Away);
}

/// `agent-server token …` on the data dir's embedded cluster, `env`-clean.
fn token_command(data_dir: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_agent-server"))
        .arg("token")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AGENT_SERVER_DATA_DIR", data_dir)
        .output()
        .expect("running agent-server token")
}

/// A new user's first start: an admin token in the data dir, readable by
/// its owner only, named but never shown in the output; tokens made,
/// listed and revoked from the command line while the server runs.
#[actix_web::test]
async fn the_first_start_makes_an_admin_token_and_token_commands_work_beside_the_server() {
    use std::os::unix::fs::PermissionsExt;

    let data = tempfile::Builder::new()
        .prefix("agent-server-tokens-")
        .tempdir()
        .unwrap();
    let data_dir = data.path().to_str().unwrap().to_string();
    let settings = vars(&[
        ("AGENT_SERVER_DATA_DIR", &data_dir),
        ("AGENT_SERVER_ADDR", "127.0.0.1:0"),
    ]);
    let server = Server::start_with(settings.clone()).await;
    let file = data.path().join("admin-token");
    let admin_token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let me: serde_json::Value = server.api.get("/api/me").await.json().await.unwrap();
    assert_eq!(me, json!({"name": "admin", "roles": ["admin"]}));
    let printed = crate::helpers::wait_until("the sign-in hint", || async {
        let lines = server.stdout.lock().unwrap().join("\n");
        lines.contains("#token=").then_some(lines)
    })
    .await;
    assert!(printed.contains(&file.display().to_string()), "{printed}");
    assert!(
        !printed.contains(&admin_token),
        "the token itself is never printed"
    );

    // Tokens from the command line, on the cluster the server runs.
    let created = token_command(
        &data_dir,
        &["create", "--name", "ci", "--role", "viewer,operator"],
    );
    assert!(created.status.success(), "{created:?}");
    let stdout = String::from_utf8(created.stdout).unwrap();
    let ci_token = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "the token alone: {stdout}");
    let ci = server.api.with_token(ci_token);
    let me: serde_json::Value = ci.get("/api/me").await.json().await.unwrap();
    assert_eq!(me, json!({"name": "ci", "roles": ["viewer", "operator"]}));
    let listed = token_command(&data_dir, &["list"]);
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("ci ") && l.contains("viewer,operator")),
        "{listed}"
    );
    assert!(listed.lines().any(|l| l.starts_with("admin ")), "{listed}");
    assert!(!listed.contains(ci_token) && !listed.contains(&admin_token));
    let bad = token_command(&data_dir, &["create", "--name", "ci", "--role", "viewer"]);
    assert!(!bad.status.success());
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).trim().lines().count(),
        1
    );

    let revoked = token_command(&data_dir, &["revoke", "ci"]);
    assert!(revoked.status.success(), "{revoked:?}");
    crate::helpers::wait_until("the revoked token to be refused", || async {
        (ci.get("/api/runs").await.status() == 401).then_some(())
    })
    .await;
    assert!(server.terminate().success());

    // The next start keeps the admin token; the command line also works
    // with no server running (and stops the cluster it started).
    let listed = token_command(&data_dir, &["list"]);
    assert!(listed.status.success(), "{listed:?}");
    assert!(!data.path().join("pg/data/postmaster.pid").exists());
    let server = Server::start_with(settings).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), admin_token);
    assert_eq!(server.api.get("/api/me").await.status(), 200);
    assert!(server.terminate().success());
}

#[test]
fn a_port_in_use_stops_the_start_before_any_cluster_and_help_and_version_answer() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let output = server_command(vars(&[
        ("AGENT_SERVER_DATA_DIR", data.path().to_str().unwrap()),
        ("AGENT_SERVER_ADDR", &addr),
        ("LOG_FORMAT", "json"),
    ]))
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .output()
    .expect("running agent-server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&addr) && stderr.contains("AGENT_SERVER_ADDR"),
        "{stderr}"
    );
    // No embedded cluster was made, let alone left running.
    assert!(!data.path().join("pg").exists());

    let binary = env!("CARGO_BIN_EXE_agent-server");
    // `serve --help` too: help, never a server.
    let help = std::process::Command::new(binary)
        .args(["serve", "--help"])
        .output()
        .expect("running agent-server --help");
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for word in [
        "serve",
        "migrate",
        "token",
        "runs",
        "DATABASE_URL",
        "AGENT_RUN_MAX_TOKENS",
    ] {
        assert!(help.contains(word), "--help names {word}");
    }
    let version = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .expect("running agent-server --version");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("agent-server {}", env!("CARGO_PKG_VERSION"))
    );
}
