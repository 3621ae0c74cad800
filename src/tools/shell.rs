//! The `shell` tool: runs `sh -c` in the workspace, confined by the sandbox, with a timeout.
//!
//! The command's process group is the unit of cleanup. It is ended when the command
//! times out, when the shell exits (so background jobs cannot linger or hold the
//! output pipes open), and when the future running the call is dropped, via a guard
//! whose `Drop` signals the group and escalates to `SIGKILL` from a plain thread.
//! In the bubblewrap sandbox the group is bwrap's, and ending bwrap ends the command's
//! whole PID namespace, so processes that move to another group or session end too;
//! with `AGENT_SANDBOX=none` they escape this cleanup (see [`super::sandbox`]).

use std::os::unix::process::ExitStatusExt;
use std::pin::pin;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::{Args, CappedBuffer, OUTPUT_CAP_BYTES, ToolContext, ToolOutcome};

/// Timeout used when the model does not give one; long enough for builds and tests.
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;

/// The longest timeout the model may ask for, so a stuck command cannot hold a run for long.
pub const MAX_TIMEOUT_SECS: u64 = 600;

/// Time between `SIGTERM` and `SIGKILL`, letting processes clean up before they are forced down.
pub const KILL_GRACE: Duration = Duration::from_millis(500);

/// How long output is still read after the group is gone, for pipes held by escaped processes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the group is checked for survivors during the grace period.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Size of each read from the output pipes.
const READ_CHUNK: usize = 16 * 1024;

/// The line separating stdout from stderr in the output.
const STDERR_SEPARATOR: &str = "--- stderr ---\n";

/// The `shell` tool.
pub async fn run(args: &Value, ctx: &ToolContext) -> ToolOutcome {
    let (command, timeout_secs) = match parse_args(args) {
        Ok(parsed) => parsed,
        Err(message) => return ToolOutcome::failure(message),
    };
    run_command(
        ctx.sandbox.command(command, ctx.workspace.root()),
        Duration::from_secs(timeout_secs),
    )
    .await
}

/// Checks the arguments, returning the command and its timeout in seconds.
fn parse_args(args: &Value) -> Result<(&str, u64), String> {
    let args =
        Args::parse("shell", args, &["command", "timeout_secs"]).map_err(|e| e.to_string())?;
    let command = args.string("command").map_err(|e| e.to_string())?;
    if command.trim().is_empty() {
        return Err("shell: field `command` is empty".to_owned());
    }
    let timeout = args
        .opt_u64("timeout_secs")
        .map_err(|e| e.to_string())?
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    if !(1..=MAX_TIMEOUT_SECS).contains(&timeout) {
        return Err(format!(
            "shell: field `timeout_secs` must be between 1 and {MAX_TIMEOUT_SECS} seconds, got {timeout}"
        ));
    }
    Ok((command, timeout))
}

/// Runs `cmd`, a process that leads its own process group, for at most `timeout`.
async fn run_command(mut cmd: Command, timeout: Duration) -> ToolOutcome {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let program = cmd.as_std().get_program().to_string_lossy().into_owned();
            return ToolOutcome::failure(format!("shell: could not start `{program}`: {e}"));
        }
    };
    // tokio only loses the id once the child is reaped, which cannot have happened yet.
    let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
        return ToolOutcome::failure("shell: the command started but its process id is unknown");
    };
    // The sandbox makes the child lead a new group, whose id is its pid.
    let group = GroupGuard::new(Pid::from_raw(pid));
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut out = CappedBuffer::default();
    let mut err = CappedBuffer::default();

    let (status, timed_out, pipes_left_open) = {
        let supervised = supervise(&mut child, &group, stdout, stderr, &mut out, &mut err);
        let mut supervised = pin!(supervised);
        match tokio::time::timeout(timeout, &mut supervised).await {
            Ok(done) => (done.status, false, done.pipes_left_open),
            Err(_) => {
                tracing::debug!(pid, ?timeout, "shell command timed out; ending its group");
                group.signal(Signal::SIGTERM);
                let done = match tokio::time::timeout(KILL_GRACE, &mut supervised).await {
                    Ok(done) => Some(done),
                    Err(_) => {
                        group.signal(Signal::SIGKILL);
                        tokio::time::timeout(KILL_GRACE + DRAIN_TIMEOUT, &mut supervised)
                            .await
                            .ok()
                    }
                };
                match done {
                    Some(done) => (done.status, true, done.pipes_left_open),
                    None => (None, true, true),
                }
            }
        }
    };

    let mut notes = Vec::new();
    if timed_out {
        notes.push(format!(
            "timed out after {} s; the command and everything it started were killed",
            timeout.as_secs()
        ));
    } else if let Some(signal) = status.and_then(|s| s.signal()) {
        notes.push(format!("the command was killed by signal {signal}"));
    }
    if pipes_left_open {
        notes.push(
            "output may be incomplete: a process that left the command's process group kept the output open"
                .to_owned(),
        );
    }
    let exit_code = if timed_out {
        None
    } else {
        status.and_then(|s| s.code())
    };
    ToolOutcome {
        ok: exit_code == Some(0),
        output: render_output(out, err, &notes),
        exit_code,
    }
}

