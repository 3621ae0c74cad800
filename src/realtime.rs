//! What watchers see live, inside the server: model text as it streams in
//! (`Delta`), fanned out to any number of subscribers. Deltas are ephemeral:
//! never journaled, and a subscriber that falls behind loses the oldest.

use std::sync::Arc;

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
