//! Where `shell` commands run: inside bubblewrap (`AGENT_SANDBOX=bwrap`, the default)
//! or beside the server (`none`), and the check at start that the sandbox works here.
//!
//! Bubblewrap gives each command:
//! - its own PID namespace, whose process 1 is bubblewrap's small init. The server and
//!   every other command are out of sight, and when that init dies (the command's shell
//!   exited, bwrap was killed on a timeout or a cancellation, or the server died and
//!   `--die-with-parent` took bwrap with it) the kernel kills everything left in the
//!   namespace. So nothing a command starts outlives it, `setsid`, double forks and
//!   `nohup` included, and the shell tool's process-group kill of bwrap ends it all;
//! - its own network namespace, with a loopback device and nothing else, unless
//!   `AGENT_SHELL_NETWORK=true`; its own IPC and host-name namespaces;
//! - a file system of its own: `/usr`, `/etc` and the `/bin`, `/lib`, `/lib64`, `/sbin`
//!   of the host read-only, a fresh `/proc` and `/dev`, a private empty `/tmp` (of at most
//!   `AGENT_SHELL_MEMORY_MB`, as it lives in memory), the workspace read-write at its own
//!   path, and nothing else: the data dir with its admin token and PostgreSQL socket,
//!   `/root`, `/home`, `/var` and `/run` do not exist in it, and its root is read-only;
//! - an environment of `PATH`, `HOME` (the workspace), `LANG` and `TERM`, and no other
//!   variable: an allow-list, so a secret under a name nobody thought of stays out too.
//!
//! Before bwrap starts, the forked child (`pre_exec`) starts its own session (no
//! controlling terminal, and a process group whose id is bwrap's pid, which the shell
//! tool kills), asks to be killed when the server dies, and sets the limits the command
//! inherits: its address space (`AGENT_SHELL_MEMORY_MB`) and its processes
//! ([`SANDBOX_MAX_PROCESSES`]). The kernel counts processes per user, so all commands
//! running at one time as the same user share that number.
//!
//! Which user: a server running as root runs bwrap as root without a user namespace, so
//! the sandbox works where unprivileged user namespaces are off. bwrap keeps only the
//! capabilities needed to enter the workspace and to change user, and the command starts
//! through `setpriv`, which becomes the sandbox user (`AGENT_SANDBOX_UID`, default 65534)
//! with no groups, no capabilities, an empty bounding set and `no_new_privs`. The
//! workspace is handed to that user at start (see [`owner`]). A server that is not root
//! runs bwrap as itself in a new user namespace, and commands run as the server's user.

mod owner;

pub use owner::{HandOver, SandboxOwner};

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::Signal;
use nix::unistd::{Pid, getpid, getppid, setsid};
use tokio::process::Command;

use crate::config::{SANDBOX_MAX_PROCESSES, SandboxKind, SandboxSettings};

/// `PATH` inside the sandbox: system directories only, all of them read-only there.
pub const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The top-level directories that hold programs and libraries besides `/usr`. On a
/// merged-`/usr` host they are symlinks into `/usr` and are recreated as such.
const SYSTEM_DIRS: [&str; 4] = ["/bin", "/lib", "/lib64", "/sbin"];

