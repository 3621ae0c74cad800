//! One connection per instance that `LISTEN`s to the cluster's channels and
//! hands every notification to the instance's subscribers. Notifications are
//! hints that something changed, never the only path: whoever acts on them
//! also polls, so a notification lost while this connection reconnects
//! costs latency, not correctness.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::AsyncMessage;

/// A notification, or word that some may have been missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Message {
        channel: String,
        payload: String,
    },
    /// The connection was (re)established: anything may have happened
    /// meanwhile, so subscribers should poll now.
    Resync,
}

/// How long to wait before connecting again after a failure, at most.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Keeps a listening connection open on `config` until the process ends,
/// reconnecting after any failure.
pub async fn run(
    config: tokio_postgres::Config,
    channels: &'static [&'static str],
    notices: broadcast::Sender<Notice>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen(&config, channels, &notices).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(error) => {
                tracing::warn!(%error, "the cluster's notification connection failed; reconnecting");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn listen(
    config: &tokio_postgres::Config,
    channels: &[&str],
    notices: &broadcast::Sender<Notice>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
    let (forward, mut messages) = tokio::sync::mpsc::unbounded_channel();
    // The connection must be polled for the client's queries to complete;
    // it also yields the notifications.
    let driver = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = stream.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = forward.send(Ok(Notice::Message {
                        channel: n.channel().to_string(),
                        payload: n.payload().to_string(),
                    }));
                }
                Ok(_) => {}
                Err(error) => {
                    let _ = forward.send(Err(error));
                    return;
                }
            }
        }
    });
    let statements: String = channels.iter().map(|c| format!("LISTEN {c};")).collect();
    let listening = client.batch_execute(&statements).await;
    if let Err(error) = listening {
        driver.abort();
        return Err(error);
    }
    let _ = notices.send(Notice::Resync);
    let outcome = loop {
        match messages.recv().await {
            Some(Ok(notice)) => {
                let _ = notices.send(notice);
            }
            Some(Err(error)) => break Err(error),
            None => break Ok(()),
        }
    };
    driver.abort();
    outcome
}
