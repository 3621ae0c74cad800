//! What watchers see live: committed journal entries and run summaries
//! (`Feed`), and model text as it streams in (`DeltaHub`), each fanned out to
//! any number of subscribers (the WebSocket connections) without ever making
//! a publisher wait. Deltas are ephemeral and never journaled; feed items are
//! published only after their commit.
//!
//! Entries committed by another instance reach this one's feed through
//! `follow_cluster`: the writer's instance notifies the range it committed,
//! and this instance reads those entries from the journal, but only for the
//! runs its watchers follow (`Feed::watch`). The feed may then see a run's
//! entries out of order or with a gap (a notification lost); a WebSocket
//! connection that sees a gap reads the journal again from its last `seq`,
//! so what it sends is still every entry exactly once, in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytestring::ByteString;

use tokio::sync::broadcast;
use uuid::Uuid;

use crate::agents::AgentName;
use crate::llm::DeltaSink;

/// Deltas kept for a subscriber that lags before it loses the oldest; a few
/// seconds of fast streaming.
const DELTA_BUFFER: usize = 1024;

/// A piece of model text, as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub run_id: Uuid,
    pub agent: AgentName,
    pub text: String,
}

/// The fan-out point for deltas; cheap to clone.
#[derive(Clone)]
pub struct DeltaHub {
    sender: broadcast::Sender<Delta>,
}

impl Default for DeltaHub {
    fn default() -> Self {
        DeltaHub::new()
    }
}

impl DeltaHub {
    pub fn new() -> DeltaHub {
        DeltaHub {
            sender: broadcast::channel(DELTA_BUFFER).0,
        }
    }

    /// Every delta published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Delta> {
        self.sender.subscribe()
    }

    /// A sink for one model call of `agent` in `run_id`.
    pub fn sink(&self, run_id: Uuid, agent: AgentName) -> DeltaSink {
        let sender = self.sender.clone();
        Arc::new(move |text: &str| {
            // No subscriber is not an error: nobody is watching.
            let _ = sender.send(Delta {
                run_id,
                agent,
                text: text.to_string(),
            });
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_reach_every_subscriber_in_order() {
        let hub = DeltaHub::new();
        let mut first = hub.subscribe();
        let mut second = hub.subscribe();
        let sink = hub.sink(Uuid::nil(), AgentName::Coding);
        sink("Hel");
        sink("lo");
        for receiver in [&mut first, &mut second] {
            assert_eq!(receiver.try_recv().unwrap().text, "Hel");
            assert_eq!(receiver.try_recv().unwrap().text, "lo");
        }
    }
}

/// Committed journal entries and run summaries, kept for a subscriber that
/// lags before it loses the oldest; past that the subscriber is told it
/// lagged (and a WebSocket client resumes from its last `seq`).
const FEED_BUFFER: usize = 4096;

/// Something committed that watchers should see, as the WebSocket frame that
/// carries it, serialized once for every subscriber: the frame's bytes are
/// shared (a clone is a reference count), down to the socket's write.
#[derive(Debug, Clone)]
pub enum FeedItem {
    /// One journal entry of `run_id`, committed.
    Event {
        run_id: Uuid,
        seq: i64,
        frame: ByteString,
    },
    /// A run's summary changed (or the run was created).
    Run { frame: ByteString },
}

/// The fan-out point for committed entries and summaries; cheap to clone.
/// Architecture invariant: only the journal's writers publish here, and only
/// after the commit.
#[derive(Clone)]
pub struct Feed {
    sender: broadcast::Sender<FeedItem>,
    /// How many watchers follow each run, so entries other instances commit
    /// are read from the journal only for runs someone watches.
    watched: Arc<Mutex<HashMap<Uuid, usize>>>,
    /// How many watchers follow every run's summary.
    summary_watchers: Arc<AtomicUsize>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed::new()
    }
}

impl Feed {
    pub fn new() -> Feed {
        Feed {
            sender: broadcast::channel(FEED_BUFFER).0,
            watched: Arc::default(),
            summary_watchers: Arc::default(),
        }
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, usize>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A watcher follows `run_id`'s entries (until `unwatch`).
    pub fn watch(&self, run_id: Uuid) {
        *self.watched().entry(run_id).or_default() += 1;
    }

    pub fn unwatch(&self, run_id: Uuid) {
        let mut watched = self.watched();
        if let Some(count) = watched.get_mut(&run_id) {
            *count -= 1;
            if *count == 0 {
                watched.remove(&run_id);
            }
        }
    }

    /// Whether some watcher follows `run_id`.
    pub fn is_watched(&self, run_id: Uuid) -> bool {
        self.watched().contains_key(&run_id)
    }

    /// A watcher follows every run's summary (until `unwatch_summaries`).
    pub fn watch_summaries(&self) {
        self.summary_watchers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn unwatch_summaries(&self) {
        self.summary_watchers.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn summaries_watched(&self) -> bool {
        self.summary_watchers.load(Ordering::Relaxed) > 0
    }

    /// Everything published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<FeedItem> {
        self.sender.subscribe()
    }

    /// Publishes committed entries, in order. With no subscriber (no
    /// WebSocket open on this instance) there is nobody to build frames for.
    pub fn publish_events(&self, run_id: Uuid, events: &[crate::domain::Event]) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        for event in events {
            let _ = self.sender.send(FeedItem::Event {
                run_id,
                seq: event.seq,
                frame: event_frame(run_id, event),
            });
        }
    }

    /// Publishes a run's new summary.
    pub fn publish_run(&self, run: &crate::journal::RunRecord) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        let _ = self.sender.send(FeedItem::Run {
            frame: run_frame(run),
        });
    }
}

/// A frame of the feed, serialized straight from what it carries.
#[derive(serde::Serialize)]
struct Frame<T: serde::Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<Uuid>,
    #[serde(flatten)]
    body: T,
}

