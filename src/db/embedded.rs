//! The server's private PostgreSQL cluster, run from the system's PostgreSQL binaries.
//!
//! Lifecycle: [`EmbeddedPostgres::start`] creates the cluster with `initdb` the first
//! time a directory is used and starts it with `pg_ctl`; later starts reuse the same
//! data, so runs persist across restarts. If a previous server process was killed
//! and its cluster survived, the running cluster is reused as it is; if the cluster
//! died too, it is started again and PostgreSQL recovers from its write-ahead log.
//! The cluster listens only on a Unix socket in a directory private to it, so it
//! never clashes with another PostgreSQL on the machine. Dropping the handle leaves
//! the cluster running (exactly like a crash of the server would); call
//! [`EmbeddedPostgres::stop`] on a clean shutdown, or [`EmbeddedPostgres::stop_now`]
//! from synchronous teardown code such as test harnesses. When this process runs
//! as root, every PostgreSQL program runs as the `postgres` system user, because
//! PostgreSQL refuses to run as root.

use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt, lchown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::kill;
use nix::unistd::{Pid, User, geteuid};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

/// Environment variable naming a directory with `initdb`, `pg_ctl` and `postgres`;
/// it wins over every other place the binaries are looked for, so operators can
/// pick a specific PostgreSQL version.
pub const BINDIR_ENV: &str = "AGENT_SERVER_PG_BINDIR";

/// The database superuser `initdb` creates and every connection logs in as; the
/// cluster is private to the server, so one trusted role is all it needs.
const SUPERUSER: &str = "postgres";

/// The system user that owns the cluster when this process runs as root, since
/// `initdb`, `pg_ctl` and `postgres` refuse to run as root.
const CLUSTER_OS_USER: &str = "postgres";

/// The port number, which only names the socket file (`.s.PGSQL.<port>`): no TCP
/// listener is opened, so the default cannot clash with another server.
const PORT: u16 = 5432;

/// The socket file PostgreSQL creates for [`PORT`] inside the socket directory.
const SOCKET_FILE: &str = ".s.PGSQL.5432";

/// The lock file PostgreSQL writes next to the socket, holding the postmaster's pid.
const SOCKET_LOCK_FILE: &str = ".s.PGSQL.5432.lock";

/// The longest socket path the kernel accepts: `sun_path` holds 108 bytes
/// including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Directory (under the cluster directory) holding the data files.
const DATA_DIR: &str = "data";

/// Directory `initdb` fills before it is renamed to [`DATA_DIR`], so an
/// interrupted `initdb` never leaves a half-made cluster where a real one belongs.
const INITDB_DIR: &str = "data.initdb";

/// Directory (under the cluster directory) holding the Unix socket.
const SOCKET_DIR: &str = "socket";

/// The server log, appended to by the postmaster and by `pg_ctl` itself.
const LOG_FILE: &str = "postgres.log";

/// Lock file that serialises concurrent starts of the same cluster, so two
/// processes starting at once do not both run `initdb` or `pg_ctl start`.
const START_LOCK_FILE: &str = "agent-server.lock";

/// Everything this module creates in the cluster directory: when the directory
/// holds nothing else it is ours to hand to the cluster's user, and only these
/// entries are handed over when it holds other files.
const OWN_ENTRIES: &[&str] = &[DATA_DIR, INITDB_DIR, SOCKET_DIR, LOG_FILE, START_LOCK_FILE];

/// Prefix of the short socket directory used when the regular one makes the
/// socket path too long.
const FALLBACK_SOCKET_PREFIX: &str = "/tmp/agent-server-pg-";

/// Settings that make the cluster a private dev-server database: no TCP, a socket
/// only its owner can use, and durable commits (durability is the product, so
/// they are set explicitly rather than trusting whatever the config file says).
const SERVER_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", ""),
    ("unix_socket_permissions", "0700"),
    ("max_connections", "100"),
    ("shared_buffers", "128MB"),
    ("fsync", "on"),
    ("synchronous_commit", "on"),
];

/// How long `pg_ctl start -w` waits for the server to accept connections; crash
/// recovery after a kill can take a while on a busy cluster.
const START_TIMEOUT_SECS: u32 = 60;

/// How long `pg_ctl stop -m fast` waits for the server to finish its shutdown
/// checkpoint.
const STOP_TIMEOUT_SECS: u32 = 60;

/// How long `pg_ctl stop -m immediate` waits; an immediate stop only signals
/// processes, so it finishes quickly unless something is badly wrong.
const IMMEDIATE_STOP_TIMEOUT_SECS: u32 = 10;

/// How long to keep retrying a start while the postmaster of a killed run (or its
/// children holding the old shared memory) is still exiting.
const STALE_RETRY_WINDOW: Duration = Duration::from_secs(10);

/// How long to wait for the first successful connection after a start or reuse.
const CONNECT_WINDOW: Duration = Duration::from_secs(30);

/// How long to wait for another process that is starting the same cluster; it
/// may be running `initdb`, crash recovery and its own connection wait.
const START_LOCK_WINDOW: Duration = Duration::from_secs(180);

/// Interval between polls while waiting for a lock, a process or a connection.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How many lines of a log or of a program's output go into an error message.
const DETAIL_LINES: usize = 15;

