//! The shell sandbox (contract section 9), seen from inside a command and from
//! the host: no network, its own processes only, an unprivileged user, an
//! allow-listed environment, a read-only file system but for the workspace
//! and a private `/tmp`, limits, nothing that outlives the command (the
//! server's `kill -9` included), and the checks at start.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    Api, TestApp, fresh_database, processes_with, settings_map, sleep_marker, spawn_app,
    spawn_app_with, wait_until,
};
use crate::mock_llm::{MockLlm, Reply};
use crate::process::{Server, server_command};

/// The sandbox user of a root server, which the tests run as.
const SANDBOX_UID: u32 = 65_534;

/// Has the coding agent ask for `shell` with `args`, approves the call, and
/// returns the run's id once the call started.
async fn start_shell(llm: &MockLlm, api: &Api, args: Value) -> String {
    llm.push(Reply::tool_call("call_sh", "shell", args));
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let pending = api.wait_for_approval(&id).await;
    let response = api
        .resume(
            &id,
            pending["approval_id"].as_str().unwrap(),
            "approved",
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    id
}

/// The payload of the run's `TOOL_RESULT`, once it is journaled.
async fn tool_result(api: &Api, id: &str) -> Value {
    let events = api.wait_for_events(id, "TOOL_RESULT", 1).await;
    let result = events.iter().find(|e| e["type"] == "TOOL_RESULT").unwrap();
    result["payload"].clone()
}

/// Runs `command` as an approved `shell` call and returns its `TOOL_RESULT`
/// payload.
async fn shell(llm: &MockLlm, api: &Api, command: &str) -> Value {
    let id = start_shell(llm, api, json!({"command": command})).await;
    tool_result(api, &id).await
}

/// What an approved `shell` call of `command` printed, asserting it exited 0.
async fn shell_output(app: &TestApp, command: &str) -> String {
    let result = shell(&app.llm, &app.api(), command).await;
    assert_eq!(result["exit_code"], 0, "{result}");
    result["output"].as_str().unwrap().to_string()
}

/// Waits until `count` processes run `sleep {marker}`.
async fn wait_for_sleeps(marker: &str, count: usize) {
    let sleeper = format!("sleep {marker}");
    wait_until(&format!("{count} × {sleeper}"), || async {
        let running = processes_with(marker)
            .into_iter()
            .filter(|(_, line)| *line == sleeper)
            .count();
        (running == count).then_some(())
    })
    .await;
}

/// The user commands run as: the sandbox user under a root server, else the
/// server's own.
fn command_uid() -> u32 {
    if nix::unistd::geteuid().is_root() {
        SANDBOX_UID
    } else {
        nix::unistd::geteuid().as_raw()
    }
}

/// How many live processes the host has for user `uid`.
fn processes_of(uid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            entry.file_name().to_str()?.parse::<i32>().ok()?;
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let zombie = status.lines().any(|l| l.starts_with("State:\tZ"));
            let real_uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .split_whitespace()
                .next()?
                .parse::<u32>()
                .ok()?;
            (real_uid == uid && !zombie).then_some(())
        })
        .count()
}

#[actix_web::test]
async fn a_command_cannot_reach_the_server_unless_the_network_is_on() {
    // Arrange
    let closed = spawn_app().await;
    let open = spawn_app_with(&[("AGENT_SHELL_NETWORK", "true")]).await;
    let probe = |app: &TestApp| {
        let port = app.address.rsplit(':').next().unwrap().to_string();
        format!(
            "bash -c 'echo > /dev/tcp/127.0.0.1/{port}' 2>/dev/null && echo reachable || echo unreachable; \
             tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '"
        )
    };

    // Act
    let without = shell_output(&closed, &probe(&closed)).await;
    let with = shell_output(&open, &probe(&open)).await;

    // Assert
    assert_eq!(without, "unreachable\nlo ", "only a loopback of its own");
    assert!(with.starts_with("reachable\n"), "{with}");
    assert_ne!(with, "reachable\nlo ", "the host's interfaces");
}

