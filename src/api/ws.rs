//! `GET /api/ws` (contract section 5): one actor per WebSocket connection.
//!
//! The connection subscribes to the server's feeds of committed entries,
//! run summaries and model deltas, and forwards what its client asked for.
//! `subscribe` with `after: N` replays the journal from the database and
//! then goes on live with no gap and no duplicate: the feed receiver exists
//! from the connection's start, the replay runs in `ctx.wait` (so feed items
//! wait in the receiver meanwhile), and live entries at or below the last
//! replayed `seq` are skipped.
//!
//! A slow client never slows a run: frames go through a bounded queue to a
//! writer task; when the queue is full, or the feed outran the connection,
//! the connection is closed with code 4008 and the client resumes from its
//! last `seq`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError, Session};
use bytestring::ByteString;
use futures_util::Stream;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};
use uuid::Uuid;

use super::access::Presented;
use super::{ApiError, AppState};
use crate::journal;
use crate::realtime::{Delta, FeedItem, delta_frame, event_frame};

/// The largest frame a client may send: the protocol's messages are tiny.
const MAX_FRAME_BYTES: usize = 64 * 1024;
/// How long one frame may take to enter the socket's own buffer.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the server pings.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Silence after which the client counts as gone: three missed heartbeats.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Entries read per query while replaying.
const REPLAY_PAGE: i64 = 1000;
/// The close code for a client that fell behind (an application code).
pub const CLOSE_TOO_SLOW: u16 = 4008;
/// The close code for a connection whose token was revoked or whose session
/// ended: the client must sign in again (an application code, like HTTP 401).
pub const CLOSE_SIGNED_OUT: u16 = 4001;
/// How often an open connection's credential is checked again, so that a
/// revocation reaches live connections as fast as it reaches requests.
const CREDENTIAL_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// `GET /api/ws`: checks the origin, then upgrades.
#[utoipa::path(
    get, path = "/api/ws", tag = "live",
    summary = "The live feed (WebSocket)",
    description = "Upgrades to a WebSocket of JSON text frames (contract section 5): subscribe to a run's journal from any `seq`, or to every run's summary. Browsers authenticate with the session cookie; other origins than the server's own (and `AGENT_SERVER_ALLOWED_ORIGINS`) are refused.",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade (`invalid_request`)", body = super::openapi::ErrorBody),
    )
)]
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    app: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    check_origin(&req, &app.settings.allowed_origins)?;
    let presented = req.extensions().get::<Presented>().cloned();
    let (response, session, messages) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::InvalidRequest(format!("not a WebSocket upgrade: {e}")))?;
    let messages = messages
        .max_frame_size(MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME_BYTES);
    let deps = app.registry.deps();
    let feed = receiver_stream(deps.observer.feed.subscribe());
    let watched_feed = deps.observer.feed.clone();
    let deltas = receiver_stream(deps.deltas.subscribe());
    let pool = app.pool.clone();
    let stopping = app.stopping.clone();
    let (outbound, queue) = mpsc::channel(app.settings.ws_queue_frames);
    let (close, close_signal) = oneshot::channel();
    actix_rt::spawn(write_frames(session, queue, close_signal));
    let authenticator = app.authenticator.clone();
    WsConnection::create(move |ctx| {
        ctx.add_stream(messages);
        ctx.add_stream(feed);
        ctx.add_stream(deltas);
        if let Some(presented) = presented {
            watch_credential(ctx, authenticator, presented);
        }
        WsConnection {
            stopping,
            pool,
            outbound,
            close: Some(close),
            subscriptions: HashMap::new(),
            runs: false,
            last_heard: Instant::now(),
            feed: watched_feed,
            watching: Default::default(),
        }
    });
    Ok(response)
}

/// Browsers send `Origin`; the server's own origin is allowed, and those in
/// `AGENT_SERVER_ALLOWED_ORIGINS`. Clients that send none (not browsers) are
/// not subject to the same-origin policy this protects.
fn check_origin(req: &HttpRequest, allowed: &[String]) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(actix_web::http::header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_ascii_lowercase();
    let host = req
        .headers()
        .get(actix_web::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let same = !host.is_empty()
        && (origin == format!("http://{host}") || origin == format!("https://{host}"));
    if same || allowed.contains(&origin) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "origin `{origin}` may not open the WebSocket; add it to AGENT_SERVER_ALLOWED_ORIGINS"
        )))
    }
}