/// What can go wrong running the embedded cluster; every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No directory with `initdb`, `pg_ctl` and `postgres` was found.
    #[error(
        "PostgreSQL server binaries not found (looked in {looked_in}); install them (Debian: apt-get install postgresql) or set DATABASE_URL to an external PostgreSQL"
    )]
    BinariesNotFound {
        /// The directories searched, for the user to check.
        looked_in: String,
    },

    /// This process runs as root and there is no `postgres` user to run PostgreSQL as.
    #[error(
        "running as root needs the `postgres` system user to own the embedded PostgreSQL cluster, but that user does not exist; install PostgreSQL (Debian: apt-get install postgresql), run as a non-root user, or set DATABASE_URL to an external PostgreSQL"
    )]
    NoClusterUser,

    /// The user database could not be read.
    #[error(
        "could not look up the `postgres` system user ({error}); check /etc/passwd and NSS, or run as a non-root user"
    )]
    UserLookup {
        /// Why the lookup failed.
        error: Errno,
    },

    /// A directory on the way to the cluster cannot be entered by the cluster's user.
    #[error(
        "the `{user}` system user, which runs the embedded PostgreSQL because this process runs as root, cannot enter {path}; make it traversable (chmod o+x), choose a data directory elsewhere with AGENT_SERVER_DATA_DIR, or set DATABASE_URL to an external PostgreSQL"
    )]
    NotTraversable {
        /// The user PostgreSQL runs as.
        user: String,
        /// The first directory, from the root down, that user cannot enter.
        path: PathBuf,
    },

    /// A file system operation failed.
    #[error("could not {action} {path} ({error}); check its permissions and the free disk space")]
    Io {
        /// What was being done, as a verb phrase ("create directory").
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's reason.
        error: io::Error,
    },

    /// A PostgreSQL program could not be run at all.
    #[error("could not run {program} ({error}); check that it is installed and executable")]
    Spawn {
        /// The program's path.
        program: PathBuf,
        /// The operating system's reason.
        error: io::Error,
    },

    /// The data directory exists but holds something else than a cluster.
    #[error(
        "{path} exists but is not a PostgreSQL data directory (it has no PG_VERSION); move it away or choose another data directory with AGENT_SERVER_DATA_DIR"
    )]
    NotACluster {
        /// The data directory.
        path: PathBuf,
    },

    /// `initdb` failed.
    #[error("initdb could not create a cluster in {path}: {detail}")]
    Initdb {
        /// Where the cluster was being created.
        path: PathBuf,
        /// The end of initdb's output.
        detail: String,
    },

    /// The cluster was made by another major version than the binaries found.
    #[error(
        "the cluster in {path} was created by PostgreSQL {cluster_version} but the binaries in {bindir} are PostgreSQL {binary_version}; point {BINDIR_ENV} at PostgreSQL {cluster_version}'s bin directory, or upgrade the cluster with pg_upgrade"
    )]
    VersionMismatch {
        /// The data directory.
        path: PathBuf,
        /// The major version in the data directory's PG_VERSION.
        cluster_version: String,
        /// The major version of the binaries found.
        binary_version: String,
        /// Where the binaries were found.
        bindir: PathBuf,
    },

    /// The directory meant for the socket is not safe to use.
    #[error(
        "{path} is not a private directory owned by `{user}`, so it cannot hold the embedded PostgreSQL's socket; remove it and start again"
    )]
    UnsafeSocketDir {
        /// The socket directory.
        path: PathBuf,
        /// The user who should own it.
        user: String,
    },

    /// Another process kept the start lock for too long.
    #[error(
        "another process held {path} for {seconds} s while starting the same PostgreSQL cluster; stop that process or choose another data directory with AGENT_SERVER_DATA_DIR"
    )]
    Busy {
        /// The start lock file.
        path: PathBuf,
        /// How long this process waited.
        seconds: u64,
    },

    /// `pg_ctl start` failed.
    #[error("PostgreSQL did not start; see {log} (last lines: {detail})")]
    Start {
        /// The server log.
        log: PathBuf,
        /// The last lines of the log written by this attempt.
        detail: String,
    },

    /// The server never accepted a connection.
    #[error(
        "PostgreSQL at {socket_dir} did not accept connections within {seconds} s ({error}); see {log}"
    )]
    Connect {
        /// The socket directory connections were tried on.
        socket_dir: PathBuf,
        /// How long connections were tried.
        seconds: u64,
        /// The last connection error.
        error: tokio_postgres::Error,
        /// The server log.
        log: PathBuf,
    },

    /// The database name cannot be used.
    #[error(
        "{name:?} cannot be a database name (it must be 1 to 63 bytes without NUL characters); choose another name"
    )]
    InvalidDatabaseName {
        /// The rejected name.
        name: String,
    },

    /// Creating a database failed.
    #[error("could not create database {name:?} ({error}); see {log}")]
    Database {
        /// The database name.
        name: String,
        /// PostgreSQL's error.
        error: tokio_postgres::Error,
        /// The server log.
        log: PathBuf,
    },

    /// `pg_ctl stop` failed.
    #[error(
        "could not stop the PostgreSQL cluster in {path} ({detail}); stop it by hand with pg_ctl stop -D {path}"
    )]
    Stop {
        /// The data directory.
        path: PathBuf,
        /// The end of pg_ctl's output.
        detail: String,
    },
}

/// How [`EmbeddedPostgres::start`] got the cluster running; logged, and checked by tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// `initdb` made a new cluster, which was then started.
    Created,
    /// An existing cluster that had been stopped cleanly was started.
    Started,
    /// The cluster was already running (the previous server process died without
    /// stopping it) and was reused as it was.
    Reused,
    /// The cluster had died without a clean shutdown (stale `postmaster.pid`) and
    /// was started again, recovering from its write-ahead log.
    Recovered,
}

/// The PostgreSQL programs this module runs.
#[derive(Debug, Clone)]
struct Binaries {
    /// The directory holding them, for messages.
    bindir: PathBuf,
    /// `initdb`, which creates the cluster.
    initdb: PathBuf,
    /// `pg_ctl`, which starts, inspects and stops it.
    pg_ctl: PathBuf,
    /// The major version (`15`), to describe the server and to refuse a cluster
    /// made by another major version with a clear message.
    major: Option<String>,
}

/// The system user PostgreSQL runs as when this process is root.
#[derive(Debug, Clone)]
struct ClusterOwner {
    /// User name, for messages.
    name: String,
    /// User id the PostgreSQL programs run with.
    uid: u32,
    /// Primary group id they run with (the only group they get, because the
    /// standard library drops root's supplementary groups when it changes uid).
    gid: u32,
}

/// Whether the postmaster recorded in a lock file is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PidState {
    /// A live PostgreSQL process has that pid.
    Alive,
    /// The process exited but nobody reaped it (an init that does not reap
    /// orphans); PostgreSQL's own `kill(pid, 0)` check still sees it as alive.
    Zombie,
    /// A live process that is not PostgreSQL has the pid (reused after a reboot).
    Foreign,
    /// No process has that pid.
    Gone,
}

/// What `pg_ctl status` and the lock file say about the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClusterState {
    /// A postmaster is running on the data directory.
    Running,
    /// No postmaster is running; `stale` is true when one died without cleaning
    /// up its `postmaster.pid`.
    Stopped {
        /// Whether a lock file of a dead postmaster is left behind.
        stale: bool,
    },
}

/// A running private PostgreSQL cluster; see the module documentation.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    /// The cluster directory as the caller gave it, so log lines show a path the
    /// user recognises.
    shown_dir: PathBuf,
    /// The absolute, canonical cluster directory, so the paths handed to
    /// PostgreSQL do not depend on the current directory.
    dir: PathBuf,
    /// The data directory (`dir/data`).
    data_dir: PathBuf,
    /// The directory holding the Unix socket (`dir/socket`, or a short directory
    /// under `/tmp` when that would make the socket path too long).
    socket_dir: PathBuf,
    /// Whether `socket_dir` is the `/tmp` fallback, so `describe` can say so.
    socket_fallback: bool,
    /// The server log (`dir/postgres.log`).
    log_path: PathBuf,
    /// The PostgreSQL programs used.
    binaries: Binaries,
    /// The user PostgreSQL runs as when this process is root; `None` runs it as
    /// the current user.
    owner: Option<ClusterOwner>,
    /// How the cluster was brought up.
    origin: Origin,
    /// Set once this handle stopped the cluster, so a second stop (say `stop`
    /// followed by a harness's `stop_now`) does nothing.
    stopped: AtomicBool,
}