#[actix_web::test]
async fn a_command_sees_neither_the_server_nor_other_commands() {
    // Arrange: another run's command is running.
    let app = spawn_app().await;
    let api = app.api();
    let marker = sleep_marker();
    let other = start_shell(
        &app.llm,
        &api,
        json!({"command": format!("sleep {marker}")}),
    )
    .await;
    wait_for_sleeps(&marker, 1).await;
    let server = std::process::id();

    // Act
    let seen = shell_output(
        &app,
        &format!(
            "for p in /proc/[0-9]*; do echo \"${{p#/proc/}} $(tr '\\0' ' ' < $p/cmdline)\"; done; \
             cat /proc/{server}/environ 2>&1 || true"
        ),
    )
    .await;

    // Assert
    let lines: Vec<&str> = seen.lines().collect();
    assert!(
        lines[0].starts_with("1 ") && lines[0].contains("bwrap --die-with-parent"),
        "bwrap's init is process 1: {seen}"
    );
    assert!(lines.len() <= 5, "only the command's own processes: {seen}");
    assert!(!seen.contains(&marker), "the other run's command: {seen}");
    assert!(
        seen.ends_with(&format!(
            "cat: /proc/{server}/environ: No such file or directory\n"
        )),
        "{seen}"
    );
    api.cancel(&other).await;
}

#[actix_web::test]
async fn a_command_runs_as_an_unprivileged_user_without_capabilities() {
    let app = spawn_app().await;

    let output = shell_output(
        &app,
        "id -u; id -G; cat /etc/shadow 2>&1 || true; \
         grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status",
    )
    .await;

    let uid = command_uid();
    let mut expected = format!(
        "{uid}\n{uid}\ncat: /etc/shadow: Permission denied\n\
         CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
         CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\n"
    );
    if nix::unistd::geteuid().is_root() {
        expected.push_str("NoNewPrivs:\t1\n");
    }
    assert_eq!(output.replace("NoNewPrivs:\t0\n", ""), expected);
}

#[actix_web::test]
async fn the_workspace_and_what_the_tools_write_are_the_commands_to_change() {
    // Arrange: a workspace with files the server's user made before it started.
    let workspace = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(workspace.path().join("src/old")).unwrap();
    std::fs::write(workspace.path().join("src/old/notes.txt"), "old\n").unwrap();
    let app = spawn_app_with(&[("AGENT_WORKSPACE", workspace.path().to_str().unwrap())]).await;
    let api = app.api();
    app.llm.push(Reply::tool_call(
        "call_w",
        "write_file",
        json!({"path": "new/deeper/file.txt", "content": "new\n"}),
    ));
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let pending = api.wait_for_approval(id).await;
    api.resume(
        id,
        pending["approval_id"].as_str().unwrap(),
        "approved",
        None,
    )
    .await;
    api.wait_for_status(id, "completed").await;

    // Act
    let output = shell_output(
        &app,
        "echo more >> src/old/notes.txt && touch src/old/made && \
         echo more >> new/deeper/file.txt && touch new/deeper/made && \
         touch made && echo all changed",
    )
    .await;

    // Assert
    assert_eq!(output, "all changed\n");
    assert_eq!(
        std::fs::read_to_string(workspace.path().join("new/deeper/file.txt")).unwrap(),
        "new\nmore\n"
    );
    use std::os::unix::fs::MetadataExt;
    for path in [
        "",
        "src/old/notes.txt",
        "new",
        "new/deeper/file.txt",
        "made",
    ] {
        let owner = std::fs::metadata(workspace.path().join(path))
            .unwrap()
            .uid();
        assert_eq!(owner, command_uid(), "{path}");
    }
}

#[actix_web::test]
async fn a_command_sees_only_path_home_lang_and_term() {
    // Arrange: the server has a variable no deny-list would call secret.
    let database_url = fresh_database().await;
    let llm = MockLlm::start().await;
    let workspace = tempfile::tempdir().unwrap();
    let canary = format!("canary-{}", uuid::Uuid::new_v4());
    let mut vars = settings_map(&database_url, &llm, workspace.path(), &[]);
    vars.insert("BUILD_LABEL".into(), canary.clone());
    let server = Server::start_with(vars).await;
    let root = workspace.path().canonicalize().unwrap();

    // Act: what the shell was started with, what it exports, and the
    // environments of the processes above it.
    let result = shell(
        &llm,
        &server.api,
        "tr '\\0' '\\n' < /proc/$$/environ; echo ---; env; echo ---; \
         cat /proc/1/environ /proc/$PPID/environ 2>&1",
    )
    .await;

    // Assert
    let output = result["output"].as_str().unwrap();
    assert!(!output.contains(&canary), "{output}");
    assert!(!output.contains("test-key"), "{output}");
    let mut given: Vec<&str> = output.split("---\n").next().unwrap().lines().collect();
    given.sort();
    assert_eq!(
        given,
        [
            format!("HOME={}", root.display()),
            "LANG=C.UTF-8".to_string(),
            "PATH=/usr/local/bin:/usr/bin:/bin".to_string(),
            // bwrap names the directory it changed into, as a shell would.
            format!("PWD={}", root.display()),
            "TERM=dumb".to_string(),
        ]
    );
}