/// How supervising the command ended.
struct Supervised {
    /// The shell's exit status, if it could be collected.
    status: Option<ExitStatus>,
    /// Whether the output pipes were still open when reading gave up.
    pipes_left_open: bool,
}

/// Reads both pipes while waiting for the shell, then ends its group and drains the pipes.
async fn supervise(
    child: &mut tokio::process::Child,
    group: &GroupGuard,
    stdout: Option<impl AsyncRead + Unpin>,
    stderr: Option<impl AsyncRead + Unpin>,
    out: &mut CappedBuffer,
    err: &mut CappedBuffer,
) -> Supervised {
    let mut pumps = pin!(async { tokio::join!(pump(stdout, out), pump(stderr, err)) });
    let mut pumps_done = false;
    let status = loop {
        tokio::select! {
            // Child::wait is cancel safe, so re-creating it on each turn loses nothing.
            status = child.wait() => break status.ok(),
            _ = &mut pumps, if !pumps_done => pumps_done = true,
        }
    };
    // Background jobs would otherwise outlive the call and keep the pipes open.
    group.end().await;
    let pipes_left_open = !pumps_done
        && tokio::time::timeout(DRAIN_TIMEOUT, &mut pumps)
            .await
            .is_err();
    Supervised {
        status,
        pipes_left_open,
    }
}

/// Copies a pipe into `buffer` until end of file; a read error ends the copy like end of file.
async fn pump(pipe: Option<impl AsyncRead + Unpin>, buffer: &mut CappedBuffer) {
    let Some(mut pipe) = pipe else { return };
    let mut chunk = vec![0; READ_CHUNK];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) => return,
            Ok(n) => buffer.push(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!(error = %e, "reading shell output failed");
                return;
            }
        }
    }
}

/// Joins stdout, stderr and notes into at most [`OUTPUT_CAP_BYTES`], sharing the room fairly.
fn render_output(out: CappedBuffer, err: CappedBuffer, notes: &[String]) -> String {
    let notes_text: String = notes.iter().map(|n| format!("[{n}]\n")).collect();
    // One byte more than the notes, for a newline that may be needed before them.
    let reserved = if notes_text.is_empty() {
        0
    } else {
        notes_text.len() + 1
    };
    let room = OUTPUT_CAP_BYTES.saturating_sub(reserved);
    let out = out.into_excerpt();
    let err = (!err.is_empty()).then(|| err.into_excerpt());
    let mut text = match err {
        None => out.fit(room),
        Some(err) => {
            // The separator may need a newline before it too.
            let room = room.saturating_sub(STDERR_SEPARATOR.len() + 1);
            let (out_len, err_len) = (out.len() as usize, err.len() as usize);
            // Stderr gets half the room, or more when stdout needs less than its half.
            let err_room = err_len.min((room / 2).max(room.saturating_sub(out_len)));
            let mut text = out.fit(room - err_room);
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(STDERR_SEPARATOR);
            text.push_str(&err.fit(err_room));
            text
        }
    };
    if !notes_text.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&notes_text);
    }
    text
}

/// Owns the cleanup of a command's process group: if dropped before the group is known
/// to be ended, it sends `SIGTERM` and has a thread send `SIGKILL` after [`KILL_GRACE`].
struct GroupGuard {
    /// The process group id, equal to the shell's pid.
    pgid: Pid,
    /// Set once the group was ended on the normal path, so `Drop` has nothing left to do.
    ended: AtomicBool,
}

impl GroupGuard {
    /// A guard for group `pgid`.
    fn new(pgid: Pid) -> Self {
        Self {
            pgid,
            ended: AtomicBool::new(false),
        }
    }

    /// Sends `signal` to the group; returns whether the group still existed.
    fn signal(&self, signal: Signal) -> bool {
        send(self.pgid, Some(signal))
    }