impl EmbeddedPostgres {
    /// Starts (or reuses) the cluster under `dir` (created on first start with
    /// initdb; the data lives in `dir/data`, the Unix socket in `dir/socket`, the
    /// server log in `dir/postgres.log`).
    ///
    /// Returns once a connection to database `postgres` succeeds. `dir` may be
    /// relative; it is created if missing.
    pub async fn start(dir: &Path) -> Result<EmbeddedPostgres, Error> {
        let began = Instant::now();
        let binaries = Binaries::find(std::env::var_os(BINDIR_ENV)).await?;
        let owner = ClusterOwner::for_this_process()?;

        fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        let abs = fs::canonicalize(dir).map_err(io_error("resolve", dir))?;
        if let Some(owner) = &owner {
            // A fresh directory (a temporary one is 0700 root) must belong to the
            // cluster's user; a directory holding other files is left alone and
            // only our own entries in it change hands.
            if holds_only_own_entries(&abs)? {
                chown_one(&abs, owner)?;
            }
            check_traversable(&abs, owner)?;
        }
        let _start_lock = lock_start(&abs).await?;

        let (socket_dir, socket_fallback) = choose_socket_dir(&abs);
        let mut pg = EmbeddedPostgres {
            shown_dir: dir.to_path_buf(),
            data_dir: abs.join(DATA_DIR),
            socket_dir,
            socket_fallback,
            log_path: abs.join(LOG_FILE),
            dir: abs,
            binaries,
            owner,
            origin: Origin::Started,
            stopped: AtomicBool::new(false),
        };
        pg.prepare_files()?;
        let created = pg.ensure_cluster().await?;
        pg.origin = pg.bring_up(created).await?;
        pg.wait_for_connections().await?;

        let elapsed_ms = began.elapsed().as_millis();
        let dir = pg.shown_dir.display();
        let socket_dir = pg.socket_dir.display();
        match pg.origin {
            Origin::Created => {
                tracing::info!(%dir, %socket_dir, elapsed_ms, "created and started PostgreSQL cluster")
            }
            Origin::Started => {
                tracing::info!(%dir, %socket_dir, elapsed_ms, "started PostgreSQL cluster")
            }
            Origin::Reused => {
                tracing::info!(%dir, %socket_dir, elapsed_ms, "reused running PostgreSQL cluster")
            }
            Origin::Recovered => tracing::info!(
                %dir,
                %socket_dir,
                elapsed_ms,
                "recovered PostgreSQL cluster after an unclean shutdown"
            ),
        }
        Ok(pg)
    }

