//! Server-sent events, as both providers stream them: an incremental parser
//! that turns bytes cut anywhere into events, and the loop that feeds it from
//! a streaming HTTP response with an idle timeout.
//!
//! The parser is pure (no I/O, no async) so every way a stream can be cut is
//! tested without HTTP. It follows the WHATWG event-stream rules that matter
//! here: lines end in `\n`, `\r\n` or `\r`; a blank line ends an event; lines
//! starting with `:` are comments (keep-alives); `data:` lines accumulate,
//! joined by `\n`; `event:` names the event; `id:` and `retry:` are ignored
//! because a model stream is never resumed, only retried from the start.

use std::time::Duration;

use super::{Error, transport_error};

/// The longest a stream may stay silent before it counts as hung. A long
/// answer is fine as long as bytes keep coming; providers send tokens (or
/// pings) every few seconds, and a model thinking before its first token
/// rarely takes more than a minute, so two minutes leaves room for both.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The most a single unfinished line or event may hold. A sane event is a few
/// kilobytes; a server that never ends a line would otherwise grow the buffer
/// until the process runs out of memory.
pub const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;

/// The UTF-8 byte order mark, which the format allows once at the start.
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// One complete event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name, when the server gave one (Anthropic always does,
    /// OpenAI never does).
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// What the consumer of events wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// The answer is complete; stop reading even if the body goes on.
    Stop,
}

/// An incremental event-stream parser: feed it bytes as they arrive, get
/// back the events they complete.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line not yet ended. Kept as bytes so a chunk boundary in
    /// the middle of a UTF-8 character is harmless: lines are decoded only
    /// once complete, and line endings are ASCII, never inside a character.
    line: Vec<u8>,
    /// The last line ended in `\r` at the very end of a chunk, so a `\n`
    /// starting the next chunk is the rest of that `\r\n`, not a blank line.
    after_carriage_return: bool,
    /// Whether a line was seen yet: only the first may carry a byte order mark.
    seen_line: bool,
    /// The `event:` name of the event being built.
    event: Option<String>,
    /// The `data:` lines of the event being built, each followed by `\n`.
    data: String,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Parses the next piece of the stream and returns the events it
    /// completed, in order. An event still unfinished when the stream ends is
    /// never returned: it may be cut short.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut rest = bytes;
        if self.after_carriage_return && !rest.is_empty() {
            self.after_carriage_return = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            let ending = rest[end];
            rest = &rest[end + 1..];
            if ending == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_carriage_return = true,
                }
            }
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.take_line(&line) {
                events.push(event);
            }
        }
        self.line.extend_from_slice(rest);
        events
    }

    /// Parses `bytes` and hands each completed event to `on_event` until it
    /// asks to stop; the one loop both the HTTP reader and the tests use.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        on_event: &mut impl FnMut(SseEvent) -> Result<Flow, Error>,
    ) -> Result<Flow, Error> {
        for event in self.push(bytes) {
            if on_event(event)? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        if self.pending_len() > MAX_PENDING_BYTES {
            return Err(Error::InvalidResponse(format!(
                "a streamed event grew past {MAX_PENDING_BYTES} bytes"
            )));
        }
        Ok(Flow::Continue)
    }

    /// How many bytes wait for the end of their line or event.
    pub fn pending_len(&self) -> usize {
        self.line.len() + self.data.len()
    }

    fn take_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        let line = if self.seen_line {
            line
        } else {
            self.seen_line = true;
            line.strip_prefix(BYTE_ORDER_MARK).unwrap_or(line)
        };
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return None;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            b"data" => {
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
            }
            // `id` and `retry` only matter for resuming, which a model stream
            // never does; unknown fields are ignored by the format's rules.
            _ => {}
        }
        None
    }

    /// Ends the event being built; one without data is no event.
    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take().filter(|name| !name.is_empty());
        if self.data.is_empty() {
            return None;
        }
        let mut data = std::mem::take(&mut self.data);
        // Every data line added a `\n`; the last one is not part of the data.
        data.pop();
        Some(SseEvent { event, data })
    }
}