/// How long the trial run at start may take; bwrap itself needs milliseconds.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the sandbox cannot be used; each message is one line naming the setting and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The data dir lies inside the workspace, where commands and file tools reach it.
    #[error(
        "invalid setting AGENT_WORKSPACE: the workspace {workspace} holds the data dir {data_dir}, so agents could read the admin token and the database; choose a workspace outside AGENT_SERVER_DATA_DIR"
    )]
    DataDirInWorkspace {
        /// The data dir, resolved.
        data_dir: PathBuf,
        /// The workspace, resolved.
        workspace: PathBuf,
    },
    /// The workspace could not be created or resolved.
    #[error("could not open the workspace {path} (AGENT_WORKSPACE): {source}")]
    Workspace {
        /// The workspace as configured.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// There is no `bwrap` to run.
    #[error(
        "AGENT_SANDBOX=bwrap runs shell commands in bubblewrap, but there is no `bwrap` on PATH: install bubblewrap (Debian: apt-get install bubblewrap), or set AGENT_SANDBOX=none to run them unconfined"
    )]
    NoBwrap,
    /// A root server has no `setpriv` to drop commands to the sandbox user.
    #[error(
        "AGENT_SANDBOX=bwrap: agent-server runs as root and needs `setpriv` in {SANDBOX_PATH} to run shell commands as uid {uid}: install util-linux, or set AGENT_SANDBOX=none to run them unconfined"
    )]
    NoSetpriv {
        /// The sandbox user.
        uid: u32,
    },
    /// The workspace could not be handed to the sandbox user.
    #[error(
        "AGENT_SANDBOX=bwrap: could not hand the workspace {path} to the sandbox user {uid} (AGENT_SANDBOX_UID): {source}"
    )]
    HandOver {
        /// The workspace.
        path: PathBuf,
        /// The sandbox user.
        uid: u32,
        /// The underlying error.
        source: io::Error,
    },
    /// bwrap is there but cannot make a sandbox on this machine.
    #[error(
        "AGENT_SANDBOX=bwrap: bubblewrap cannot make a sandbox here ({reason}); {hint}, or set AGENT_SANDBOX=none to run shell commands unconfined"
    )]
    Unusable {
        /// What the trial run said.
        reason: String,
        /// What to check, which depends on whether the server is root.
        hint: &'static str,
    },
}

/// How `shell` commands are confined; built once at start by [`Sandbox::start`].
#[derive(Debug)]
pub struct Sandbox {
    /// Bubblewrap, or nothing.
    confinement: Confinement,
}

#[derive(Debug)]
enum Confinement {
    /// `AGENT_SANDBOX=none`: `sh -c` in its own process group, secrets scrubbed.
    Unconfined,
    /// `AGENT_SANDBOX=bwrap`.
    Bwrap(Bwrap),
}