    /// Connection settings for database `dbname` as the superuser `postgres`
    /// over the Unix socket.
    pub fn config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(PORT)
            .user(SUPERUSER)
            .dbname(dbname);
        config
    }

    /// Creates database `name` if it does not exist yet (connects to
    /// `postgres`; safe if two processes race).
    pub async fn ensure_database(&self, name: &str) -> Result<(), Error> {
        // PostgreSQL silently truncates longer names, which would make the
        // existence check miss forever.
        if name.is_empty() || name.len() > 63 || name.contains('\0') {
            return Err(Error::InvalidDatabaseName {
                name: name.to_owned(),
            });
        }
        let database_error = |error| Error::Database {
            name: name.to_owned(),
            error,
            log: self.log_path.clone(),
        };
        let (client, connection) = self.connect("postgres").await.map_err(database_error)?;
        let outcome = create_database(&client, name).await;
        drop(client);
        // Dropping the client makes the connection task say goodbye and end.
        let _ = connection.await;
        if outcome.map_err(database_error)? {
            tracing::info!(database = name, "created database");
        }
        Ok(())
    }

    /// A short description for the start-up log line, e.g. "embedded
    /// PostgreSQL 15 at ./.agent-server/pg".
    pub fn describe(&self) -> String {
        let version = self
            .binaries
            .major
            .as_deref()
            .unwrap_or("(unknown version)");
        let mut text = format!(
            "embedded PostgreSQL {version} at {}",
            self.shown_dir.display()
        );
        if self.socket_fallback {
            text.push_str(&format!(
                " (socket in {} because {} is too long for a Unix socket path)",
                self.socket_dir.display(),
                self.dir.join(SOCKET_DIR).join(SOCKET_FILE).display()
            ));
        }
        text
    }

    /// Whether the cluster was running before this handle got it (a server
    /// uses it), so a short-lived command knows not to stop it.
    pub fn was_running(&self) -> bool {
        self.origin == Origin::Reused
    }

    /// Stops the cluster (`pg_ctl stop -m fast`, waits). Only stops a cluster
    /// this process started or reused; a second call does nothing.
    pub async fn stop(&self) -> Result<(), Error> {
        if self.stopped.load(Ordering::SeqCst) {
            return Ok(());
        }
        let began = Instant::now();
        if self.postmaster_state() != PidState::Alive {
            self.stopped.store(true, Ordering::SeqCst);
            tracing::info!(dir = %self.shown_dir.display(), "PostgreSQL cluster was not running");
            return Ok(());
        }
        let output = self
            .run(self.stop_command("fast", STOP_TIMEOUT_SECS))
            .await?;
        // pg_ctl also fails when the server went away by itself meanwhile,
        // which is the outcome we want.
        if !output.status.success() && self.cluster_state().await? == ClusterState::Running {
            return Err(Error::Stop {
                path: self.data_dir.clone(),
                detail: output_text(&output),
            });
        }
        self.stopped.store(true, Ordering::SeqCst);
        tracing::info!(
            dir = %self.shown_dir.display(),
            elapsed_ms = began.elapsed().as_millis(),
            "stopped PostgreSQL cluster"
        );
        Ok(())
    }

    /// Blocking immediate stop for use from an atexit hook / Drop in test
    /// harnesses (`pg_ctl stop -m immediate`). Needs no async runtime and never
    /// fails: problems are logged, since its callers cannot handle them.
    pub fn stop_now(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        // A postmaster that is already gone (or a zombie) would only make pg_ctl
        // wait for a lock file that nobody removes.
        if self.postmaster_state() != PidState::Alive {
            return;
        }
        let mut command = self.stop_command("immediate", IMMEDIATE_STOP_TIMEOUT_SECS);
        match command.output() {
            Ok(output) if output.status.success() => {
                tracing::info!(dir = %self.shown_dir.display(), "stopped PostgreSQL cluster immediately")
            }
            Ok(output) => tracing::warn!(
                dir = %self.shown_dir.display(),
                detail = %output_text(&output),
                "pg_ctl stop -m immediate failed"
            ),
            Err(error) => tracing::warn!(
                dir = %self.shown_dir.display(),
                %error,
                "could not run pg_ctl stop -m immediate"
            ),
        }
    }

    /// Creates the socket directory and the log file and hands every entry of
    /// ours to the cluster's user, so PostgreSQL can write where it has to.
    fn prepare_files(&self) -> Result<(), Error> {
        prepare_socket_dir(&self.socket_dir, self.owner.as_ref())?;
        // The log can hold query text from error reports: only its owner reads it.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.log_path)
            .map_err(io_error("create", &self.log_path))?;
        if let Some(owner) = &self.owner {
            for entry in OWN_ENTRIES {
                chown_tree(&self.dir.join(entry), owner)?;
            }
        }
        Ok(())
    }

    /// Runs `initdb` unless the data directory already holds a cluster (then
    /// checks its version); returns whether a cluster was created.
    async fn ensure_cluster(&self) -> Result<bool, Error> {
        let version_file = self.data_dir.join("PG_VERSION");
        if version_file.is_file() {
            let cluster_version = fs::read_to_string(&version_file)
                .map_err(io_error("read", &version_file))?
                .trim()
                .to_owned();
            if let Some(binary_version) = &self.binaries.major
                && *binary_version != cluster_version
            {
                return Err(Error::VersionMismatch {
                    path: self.data_dir.clone(),
                    cluster_version,
                    binary_version: binary_version.clone(),
                    bindir: self.binaries.bindir.clone(),
                });
            }
            return Ok(false);
        }
        if self.data_dir.exists() {
            // An empty directory is what a user gets from `mkdir`; anything else
            // may be someone's files, which must not be touched.
            fs::remove_dir(&self.data_dir).map_err(|_| Error::NotACluster {
                path: self.data_dir.clone(),
            })?;
        }
        let began = Instant::now();
        let scratch = self.dir.join(INITDB_DIR);
        // C.UTF-8 classifies non-ASCII letters (for upper(), regular expressions)
        // while sorting like C; systems without that locale get plain C.
        let mut output = self.initdb(&scratch, "--locale=C.UTF-8").await?;
        if !output.status.success() && output_text(&output).contains("locale") {
            tracing::warn!("initdb rejected locale C.UTF-8; creating the cluster with --no-locale");
            output = self.initdb(&scratch, "--no-locale").await?;
        }
        if !output.status.success() {
            return Err(Error::Initdb {
                path: scratch,
                detail: output_text(&output),
            });
        }
        fs::rename(&scratch, &self.data_dir).map_err(io_error("rename", &scratch))?;
        // Make the rename durable before the cluster takes writes: after a power
        // loss the directory must not reappear under the scratch name, which the
        // next start would wipe.
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error("sync", &self.dir))?;
        tracing::info!(
            dir = %self.shown_dir.display(),
            elapsed_ms = began.elapsed().as_millis(),
            "initdb created a new PostgreSQL cluster"
        );
        Ok(true)
    }

    /// Runs `initdb` into an empty `scratch` directory with the given locale option.
    async fn initdb(&self, scratch: &Path, locale: &str) -> Result<Output, Error> {
        // Leftovers of an interrupted earlier attempt would make initdb refuse.
        if scratch.exists() {
            fs::remove_dir_all(scratch).map_err(io_error("remove", scratch))?;
        }
        DirBuilder::new()
            .mode(0o700)
            .create(scratch)
            .map_err(io_error("create directory", scratch))?;
        if let Some(owner) = &self.owner {
            chown_one(scratch, owner)?;
        }
        let mut command = self.command(&self.binaries.initdb);
        command
            .arg("-D")
            .arg(scratch)
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", locale])
            // Checksums let PostgreSQL notice silently corrupted pages, which
            // matters when durability is the product.
            .arg("--data-checksums");
        self.run(command).await
    }

    /// Starts the cluster unless it is running; returns how it came up.
    async fn bring_up(&self, created: bool) -> Result<Origin, Error> {
        let stale = match self.cluster_state().await? {
            ClusterState::Running => return Ok(Origin::Reused),
            ClusterState::Stopped { stale } => stale,
        };
        if stale {
            tracing::warn!(
                dir = %self.shown_dir.display(),
                "PostgreSQL cluster was not shut down cleanly; starting it to recover"
            );
        }
        self.start_server().await?;
        Ok(if created {
            Origin::Created
        } else if stale {
            Origin::Recovered
        } else {
            Origin::Started
        })
    }

    /// Runs `pg_ctl start`, retrying while the postmaster of a killed run is
    /// still exiting.
    async fn start_server(&self) -> Result<(), Error> {
        let deadline = Instant::now() + STALE_RETRY_WINDOW;
        let mut attempts = 0_u32;
        loop {
            self.clear_stale_locks()?;
            let log_offset = fs::metadata(&self.log_path).map_or(0, |meta| meta.len());
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log_path)
                .map_err(io_error("open", &self.log_path))?;
            let log_too = log.try_clone().map_err(io_error("open", &self.log_path))?;
            let mut command = self.command(&self.binaries.pg_ctl);
            command
                .args(["start", "-w", "-t", &START_TIMEOUT_SECS.to_string(), "-D"])
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&self.log_path)
                .arg("-o")
                .arg(self.server_options())
                // pg_ctl's own messages go to the server log, so nothing of the
                // cluster ever holds this process's stdout or stderr open.
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(log_too));
            let program = self.binaries.pg_ctl.clone();
            let status = tokio::process::Command::from(command)
                .status()
                .await
                .map_err(|error| Error::Spawn { program, error })?;
            if status.success() {
                return Ok(());
            }
            let detail = read_log_since(&self.log_path, log_offset);
            if is_old_postmaster_in_the_way(&detail) && Instant::now() < deadline {
                if attempts == 0 {
                    tracing::info!(
                        "the previous PostgreSQL postmaster is still exiting; retrying start for up to {} s",
                        STALE_RETRY_WINDOW.as_secs()
                    );
                } else {
                    tracing::debug!(
                        attempts,
                        "PostgreSQL start still blocked by the previous postmaster"
                    );
                }
                attempts += 1;
                self.wait_for_old_postmaster(deadline).await?;
                continue;
            }
            // The server may be up but slower than pg_ctl's timeout (long crash
            // recovery); the connection wait decides then.
            if self.cluster_state().await? == ClusterState::Running {
                tracing::warn!("pg_ctl gave up waiting but PostgreSQL is running; waiting for it");
                return Ok(());
            }
            return Err(Error::Start {
                log: self.log_path.clone(),
                detail: last_lines(&detail),
            });
        }
    }

    /// Polls until the postmaster named in `postmaster.pid` is gone (or until
    /// `deadline`), then waits one more interval for its children.
    async fn wait_for_old_postmaster(&self, deadline: Instant) -> Result<(), Error> {
        while Instant::now() < deadline && self.postmaster_state() == PidState::Alive {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        self.clear_stale_locks()?;
        // Children of a killed postmaster may still hold the old shared memory
        // for a moment after the postmaster itself is gone.
        tokio::time::sleep(POLL_INTERVAL).await;
        Ok(())
    }

    /// Removes lock files whose postmaster is certainly dead but that
    /// PostgreSQL would still honour: a zombie (its `kill(pid, 0)` check
    /// succeeds) or an unrelated process that got the same pid.
    fn clear_stale_locks(&self) -> Result<(), Error> {
        for lock in [
            self.data_dir.join("postmaster.pid"),
            self.socket_dir.join(SOCKET_LOCK_FILE),
        ] {
            let Some(pid) = read_pid(&lock) else {
                continue;
            };
            let state = pid_state(pid);
            if matches!(state, PidState::Zombie | PidState::Foreign) {
                tracing::warn!(lock = %lock.display(), pid, ?state, "removing stale PostgreSQL lock file");
                match fs::remove_file(&lock) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => return Err(io_error("remove", &lock)(error)),
                }
            }
        }
        Ok(())
    }

    /// What `pg_ctl status` says, corrected for postmasters it wrongly sees as
    /// alive (zombies and reused pids).
    async fn cluster_state(&self) -> Result<ClusterState, Error> {
        let mut command = self.command(&self.binaries.pg_ctl);
        command.arg("status").arg("-D").arg(&self.data_dir);
        let output = self.run(command).await?;
        let pid_file_exists = self.data_dir.join("postmaster.pid").exists();
        if output.status.success() && self.postmaster_state() == PidState::Alive {
            return Ok(ClusterState::Running);
        }
        Ok(ClusterState::Stopped {
            stale: pid_file_exists,
        })
    }

    /// The state of the process named in `postmaster.pid` (`Gone` without one).
    fn postmaster_state(&self) -> PidState {
        read_pid(&self.data_dir.join("postmaster.pid")).map_or(PidState::Gone, pid_state)
    }

    /// Polls until a connection to database `postgres` succeeds.
    async fn wait_for_connections(&self) -> Result<(), Error> {
        let deadline = Instant::now() + CONNECT_WINDOW;
        loop {
            match self.connect("postgres").await {
                Ok((client, connection)) => {
                    drop(client);
                    let _ = connection.await;
                    return Ok(());
                }
                Err(error) if Instant::now() >= deadline => {
                    return Err(Error::Connect {
                        socket_dir: self.socket_dir.clone(),
                        seconds: CONNECT_WINDOW.as_secs(),
                        error,
                        log: self.log_path.clone(),
                    });
                }
                Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    /// Opens a connection to `dbname` and drives it on a task, which ends once
    /// the returned client is dropped.
    async fn connect(
        &self,
        dbname: &str,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        let (client, connection) = self.config(dbname).connect(NoTls).await?;
        let task = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "embedded PostgreSQL connection ended with an error");
            }
        });
        Ok((client, task))
    }

    /// The `-o` argument of `pg_ctl start`: the server settings as `-c`
    /// options, quoted for the shell pg_ctl runs the postmaster through.
    fn server_options(&self) -> OsString {
        let mut options = Vec::new();
        push_setting(&mut options, "port", PORT.to_string().as_bytes());
        for (name, value) in SERVER_SETTINGS {
            push_setting(&mut options, name, value.as_bytes());
        }
        push_setting(
            &mut options,
            "unix_socket_directories",
            &quote_list_item(self.socket_dir.as_os_str().as_bytes()),
        );
        OsString::from_vec(options)
    }

    /// `pg_ctl stop` with the given shutdown mode, as a blocking command so
    /// `stop_now` can use it without a runtime.
    fn stop_command(&self, mode: &str, timeout_secs: u32) -> std::process::Command {
        let mut command = self.command(&self.binaries.pg_ctl);
        command
            .args([
                "stop",
                "-w",
                "-m",
                mode,
                "-t",
                &timeout_secs.to_string(),
                "-D",
            ])
            .arg(&self.data_dir);
        command
    }

    /// A command for a PostgreSQL program, set up to run as the cluster's user.
    fn command(&self, program: &Path) -> std::process::Command {
        cluster_command(program, self.owner.as_ref(), &self.dir)
    }

    /// Runs `command` to completion, capturing its output.
    async fn run(&self, command: std::process::Command) -> Result<Output, Error> {
        let program = PathBuf::from(command.get_program());
        tokio::process::Command::from(command)
            .output()
            .await
            .map_err(|error| Error::Spawn { program, error })
    }
}