    /// Ends what is left of the group: `SIGTERM`, then `SIGKILL` for survivors after the grace.
    async fn end(&self) {
        if self.signal(Signal::SIGTERM) {
            let deadline = tokio::time::Instant::now() + KILL_GRACE;
            while group_runs(self.pgid) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            self.signal(Signal::SIGKILL);
        }
        self.ended.store(true, Ordering::Release);
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.ended.load(Ordering::Acquire) || !self.signal(Signal::SIGTERM) {
            return;
        }
        let pgid = self.pgid;
        // A plain thread, because the runtime may be shutting down when the future is dropped.
        let spawned = std::thread::Builder::new()
            .name("shell-group-reaper".to_owned())
            .spawn(move || {
                let deadline = std::time::Instant::now() + KILL_GRACE;
                while group_runs(pgid) && std::time::Instant::now() < deadline {
                    std::thread::sleep(POLL_INTERVAL);
                }
                send(pgid, Some(Signal::SIGKILL));
            });
        if spawned.is_err() {
            // Without a thread there is no later moment to escalate, so escalate now.
            send(pgid, Some(Signal::SIGKILL));
        }
    }
}

/// Whether a member of group `pgid` still runs. `killpg` counts zombies too, and in the
/// sandbox one is left for a moment: bubblewrap's init, which outlives bwrap just long
/// enough to end the command's namespace, and is then reaped by whoever adopts orphans,
/// not by us. A zombie runs nothing, so only the others count.
fn group_runs(pgid: Pid) -> bool {
    if !send(pgid, None) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    let group = pgid.as_raw().to_string();
    entries.filter_map(Result::ok).any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // The fields after the command's name, which may hold spaces and parentheses:
        // state, parent, process group.
        let Some((_, fields)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = fields.split_whitespace();
        let state = fields.next();
        fields.nth(1) == Some(group.as_str()) && state != Some("Z")
    })
}