/// Checks the connection's credential every `CREDENTIAL_CHECK_INTERVAL` and
/// closes the connection (4001) once it no longer names anyone. The
/// authenticator's cache keeps this to a query per credential and half
/// second, however many connections share it.
fn watch_credential(
    ctx: &mut Context<WsConnection>,
    authenticator: crate::auth::Authenticator,
    presented: Presented,
) {
    ctx.run_interval(CREDENTIAL_CHECK_INTERVAL, move |_, ctx| {
        let authenticator = authenticator.clone();
        let presented = presented.clone();
        ctx.spawn(
            fut::wrap_future::<_, WsConnection>(async move {
                authenticator
                    .identify(presented.kind, presented.value.expose())
                    .await
            })
            .map(|outcome, act, ctx| {
                // Database trouble is not a revocation: check again later.
                if let Ok(None) = outcome {
                    act.close(
                        ctx,
                        CloseCode::Other(CLOSE_SIGNED_OUT),
                        "signed out: the token was revoked or the session ended; sign in again",
                    );
                }
            }),
        );
    });
}

/// A broadcast receiver as a stream; a lag is an item, not the end.
fn receiver_stream<T: Clone + Send + 'static>(
    receiver: broadcast::Receiver<T>,
) -> impl Stream<Item = Result<T, u64>> {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        match receiver.recv().await {
            Ok(item) => Some((Ok(item), receiver)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some((Err(missed), receiver)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
}

/// A frame for the writer.
enum Outbound {
    /// Shared with every other connection sending the same frame.
    Text(ByteString),
    Ping,
    Pong(web::Bytes),
}

/// Writes frames in order until the queue ends, the client is gone or stuck,
/// or the connection asks to close with a reason.
async fn write_frames(
    mut session: Session,
    mut queue: mpsc::Receiver<Outbound>,
    mut close: oneshot::Receiver<CloseReason>,
) {
    let reason = loop {
        let frame = tokio::select! {
            biased;
            reason = &mut close => break reason.ok(),
            frame = queue.recv() => frame,
        };
        let sent = match frame {
            None => break None,
            Some(Outbound::Text(text)) => {
                tokio::time::timeout(SEND_TIMEOUT, session.text(text)).await
            }
            Some(Outbound::Ping) => tokio::time::timeout(SEND_TIMEOUT, session.ping(b"")).await,
            Some(Outbound::Pong(bytes)) => {
                tokio::time::timeout(SEND_TIMEOUT, session.pong(&bytes)).await
            }
        };
        if !matches!(sent, Ok(Ok(()))) {
            // Gone, or stuck past the timeout: nothing more can be said.
            return;
        }
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, session.close(reason)).await;
}

struct WsConnection {
    pool: deadpool_postgres::Pool,
    outbound: mpsc::Sender<Outbound>,
    /// Asks the writer to close with a reason; taken when used.
    close: Option<oneshot::Sender<CloseReason>>,
    /// The runs subscribed to, with the last `seq` sent for each.
    subscriptions: HashMap<Uuid, i64>,
    /// Whether run summaries are wanted.
    runs: bool,
    /// When the client last sent anything.
    last_heard: Instant,
    /// Cancelled when the server stops.
    stopping: tokio_util::sync::CancellationToken,
    /// The feed, told which runs this connection follows.
    feed: crate::realtime::Feed,
    /// The runs this connection told the feed it follows.
    watching: std::collections::HashSet<Uuid>,
}

impl Actor for WsConnection {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        for run_id in self.watching.drain() {
            self.feed.unwatch(run_id);
        }
        if self.runs {
            self.feed.unwatch_summaries();
        }
    }

    fn started(&mut self, ctx: &mut Context<Self>) {
        let stopping = self.stopping.clone();
        ctx.spawn(
            fut::wrap_future::<_, Self>(async move { stopping.cancelled().await }).map(
                |(), act, ctx| {
                    act.close(
                        ctx,
                        CloseCode::Away,
                        "the server is stopping; reconnect shortly",
                    )
                },
            ),
        );
        ctx.run_interval(HEARTBEAT_INTERVAL, |act, ctx| {
            if act.last_heard.elapsed() > CLIENT_TIMEOUT {
                act.close(ctx, CloseCode::Away, "no heartbeat from the client");
            } else {
                act.send(ctx, Outbound::Ping);
            }
        });
    }
}

impl WsConnection {
    /// Queues a frame; a full queue means the client is too slow.
    fn send(&mut self, ctx: &mut Context<Self>, frame: Outbound) {
        match self.outbound.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.too_slow(ctx),
            Err(mpsc::error::TrySendError::Closed(_)) => ctx.stop(),
        }
    }

    fn send_json(&mut self, ctx: &mut Context<Self>, value: Value) {
        self.send(ctx, Outbound::Text(value.to_string().into()));
    }

    fn error(&mut self, ctx: &mut Context<Self>, code: &str, message: impl Into<String>) {
        let message = message.into();
        self.send_json(
            ctx,
            json!({"type": "error", "code": code, "message": message}),
        );
    }

    fn too_slow(&mut self, ctx: &mut Context<Self>) {
        self.close(
            ctx,
            CloseCode::Other(CLOSE_TOO_SLOW),
            "too slow: the client fell behind; reconnect and subscribe with after = your last seq",
        );
    }

    fn close(&mut self, ctx: &mut Context<Self>, code: CloseCode, description: &str) {
        if let Some(close) = self.close.take() {
            let _ = close.send(CloseReason {
                code,
                description: Some(description.to_string()),
            });
        }
        ctx.stop();
    }

    fn on_text(&mut self, ctx: &mut Context<Self>, text: &str) {
        let Ok(Value::Object(message)) = serde_json::from_str::<Value>(text) else {
            return self.error(ctx, "invalid_message", "messages must be JSON objects");
        };
        let op = message
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let run_id = || {
            message
                .get("run_id")
                .and_then(Value::as_str)
                .and_then(|id| id.parse::<Uuid>().ok())
        };
        match op {
            "ping" => self.send_json(ctx, json!({"type": "pong"})),
            "subscribe_runs" => {
                if !self.runs {
                    self.runs = true;
                    self.feed.watch_summaries();
                }
            }
            "unsubscribe" => match run_id() {
                Some(run_id) => {
                    self.subscriptions.remove(&run_id);
                    if self.watching.remove(&run_id) {
                        self.feed.unwatch(run_id);
                    }
                }
                None => self.error(ctx, "invalid_run_id", "`run_id` must be a run's UUID"),
            },
            "subscribe" => {
                let Some(run_id) = run_id() else {
                    return self.error(ctx, "invalid_run_id", "`run_id` must be a run's UUID");
                };
                let after = match message.get("after") {
                    None | Some(Value::Null) => 0,
                    Some(value) => match value.as_i64() {
                        Some(n) if n >= 0 => n,
                        _ => {
                            return self.error(
                                ctx,
                                "invalid_after",
                                "`after` must be a whole number of at least 0",
                            );
                        }
                    },
                };
                self.subscribe(ctx, run_id, after);
            }
            "" => self.error(ctx, "invalid_message", "a message needs an `op`"),
            other => self.error(
                ctx,
                "unknown_op",
                format!("unknown op `{other}`; use subscribe, unsubscribe, subscribe_runs or ping"),
            ),
        }
    }

    /// Replays the journal after `after`, then goes live (see the module doc).
    fn subscribe(&mut self, ctx: &mut Context<Self>, run_id: Uuid, after: i64) {
        // Followed from now on, also when another instance writes it, so no
        // entry committed during the replay is missed.
        if self.watching.insert(run_id) {
            self.feed.watch(run_id);
        }
        self.replay(ctx, run_id, after, true);
    }

    /// Sends the journal's entries after `after`, then goes live; with
    /// `announce`, first the `subscribed` frame. Also how a gap in the live
    /// entries is filled.
    fn replay(&mut self, ctx: &mut Context<Self>, run_id: Uuid, after: i64, announce: bool) {
        // Nothing live for this run until the replay is done.
        self.subscriptions.remove(&run_id);
        let pool = self.pool.clone();
        let outbound = self.outbound.clone();
        let replay = async move {
            if journal::get_run(&pool, run_id).await?.is_none() {
                return Ok(None);
            }
            let subscribed = json!({"type": "subscribed", "run_id": run_id}).to_string();
            // Awaiting queue space here slows only this replay, never a run.
            if announce
                && outbound
                    .send(Outbound::Text(subscribed.into()))
                    .await
                    .is_err()
            {
                return Ok(Some(after));
            }
            let mut last = after;
            loop {
                let page = journal::events_after(&pool, run_id, last, REPLAY_PAGE).await?;
                for event in &page {
                    if outbound
                        .send(Outbound::Text(event_frame(run_id, event)))
                        .await
                        .is_err()
                    {
                        return Ok(Some(last));
                    }
                    last = event.seq;
                }
                if (page.len() as i64) < REPLAY_PAGE {
                    return Ok::<_, journal::Error>(Some(last));
                }
            }
        };
        ctx.wait(
            replay
                .into_actor(self)
                .map(move |replayed, act, ctx| match replayed {
                    Ok(Some(last)) => {
                        act.subscriptions.insert(run_id, last);
                    }
                    Ok(None) => act.error(ctx, "not_found", format!("no run {run_id}")),
                    Err(error) => {
                        tracing::warn!(%error, %run_id, "replay failed");
                        act.error(
                            ctx,
                            "unavailable",
                            "the journal could not be read; subscribe again",
                        )
                    }
                }),
        );
    }
}

impl StreamHandler<Result<AggregatedMessage, ProtocolError>> for WsConnection {
    fn handle(
        &mut self,
        message: Result<AggregatedMessage, ProtocolError>,
        ctx: &mut Context<Self>,
    ) {
        self.last_heard = Instant::now();
        match message {
            Ok(AggregatedMessage::Text(text)) => self.on_text(ctx, &text),
            Ok(AggregatedMessage::Binary(_)) => self.error(
                ctx,
                "invalid_message",
                "binary frames are not part of the protocol",
            ),
            Ok(AggregatedMessage::Ping(bytes)) => self.send(ctx, Outbound::Pong(bytes)),
            Ok(AggregatedMessage::Pong(_)) => {}
            Ok(AggregatedMessage::Close(_)) => ctx.stop(),
            Err(ProtocolError::Overflow) => {
                self.close(ctx, CloseCode::Size, "frames are limited to 64 KiB")
            }
            Err(error) => self.close(ctx, CloseCode::Protocol, &error.to_string()),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl StreamHandler<Result<FeedItem, u64>> for WsConnection {
    fn handle(&mut self, item: Result<FeedItem, u64>, ctx: &mut Context<Self>) {
        match item {
            Ok(FeedItem::Event { run_id, seq, frame }) => {
                if let Some(last) = self.subscriptions.get_mut(&run_id)
                    && seq > *last
                {
                    if seq > *last + 1 {
                        // A gap (entries another instance wrote, still on
                        // their way, or a notification lost): the journal
                        // has them all, this one included.
                        let after = *last;
                        self.replay(ctx, run_id, after, false);
                        return;
                    }
                    *last = seq;
                    self.send(ctx, Outbound::Text(frame));
                }
            }
            Ok(FeedItem::Run { frame }) => {
                if self.runs {
                    self.send(ctx, Outbound::Text(frame));
                }
            }
            Err(_missed) => self.too_slow(ctx),
        }
    }

    // The feed ends only when the server stops.
    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl StreamHandler<Result<Delta, u64>> for WsConnection {
    fn handle(&mut self, item: Result<Delta, u64>, ctx: &mut Context<Self>) {
        // Deltas may be dropped: a lag here loses text that the
        // `AGENT_THOUGHT` entry carries whole anyway.
        if let Ok(delta) = item
            && self.subscriptions.contains_key(&delta.run_id)
        {
            self.send(ctx, Outbound::Text(delta_frame(&delta).into()));
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}