impl Binaries {
    /// Finds the server binaries: in `override_dir` only when it is set, else via
    /// `pg_config --bindir`, the highest `/usr/lib/postgresql/<version>/bin`
    /// (Debian keeps them off PATH), and finally PATH.
    async fn find(override_dir: Option<OsString>) -> Result<Binaries, Error> {
        let mut candidates = Vec::new();
        match override_dir.filter(|dir| !dir.is_empty()) {
            // An explicit choice is honoured or reported, never silently replaced.
            Some(dir) => candidates.push(PathBuf::from(dir)),
            None => {
                if let Some(dir) = pg_config_bindir().await {
                    candidates.push(dir);
                }
                candidates.extend(debian_bindirs());
                if let Some(path) = std::env::var_os("PATH") {
                    candidates.extend(std::env::split_paths(&path).filter(|dir| dir.is_absolute()));
                }
            }
        }
        for bindir in &candidates {
            let binaries = Binaries {
                initdb: bindir.join("initdb"),
                pg_ctl: bindir.join("pg_ctl"),
                bindir: bindir.clone(),
                major: None,
            };
            if is_executable(&binaries.initdb)
                && is_executable(&binaries.pg_ctl)
                && is_executable(&bindir.join("postgres"))
            {
                let major = major_version(&binaries.pg_ctl).await;
                return Ok(Binaries { major, ..binaries });
            }
        }
        let looked_in = if candidates.is_empty() {
            "no candidate directories".to_owned()
        } else {
            candidates
                .iter()
                .map(|dir| dir.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(Error::BinariesNotFound { looked_in })
    }
}

impl ClusterOwner {
    /// The `postgres` system user when this process runs as root, else `None`.
    fn for_this_process() -> Result<Option<ClusterOwner>, Error> {
        if !geteuid().is_root() {
            return Ok(None);
        }
        match User::from_name(CLUSTER_OS_USER) {
            Ok(Some(user)) => Ok(Some(ClusterOwner {
                name: user.name,
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            })),
            Ok(None) => Err(Error::NoClusterUser),
            Err(error) => Err(Error::UserLookup { error }),
        }
    }
}

/// Builds a command for a PostgreSQL program: its own process group (a Ctrl-C
/// in the terminal must not reach the cluster or an `initdb` half-way), no
/// stdin, a working directory and HOME the cluster's user can read, and an
/// environment free of `PG*` variables that would redirect it (PGDATA, PGPORT…).
fn cluster_command(
    program: &Path,
    owner: Option<&ClusterOwner>,
    dir: &Path,
) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    command
        .current_dir(dir)
        .stdin(Stdio::null())
        .process_group(0);
    for (key, _) in std::env::vars_os() {
        if key.as_bytes().starts_with(b"PG") {
            command.env_remove(key);
        }
    }
    // English messages before the configuration is loaded, so the start retry
    // can recognise a lock file left by a dying postmaster.
    command.env_remove("LC_ALL").env("LC_MESSAGES", "C");
    if let Some(owner) = owner {
        command.uid(owner.uid).gid(owner.gid).env("HOME", dir);
    }
    command
}

/// Creates database `name` unless it exists; returns whether it was created.
async fn create_database(
    client: &tokio_postgres::Client,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    if database_exists(client, name).await? {
        return Ok(false);
    }
    let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match client.batch_execute(&sql).await {
        Ok(()) => Ok(true),
        // Another process created it between the check and the CREATE; which
        // error it surfaces as depends on timing.
        Err(error)
            if error.code() == Some(&SqlState::DUPLICATE_DATABASE)
                || error.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
        {
            if database_exists(client, name).await? {
                Ok(false)
            } else {
                Err(error)
            }
        }
        Err(error) => Err(error),
    }
}

/// Whether database `name` exists.
async fn database_exists(
    client: &tokio_postgres::Client,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?;
    Ok(row.is_some())
}

/// `pg_config --bindir`, when pg_config is installed and answers.
async fn pg_config_bindir() -> Option<PathBuf> {
    let output = tokio::process::Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let dir = text.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The `/usr/lib/postgresql/<version>/bin` directories, highest version first.
fn debian_bindirs() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir("/usr/lib/postgresql") else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// Whether `path` is a file someone may execute.
fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.mode() & 0o111 != 0)
}

