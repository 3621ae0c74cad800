//! Several instances on one PostgreSQL (contract section 10): this
//! instance's identity and leases, and the database as the place where
//! instances meet.
//!
//! An instance renews one heartbeat row every quarter lease; that renews
//! its leases on every run it drives. Another instance may claim a run when
//! its owner's heartbeat is older than the lease (killed, frozen, cut off),
//! and every claim bumps the run's epoch, which every journal write must
//! name (`journal::append`): so an instance that lost a run can never write
//! to it again, whatever it believes. An instance that notices its own
//! heartbeat lapsed (it was frozen, or the database was away) gives up
//! every run at once and kills their commands before anything else
//! (`RunRegistry::maintain`), then claims again like anyone.
//!
//! Layout: `store` is the SQL (instances, claims, inboxes); `listener` the
//! one `LISTEN` connection whose notifications wake the others up.

pub mod listener;
pub mod store;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::broadcast;
use uuid::Uuid;

pub use listener::Notice;
pub use store::{Claim, InboxEntry, InstanceInfo};

use crate::journal::Error;

/// A command arrived for a run (payload: the run id).
pub const INBOX: &str = "agent_server_inbox";
/// A command was handled (payload: the inbox entry's id).
pub const INBOX_DONE: &str = "agent_server_inbox_done";
/// An instance gave its runs back (payload: its id).
pub const RELEASED: &str = "agent_server_released";
/// An instance committed journal entries (payload: `announcement`).
pub const JOURNAL: &str = "agent_server_journal";
/// Every channel an instance listens to.
pub const CHANNELS: &[&str] = &[INBOX, INBOX_DONE, RELEASED, JOURNAL];

/// The file in the data dir that keeps the random part of the instance id.
const INSTANCE_ID_FILE: &str = "instance-id";

struct Inner {
    id: String,
    lease: Duration,
    pool: Pool,
    notices: broadcast::Sender<Notice>,
    /// When the last heartbeat that went through was sent.
    renewed: Mutex<Instant>,
}