#[actix_web::test]
async fn only_the_workspace_and_a_private_tmp_are_writable_and_the_data_dir_is_out_of_sight() {
    // Arrange
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("admin-token"), "secret").unwrap();
    let data_dir = data.path().to_str().unwrap();
    let app = spawn_app_with(&[("AGENT_SERVER_DATA_DIR", data_dir)]).await;
    let mark = format!("mark-{}", uuid::Uuid::new_v4());
    let look = format!(
        "for p in {data_dir}/admin-token {data_dir} /root /home /var /run; do \
           test -e $p && echo \"sees $p\"; done; \
         for p in /usr/x /etc/x /x /bin/x /dev/x /proc/x {data_dir}/x; do \
           touch $p 2>/dev/null && echo \"wrote $p\"; done; \
         touch workspace-file && echo workspace writable; \
         echo \"tmp: $(ls -A /tmp)\"; touch /tmp/{mark} && echo tmp writable"
    );
    let root = app.workspace.path().canonicalize().unwrap();
    // The workspace's own mount point shows when it lies under /tmp.
    let tmp_holds = root
        .strip_prefix("/tmp")
        .ok()
        .and_then(|rest| rest.iter().next())
        .map(|first| first.to_string_lossy().into_owned())
        .unwrap_or_default();

    // Act
    let first = shell_output(&app, &look).await;
    let second = shell_output(&app, "ls -A /tmp").await;

    // Assert
    assert_eq!(
        first,
        format!("workspace writable\ntmp: {tmp_holds}\ntmp writable\n")
    );
    assert_eq!(
        second.trim_end(),
        tmp_holds,
        "the first command's /tmp is gone"
    );
    assert!(!Path::new("/tmp").join(&mark).exists());
    assert!(app.workspace.path().join("workspace-file").exists());
}