/// The major version of the binaries next to `pg_ctl`, from `pg_ctl --version`
/// ("pg_ctl (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)" gives "15").
async fn major_version(pg_ctl: &Path) -> Option<String> {
    let output = tokio::process::Command::new(pg_ctl)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    parse_major_version(&String::from_utf8_lossy(&output.stdout))
}

/// Extracts the major version from `pg_ctl --version` output.
fn parse_major_version(text: &str) -> Option<String> {
    let version = text.split(')').nth(1)?.split_whitespace().next()?;
    let major = version.split(['.', 'b', 'r']).next()?;
    (!major.is_empty() && major.bytes().all(|b| b.is_ascii_digit())).then(|| major.to_owned())
}

/// Picks the socket directory: `dir/socket` when the socket path fits the
/// kernel's limit, else a short directory under `/tmp` named after a hash of
/// the data directory (so every start of this cluster finds the same one).
fn choose_socket_dir(dir: &Path) -> (PathBuf, bool) {
    let regular = dir.join(SOCKET_DIR);
    if socket_path_fits(&regular) {
        return (regular, false);
    }
    let data_dir = dir.join(DATA_DIR);
    let hash = fnv1a(data_dir.as_os_str().as_bytes());
    (
        PathBuf::from(format!("{FALLBACK_SOCKET_PREFIX}{hash:016x}")),
        true,
    )
}

/// Whether the socket file in `socket_dir` fits in `sun_path`.
fn socket_path_fits(socket_dir: &Path) -> bool {
    socket_dir.join(SOCKET_FILE).as_os_str().len() <= MAX_SOCKET_PATH
}

/// 64-bit FNV-1a: a hash that, unlike the standard library's, is fixed forever,
/// so a new build still finds the socket of a cluster an older build started.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Creates the socket directory (mode 0700, owned by the cluster's user) or
/// checks that an existing one is private to that user; a directory in `/tmp`
/// owned by someone else could let them take over the socket.
fn prepare_socket_dir(path: &Path, owner: Option<&ClusterOwner>) -> Result<(), Error> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(io_error("create directory", path)(error)),
    }
    let meta = fs::symlink_metadata(path).map_err(io_error("inspect", path))?;
    let (uid, user) = match owner {
        Some(owner) => (owner.uid, owner.name.clone()),
        None => (geteuid().as_raw(), "the current user".to_owned()),
    };
    let unsafe_dir = || Error::UnsafeSocketDir {
        path: path.to_path_buf(),
        user: user.clone(),
    };
    // `symlink_metadata` reports a symlink as not a directory, so a planted
    // link is refused too.
    if !meta.is_dir() {
        return Err(unsafe_dir());
    }
    if meta.uid() != uid {
        match owner {
            // Root made it (say, a run before the owner switch): ours to fix.
            Some(owner) if meta.uid() == 0 => chown_one(path, owner)?,
            _ => return Err(unsafe_dir()),
        }
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(io_error("restrict the permissions of", path))?;
    }
    Ok(())
}

/// Whether `dir` holds nothing but entries this module creates.
fn holds_only_own_entries(dir: &Path) -> Result<bool, Error> {
    let entries = fs::read_dir(dir).map_err(io_error("list", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_error("list", dir))?;
        let name = entry.file_name();
        if !OWN_ENTRIES.iter().any(|own| OsStr::new(own) == name) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Checks, from the root down, that the cluster's user can enter every
/// directory up to and including `dir`, so the error names the outermost
/// directory to fix.
fn check_traversable(dir: &Path, owner: &ClusterOwner) -> Result<(), Error> {
    let mut chain: Vec<&Path> = dir.ancestors().collect();
    chain.reverse();
    for path in chain {
        let meta = fs::metadata(path).map_err(io_error("inspect", path))?;
        // Only the primary group counts: the child gets no supplementary groups.
        let search_bit = if meta.uid() == owner.uid {
            0o100
        } else if meta.gid() == owner.gid {
            0o010
        } else {
            0o001
        };
        if meta.mode() & search_bit == 0 {
            return Err(Error::NotTraversable {
                user: owner.name.clone(),
                path: path.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Gives `path` itself (not what it points to) to the cluster's user.
fn chown_one(path: &Path, owner: &ClusterOwner) -> Result<(), Error> {
    lchown(path, Some(owner.uid), Some(owner.gid)).map_err(io_error("change the owner of", path))
}

/// Gives `root` and everything below it to the cluster's user (`chown -R`),
/// without following symlinks and touching only what is not theirs yet, so a
/// restart of a large cluster stays cheap. Entries that vanish meanwhile (a
/// running server's temporary files) are skipped.
fn chown_tree(root: &Path, owner: &ClusterOwner) -> Result<(), Error> {
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(io_error("inspect", &path)(error)),
        };
        if meta.uid() != owner.uid || meta.gid() != owner.gid {
            match lchown(&path, Some(owner.uid), Some(owner.gid)) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(io_error("change the owner of", &path)(error)),
            }
        }
        if meta.is_dir() {
            let entries = match fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(io_error("list", &path)(error)),
            };
            for entry in entries {
                let entry = entry.map_err(io_error("list", &path))?;
                pending.push(entry.path());
            }
        }
    }
    Ok(())
}

/// Takes the start lock of the cluster directory, polling while another
/// process holds it. The lock is released when the returned value is dropped.
async fn lock_start(dir: &Path) -> Result<Flock<File>, Error> {
    let path = dir.join(START_LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error("open", &path))?;
    let deadline = Instant::now() + START_LOCK_WINDOW;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((returned, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = returned;
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(Error::Busy {
                    path,
                    seconds: START_LOCK_WINDOW.as_secs(),
                });
            }
            Err((_, errno)) => return Err(io_error("lock", &path)(errno.into())),
        }
    }
}

/// The pid on the first line of a PostgreSQL lock file, if there is one.
fn read_pid(lock_file: &Path) -> Option<i32> {
    let text = fs::read_to_string(lock_file).ok()?;
    let pid = text.lines().next()?.trim().parse::<i32>().ok()?;
    // Zero or negative values would address process groups, not a process.
    (pid > 0).then_some(pid)
}

/// Whether process `pid` is a live PostgreSQL process.
fn pid_state(pid: i32) -> PidState {
    match kill(Pid::from_raw(pid), None) {
        Err(Errno::ESRCH) => PidState::Gone,
        // EPERM means it exists but belongs to someone else.
        Ok(()) | Err(_) => match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => classify_stat(&stat),
            Err(error) if error.kind() == io::ErrorKind::NotFound => PidState::Gone,
            // Without /proc, trust kill(): PostgreSQL does the same.
            Err(_) => PidState::Alive,
        },
    }
}

/// Classifies a process from its `/proc/<pid>/stat` line ("pid (comm) S …").
fn classify_stat(stat: &str) -> PidState {
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return PidState::Alive;
    };
    let comm = stat.get(open + 1..close).unwrap_or_default();
    let state = stat
        .get(close + 1..)
        .and_then(|rest| rest.trim_start().chars().next());
    if matches!(state, Some('Z' | 'X')) {
        PidState::Zombie
    } else if comm.contains("postgres") || comm.contains("postmaster") {
        PidState::Alive
    } else {
        PidState::Foreign
    }
}