/// `killpg` that reports whether the group exists (`None` only probes).
fn send(pgid: Pid, signal: Option<Signal>) -> bool {
    match killpg(pgid, signal) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(e) => {
            // EPERM means it exists but is not ours to signal, which should not happen for our own child.
            tracing::warn!(pgid = pgid.as_raw(), error = %e, "could not signal shell process group");
            e == Errno::EPERM
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::sandbox::{Sandbox, scrub_env, unconfined};
    use crate::tools::{Workspace, execute};
    use serde_json::json;
    use std::ffi::OsString;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Instant;
    use tempfile::TempDir;

    /// A workspace and a context without a sandbox, so that the pids commands write
    /// are the host's and the tests can watch the process group itself.
    fn context() -> (TempDir, ToolContext) {
        let dir = TempDir::new().expect("tempdir");
        let workspace = Arc::new(Workspace::open(dir.path()).expect("open workspace"));
        (
            dir,
            ToolContext {
                workspace,
                loki: None,
                sandbox: Arc::new(Sandbox::unconfined()),
                mcp: Default::default(),
            },
        )
    }

    /// A workspace and a context with the default bubblewrap sandbox.
    async fn sandboxed_context() -> (TempDir, ToolContext) {
        let dir = TempDir::new().expect("tempdir");
        let settings = crate::config::Settings::from_lookup(|_| None)
            .expect("default settings")
            .sandbox;
        let data = TempDir::new().expect("tempdir");
        let sandbox = Sandbox::start(&settings, dir.path(), data.path())
            .await
            .expect("bubblewrap works here (apt-get install bubblewrap)");
        let workspace = Workspace::open_with_owner(dir.path(), sandbox.owner());
        let workspace = Arc::new(workspace.expect("open workspace"));
        (
            dir,
            ToolContext {
                workspace,
                loki: None,
                sandbox: Arc::new(sandbox),
                mcp: Default::default(),
            },
        )
    }

    fn os(s: &str) -> OsString {
        OsString::from(s)
    }

    /// Whether `pid` is gone: no such process, or only a zombie waiting to be reaped.
    fn process_gone(pid: i32) -> bool {
        if nix::sys::signal::kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
            return true;
        }
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
            Err(_) => true,
        }
    }

    /// Polls for up to 3 s until `pid` is gone.
    async fn assert_gone_soon(pid: i32) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while !process_gone(pid) {
            assert!(
                Instant::now() < deadline,
                "process {pid} still alive after 3 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls for up to 10 s until the command wrote its background pid to `path`.
    async fn wait_for_pid_file(path: &Path) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The shell may be midway through writing; only a full line is a whole pid.
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.ends_with('\n')
                && let Ok(pid) = text.trim().parse()
            {
                return pid;
            }
            assert!(Instant::now() < deadline, "pid file never appeared");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn secrets_do_not_reach_the_command() {
        let dir = TempDir::new().unwrap();
        let env = scrub_env([
            (os("PATH"), std::env::var_os("PATH").unwrap_or_default()),
            (os("MY_API_KEY"), os("hunter2")),
            (os("DATABASE_URL"), os("postgres://secret")),
            (os("VISIBLE"), os("yes")),
        ]);
        let command = "echo \"${MY_API_KEY-unset} ${DATABASE_URL-unset} $VISIBLE\"";
        let out = run_command(
            unconfined(command, dir.path(), env),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(out.output, "unset unset yes\n");
    }

    #[tokio::test]
    async fn runs_in_workspace_and_reports_exit_codes() {
        let (_d, ctx) = context();
        let out = execute("shell", &json!({"command": "pwd"}), &ctx).await;
        assert_eq!(
            out,
            ToolOutcome {
                ok: true,
                output: format!("{}\n", ctx.workspace.root().display()),
                exit_code: Some(0)
            }
        );
        let out = execute("shell", &json!({"command": "echo partial; exit 3"}), &ctx).await;
        assert_eq!(
            out,
            ToolOutcome {
                ok: false,
                output: "partial\n".into(),
                exit_code: Some(3)
            }
        );
        let out = execute("shell", &json!({"command": "cat; echo done"}), &ctx).await;
        assert_eq!(out.output, "done\n", "stdin must be empty");
    }

    #[tokio::test]
    async fn stderr_follows_stdout_after_separator() {
        let (_d, ctx) = context();
        let out = execute(
            "shell",
            &json!({"command": "echo out; echo err >&2; printf tail"}),
            &ctx,
        )
        .await;
        assert_eq!(out.output, "out\ntail\n--- stderr ---\nerr\n");
        let out = execute("shell", &json!({"command": "echo only >&2"}), &ctx).await;
        assert_eq!(out.output, "--- stderr ---\nonly\n");
    }

    #[tokio::test]
    async fn signal_death_is_reported() {
        let (_d, ctx) = context();
        let out = execute("shell", &json!({"command": "kill -9 $$"}), &ctx).await;
        assert!(!out.ok);
        assert_eq!(out.exit_code, None);
        assert!(out.output.contains("killed by signal 9"), "{}", out.output);
    }

    #[tokio::test]
    async fn chatty_output_is_capped_without_deadlock() {
        let (_d, ctx) = context();
        let started = Instant::now();
        let out = execute(
            "shell",
            &json!({"command": "head -c 5000000 /dev/zero | tr '\\0' a; echo; echo END; head -c 3000000 /dev/zero | tr '\\0' b >&2"}),
            &ctx,
        )
        .await;
        assert!(
            out.ok,
            "{}",
            &out.output[out.output.len().saturating_sub(300)..]
        );
        assert!(out.output.len() <= OUTPUT_CAP_BYTES);
        assert!(out.output.starts_with("aaaa"));
        assert!(out.output.contains("END\n--- stderr ---\nbbbb"));
        assert!(out.output.ends_with("bbbb"));
        assert_eq!(out.output.matches("bytes cut").count(), 2);
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[tokio::test]
    async fn bad_arguments_are_refused() {
        let (_d, ctx) = context();
        let cases = [
            (json!({}), "shell: missing string field `command`"),
            (json!({"command": "  "}), "shell: field `command` is empty"),
            (
                json!({"command": "true", "timeout_secs": 0}),
                "shell: field `timeout_secs` must be between 1 and 600 seconds, got 0",
            ),
            (
                json!({"command": "true", "timeout_secs": 601}),
                "shell: field `timeout_secs` must be between 1 and 600 seconds, got 601",
            ),
            (
                json!({"command": "true", "timeout_secs": -5}),
                "shell: field `timeout_secs` must not be negative, got -5",
            ),
            (
                json!({"command": "true", "timeout_secs": 1.5}),
                "shell: field `timeout_secs` must be a whole number, got a fractional number",
            ),
            (
                json!({"command": "true", "timeout_secs": "10"}),
                "shell: field `timeout_secs` must be an integer, got a string",
            ),
            (
                json!({"command": "true", "cwd": "/"}),
                "shell: unknown field `cwd`; allowed fields are `command`, `timeout_secs`",
            ),
        ];
        for (args, message) in cases {
            let out = execute("shell", &args, &ctx).await;
            assert_eq!(out, ToolOutcome::failure(message), "{args}");
        }
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let (_d, ctx) = context();
        let started = Instant::now();
        let out = execute(
            "shell",
            &json!({"command": "echo started; sleep 30 & echo $! > pid; wait", "timeout_secs": 1}),
            &ctx,
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!out.ok);
        assert_eq!(out.exit_code, None);
        assert!(out.output.starts_with("started\n"), "{}", out.output);
        assert!(out.output.contains("timed out after 1 s"), "{}", out.output);
        let pid = wait_for_pid_file(&ctx.workspace.root().join("pid")).await;
        assert_gone_soon(pid).await;
    }

    #[tokio::test]
    async fn timeout_escalates_to_sigkill() {
        let (_d, ctx) = context();
        let started = Instant::now();
        // Ignored signals are inherited, so both the shell and sleep ignore SIGTERM.
        let out = execute(
            "shell",
            &json!({"command": "trap '' TERM; sleep 30 & echo $! > pid; wait", "timeout_secs": 1}),
            &ctx,
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(6));
        assert!(out.output.contains("timed out"), "{}", out.output);
        let pid = wait_for_pid_file(&ctx.workspace.root().join("pid")).await;
        assert_gone_soon(pid).await;
    }

    #[tokio::test]
    async fn background_jobs_end_with_the_command() {
        let (_d, ctx) = context();
        let started = Instant::now();
        let out = execute(
            "shell",
            &json!({"command": "sleep 30 & echo $! > pid; echo quick"}),
            &ctx,
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(out.output, "quick\n");
        assert_eq!(out.exit_code, Some(0));
        let pid = wait_for_pid_file(&ctx.workspace.root().join("pid")).await;
        assert_gone_soon(pid).await;
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_group() {
        let (_d, ctx) = context();
        let args = json!({"command": "sleep 30 & echo $! > pid; wait"});
        let pid_path = ctx.workspace.root().join("pid");
        let pid = {
            let call = execute("shell", &args, &ctx);
            let mut call = pin!(call);
            tokio::select! {
                out = &mut call => panic!("command finished early: {out:?}"),
                pid = wait_for_pid_file(&pid_path) => pid,
            }
            // `call` is dropped here, mid-run.
        };
        assert_gone_soon(pid).await;
    }

    #[tokio::test]
    async fn output_exit_codes_and_timeouts_read_the_same_in_the_sandbox() {
        let (_d, ctx) = sandboxed_context().await;
        let out = execute("shell", &json!({"command": "pwd"}), &ctx).await;
        assert_eq!(
            out,
            ToolOutcome {
                ok: true,
                output: format!("{}\n", ctx.workspace.root().display()),
                exit_code: Some(0)
            }
        );
        let out = execute(
            "shell",
            &json!({"command": "echo out; echo err >&2; printf tail; exit 3"}),
            &ctx,
        )
        .await;
        assert_eq!(
            out,
            ToolOutcome {
                ok: false,
                output: "out\ntail\n--- stderr ---\nerr\n".into(),
                exit_code: Some(3)
            }
        );
        let out = execute(
            "shell",
            &json!({"command": "head -c 3000000 /dev/zero | tr '\\0' a"}),
            &ctx,
        )
        .await;
        assert!(out.ok && out.output.len() <= OUTPUT_CAP_BYTES);
        assert_eq!(out.output.matches("bytes cut").count(), 1);
        let started = Instant::now();
        let out = execute(
            "shell",
            &json!({"command": "echo started; trap '' TERM; sleep 30", "timeout_secs": 1}),
            &ctx,
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(out.exit_code, None);
        assert!(out.output.starts_with("started\n"), "{}", out.output);
        assert!(out.output.contains("timed out after 1 s"), "{}", out.output);
        assert!(!out.output.contains("incomplete"), "{}", out.output);
    }

    #[test]
    fn execute_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let dir = TempDir::new().unwrap();
        let ctx = ToolContext {
            workspace: Arc::new(Workspace::open(dir.path()).unwrap()),
            loki: None,
            sandbox: Arc::new(Sandbox::unconfined()),
            mcp: Default::default(),
        };
        let args = json!({"command": "true"});
        let future = execute("shell", &args, &ctx);
        assert_send(&future);
    }
}