/// Reads a streaming response as server-sent events, handing each to
/// `on_event` until it asks to stop or the body ends. Each wait for the next
/// piece of the body is bounded by `idle_timeout`, the whole stream is not.
/// Whether the answer is complete is for `on_event`'s owner to judge: the
/// body may end early.
pub async fn read_events(
    mut response: reqwest::Response,
    idle_timeout: Duration,
    mut on_event: impl FnMut(SseEvent) -> Result<Flow, Error>,
) -> Result<(), Error> {
    let mut parser = SseParser::new();
    loop {
        let chunk = tokio::time::timeout(idle_timeout, response.chunk())
            .await
            .map_err(|_| Error::Timeout(idle_timeout))?
            .map_err(|error| transport_error(error, idle_timeout))?;
        let Some(chunk) = chunk else {
            return Ok(());
        };
        if parser.feed(&chunk, &mut on_event)? == Flow::Stop {
            return Ok(());
        }
    }
}

/// A tiny HTTP server for the providers' tests: it records each request and
/// answers with a canned status, headers and body, sent in pieces.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::{Arc, Mutex};

    use actix_web::http::StatusCode;
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    use futures_util::StreamExt;
    use futures_util::stream;

    /// What the server answers to every request.
    #[derive(Clone)]
    pub struct Canned {
        /// The HTTP status.
        pub status: u16,
        /// The `Content-Type`, which tells a stream from a whole answer.
        pub content_type: &'static str,
        /// Extra headers such as `Retry-After`.
        pub headers: Vec<(&'static str, &'static str)>,
        /// The body, one piece per write.
        pub chunks: Vec<Vec<u8>>,
        /// Keep the connection open and silent after the last piece, to
        /// test the idle timeout.
        pub hang: bool,
    }

    impl Canned {
        /// A whole JSON answer with `status`.
        pub fn json(status: u16, body: &serde_json::Value) -> Canned {
            Canned {
                status,
                content_type: "application/json",
                headers: Vec::new(),
                chunks: vec![body.to_string().into_bytes()],
                hang: false,
            }
        }

        /// An event stream sent in pieces of `size` bytes.
        pub fn stream(body: &str, size: usize) -> Canned {
            Canned {
                status: 200,
                content_type: "text/event-stream",
                headers: Vec::new(),
                chunks: body.as_bytes().chunks(size).map(<[u8]>::to_vec).collect(),
                hang: false,
            }
        }
    }

    /// A request as the server saw it.
    #[derive(Debug, Clone)]
    pub struct Seen {
        /// The request path, e.g. `/v1/messages`.
        pub path: String,
        /// Header names (lower case) and values.
        pub headers: Vec<(String, String)>,
        /// The JSON body.
        pub body: serde_json::Value,
    }

    impl Seen {
        /// The value of header `name`, if sent.
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        }
    }

    /// Starts the server on a free port; returns its base URL and the log of
    /// requests it saw. Must run inside an actix runtime.
    pub fn serve(canned: Canned) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let server = HttpServer::new(move || {
            let canned = canned.clone();
            let log = log.clone();
            App::new().default_service(web::to(move |request: HttpRequest, body: web::Bytes| {
                let canned = canned.clone();
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(Seen {
                        path: request.path().to_string(),
                        headers: request
                            .headers()
                            .iter()
                            .map(|(name, value)| {
                                (
                                    name.as_str().to_string(),
                                    value.to_str().unwrap_or_default().to_string(),
                                )
                            })
                            .collect(),
                        body: serde_json::from_slice(&body).unwrap_or_default(),
                    });
                    let mut response =
                        HttpResponse::build(StatusCode::from_u16(canned.status).unwrap());
                    response.content_type(canned.content_type);
                    for header in &canned.headers {
                        response.insert_header(*header);
                    }
                    let pieces = stream::iter(
                        canned
                            .chunks
                            .into_iter()
                            .map(|piece| Ok::<_, actix_web::Error>(web::Bytes::from(piece))),
                    );
                    if canned.hang {
                        response.streaming(pieces.chain(stream::pending()).boxed_local())
                    } else {
                        response.streaming(pieces.boxed_local())
                    }
                }
            }))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let address = server.addrs()[0];
        actix_rt::spawn(server.run());
        (format!("http://{address}"), seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: name.map(str::to_string),
            data: data.to_string(),
        }
    }

    /// Feeds `stream` in pieces of `size` bytes and collects the events.
    fn parse_in_pieces(stream: &[u8], size: usize) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        stream
            .chunks(size)
            .flat_map(|piece| parser.push(piece))
            .collect()
    }

    #[test]
    fn events_survive_being_cut_anywhere() {
        let stream = "event: greeting\ndata: héllo ✓ wörld\n\n: keep-alive\n\ndata: {\"a\":1}\n\n"
            .as_bytes();
        let expected = vec![
            event(Some("greeting"), "héllo ✓ wörld"),
            event(None, "{\"a\":1}"),
        ];
        for size in 1..=stream.len() {
            assert_eq!(parse_in_pieces(stream, size), expected, "pieces of {size}");
        }
    }

    #[test]
    fn every_line_ending_works_even_when_cut_between_cr_and_lf() {
        let expected = vec![event(Some("a"), "one\ntwo"), event(None, "three")];
        for stream in [
            "event: a\r\ndata: one\r\ndata: two\r\n\r\ndata: three\r\n\r\n",
            "event: a\rdata: one\rdata: two\r\rdata: three\r\r",
            "event: a\ndata: one\r\ndata: two\r\r\ndata: three\n\r\n",
        ] {
            for size in 1..=stream.len() {
                assert_eq!(
                    parse_in_pieces(stream.as_bytes(), size),
                    expected,
                    "{stream:?} in pieces of {size}"
                );
            }
        }
    }

    #[test]
    fn comments_and_unknown_fields_are_skipped() {
        let stream = b": this is a comment\nid: 7\nretry: 10\nfoo: bar\ndata: x\n:another\n\n";
        assert_eq!(parse_in_pieces(stream, 3), vec![event(None, "x")]);
    }

    #[test]
    fn multi_line_data_joins_with_newlines_and_keeps_inner_spaces() {
        let stream = b"data:first\ndata:  second\ndata\ndata: \n\n";
        // `data:first` has no space to strip; `data:  second` loses only
        // one; a bare `data` and `data: ` each add an empty line.
        assert_eq!(
            parse_in_pieces(stream, 2),
            vec![event(None, "first\n second\n\n")]
        );
    }

    #[test]
    fn events_without_data_are_not_events_and_names_do_not_leak() {
        let stream = b"event: ping\n\ndata: after\n\n";
        assert_eq!(parse_in_pieces(stream, 1), vec![event(None, "after")]);
    }

    #[test]
    fn an_unfinished_event_is_held_back() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"data: {\"cut\": tr").is_empty());
        assert!(parser.push(b"ue}\n").is_empty());
        assert!(parser.pending_len() > 0);
        assert_eq!(parser.push(b"\n"), vec![event(None, "{\"cut\": true}")]);
        assert_eq!(parser.pending_len(), 0);
    }

    #[test]
    fn a_leading_byte_order_mark_is_dropped() {
        let stream = b"\xEF\xBB\xBFdata: x\n\n";
        for size in 1..=stream.len() {
            assert_eq!(parse_in_pieces(stream, size), vec![event(None, "x")]);
        }
    }

    #[test]
    fn feed_stops_when_asked_and_refuses_endless_lines() {
        let mut parser = SseParser::new();
        let mut seen = Vec::new();
        let flow = parser
            .feed(b"data: 1\n\ndata: 2\n\ndata: 3\n\n", &mut |event| {
                seen.push(event.data);
                Ok(if seen.len() == 2 {
                    Flow::Stop
                } else {
                    Flow::Continue
                })
            })
            .unwrap();
        assert_eq!(flow, Flow::Stop);
        assert_eq!(seen, ["1", "2"]);

        let mut parser = SseParser::new();
        let huge = vec![b'x'; MAX_PENDING_BYTES + 1];
        let error = parser.feed(&huge, &mut |_| Ok(Flow::Continue)).unwrap_err();
        assert!(matches!(error, Error::InvalidResponse(_)));
    }
}