#[derive(serde::Serialize)]
struct EventField<'a> {
    event: &'a crate::domain::Event,
}

#[derive(serde::Serialize)]
struct RunField<'a> {
    run: &'a crate::journal::RunRecord,
}

/// `{"type": "event", "run_id", "event"}` (contract section 5).
pub fn event_frame(run_id: Uuid, event: &crate::domain::Event) -> ByteString {
    frame("event", Some(run_id), EventField { event })
}

/// `{"type": "run", "run"}` (contract section 5).
pub fn run_frame(run: &crate::journal::RunRecord) -> ByteString {
    frame("run", None, RunField { run })
}

fn frame<T: serde::Serialize>(kind: &'static str, run_id: Option<Uuid>, body: T) -> ByteString {
    // Serializing plain data cannot fail.
    serde_json::to_string(&Frame { kind, run_id, body })
        .unwrap_or_default()
        .into()
}

/// `{"type": "delta", "run_id", "agent", "text"}` (contract section 5).
pub fn delta_frame(delta: &Delta) -> String {
    serde_json::json!({"type": "delta", "run_id": delta.run_id, "agent": delta.agent, "text": delta.text})
        .to_string()
}

/// Feeds this instance's watchers with what other instances commit: for
/// each commit announced by another instance, the entries of a watched run
/// are read from the journal and published, and a changed summary is read
/// when someone follows summaries. Runs until `notices` closes.
pub async fn follow_cluster(
    mut notices: broadcast::Receiver<crate::cluster::Notice>,
    instance: String,
    pool: deadpool_postgres::Pool,
    feed: Feed,
) {
    use crate::cluster::Notice;
    loop {
        let payload = match notices.recv().await {
            Ok(Notice::Message { channel, payload }) if channel == crate::cluster::JOURNAL => {
                payload
            }
            Ok(_) => continue,
            // Lost notifications leave gaps, which the connections fill from
            // the journal when the next entry of a run arrives.
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some((writer, commits)) = crate::cluster::read_announcement(&payload) else {
            continue;
        };
        if writer == instance {
            continue;
        }
        for commit in commits {
            if feed.is_watched(commit.run_id) {
                let count = commit.last - commit.first + 1;
                match crate::journal::events_after(&pool, commit.run_id, commit.first - 1, count)
                    .await
                {
                    Ok(events) => feed.publish_events(commit.run_id, &events),
                    Err(error) => {
                        tracing::warn!(%error, "could not read entries another instance committed")
                    }
                }
            }
            if commit.summary_changed && feed.summaries_watched() {
                match crate::journal::get_run(&pool, commit.run_id).await {
                    Ok(Some(run)) => feed.publish_run(&run),
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(%error, "could not read a run another instance changed")
                    }
                }
            }
        }
    }
}