/// This instance in the cluster; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl Cluster {
    pub fn new(id: String, lease: Duration, pool: Pool) -> Cluster {
        let (notices, _) = broadcast::channel(4096);
        Cluster {
            inner: Arc::new(Inner {
                id,
                lease,
                pool,
                notices,
                renewed: Mutex::new(Instant::now()),
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn lease(&self) -> Duration {
        self.inner.lease
    }

    /// How often the heartbeat is renewed: a quarter lease, so that three
    /// heartbeats can fail before the lease lapses.
    pub fn heartbeat_interval(&self) -> Duration {
        self.inner.lease / 4
    }

    /// How often runs that need a driver are looked for: often enough that
    /// runs given back on a hand-over are taken within a second or two.
    pub fn claim_interval(&self) -> Duration {
        (self.inner.lease / 4).min(Duration::from_millis(500))
    }

    /// Notifications of the cluster's channels.
    pub fn notices(&self) -> broadcast::Receiver<Notice> {
        self.inner.notices.subscribe()
    }

    /// Where the listener delivers notifications.
    pub fn notice_sender(&self) -> broadcast::Sender<Notice> {
        self.inner.notices.clone()
    }

    /// Registers the instance as alive, and starts its lease clock.
    pub async fn register(&self) -> Result<(), Error> {
        let sent = Instant::now();
        store::register(&self.inner.pool, &self.inner.id).await?;
        *self.renewed() = sent;
        Ok(())
    }

    /// Renews the leases; on failure they run on until they lapse.
    pub async fn heartbeat(&self) -> Result<(), Error> {
        let sent = Instant::now();
        store::heartbeat(&self.inner.pool, &self.inner.id).await?;
        *self.renewed() = sent;
        Ok(())
    }

    /// Whether the leases may have lapsed: the last renewal that went
    /// through was sent three quarters of a lease ago or more. Others may
    /// claim the runs only a whole lease after it reached the database, so
    /// giving up here is always early enough.
    pub fn lapsed(&self) -> bool {
        self.renewed().elapsed() >= self.inner.lease * 3 / 4
    }

    fn renewed(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.inner
            .renewed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub async fn claim_due(&self, driving: &[Uuid], limit: i64) -> Result<Vec<Claim>, Error> {
        store::claim_due(
            &self.inner.pool,
            &self.inner.id,
            self.inner.lease,
            driving,
            limit,
        )
        .await
    }

    pub async fn claim_one(&self, run_id: Uuid) -> Result<Option<Claim>, Error> {
        store::claim_one(&self.inner.pool, &self.inner.id, self.inner.lease, run_id).await
    }

    pub async fn release(&self, claim: Claim) -> Result<bool, Error> {
        store::release(&self.inner.pool, &self.inner.id, claim).await
    }

    pub async fn release_all(&self) -> Result<u64, Error> {
        store::release_all(&self.inner.pool, &self.inner.id).await
    }

    /// Leaves the cluster: every run given back at once, and the others
    /// told, so they take the runs within a second or two.
    pub async fn stop(&self) -> Result<u64, Error> {
        store::stop(&self.inner.pool, &self.inner.id).await
    }

    pub async fn instances(&self) -> Result<Vec<InstanceInfo>, Error> {
        store::instances(&self.inner.pool, self.inner.lease).await
    }

    pub async fn send(
        &self,
        run_id: Uuid,
        command: &serde_json::Value,
    ) -> Result<Option<i64>, Error> {
        store::send(&self.inner.pool, run_id, command).await
    }

    pub async fn outcome(&self, inbox_id: i64) -> Result<Option<serde_json::Value>, Error> {
        store::outcome(&self.inner.pool, inbox_id).await
    }

    pub async fn withdraw(&self, inbox_id: i64) -> Result<bool, Error> {
        store::withdraw(&self.inner.pool, inbox_id).await
    }

    pub async fn waiting(&self, run_id: Uuid) -> Result<Vec<InboxEntry>, Error> {
        store::waiting(&self.inner.pool, run_id).await
    }

    pub async fn runs_with_mail(&self) -> Result<Vec<Uuid>, Error> {
        store::runs_with_mail(&self.inner.pool, &self.inner.id).await
    }
}

/// This instance's id: `AGENT_SERVER_INSTANCE_ID`, or the host name and a
/// random suffix kept in the data dir, so that a restarted process is the
/// same instance and takes its runs back at once instead of waiting for its
/// old leases to lapse.
pub fn instance_id(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(id) = configured {
        return Ok(id.to_string());
    }
    let file = data_dir.join(INSTANCE_ID_FILE);
    let suffix = match std::fs::read_to_string(&file) {
        Ok(text) if is_suffix(text.trim()) => text.trim().to_string(),
        _ => {
            let suffix = Uuid::new_v4().simple().to_string()[..8].to_string();
            std::fs::create_dir_all(data_dir)?;
            std::fs::write(&file, format!("{suffix}\n"))?;
            suffix
        }
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(100)
        .collect();
    Ok(if host.is_empty() {
        format!("agent-server-{suffix}")
    } else {
        format!("{host}-{suffix}")
    })
}

fn is_suffix(text: &str) -> bool {
    (1..=16).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One commit that an instance announced: the run, the range of `seq` it
/// wrote, and whether the run's summary changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    pub run_id: Uuid,
    pub first: i64,
    pub last: i64,
    pub summary_changed: bool,
}

/// The payload of a journal notification: the writer's instance on the first
/// line, then a line `run first last changed` per commit.
pub fn announcement(instance: &str, commits: &[Announced]) -> String {
    let mut text = instance.to_string();
    for c in commits {
        text.push_str(&format!(
            "\n{} {} {} {}",
            c.run_id,
            c.first,
            c.last,
            u8::from(c.summary_changed)
        ));
    }
    text
}

/// Reads a journal notification: the writer's instance and its commits.
pub fn read_announcement(payload: &str) -> Option<(&str, Vec<Announced>)> {
    let mut lines = payload.lines();
    let instance = lines.next()?;
    let commits = lines
        .filter_map(|line| {
            let mut fields = line.split(' ');
            Some(Announced {
                run_id: fields.next()?.parse().ok()?,
                first: fields.next()?.parse().ok()?,
                last: fields.next()?.parse().ok()?,
                summary_changed: fields.next()? == "1",
            })
        })
        .collect();
    Some((instance, commits))
}

/// The most bytes of one notification's payload (PostgreSQL's limit is
/// 8000).
const MAX_ANNOUNCEMENT: usize = 7800;

/// Tells the other instances what this one committed, so their watchers see
/// it: commits are gathered while the previous notification is sent and go
/// out together, after they are durable, off every run's critical path.
#[derive(Clone)]
pub struct Announcer {
    commits: tokio::sync::mpsc::UnboundedSender<Announced>,
}

impl Announcer {
    /// Starts announcing on the current Tokio runtime.
    pub fn start(pool: Pool, instance: String) -> Announcer {
        let (commits, mut received) = tokio::sync::mpsc::unbounded_channel::<Announced>();
        tokio::spawn(async move {
            while let Some(first) = received.recv().await {
                let mut batch = vec![first];
                let mut size = instance.len();
                while size < MAX_ANNOUNCEMENT {
                    match received.try_recv() {
                        Ok(next) => {
                            size += 64;
                            batch.push(next);
                        }
                        Err(_) => break,
                    }
                }
                let payload = announcement(&instance, &batch);
                let sent = async {
                    pool.get()
                        .await?
                        .execute("SELECT pg_notify($1, $2)", &[&JOURNAL, &payload])
                        .await?;
                    Ok::<_, Error>(())
                };
                if let Err(error) = sent.await {
                    // A hint lost: watchers elsewhere fill the gap from the
                    // journal with the next entry.
                    tracing::debug!(%error, "could not announce commits");
                }
            }
        });
        Announcer { commits }
    }

    /// An announcer that tells nobody (a process alone, like the bench).
    pub fn silent() -> Announcer {
        Announcer {
            commits: tokio::sync::mpsc::unbounded_channel().0,
        }
    }

    pub fn announce(&self, commit: Announced) {
        let _ = self.commits.send(commit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_read_back() {
        let commits = vec![
            Announced {
                run_id: Uuid::from_u128(1),
                first: 3,
                last: 5,
                summary_changed: true,
            },
            Announced {
                run_id: Uuid::from_u128(2),
                first: 9,
                last: 9,
                summary_changed: false,
            },
        ];
        let text = announcement("host-1a2b", &commits);
        assert_eq!(read_announcement(&text), Some(("host-1a2b", commits)));
    }
}
