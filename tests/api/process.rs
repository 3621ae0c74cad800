//! The server binary as a child process, for tests that kill it, signal it
//! or read what it prints.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use crate::helpers::{Api, client_with_token, settings_map};
use crate::mock_llm::MockLlm;

/// The server binary running as a child process.
pub struct Server {
    pub child: Child,
    pub api: Api,
    /// Every line the server printed on stdout so far.
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the binary on the test's database and mock model, and waits
    /// for its `listening on` line.
    pub async fn start(database_url: &str, llm: &MockLlm, workspace: &TempDir) -> Server {
        let vars = settings_map(database_url, llm, workspace.path(), &[]);
        Server::start_with(vars).await
    }

    /// Starts the binary with exactly `vars` (and `PATH`). Its client signs
    /// in with `AGENT_SERVER_ADMIN_TOKEN`, or else with the admin token the
    /// server wrote into its data dir.
    pub async fn start_with(vars: HashMap<String, String>) -> Server {
        let token_file = vars
            .get("AGENT_SERVER_DATA_DIR")
            .map(|dir| std::path::Path::new(dir).join("admin-token"));
        let given_token = vars.get("AGENT_SERVER_ADMIN_TOKEN").cloned();
        let mut child = server_command(vars)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting agent-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stdout_lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines_out = stdout_lines.clone();
        // Reads the start-up line, then keeps draining so the server never
        // blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines_out.lock().unwrap().push(line.clone());
                if let Some(address) = line.strip_prefix("agent-server listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(address.to_string());
                }
            }
        });
        let address = tokio::time::timeout(crate::helpers::WAIT_LIMIT, rx)
            .await
            .expect("the server printed its address in time")
            .expect("the server printed its address before exiting");
        let token = given_token.unwrap_or_else(|| {
            let file = token_file.expect("AGENT_SERVER_DATA_DIR is set");
            std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
                .trim()
                .to_string()
        });
        Server {
            child,
            stdout: stdout_lines,
            api: Api {
                address,
                client: client_with_token(&token),
            },
        }
    }

    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaping the server");
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        self.child.wait().expect("waiting for the server to exit")
    }
}

/// The server binary with a clean environment: `PATH` and `vars` only.
pub fn server_command(vars: HashMap<String, String>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agent-server"));
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(vars)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