/// Everything needed to write a bwrap command line, found once at start.
#[derive(Debug, Clone)]
struct Bwrap {
    /// The `bwrap` found on the server's `PATH`.
    program: PathBuf,
    /// Which user the command runs as.
    user: SandboxUser,
    /// `AGENT_SHELL_NETWORK`: keep the host's network namespace.
    network: bool,
    /// `AGENT_SHELL_MEMORY_MB` in bytes.
    memory_bytes: u64,
    /// How the host's `/bin`, `/lib`, `/lib64` and `/sbin` look.
    system_dirs: Vec<SystemDir>,
    /// With the network on: the real `/etc/resolv.conf` when it is a symlink out of
    /// `/etc` (into `/run`, with systemd-resolved), bound alone so names resolve.
    resolver: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SandboxUser {
    /// The server is root: `setpriv` drops the command to the sandbox user.
    Dropped {
        /// `setpriv`, in a directory the sandbox sees at the same path.
        setpriv: PathBuf,
        /// The sandbox user.
        owner: SandboxOwner,
    },
    /// The server is not root: bwrap makes a user namespace and the command keeps
    /// the server's user.
    Server,
}

/// One of [`SYSTEM_DIRS`] as it is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SystemDir {
    /// A symlink (merged `/usr`), recreated with the same target.
    Symlink { path: &'static str, target: PathBuf },
    /// A real directory, bound read-only.
    Directory { path: &'static str },
}

impl Sandbox {
    /// Makes the sandbox the settings ask for and proves it works, so that a broken
    /// set-up stops the server at start instead of failing every command.
    ///
    /// Refuses a data dir inside the workspace whatever the kind. With bwrap it finds
    /// the programs, runs `true` in a sandbox, and then, when the server is root, hands
    /// the workspace to the sandbox user. With `none` it logs a warning.
    pub async fn start(
        settings: &SandboxSettings,
        workspace: &Path,
        data_dir: &Path,
    ) -> Result<Sandbox, SandboxError> {
        let root = std::fs::create_dir_all(workspace)
            .and_then(|()| workspace.canonicalize())
            .map_err(|source| SandboxError::Workspace {
                path: workspace.to_path_buf(),
                source,
            })?;
        let data_dir = resolve(data_dir);
        if data_dir.starts_with(&root) {
            return Err(SandboxError::DataDirInWorkspace {
                data_dir,
                workspace: root,
            });
        }
        match settings.kind {
            SandboxKind::None => {
                tracing::warn!(
                    "AGENT_SANDBOX=none: shell commands run unconfined, as the server's user, seeing its files, processes and network"
                );
                Ok(Sandbox::unconfined())
            }
            SandboxKind::Bwrap => {
                let program = find_program("bwrap", &std::env::var_os("PATH").unwrap_or_default())
                    .ok_or(SandboxError::NoBwrap)?;
                let user = if nix::unistd::geteuid().is_root() {
                    let setpriv = find_program("setpriv", OsStr::new(SANDBOX_PATH))
                        .ok_or(SandboxError::NoSetpriv { uid: settings.uid })?;
                    SandboxUser::Dropped {
                        setpriv,
                        owner: SandboxOwner::new(settings.uid),
                    }
                } else {
                    SandboxUser::Server
                };
                let bwrap = Bwrap {
                    program,
                    user,
                    network: settings.network,
                    memory_bytes: settings.memory_mb * 1024 * 1024,
                    system_dirs: host_system_dirs(),
                    resolver: settings.network.then(host_resolver).flatten(),
                };
                let owner = match &bwrap.user {
                    SandboxUser::Dropped { owner, .. } => Some(*owner),
                    SandboxUser::Server => None,
                };
                let sandbox = Sandbox {
                    confinement: Confinement::Bwrap(bwrap),
                };
                // The trial first, so that a sandbox that cannot work changes no owner.
                let took = sandbox.trial(&root).await?;
                if let Some(owner) = owner {
                    hand_over(owner, &root).await?;
                }
                let uid = owner.map_or_else(|| nix::unistd::geteuid().as_raw(), |o| o.uid());
                tracing::info!(
                    uid,
                    network = settings.network,
                    memory_mb = settings.memory_mb,
                    trial_ms = took.as_secs_f64() * 1000.0,
                    "shell commands run in bubblewrap"
                );
                Ok(sandbox)
            }
        }
    }

    /// No sandbox: what `AGENT_SANDBOX=none` gives, without its warning (for tests and
    /// the bench, which run no untrusted commands).
    pub fn unconfined() -> Sandbox {
        Sandbox {
            confinement: Confinement::Unconfined,
        }
    }

    /// The user that must own what the file tools create, when that is not the server's.
    pub fn owner(&self) -> Option<SandboxOwner> {
        match &self.confinement {
            Confinement::Bwrap(Bwrap {
                user: SandboxUser::Dropped { owner, .. },
                ..
            }) => Some(*owner),
            _ => None,
        }
    }

    /// The process that runs `command` in `workspace`, confined as configured; the
    /// caller sets up its pipes, spawns it, and kills its process group when done.
    pub fn command(&self, command: &str, workspace: &Path) -> Command {
        match &self.confinement {
            Confinement::Unconfined => unconfined(command, workspace, scrubbed_env()),
            Confinement::Bwrap(bwrap) => bwrap.command(command, workspace),
        }
    }

    /// Runs `true` in the sandbox and returns how long it took.
    async fn trial(&self, workspace: &Path) -> Result<Duration, SandboxError> {
        let hint = match &self.confinement {
            Confinement::Bwrap(Bwrap {
                user: SandboxUser::Server,
                ..
            }) => {
                "agent-server does not run as root, so bwrap needs unprivileged user namespaces: allow them (sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0; in a container, see the README)"
            }
            _ => {
                "check that bubblewrap 0.8 or newer is installed and that this machine lets root create namespaces (in a container, see the README)"
            }
        };
        let unusable = |reason: String| SandboxError::Unusable { reason, hint };
        let mut command = self.command("true", workspace);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let child = command.spawn().map_err(|e| unusable(e.to_string()))?;
        let output = tokio::time::timeout(TRIAL_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| unusable(format!("`true` took more than {TRIAL_TIMEOUT:?}")))?
            .map_err(|e| unusable(e.to_string()))?;
        if output.status.success() {
            return Ok(started.elapsed());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        Err(unusable(if said.is_empty() {
            format!("`true` ended with {}", output.status)
        } else {
            said.join("; ")
        }))
    }
}

impl Bwrap {
    fn command(&self, command: &str, workspace: &Path) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(self.args(command, workspace))
            // bwrap itself needs no environment, and its own (visible to the host's
            // process list) then holds no secret either.
            .env_clear()
            .current_dir("/");
        let limits = Limits {
            memory_bytes: self.memory_bytes,
            processes: SANDBOX_MAX_PROCESSES,
            server: getpid(),
        };
        // SAFETY: `enter` makes only async-signal-safe system calls and allocates nothing,
        // as required between fork and exec.
        unsafe {
            cmd.pre_exec(move || limits.enter());
        }
        cmd
    }

    /// bwrap's arguments, in the order bwrap applies them (mounts in order, so the
    /// workspace is bound inside the fresh `/tmp` when it lies under `/tmp`, and the root
    /// is made read-only last).
    fn args(&self, command: &str, workspace: &Path) -> Vec<OsString> {
        let mut args = ArgList::default();
        args.push(["--die-with-parent"]);
        // Namespaces one by one, because --unshare-all would also try a user namespace
        // when the server is root, which is what a root server must not need.
        if self.user == SandboxUser::Server {
            args.push(["--unshare-user", "--disable-userns"]);
        }
        args.push([
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
        ]);
        if !self.network {
            args.push(["--unshare-net"]);
        }
        args.push(["--clearenv", "--setenv", "PATH", SANDBOX_PATH]);
        args.push(["--setenv", "HOME"]);
        args.push_path(workspace);
        args.push(["--setenv", "LANG", "C.UTF-8", "--setenv", "TERM", "dumb"]);
        args.push(["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]);
        for dir in &self.system_dirs {
            match dir {
                SystemDir::Symlink { path, target } => {
                    args.push(["--symlink"]);
                    args.push_path(target);
                    args.push([*path]);
                }
                SystemDir::Directory { path } => args.push(["--ro-bind", path, path]),
            }
        }
        if let Some(resolver) = &self.resolver {
            args.push(["--ro-bind-try"]);
            args.push_path(resolver);
            args.push_path(resolver);
        }
        args.push(["--proc", "/proc", "--dev", "/dev"]);
        args.push(["--perms", "1777", "--size"]);
        args.push([self.memory_bytes.to_string().as_str()]);
        args.push(["--tmpfs", "/tmp", "--bind"]);
        args.push_path(workspace);
        args.push_path(workspace);
        args.push(["--chdir"]);
        args.push_path(workspace);
        // Last, once every mount point exists: the root and /dev stay as bwrap made them.
        args.push([
            "--remount-ro",
            "/",
            "--remount-ro",
            "/dev",
            "--cap-drop",
            "ALL",
        ]);
        match &self.user {
            SandboxUser::Dropped { setpriv, owner } => {
                // setpriv needs SETUID and SETGID to change user and SETPCAP to empty the
                // bounding set (without it, it leaves the set as it is and says nothing);
                // DAC_READ_SEARCH lets bwrap, still root, enter a workspace that only the
                // sandbox user may enter. setpriv's change of user ends them all.
                for cap in [
                    "CAP_SETUID",
                    "CAP_SETGID",
                    "CAP_SETPCAP",
                    "CAP_DAC_READ_SEARCH",
                ] {
                    args.push(["--cap-add", cap]);
                }
                args.push(["--"]);
                args.push_path(setpriv);
                args.push([
                    format!("--reuid={}", owner.uid()).as_str(),
                    format!("--regid={}", owner.gid()).as_str(),
                    "--clear-groups",
                    "--inh-caps=-all",
                    "--bounding-set=-all",
                    "--no-new-privs",
                    "--",
                ]);
            }
            SandboxUser::Server => args.push(["--"]),
        }
        args.push(["sh", "-c", command]);
        args.0
    }
}

/// An argument list under construction.
#[derive(Default)]
struct ArgList(Vec<OsString>);

impl ArgList {
    fn push<'a>(&mut self, args: impl IntoIterator<Item = &'a str>) {
        self.0.extend(args.into_iter().map(OsString::from));
    }

    fn push_path(&mut self, path: &Path) {
        self.0.push(path.as_os_str().to_owned());
    }
}

/// What the child sets up between fork and exec of bwrap.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// RLIMIT_AS, soft and hard, so the command cannot raise it.
    memory_bytes: u64,
    /// RLIMIT_NPROC, soft and hard.
    processes: u64,
    /// The server's pid, to notice a server that died before the death signal was armed.
    server: Pid,
}

impl Limits {
    /// Runs in the forked child: system calls only, no allocation.
    fn enter(self) -> io::Result<()> {
        setsid()?;
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        if getppid() != self.server {
            return Err(nix::errno::Errno::ESRCH.into());
        }
        setrlimit(Resource::RLIMIT_AS, self.memory_bytes, self.memory_bytes)?;
        setrlimit(Resource::RLIMIT_NPROC, self.processes, self.processes)?;
        Ok(())
    }
}

/// `sh -c command` in `dir` with exactly `env`, in its own process group: the
/// `AGENT_SANDBOX=none` command.
pub(crate) fn unconfined(command: &str, dir: &Path, env: Vec<(OsString, OsString)>) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(dir)
        .env_clear()
        .envs(env)
        .process_group(0);
    cmd
}

/// Whether an environment variable is a secret that unconfined commands must not see.
pub fn is_secret_var(name: &OsStr) -> bool {
    let upper = String::from_utf8_lossy(name.as_bytes()).to_uppercase();
    upper == "DATABASE_URL"
        || ["KEY", "SECRET", "TOKEN", "PASSWORD"]
            .iter()
            .any(|word| upper.contains(word))
}

/// `vars` without the secrets (see [`is_secret_var`]).
pub fn scrub_env(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    vars.into_iter()
        .filter(|(name, _)| !is_secret_var(name))
        .collect()
}

/// The server's environment minus secrets: what unconfined commands run with.
pub fn scrubbed_env() -> Vec<(OsString, OsString)> {
    scrub_env(std::env::vars_os())
}

/// Hands the workspace to the sandbox user, off the async threads.
async fn hand_over(owner: SandboxOwner, root: &Path) -> Result<(), SandboxError> {
    let path = root.to_path_buf();
    let walked = tokio::task::spawn_blocking(move || owner.hand_over(&path))
        .await
        .map_err(io::Error::other)
        .and_then(|result| result);
    match walked {
        Ok(tally) => {
            tracing::info!(
                workspace = %root.display(),
                uid = owner.uid(),
                changed = tally.changed,
                "handed what root owned in the workspace to the sandbox user"
            );
            if tally.kept > 0 {
                tracing::warn!(
                    workspace = %root.display(),
                    kept = tally.kept,
                    "root-owned hard links or special files in the workspace stay root's; shell commands cannot change them"
                );
            }
            Ok(())
        }
        Err(source) => Err(SandboxError::HandOver {
            path: root.to_path_buf(),
            uid: owner.uid(),
            source,
        }),
    }
}

/// The first executable file named `name` in the directories of `path`.
fn find_program(name: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// [`SYSTEM_DIRS`] as they are on this host; missing ones are left out.
fn host_system_dirs() -> Vec<SystemDir> {
    SYSTEM_DIRS
        .into_iter()
        .filter_map(|path| {
            let meta = std::fs::symlink_metadata(path).ok()?;
            if meta.is_symlink() {
                let target = std::fs::read_link(path).ok()?;
                Some(SystemDir::Symlink { path, target })
            } else if meta.is_dir() {
                Some(SystemDir::Directory { path })
            } else {
                None
            }
        })
        .collect()
}

/// The real `/etc/resolv.conf` when it lies outside what the sandbox binds anyway.
fn host_resolver() -> Option<PathBuf> {
    let real = std::fs::canonicalize("/etc/resolv.conf").ok()?;
    (!real.starts_with("/etc") && !real.starts_with("/usr")).then_some(real)
}

/// `path` made absolute with symlinks resolved as far as it exists, and the rest
/// (which may not exist yet) normalised by hand.
fn resolve(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let components: Vec<Component> = absolute.components().collect();
    for split in (1..=components.len()).rev() {
        let prefix: PathBuf = components[..split].iter().collect();
        if let Ok(mut resolved) = prefix.canonicalize() {
            for component in &components[split..] {
                match component {
                    Component::ParentDir => {
                        resolved.pop();
                    }
                    Component::Normal(name) => resolved.push(name),
                    Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                }
            }
            return resolved;
        }
    }
    absolute
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> OsString {
        OsString::from(s)
    }

    fn merged_usr() -> Vec<SystemDir> {
        ["bin", "lib", "lib64", "sbin"]
            .into_iter()
            .zip(SYSTEM_DIRS)
            .map(|(target, path)| SystemDir::Symlink {
                path,
                target: PathBuf::from(format!("usr/{target}")),
            })
            .collect()
    }

    fn root_bwrap() -> Bwrap {
        Bwrap {
            program: PathBuf::from("/usr/bin/bwrap"),
            user: SandboxUser::Dropped {
                setpriv: PathBuf::from("/usr/bin/setpriv"),
                owner: SandboxOwner::new(65_534),
            },
            network: false,
            memory_bytes: 1024 * 1024 * 1024,
            system_dirs: merged_usr(),
            resolver: None,
        }
    }

    fn words(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_root_server_drops_commands_to_the_sandbox_user_without_a_user_namespace() {
        let args = root_bwrap().args("echo hi", Path::new("/srv/ws"));
        assert_eq!(
            words(&args),
            "--die-with-parent \
             --unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup-try --unshare-net \
             --clearenv --setenv PATH /usr/local/bin:/usr/bin:/bin --setenv HOME /srv/ws \
             --setenv LANG C.UTF-8 --setenv TERM dumb \
             --ro-bind /usr /usr --ro-bind /etc /etc \
             --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/sbin /sbin \
             --proc /proc --dev /dev --perms 1777 --size 1073741824 --tmpfs /tmp \
             --bind /srv/ws /srv/ws --chdir /srv/ws --remount-ro / --remount-ro /dev \
             --cap-drop ALL --cap-add CAP_SETUID --cap-add CAP_SETGID --cap-add CAP_SETPCAP --cap-add CAP_DAC_READ_SEARCH \
             -- /usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
             --bounding-set=-all --no-new-privs -- sh -c echo hi"
        );
        // The command is one argument, however it is spelled.
        assert_eq!(args.last(), Some(&os("echo hi")));
    }

    #[test]
    fn another_server_runs_commands_as_itself_in_a_user_namespace() {
        let bwrap = Bwrap {
            user: SandboxUser::Server,
            ..root_bwrap()
        };
        let args = words(&bwrap.args("true", Path::new("/srv/ws")));
        assert!(
            args.starts_with(
                "--die-with-parent --unshare-user --disable-userns --unshare-pid --unshare-ipc"
            ),
            "{args}"
        );
        assert!(
            args.ends_with("--remount-ro / --remount-ro /dev --cap-drop ALL -- sh -c true"),
            "{args}"
        );
        assert!(!args.contains("setpriv") && !args.contains("--cap-add"));
    }

    #[test]
    fn the_network_is_kept_only_when_asked_for_with_the_resolver_it_needs() {
        let bwrap = Bwrap {
            network: true,
            resolver: Some(PathBuf::from("/run/systemd/resolve/stub-resolv.conf")),
            ..root_bwrap()
        };
        let args = words(&bwrap.args("true", Path::new("/srv/ws")));
        assert!(!args.contains("--unshare-net"), "{args}");
        assert!(args.contains(
            "--symlink usr/sbin /sbin --ro-bind-try /run/systemd/resolve/stub-resolv.conf /run/systemd/resolve/stub-resolv.conf --proc"
        ));
        let args = words(&root_bwrap().args("true", Path::new("/srv/ws")));
        assert!(args.contains("--unshare-net") && !args.contains("resolv"));
    }

    #[test]
    fn system_directories_that_are_not_symlinks_are_bound_read_only() {
        let bwrap = Bwrap {
            system_dirs: vec![
                SystemDir::Directory { path: "/bin" },
                SystemDir::Directory { path: "/lib" },
            ],
            ..root_bwrap()
        };
        let args = words(&bwrap.args("true", Path::new("/srv/ws")));
        assert!(
            args.contains("--ro-bind /etc /etc --ro-bind /bin /bin --ro-bind /lib /lib --proc"),
            "{args}"
        );
    }

    #[test]
    fn the_host_layout_is_read_as_it_is() {
        for dir in host_system_dirs() {
            match dir {
                SystemDir::Symlink { path, target } => {
                    assert_eq!(std::fs::read_link(path).unwrap(), target)
                }
                SystemDir::Directory { path } => assert!(Path::new(path).is_dir()),
            }
        }
    }

    #[test]
    fn paths_resolve_through_what_exists() {
        let dir = tempfile::TempDir::new().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::fs::create_dir(real.join("a")).unwrap();
        std::os::unix::fs::symlink(real.join("a"), real.join("link")).unwrap();
        assert_eq!(resolve(&real.join("link/not/yet")), real.join("a/not/yet"));
        assert_eq!(resolve(&real.join("link/x/../y")), real.join("a/y"));
        assert_eq!(
            resolve(&real.join("a/../../up")),
            real.parent().unwrap().join("up")
        );
    }

    #[test]
    fn programs_are_found_only_as_executable_files() {
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::write(dir.path().join("plain"), "").unwrap();
        let path = OsString::from(format!("relative:{}:/usr/bin", dir.path().display()));
        assert_eq!(find_program("plain", &path), None);
        assert_eq!(
            find_program("sh", &path).map(|p| p.parent().unwrap().to_path_buf()),
            Some(PathBuf::from("/usr/bin"))
        );
    }

    /// Runs `command` through `bwrap`'s arguments as `uid` (when the test runs as
    /// root; else as the test's own user) and returns its status and output.
    async fn run_as(bwrap: &Bwrap, uid: u32, workspace: &Path, command: &str) -> (bool, String) {
        let mut cmd = bwrap.command(command, workspace);
        if nix::unistd::geteuid().is_root() {
            cmd.uid(uid).gid(uid);
        }
        let output = cmd.stdin(Stdio::null()).output().await.unwrap();
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    }

    #[tokio::test]
    async fn a_server_that_is_not_root_sandboxes_commands_as_itself_or_says_why_not() {
        use std::os::unix::process::CommandExt;
        const SERVER_UID: u32 = 1234;
        let dir = tempfile::TempDir::new().unwrap();
        let workspace = dir.path().canonicalize().unwrap();
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&workspace, Some(SERVER_UID), Some(SERVER_UID)).unwrap();
        }
        let bwrap = Bwrap {
            program: find_program("bwrap", &std::env::var_os("PATH").unwrap()).unwrap(),
            user: SandboxUser::Server,
            system_dirs: host_system_dirs(),
            ..root_bwrap()
        };
        let namespaces_allowed = std::process::Command::new("unshare")
            .args(["--user", "true"])
            .uid(SERVER_UID)
            .status()
            .is_ok_and(|s| s.success());

        let (ok, output) = run_as(
            &bwrap,
            SERVER_UID,
            &workspace,
            "id -u; echo x > made && echo wrote; grep CapEff /proc/self/status; \
             touch /x 2>&1; unshare --user true 2>/dev/null || echo no namespaces",
        )
        .await;

        if namespaces_allowed {
            let uid = if nix::unistd::geteuid().is_root() {
                SERVER_UID
            } else {
                nix::unistd::geteuid().as_raw()
            };
            assert!(ok, "{output}");
            assert_eq!(
                output,
                format!(
                    "{uid}\nwrote\nCapEff:\t0000000000000000\n\
                     touch: cannot touch '/x': Read-only file system\nno namespaces\n"
                )
            );
        } else {
            // Then the start-up check stops the server, saying what to allow.
            let sandbox = Sandbox {
                confinement: Confinement::Bwrap(bwrap),
            };
            let err = sandbox.trial(&workspace).await.unwrap_err().to_string();
            assert!(err.contains("unprivileged user namespaces"), "{err}");
        }
    }

    #[test]
    fn secret_filter_drops_only_secrets() {
        let vars = vec![
            (os("PATH"), os("/usr/bin")),
            (os("HOME"), os("/root")),
            (os("MY_API_KEY"), os("k")),
            (os("openai_api_key"), os("k")),
            (os("AWS_SECRET_ACCESS_KEY"), os("s")),
            (os("GITHUB_TOKEN"), os("t")),
            (os("PGPASSWORD"), os("p")),
            (os("DATABASE_URL"), os("postgres://")),
            (os("database_url"), os("postgres://")),
            (os("DATABASE_URL_RO"), os("kept: not exactly DATABASE_URL")),
            (os("RUST_LOG"), os("debug")),
        ];
        let kept: Vec<OsString> = scrub_env(vars).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            kept,
            vec![
                os("PATH"),
                os("HOME"),
                os("DATABASE_URL_RO"),
                os("RUST_LOG")
            ]
        );
        for (name, _) in scrubbed_env() {
            assert!(!is_secret_var(&name));
        }
    }
}