#[actix_web::test]
async fn a_fork_bomb_stops_at_the_process_limit_and_harms_nothing_else() {
    // Arrange: a sandbox user of its own, since the limit counts per user and
    // other tests' commands run as the default one; and on this server another
    // run's command, already running.
    const BOMB_UID: u32 = 61_000;
    let app = spawn_app_with(&[("AGENT_SANDBOX_UID", &BOMB_UID.to_string())]).await;
    let neighbour = spawn_app().await;
    let api = app.api();
    let root_server = nix::unistd::geteuid().is_root();
    let marker = sleep_marker();
    let other = start_shell(
        &app.llm,
        &api,
        json!({"command": format!("sleep {marker}")}),
    )
    .await;
    wait_for_sleeps(&marker, 1).await;
    let before = processes_of(BOMB_UID);

    // Act: a thousand processes asked for, each one counted in a file.
    let result = shell(
        &app.llm,
        &api,
        "i=0; while [ $i -lt 1000 ]; do sleep 300 & i=$((i+1)); echo $i > made; done",
    )
    .await;

    // Assert: stopped at the limit, with an error the model reads.
    let output = result["output"].as_str().unwrap();
    assert_eq!(result["ok"], false);
    assert!(output.contains("Cannot fork"), "{output}");
    let made: usize = std::fs::read_to_string(app.workspace.path().join("made"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(made < 256, "{made} processes");
    if root_server {
        // All the sandbox user's 256 but the shell's and the other command's.
        assert_eq!(made, 256 - 1 - before);
        wait_until("the bomb's processes to end", || async {
            (processes_of(BOMB_UID) == before).then_some(())
        })
        .await;
    }
    // The server, its other run and another server's commands are unharmed.
    assert_eq!(api.get("/healthz").await.status(), 200);
    assert!(
        !processes_with(&marker).is_empty(),
        "the other run's command"
    );
    assert_eq!(shell_output(&neighbour, "echo fine").await, "fine\n");
    assert_eq!(shell_output(&app, "echo alive").await, "alive\n");
    api.cancel(&other).await;
    wait_until("the other run's command to end", || async {
        processes_with(&marker).is_empty().then_some(())
    })
    .await;
}

#[actix_web::test]
async fn a_command_cannot_take_more_memory_than_the_limit() {
    // The smallest limit allowed, which bwrap and the shell still start under.
    let app = spawn_app_with(&[("AGENT_SHELL_MEMORY_MB", "64")]).await;

    let result = shell(
        &app.llm,
        &app.api(),
        "dd if=/dev/zero of=/dev/null bs=8M count=1 2>/dev/null && echo small fits; \
         dd if=/dev/zero of=/dev/null bs=128M count=1",
    )
    .await;

    let output = result["output"].as_str().unwrap();
    assert_eq!(result["ok"], false);
    assert!(output.starts_with("small fits\n"), "{output}");
    assert!(output.contains("memory exhausted"), "{output}");
}

#[actix_web::test]
async fn nothing_a_command_starts_outlives_it() {
    // Arrange
    let app = spawn_app().await;
    let marker = sleep_marker();
    // A new session, a double fork and nohup, all keeping the output open.
    let command = format!(
        "setsid -f sh -c 'sleep {marker}'; ( ( sleep {marker} & ) & ); \
         nohup sleep {marker} & echo started"
    );

    // Act
    let started = Instant::now();
    let result = shell(&app.llm, &app.api(), &command).await;

    // Assert
    assert_eq!(result["output"], "started\n", "no output left open");
    assert!(started.elapsed() < Duration::from_secs(10));
    wait_until("nothing of the command to be left", || async {
        processes_with(&marker).is_empty().then_some(())
    })
    .await;
}

#[actix_web::test]
async fn a_timeout_ends_everything_the_command_started() {
    let app = spawn_app().await;
    let marker = sleep_marker();
    let command = format!("setsid -f sleep {marker}; sleep {marker} & sleep {marker}");

    let id = start_shell(
        &app.llm,
        &app.api(),
        json!({"command": command, "timeout_secs": 1}),
    )
    .await;
    let result = tool_result(&app.api(), &id).await;

    let output = result["output"].as_str().unwrap();
    assert!(output.contains("timed out after 1 s"), "{output}");
    wait_until("nothing of the command to be left", || async {
        processes_with(&marker).is_empty().then_some(())
    })
    .await;
}

#[actix_web::test]
async fn killing_the_server_kills_the_commands_it_runs() {
    // Arrange: the real binary runs a command that left its session.
    let database_url = fresh_database().await;
    let llm = MockLlm::start().await;
    let workspace = tempfile::tempdir().unwrap();
    let server = Server::start(&database_url, &llm, &workspace).await;
    let marker = sleep_marker();
    let command = format!("setsid -f sleep {marker}; sleep {marker}");
    start_shell(&llm, &server.api, json!({"command": command})).await;
    wait_for_sleeps(&marker, 2).await;

    // Act
    server.kill_9();

    // Assert
    wait_until("nothing of the command to be left", || async {
        processes_with(&marker).is_empty().then_some(())
    })
    .await;
}

#[actix_web::test]
async fn a_sandbox_that_fails_is_a_tool_error_the_model_reads() {
    let app = spawn_app().await;
    let api = app.api();
    app.llm.push(Reply::tool_call(
        "call_sh",
        "shell",
        json!({"command": "true"}),
    ));
    let run = api
        .create_run(json!({"task": "t", "agent": "coding"}))
        .await;
    let id = run["id"].as_str().unwrap();
    let pending = api.wait_for_approval(id).await;
    // bwrap cannot bind a workspace that is gone.
    std::fs::remove_dir_all(app.workspace.path()).unwrap();

    api.resume(
        id,
        pending["approval_id"].as_str().unwrap(),
        "approved",
        None,
    )
    .await;
    let done = api.wait_for_status(id, "completed").await;

    let result = tool_result(&api, id).await;
    assert_eq!(result["ok"], false);
    assert!(
        result["output"].as_str().unwrap().contains("bwrap:"),
        "{result}"
    );
    assert_eq!(done["result"], "done");
    let requests = app.llm.requests();
    let told = requests[1]["messages"].to_string();
    assert!(told.contains("bwrap:"), "the model read it: {told}");
}

/// Starts the binary with `vars` and returns its exit success and stderr.
fn start_and_fail(vars: &[(&str, &str)]) -> (bool, String) {
    let vars = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let output = server_command(vars)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("running agent-server");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn without_bwrap_the_server_stops_at_start_naming_agent_sandbox() {
    let dirs = tempfile::tempdir().unwrap();
    let empty = dirs.path().join("bin");
    std::fs::create_dir(&empty).unwrap();
    let data = dirs.path().join("data");
    let workspace = dirs.path().join("workspace");

    let (ok, stderr) = start_and_fail(&[
        ("PATH", empty.to_str().unwrap()),
        ("AGENT_SERVER_DATA_DIR", data.to_str().unwrap()),
        ("AGENT_WORKSPACE", workspace.to_str().unwrap()),
        ("AGENT_SERVER_ADDR", "127.0.0.1:0"),
    ]);

    assert!(!ok);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("AGENT_SANDBOX"), "{stderr}");
    assert!(stderr.contains("apt-get install bubblewrap"), "{stderr}");
    assert!(stderr.contains("AGENT_SANDBOX=none"), "{stderr}");
    assert!(!data.join("pg").exists(), "stopped before the database");
}

#[test]
fn a_bwrap_that_cannot_make_a_sandbox_stops_the_server_at_start() {
    let dirs = tempfile::tempdir().unwrap();
    let bin = dirs.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    // As bwrap answers where namespaces are not allowed.
    std::fs::write(
        bin.join("bwrap"),
        "#!/bin/sh\necho 'bwrap: Creating new namespace failed: Operation not permitted' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("bwrap"), std::fs::Permissions::from_mode(0o755)).unwrap();

    let (ok, stderr) = start_and_fail(&[
        ("PATH", bin.to_str().unwrap()),
        (
            "AGENT_SERVER_DATA_DIR",
            dirs.path().join("data").to_str().unwrap(),
        ),
        ("AGENT_WORKSPACE", dirs.path().join("ws").to_str().unwrap()),
        ("AGENT_SERVER_ADDR", "127.0.0.1:0"),
    ]);

    assert!(!ok);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("AGENT_SANDBOX=bwrap"), "{stderr}");
    assert!(
        stderr.contains("Creating new namespace failed: Operation not permitted"),
        "{stderr}"
    );
    assert!(stderr.contains("AGENT_SANDBOX=none"), "{stderr}");
}

#[test]
fn a_data_dir_inside_the_workspace_stops_the_server_whatever_the_sandbox() {
    for sandbox in ["bwrap", "none"] {
        let workspace = tempfile::tempdir().unwrap();
        let data = workspace.path().join("sub/../.data");

        let (ok, stderr) = start_and_fail(&[
            ("AGENT_SANDBOX", sandbox),
            ("AGENT_SERVER_DATA_DIR", data.to_str().unwrap()),
            ("AGENT_WORKSPACE", workspace.path().to_str().unwrap()),
            ("AGENT_SERVER_ADDR", "127.0.0.1:0"),
        ]);

        assert!(!ok, "{sandbox}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{sandbox}: {stderr}");
        assert!(
            stderr.contains("invalid setting AGENT_WORKSPACE"),
            "{sandbox}: {stderr}"
        );
        assert!(!workspace.path().join(".data").exists(), "{sandbox}");
    }
}

#[actix_web::test]
async fn agent_sandbox_none_warns_at_start_and_runs_commands_as_before() {
    let database_url = fresh_database().await;
    let llm = MockLlm::start().await;
    let workspace = tempfile::tempdir().unwrap();
    let mut vars = settings_map(&database_url, &llm, workspace.path(), &[]);
    vars.insert("AGENT_SANDBOX".into(), "none".into());
    vars.insert("LOG_FORMAT".into(), "json".into());

    let server = Server::start_with(vars).await;
    let output = shell(&llm, &server.api, "id -u").await;

    let warning = server
        .stdout
        .lock()
        .unwrap()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|log| {
            log["message"]
                .as_str()
                .unwrap_or("")
                .contains("AGENT_SANDBOX=none")
        });
    let warning = warning.expect("a warning at start");
    assert_eq!(warning["level"], "WARN");
    assert_eq!(
        output["output"],
        format!("{}\n", nix::unistd::geteuid().as_raw()),
        "the server's own user"
    );
}