/// Whether a failed start's log says an earlier postmaster (or its children)
/// is still in the way.
fn is_old_postmaster_in_the_way(log: &str) -> bool {
    (log.contains("lock file") && log.contains("already exists"))
        || log.contains("pre-existing shared memory block")
}

/// What the log gained since `offset` (or nothing, if it cannot be read).
fn read_log_since(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    let read = File::open(path).and_then(|mut file| {
        file.seek(SeekFrom::Start(offset))?;
        file.read_to_end(&mut bytes)
    });
    match read {
        Ok(_) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

/// The last few non-empty lines of `text`, joined into one line for a message.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    let start = lines.len().saturating_sub(DETAIL_LINES);
    let joined = lines[start..].join(" | ");
    if joined.is_empty() {
        "no output".to_owned()
    } else {
        joined
    }
}

/// A program's stdout and stderr, shortened for a message.
fn output_text(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push('\n');
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    last_lines(&text)
}

/// Appends `-c 'name=value'` to a shell command line.
fn push_setting(options: &mut Vec<u8>, name: &str, value: &[u8]) {
    if !options.is_empty() {
        options.push(b' ');
    }
    options.extend_from_slice(b"-c ");
    let mut setting = name.as_bytes().to_vec();
    setting.push(b'=');
    setting.extend_from_slice(value);
    options.extend_from_slice(&shell_quote(&setting));
}

/// Quotes `value` as one word for `/bin/sh`, which pg_ctl runs the postmaster
/// through: inside single quotes only `'` itself needs escaping.
fn shell_quote(value: &[u8]) -> Vec<u8> {
    let mut quoted = vec![b'\''];
    for &byte in value {
        if byte == b'\'' {
            quoted.extend_from_slice(b"'\\''");
        } else {
            quoted.push(byte);
        }
    }
    quoted.push(b'\'');
    quoted
}

/// Quotes a path as one item of a PostgreSQL directory list
/// (`unix_socket_directories`), so commas and spaces in it stay part of it.
fn quote_list_item(value: &[u8]) -> Vec<u8> {
    let mut quoted = vec![b'"'];
    for &byte in value {
        if byte == b'"' {
            quoted.push(b'"');
        }
        quoted.push(byte);
    }
    quoted.push(b'"');
    quoted
}

/// Builds the `map_err` closure for an I/O failure of `action` on `path`.
fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    move |error| Error::Io {
        action,
        path: path.to_path_buf(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use std::sync::Arc;

    /// Stops every cluster handed to it when dropped, so no postgres process
    /// outlives a test, even a failing one.
    struct Guard(Vec<Arc<EmbeddedPostgres>>);

    impl Guard {
        fn new() -> Self {
            Guard(Vec::new())
        }

        /// Keeps `pg` for stopping at the end and hands it back.
        fn keep(&mut self, pg: EmbeddedPostgres) -> Arc<EmbeddedPostgres> {
            let pg = Arc::new(pg);
            self.0.push(Arc::clone(&pg));
            pg
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            for pg in self.0.iter().rev() {
                pg.stop_now();
                // The /tmp fallback outlives the test's temporary directory.
                if pg.socket_fallback {
                    let _ = fs::remove_dir_all(&pg.socket_dir);
                }
            }
        }
    }

    /// A fresh directory for clusters, traversable by `postgres` like /tmp
    /// itself (tempfile makes it 0700, which suits tests that pass it directly
    /// since start hands it over, but not tests that use a subdirectory).
    fn temp_dir() -> tempfile::TempDir {
        let tmp = tempfile::Builder::new()
            .prefix("embedded-pg-test")
            .tempdir_in("/tmp")
            .expect("create a temporary directory");
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
            .expect("open up the temporary directory");
        tmp
    }

    async fn select_one(pg: &EmbeddedPostgres, dbname: &str) -> i32 {
        let (client, connection) = pg.connect(dbname).await.expect("connect");
        let value: i32 = client
            .query_one("SELECT 1", &[])
            .await
            .expect("SELECT 1")
            .get(0);
        drop(client);
        connection.await.expect("connection task");
        value
    }

    async fn timed_start(dir: &Path, what: &str) -> EmbeddedPostgres {
        let began = Instant::now();
        let pg = EmbeddedPostgres::start(dir)
            .await
            .expect("start the cluster");
        eprintln!("timing: {what}: {:?} ({:?})", began.elapsed(), pg.origin);
        pg
    }

    #[tokio::test]
    async fn creates_stops_and_restarts_with_data_kept() {
        let tmp = temp_dir();
        let dir = tmp.path().join("pg");
        let mut guard = Guard::new();

        let pg = guard.keep(timed_start(&dir, "initdb + start").await);
        assert_eq!(pg.origin, Origin::Created);
        assert!(
            pg.describe().starts_with("embedded PostgreSQL "),
            "{}",
            pg.describe()
        );
        assert!(pg.describe().ends_with(&dir.display().to_string()));
        assert!(!pg.socket_fallback);
        pg.ensure_database("agents").await.expect("create database");
        pg.ensure_database("agents")
            .await
            .expect("database exists already");
        assert_eq!(select_one(&pg, "agents").await, 1);
        let (client, connection) = pg.connect("agents").await.expect("connect");
        client
            .batch_execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
            .await
            .expect("write a row");
        drop(client);
        connection.await.expect("connection task");
        let began = Instant::now();
        pg.stop().await.expect("stop");
        eprintln!("timing: stop -m fast: {:?}", began.elapsed());
        assert!(!dir.join("data/postmaster.pid").exists());
        pg.stop().await.expect("a second stop does nothing");

        let pg = guard.keep(timed_start(&dir, "start of a stopped cluster").await);
        assert_eq!(pg.origin, Origin::Started);
        let (client, connection) = pg.connect("agents").await.expect("database still exists");
        let value: i32 = client
            .query_one("SELECT v FROM kept", &[])
            .await
            .expect("row kept")
            .get(0);
        assert_eq!(value, 42);
        drop(client);
        connection.await.expect("connection task");
        pg.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn reuses_a_cluster_left_running() {
        let tmp = temp_dir();
        let mut guard = Guard::new();
        let first = guard.keep(timed_start(tmp.path(), "initdb + start").await);
        let first_pid = read_pid(&first.data_dir.join("postmaster.pid"));

        // A killed server never stops its cluster: a second handle must find it
        // running and use it as it is.
        let second = EmbeddedPostgres::start(tmp.path()).await.expect("start");
        eprintln!("timing: reuse: origin {:?}", second.origin);
        assert_eq!(second.origin, Origin::Reused);
        assert_eq!(read_pid(&second.data_dir.join("postmaster.pid")), first_pid);
        // Dropping a handle must leave the cluster running.
        drop(second);
        assert_eq!(select_one(&first, "postgres").await, 1);

        let began = Instant::now();
        let third = guard.keep(EmbeddedPostgres::start(tmp.path()).await.expect("start"));
        eprintln!("timing: reuse: {:?}", began.elapsed());
        assert_eq!(third.origin, Origin::Reused);
        third
            .ensure_database("after_reuse")
            .await
            .expect("create database");
        assert_eq!(select_one(&third, "after_reuse").await, 1);
    }

    #[tokio::test]
    async fn recovers_after_the_postmaster_is_killed() {
        let tmp = temp_dir();
        let mut guard = Guard::new();
        let pg = guard.keep(timed_start(tmp.path(), "initdb + start").await);
        pg.ensure_database("survivor")
            .await
            .expect("create database");
        let pid = read_pid(&pg.data_dir.join("postmaster.pid")).expect("postmaster.pid");
        kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9 the postmaster");
        // Wait until the kernel has killed it (it may stay a zombie here).
        while pid_state(pid) == PidState::Alive {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            pg.data_dir.join("postmaster.pid").exists(),
            "stale pid file left"
        );

        let recovered = guard.keep(timed_start(tmp.path(), "recovery after kill -9").await);
        assert_eq!(recovered.origin, Origin::Recovered);
        let new_pid = read_pid(&recovered.data_dir.join("postmaster.pid")).expect("new pid");
        assert_ne!(new_pid, pid);
        assert_eq!(select_one(&recovered, "survivor").await, 1);
    }

    #[tokio::test]
    async fn races_on_ensure_database_are_harmless() {
        let tmp = temp_dir();
        let mut guard = Guard::new();
        let pg = guard.keep(EmbeddedPostgres::start(tmp.path()).await.expect("start"));
        let (a, b, c) = tokio::join!(
            pg.ensure_database("raced"),
            pg.ensure_database("raced"),
            pg.ensure_database("raced")
        );
        a.expect("first");
        b.expect("second");
        c.expect("third");
        assert_eq!(select_one(&pg, "raced").await, 1);
        assert!(matches!(
            pg.ensure_database(&"x".repeat(64)).await,
            Err(Error::InvalidDatabaseName { .. })
        ));
    }

    #[tokio::test]
    async fn falls_back_to_a_short_socket_dir_for_long_paths() {
        let tmp = temp_dir();
        let dir = tmp.path().join("d".repeat(90)).join("pg");
        let mut guard = Guard::new();
        let pg = guard.keep(EmbeddedPostgres::start(&dir).await.expect("start"));
        assert!(pg.socket_fallback);
        let socket_dir = pg.socket_dir.to_string_lossy().into_owned();
        assert!(
            socket_dir.starts_with(FALLBACK_SOCKET_PREFIX),
            "{socket_dir}"
        );
        assert!(pg.socket_dir.join(SOCKET_FILE).as_os_str().len() <= MAX_SOCKET_PATH);
        assert!(
            pg.describe().contains("/tmp/agent-server-pg-"),
            "{}",
            pg.describe()
        );
        assert_eq!(select_one(&pg, "postgres").await, 1);
        pg.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn relative_paths_are_made_absolute() {
        let tmp = temp_dir();
        // A path relative to the current directory (which tests never change),
        // climbing to `/` first: `../../tmp/embedded-pg-test…`.
        let cwd = fs::canonicalize(".").expect("current directory");
        let mut relative = PathBuf::new();
        for _ in cwd.components().skip(1) {
            relative.push("..");
        }
        relative.push(tmp.path().strip_prefix("/").expect("absolute temp dir"));
        relative.push("pg");
        assert!(relative.is_relative());
        let mut guard = Guard::new();
        let pg = guard.keep(EmbeddedPostgres::start(&relative).await.expect("start"));
        assert_eq!(pg.dir, tmp.path().join("pg"));
        assert!(pg.socket_dir.is_absolute());
        assert_eq!(
            pg.describe(),
            format!(
                "embedded PostgreSQL {} at {}",
                pg.binaries.major.as_deref().unwrap_or_default(),
                relative.display()
            )
        );
        assert_eq!(select_one(&pg, "postgres").await, 1);
    }

    #[tokio::test]
    async fn untraversable_parent_is_named_when_root() {
        if !geteuid().is_root() {
            return;
        }
        let tmp = temp_dir();
        let locked = tmp.path().join("locked");
        DirBuilder::new()
            .mode(0o700)
            .create(&locked)
            .expect("mkdir");
        match EmbeddedPostgres::start(&locked.join("pg")).await {
            Err(Error::NotTraversable { path, .. }) => assert_eq!(path, locked),
            other => panic!("expected NotTraversable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn missing_binaries_are_reported_with_the_places_looked_in() {
        let error = Binaries::find(Some(OsString::from("/nonexistent/pg/bin")))
            .await
            .expect_err("no binaries there");
        assert_eq!(
            error.to_string(),
            "PostgreSQL server binaries not found (looked in /nonexistent/pg/bin); install them (Debian: apt-get install postgresql) or set DATABASE_URL to an external PostgreSQL"
        );
    }

    #[test]
    fn quoting_keeps_odd_paths_as_one_word() {
        assert_eq!(shell_quote(b"a'b c"), b"'a'\\''b c'".to_vec());
        assert_eq!(quote_list_item(b"/x, \"y\""), b"\"/x, \"\"y\"\"\"".to_vec());
        let mut options = Vec::new();
        push_setting(&mut options, "listen_addresses", b"");
        push_setting(&mut options, "port", b"5432");
        assert_eq!(options, b"-c 'listen_addresses=' -c 'port=5432'".to_vec());
    }

    #[test]
    fn socket_path_limit_and_hash_are_stable() {
        assert_eq!(SOCKET_FILE, format!(".s.PGSQL.{PORT}"));
        assert_eq!(SOCKET_LOCK_FILE, format!("{SOCKET_FILE}.lock"));
        let fits = PathBuf::from(format!("/{}", "a".repeat(MAX_SOCKET_PATH - 15)));
        assert!(socket_path_fits(&fits));
        let too_long = PathBuf::from(format!("/{}", "a".repeat(MAX_SOCKET_PATH - 14)));
        assert!(!socket_path_fits(&too_long));
        // FNV-1a test vectors: the socket directory name must never change.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn parses_versions_and_process_states() {
        assert_eq!(
            parse_major_version("pg_ctl (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)\n"),
            Some("15".to_owned())
        );
        assert_eq!(
            parse_major_version("pg_ctl (PostgreSQL) 17beta1\n"),
            Some("17".to_owned())
        );
        assert_eq!(parse_major_version("garbage"), None);
        assert_eq!(classify_stat("12 (postgres) S 1 12"), PidState::Alive);
        assert_eq!(classify_stat("12 (postgres) Z 1 12"), PidState::Zombie);
        assert_eq!(classify_stat("12 (sleep) S 1 12"), PidState::Foreign);
        assert_eq!(classify_stat("12 (odd) name) S 1"), PidState::Foreign);
        assert!(is_old_postmaster_in_the_way(
            "FATAL:  lock file \"postmaster.pid\" already exists"
        ));
        assert!(!is_old_postmaster_in_the_way("FATAL:  could not open file"));
    }
}
