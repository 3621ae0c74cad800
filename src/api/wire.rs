//! The connections under the HTTP server. The server is actix-web's `App`
//! over actix-http's HTTP/1.1 service, as `HttpServer` would build it, with
//! one difference: each connection is wrapped in `JsonErrors`, so the
//! answers the HTTP parser gives on its own (400 for a request it cannot
//! parse, 408 for a request head that does not arrive in time, 431 for one
//! too large), which actix-http writes with empty bodies, carry the
//! contract's JSON error body like every other error.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use actix_http::{HttpService, Request, Response, body::MessageBody};
use actix_service::{
    IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt, fn_service, map_config,
};
use actix_web::dev::AppConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a client may take to send a request head (actix-web's default).
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP/1.1 server on `listener` for the application `factory` makes
/// (one per worker thread), its connections wrapped in `JsonErrors`. Stops
/// like `HttpServer`'s: idle keep-alive connections close at once on a
/// graceful stop.
pub fn server<F, I, S, B>(
    listener: std::net::TcpListener,
    factory: F,
) -> io::Result<actix_server::Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let local = listener.local_addr()?;
    let builder = actix_server::Server::build();
    let stopping = builder.graceful_shutdown_signal();
    Ok(builder
        .listen("agent-server", listener, move || {
            let stopping = stopping.clone();
            let app = factory()
                .into_factory()
                .map_err(|error| error.into().error_response());
            let http = HttpService::build()
                .graceful_shutdown_signal(move || {
                    let stopping = stopping.clone();
                    async move { stopping.notified().await }
                })
                .client_request_timeout(HEAD_TIMEOUT)
                // As `HttpServer` sets it: a request answered before its body
                // was read (413 from the length alone) has the rest read and
                // dropped for up to a second before the connection closes,
                // so that a proxy still sending it reads the answer rather
                // than a broken pipe (nginx then answered 502).
                .client_disconnect_timeout(Duration::from_secs(1))
                .local_addr(local)
                .h1(map_config(app, move |_| AppConfig::default()));
            fn_service(|stream: tokio::net::TcpStream| async move {
                // Answers and WebSocket frames are written whole. With
                // Nagle's algorithm a frame waits while the previous one is
                // unacknowledged, and clients delay their acknowledgments
                // (up to 40 ms on Linux): the first live entry after a
                // subscription arrived 40 ms late.
                let _ = stream.set_nodelay(true);
                let peer = stream.peer_addr().ok();
                Ok((JsonErrors::new(stream), peer))
            })
            .and_then(http)
        })?
        .disable_signals()
        .run())
}

/// A connection whose bodiless parser errors are given a JSON body on the
/// way out. Everything else passes through untouched.
pub struct JsonErrors<T> {
    io: T,
    /// A rewritten answer being written: its bytes, how many are written,
    /// and how many bytes of the caller's buffer it stands for.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<T> JsonErrors<T> {
    pub fn new(io: T) -> JsonErrors<T> {
        JsonErrors { io, pending: None }
    }
}

/// The body for a parser error with this status, if it is one.
fn error_body(status: &str) -> Option<&'static str> {
    Some(match status {
        "400" => {
            r#"{"error":{"code":"invalid_request","message":"the request is not valid HTTP/1.1 and could not be read"}}"#
        }
        "408" => {
            r#"{"error":{"code":"request_timeout","message":"the request head did not arrive in time"}}"#
        }
        "431" => {
            r#"{"error":{"code":"headers_too_large","message":"the request head is larger than the server reads"}}"#
        }
        _ => return None,
    })
}

/// The bytes to send instead of `buf`, when `buf` is exactly one answer
/// head for a parser error with `content-length: 0`.
fn rewrite(buf: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(buf).ok()?;
    let rest = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))?;
    let body = error_body(rest.get(..3)?)?;
    // One whole head and nothing after it.
    let head = text.strip_suffix("\r\n\r\n")?;
    if head.contains("\r\n\r\n") {
        return None;
    }
    let mut lines: Vec<&str> = head.split("\r\n").collect();
    let length = lines
        .iter()
        .position(|line| line.eq_ignore_ascii_case("content-length: 0"))?;
    if lines
        .iter()
        .any(|line| line.to_ascii_lowercase().starts_with("content-type:"))
    {
        return None;
    }
    let length_line = format!("content-length: {}", body.len());
    lines[length] = &length_line;
    lines.insert(length + 1, "content-type: application/json");
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

impl<T: AsyncWrite + Unpin> JsonErrors<T> {
    /// Writes what is left of a rewritten answer; `Ready(Ok(n))` gives the
    /// length of the caller's buffer it replaced, once it is all out.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<usize>>> {
        while let Some((bytes, written, _)) = &mut self.pending {
            if *written == bytes.len() {
                let claimed = self.pending.take().map(|(_, _, claimed)| claimed);
                return Poll::Ready(Ok(claimed));
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(None))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none() {
            match rewrite(buf) {
                Some(bytes) => this.pending = Some((bytes, 0, buf.len())),
                None => return Pin::new(&mut this.io).poll_write(cx, buf),
            }
        }
        match ready!(this.drain(cx))? {
            Some(claimed) => Poll::Ready(Ok(claimed)),
            // Drained by a flush in between: this is a new write.
            None => Pin::new(&mut this.io).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodiless_parser_errors_get_a_json_body() {
        let head = "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\ndate: Fri, 04 Dec 2026 15:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite(head.as_bytes()).unwrap()).unwrap();
        let (new_head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(new_head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(new_head.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(new_head.contains("content-type: application/json"));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "invalid_request");

        let timeout = "HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n";
        assert!(
            String::from_utf8(rewrite(timeout.as_bytes()).unwrap())
                .unwrap()
                .contains("request_timeout")
        );
    }

    #[test]
    fn every_other_answer_passes_untouched() {
        for text in [
            // The application's own errors have bodies already.
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\ncontent-type: application/json\r\n\r\n{\"error\":{}}",
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
            // A HEAD answer for an error keeps the length of the body it would have.
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 80\r\n\r\n",
            // Not a whole head.
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            "{\"output\": \"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n\"}",
        ] {
            assert!(rewrite(text.as_bytes()).is_none(), "{text:?}");
        }
    }
}
