//! The `loki_query` tool: one LogQL query against Loki's `query_range` API, answered as compact text for a model.
//!
//! [`LokiClient`] is built once at start from `LOKI_URL` and holds the one HTTP client;
//! [`run`] checks the arguments ([`LogQuery::from_args`]), asks Loki and formats the
//! answer. Parsing and formatting Loki's JSON do no I/O and are tested apart from it.
//!
//! The output of a log query (`resultType` `streams`) looks like this:
//!
//! ```text
//! 3 lines from 2 streams for {app="api"} |= "error" over the last 1h, oldest first
//! labels on every line: {app="api",env="prod"}
//! 2024-05-01T10:00:00.123Z {pod="api-1"} connection refused
//! 2024-05-01T10:00:01.000Z {pod="api-2"} upstream timed out\n  at handler.rs:12
//! 2024-05-01T10:00:02.500Z {pod="api-1"} connection refused
//! ```
//!
//! - Loki is asked with `direction=backward`, so `limit` keeps the newest lines; the
//!   entries of all streams are then merged and shown oldest first, which reads like a
//!   log file. When exactly `limit` lines come back, the header says that older ones
//!   were left out.
//! - Timestamps are RFC 3339 in UTC with milliseconds. Labels are `{k="v",...}` sorted by
//!   key. Labels that every stream shares are printed once, on the `labels on every
//!   line:` line, and each entry shows only its stream's other labels (none at all when
//!   nothing is left), which saves many tokens on typical queries.
//! - Newlines inside a log line are shown as `\n` so that every entry is one line, and a
//!   line over [`MAX_LINE_BYTES`] keeps its beginning and a marker.
//!
//! A metric query (`matrix`) gives a header, then per series a blank line, its labels,
//! and one `timestamp value` line per point. The whole text is capped by
//! [`cap_output`]. Every failure (bad arguments, Loki unreachable or slow, Loki's own
//! error message, an answer that is not Loki's) is an outcome with `ok: false` whose
//! text tells the model what happened.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use super::{ArgError, Args, ToolContext, ToolOutcome, cap_output};

/// The longest one query may take, body included: long enough for a heavy LogQL query
/// over 30 days, short enough that a hung Loki does not stall the run.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a TCP (and TLS) connection to Loki may take; a reachable Loki connects in
/// milliseconds, so waiting longer only delays the "could not reach" message.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Loki's range query endpoint, appended to `LOKI_URL` (which may carry a path prefix).
pub const QUERY_RANGE_PATH: &str = "/loki/api/v1/query_range";

/// How far back a query looks when the model gives no `since`.
pub const DEFAULT_SINCE: Duration = Duration::from_secs(60 * 60);

/// The longest `since`: 30 days, Loki's usual retention and its default `max_query_length`
/// (721 h), so a longer range would only earn a Loki error.
pub const MAX_SINCE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Log lines returned when the model gives no `limit`: enough to see a pattern, few
/// enough (roughly 10k tokens) to leave room for the model's reasoning.
pub const DEFAULT_LIMIT: u64 = 100;

/// The largest `limit`, Loki's default `max_entries_limit_per_query`.
pub const MAX_LIMIT: u64 = 5000;

/// The most bytes of a successful answer that are read. 5000 lines of a few KiB fit
/// easily; beyond this the answer could not be shown anyway, and memory stays bounded.
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// The most bytes of an error answer that are read; Loki's messages are one line.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Loki's error messages are cut to this many characters: a parse error with its
/// position fits, a proxy's HTML error page does not flood the model.
const MAX_ERROR_CHARS: usize = 1000;

/// The most bytes shown of one log line, so a single huge line (a JSON dump, a base64
/// blob) cannot push every other line out of the capped output.
pub const MAX_LINE_BYTES: usize = 4096;

/// What the model reads when the server has no `LOKI_URL`.
const NOT_CONFIGURED: &str = "loki_query is not available: LOKI_URL is not set on this server, \
     so no logs can be read; say so in your answer";

/// Why a Loki client could not be built at start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `LOKI_URL` does not parse as an http or https URL (it is not echoed: it may hold a password).
    #[error("LOKI_URL is not a valid http:// or https:// URL: {reason}")]
    InvalidUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be set up (e.g. no TLS backend).
    #[error("could not build the HTTP client for Loki")]
    Client(#[source] reqwest::Error),
}

/// Why a query produced no result; the message is what the model reads.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No connection could be made.
    #[error("could not reach Loki at {url}: {cause}")]
    Unreachable {
        /// `LOKI_URL` without credentials.
        url: String,
        /// The connection error with its causes.
        cause: String,
    },
    /// Loki took longer than the request timeout.
    #[error(
        "Loki at {url} did not answer within {timeout:?}; try a narrower query (a tighter \
         stream selector, a shorter `since`) or try again later"
    )]
    Timeout {
        /// `LOKI_URL` without credentials.
        url: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The request failed after the connection was made (reset, bad HTTP, ...).
    #[error("the request to Loki at {url} failed: {cause}")]
    Transport {
        /// `LOKI_URL` without credentials.
        url: String,
        /// The error with its causes.
        cause: String,
    },
    /// Loki answered with a non-2xx status; `message` is Loki's own text.
    #[error("Loki answered {status}: {message}")]
    Status {
        /// The HTTP status, shown as e.g. `400 Bad Request`.
        status: StatusCode,
        /// Loki's error message, trimmed and cut to a readable length.
        message: String,
    },
    /// Loki answered 2xx but with `"status"` other than `"success"`.
    #[error("Loki reported an error: {0}")]
    Failed(String),
    /// The answer was larger than the server reads.
    #[error(
        "Loki's answer was larger than {} MiB; ask for less with a lower `limit`, a shorter \
         `since` or a narrower query",
        MAX_RESPONSE_BYTES / (1024 * 1024)
    )]
    TooLarge,
    /// The answer was not a `query_range` response.
    #[error(
        "the answer is not a Loki query_range response ({0}); LOKI_URL may not point at Loki, \
         so say so in your answer instead of retrying"
    )]
    NotLoki(String),
    /// The clock says it is before 1970, so no time range can be given.
    #[error("the server's clock is set before 1970, so no time range can be computed")]
    Clock,
}

/// Why a `since` duration was refused; the message completes "field `since` ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing was given.
    #[error("is empty; give a duration like `30m`, `1h` or `2d`")]
    Empty,
    /// Not a sequence of whole numbers with units.
    #[error("`{0}` is not a duration like `30s`, `5m`, `1h`, `2d` or `1h30m`")]
    Syntax(String),
    /// A unit that is not `ms`, `s`, `m`, `h`, `d` or `w`.
    #[error("`{text}` has an unknown unit `{unit}`; use ms, s, m, h, d or w")]
    UnknownUnit {
        /// The whole duration as given.
        text: String,
        /// The unit that was not recognised.
        unit: String,
    },
    /// Units repeated or from small to large, which Prometheus and Loki refuse too.
    #[error("`{0}` must give its units from largest to smallest, each once, e.g. `1h30m`")]
    Order(String),
    /// The number does not fit.
    #[error("`{0}` is too long")]
    Overflow(String),
}

/// A checked `loki_query` call: what to ask Loki.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// The LogQL query, trimmed and not empty.
    pub query: String,
    /// How far back from now to look; from a millisecond up to [`MAX_SINCE`].
    pub since: Duration,
    /// The most log lines (entries) to return, 1 to [`MAX_LIMIT`].
    pub limit: u64,
}

impl LogQuery {
    /// Checks `{"query": string, "since"?: string, "limit"?: integer}`.
    pub fn from_args(args: &Value) -> Result<LogQuery, ArgError> {
        const TOOL: &str = "loki_query";
        let args = Args::parse(TOOL, args, &["query", "since", "limit"])?;
        let query = args.string("query")?.trim();
        if query.is_empty() {
            return Err(ArgError::Invalid {
                tool: TOOL,
                field: "query",
                reason:
                    "must not be empty; give a LogQL query such as `{app=\"api\"} |= \"error\"`"
                        .into(),
            });
        }
        let since = match args.opt_string("since")? {
            None => DEFAULT_SINCE,
            Some(text) => parse_duration(text).map_err(|error| ArgError::Invalid {
                tool: TOOL,
                field: "since",
                reason: error.to_string(),
            })?,
        };
        if since.is_zero() || since > MAX_SINCE {
            return Err(ArgError::Invalid {
                tool: TOOL,
                field: "since",
                reason: format!(
                    "must be longer than zero and at most {}, got {}",
                    format_duration(MAX_SINCE),
                    format_duration(since)
                ),
            });
        }
        let limit = args.opt_u64("limit")?.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ArgError::Invalid {
                tool: TOOL,
                field: "limit",
                reason: format!("must be from 1 to {MAX_LIMIT}, got {limit}"),
            });
        }
        Ok(LogQuery {
            query: query.to_owned(),
            since,
            limit,
        })
    }
}

/// A Loki server to query; built once at start and shared by every run.
#[derive(Debug, Clone)]
pub struct LokiClient {
    /// `{LOKI_URL}/loki/api/v1/query_range`, parsed once. Credentials in it are sent as
    /// basic auth by reqwest.
    endpoint: Url,
    /// `LOKI_URL` without credentials, for messages the model and the logs see.
    shown_url: String,
    /// One client for every call, so connections to Loki are pooled and reused.
    http: reqwest::Client,
    /// The per-request limit: [`REQUEST_TIMEOUT`], shorter only in tests.
    timeout: Duration,
}

impl LokiClient {
    /// A client for the Loki at `base_url` (`LOKI_URL`, e.g. `http://loki:3100`).
    pub fn new(base_url: &str) -> Result<LokiClient, Error> {
        LokiClient::with_timeout(base_url, REQUEST_TIMEOUT)
    }

    /// A client whose requests give up after `timeout`.
    fn with_timeout(base_url: &str, timeout: Duration) -> Result<LokiClient, Error> {
        let base = base_url.trim().trim_end_matches('/');
        let endpoint = Url::parse(&format!("{base}{QUERY_RANGE_PATH}")).map_err(|error| {
            Error::InvalidUrl {
                reason: error.to_string(),
            }
        })?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(Error::InvalidUrl {
                reason: format!("the scheme is `{}`", endpoint.scheme()),
            });
        }
        let mut shown = endpoint.clone();
        // Both only fail for URLs without a host, which http(s) URLs always have.
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        shown.set_query(None);
        let shown_url = shown.as_str().trim_end_matches(QUERY_RANGE_PATH).to_owned();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .build()
            .map_err(Error::Client)?;
        Ok(LokiClient {
            endpoint,
            shown_url,
            http,
            timeout,
        })
    }

    /// `LOKI_URL` without credentials.
    pub fn url(&self) -> &str {
        &self.shown_url
    }

    /// Runs `query` over the last `query.since` and formats the answer for a model.
    ///
    /// Dropping the future aborts the request. No span of its own: the
    /// request's `traceparent` is the caller's span (`execute_tool`), which
    /// a span that is not exported would hide.
    pub async fn query_range(&self, query: &LogQuery) -> Result<String, QueryError> {
        tracing::debug!(query = %query.query, since_ms = query.since.as_millis() as u64,
            limit = query.limit, "querying Loki");
        let end = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| QueryError::Clock)?;
        let start = end.saturating_sub(query.since);
        let mut url = self.endpoint.clone();
        url.query_pairs_mut()
            .append_pair("query", &query.query)
            .append_pair("start", &start.as_nanos().to_string())
            .append_pair("end", &end.as_nanos().to_string())
            .append_pair("limit", &query.limit.to_string())
            .append_pair("direction", "backward");
        let mut request = self.http.get(url);
        // Joins a traced Loki (or a proxy in front of it) to the run's trace.
        if let Some(traceparent) = crate::telemetry::trace::current_traceparent() {
            request = request.header("traceparent", traceparent);
        }
        let mut response = request
            .send()
            .await
            .map_err(|error| self.transport_error(error))?;
        let status = response.status();
        if !status.is_success() {
            // A body that breaks off still leaves the status to report.
            let (body, _) = read_capped(&mut response, MAX_ERROR_BODY_BYTES)
                .await
                .unwrap_or_default();
            tracing::debug!(%status, "Loki refused the query");
            return Err(QueryError::Status {
                status,
                message: loki_error_message(&body),
            });
        }
        let (body, complete) = read_capped(&mut response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|error| self.transport_error(error))?;
        if !complete {
            return Err(QueryError::TooLarge);
        }
        format_answer(&body, query)
    }

    /// The model's view of a failed request; never shows the URL with its credentials.
    fn transport_error(&self, error: reqwest::Error) -> QueryError {
        let url = self.shown_url.clone();
        if error.is_connect() {
            QueryError::Unreachable {
                url,
                cause: error_chain(&error.without_url()),
            }
        } else if error.is_timeout() {
            QueryError::Timeout {
                url,
                timeout: self.timeout,
            }
        } else {
            QueryError::Transport {
                url,
                cause: error_chain(&error.without_url()),
            }
        }
    }
}

/// Runs a `loki_query` call. Any failure becomes an outcome with `ok: false`.
pub async fn run(args: &Value, ctx: &ToolContext) -> ToolOutcome {
    let Some(client) = &ctx.loki else {
        return ToolOutcome::failure(NOT_CONFIGURED);
    };
    let query = match LogQuery::from_args(args) {
        Ok(query) => query,
        Err(error) => return ToolOutcome::failure(error.to_string()),
    };
    match client.query_range(&query).await {
        Ok(text) => ToolOutcome::success(cap_output(&text)),
        Err(error) => ToolOutcome::failure(cap_output(&error.to_string())),
    }
}

/// Parses a Prometheus-style duration: whole numbers with units `ms`, `s`, `m`, `h`, `d`
/// (24 h) and `w` (7 d), largest unit first, e.g. `30s`, `5m`, `1h30m`, `2d`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let syntax = || DurationError::Syntax(text.to_owned());
    let mut rest = text;
    let mut total_ms: u64 = 0;
    // Each unit's rank; a later part must have a strictly smaller one.
    let mut last_rank = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        if digits == 0 || unit_len == 0 {
            return Err(syntax());
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| DurationError::Overflow(text.to_owned()))?;
        let unit = &rest[digits..digits + unit_len];
        let (rank, unit_ms) = match unit {
            "w" => (5, 7 * 24 * 60 * 60 * 1000),
            "d" => (4, 24 * 60 * 60 * 1000),
            "h" => (3, 60 * 60 * 1000),
            "m" => (2, 60 * 1000),
            "s" => (1, 1000),
            "ms" => (0, 1),
            other => {
                return Err(DurationError::UnknownUnit {
                    text: text.to_owned(),
                    unit: other.to_owned(),
                });
            }
        };
        if rank >= last_rank {
            return Err(DurationError::Order(text.to_owned()));
        }
        last_rank = rank;
        total_ms = number
            .checked_mul(unit_ms)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| DurationError::Overflow(text.to_owned()))?;
        rest = &rest[digits + unit_len..];
    }
    Ok(Duration::from_millis(total_ms))
}

/// A duration in the same notation, e.g. `1h30m`, `30d`, `0s`; below a millisecond is dropped.
pub fn format_duration(duration: Duration) -> String {
    let mut ms = duration.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut text = String::new();
    for (unit, unit_ms) in [
        ("d", 24 * 60 * 60 * 1000),
        ("h", 60 * 60 * 1000),
        ("m", 60 * 1000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= unit_ms {
            let _ = write!(text, "{}{unit}", ms / unit_ms);
            ms %= unit_ms;
        }
    }
    text
}

/// Reads at most `max` bytes of the body; the flag says whether that was all of it.
async fn read_capped(
    response: &mut reqwest::Response,
    max: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = max - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

/// An error with its causes, `outer: inner: innermost`, skipping causes already quoted.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Loki's message from an error body: plain text as Loki sends it, or the `error` or
/// `message` field of a JSON body (as proxies and some versions send), cut to
/// [`MAX_ERROR_CHARS`].
fn loki_error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|json| {
            ["error", "message"]
                .iter()
                .find_map(|key| json.get(key)?.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| text.to_owned());
    let message = message.trim();
    if message.is_empty() {
        return "(no error message)".into();
    }
    match message.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_owned(),
    }
}

/// The envelope of every Loki query answer.
#[derive(Deserialize)]
struct Envelope {
    /// `"success"`, or `"error"` with `error` set.
    status: String,
    /// The result; absent on errors.
    #[serde(default)]
    data: Option<Data>,
    /// The error message when `status` is not `"success"`.
    #[serde(default)]
    error: Option<String>,
}

/// `data`: a result type and the result, whose shape depends on the type.
#[derive(Deserialize)]
struct Data {
    /// `streams`, `matrix`, `vector` (or `scalar`, which range queries do not give).
    #[serde(rename = "resultType")]
    result_type: String,
    /// Parsed according to `result_type`.
    result: Value,
}

/// One log stream of a `streams` result.
#[derive(Deserialize)]
struct Stream {
    /// The stream's labels; a `BTreeMap` so they print sorted by key.
    #[serde(default)]
    stream: BTreeMap<String, String>,
    /// `[ns timestamp as string, line]`, possibly followed by structured metadata,
    /// which is ignored; kept loose so that such entries still parse.
    #[serde(default)]
    values: Vec<Vec<Value>>,
}

/// One series of a `matrix` result.
#[derive(Deserialize)]
struct Series {
    /// The series' labels, sorted by key.
    #[serde(default)]
    metric: BTreeMap<String, String>,
    /// `[unix seconds, value as string]` points, oldest first.
    #[serde(default)]
    values: Vec<Vec<Value>>,
}

/// One sample of a `vector` result.
#[derive(Deserialize)]
struct Sample {
    /// The sample's labels, sorted by key.
    #[serde(default)]
    metric: BTreeMap<String, String>,
    /// `[unix seconds, value as string]`.
    value: Vec<Value>,
}

/// Turns a successful answer's body into the text the model reads.
fn format_answer(body: &[u8], query: &LogQuery) -> Result<String, QueryError> {
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|error| QueryError::NotLoki(format!("not the expected JSON: {error}")))?;
    if envelope.status != "success" {
        return Err(QueryError::Failed(envelope.error.unwrap_or_else(|| {
            format!("status `{}` without a message", envelope.status)
        })));
    }
    let data = envelope
        .data
        .ok_or_else(|| QueryError::NotLoki("no `data` field".into()))?;
    match data.result_type.as_str() {
        "streams" => format_streams(&parse_result(data.result)?, query),
        "matrix" => format_matrix(&parse_result(data.result)?, query),
        "vector" => format_vector(&parse_result(data.result)?, query),
        other => Err(QueryError::NotLoki(format!(
            "a result of type `{other}`, which this tool cannot show"
        ))),
    }
}

/// `result` as the list its type calls for.
fn parse_result<T: serde::de::DeserializeOwned>(result: Value) -> Result<Vec<T>, QueryError> {
    serde_json::from_value(result)
        .map_err(|error| QueryError::NotLoki(format!("an unexpected `result`: {error}")))
}

/// One log entry on its way to the output.
struct Entry<'a> {
    /// Unix nanoseconds, the sort key.
    ns: i64,
    /// Index of its stream, to find its labels and to order equal timestamps.
    stream: usize,
    /// Position in its stream's `values`, which Loki sends newest first.
    position: usize,
    /// The log line as Loki sent it.
    line: &'a str,
}

/// The `streams` text: header, shared labels, then every entry oldest first.
fn format_streams(streams: &[Stream], query: &LogQuery) -> Result<String, QueryError> {
    let mut entries = Vec::new();
    for (index, stream) in streams.iter().enumerate() {
        for (position, value) in stream.values.iter().enumerate() {
            let (ns, line) = match value.as_slice() {
                [Value::String(ns), Value::String(line), ..] => (ns, line),
                _ => {
                    return Err(QueryError::NotLoki(
                        "a stream entry that is not [\"<unix ns>\", \"<line>\"]".into(),
                    ));
                }
            };
            let ns = ns.parse().map_err(|_| {
                QueryError::NotLoki(format!(
                    "a stream entry timestamp `{ns}` that is not unix ns"
                ))
            })?;
            entries.push(Entry {
                ns,
                stream: index,
                position,
                line,
            });
        }
    }
    let since = format_duration(query.since);
    if entries.is_empty() {
        return Ok(format!(
            "no log lines matched {} over the last {since}; try a longer `since` (at most {}), \
             a looser line filter, or other labels in the stream selector",
            query.query,
            format_duration(MAX_SINCE)
        ));
    }
    // Loki sends each stream newest first, so among equal timestamps the later position is older.
    entries.sort_by(|a, b| {
        (a.ns, a.stream)
            .cmp(&(b.ns, b.stream))
            .then(b.position.cmp(&a.position))
    });

    let used: Vec<&Stream> = streams.iter().filter(|s| !s.values.is_empty()).collect();
    let common: BTreeMap<&String, &String> = match used.split_first() {
        Some((first, others)) => first
            .stream
            .iter()
            .filter(|(key, value)| others.iter().all(|s| s.stream.get(*key) == Some(*value)))
            .collect(),
        None => BTreeMap::new(),
    };
    let own_labels: Vec<String> = streams
        .iter()
        .map(|stream| {
            let own: Vec<(&String, &String)> = stream
                .stream
                .iter()
                .filter(|(key, _)| !common.contains_key(key))
                .collect();
            if own.is_empty() {
                String::new()
            } else {
                format_labels(own)
            }
        })
        .collect();

    let mut text = format!(
        "{} from {} for {} over the last {since}, oldest first",
        plural(entries.len(), "line", "lines"),
        plural(used.len(), "stream", "streams"),
        query.query,
    );
    if entries.len() as u64 >= query.limit {
        let _ = write!(
            text,
            "; this is the limit of {} lines, so older matching lines are left out (raise \
             `limit`, at most {MAX_LIMIT}, or narrow the query or `since`)",
            query.limit
        );
    }
    text.push('\n');
    if !common.is_empty() {
        let _ = writeln!(text, "labels on every line: {}", format_labels(common));
    }
    for entry in &entries {
        let time =
            DateTime::from_timestamp_nanos(entry.ns).to_rfc3339_opts(SecondsFormat::Millis, true);
        let labels = &own_labels[entry.stream];
        let line = one_line(entry.line);
        if labels.is_empty() {
            let _ = writeln!(text, "{time} {line}");
        } else {
            let _ = writeln!(text, "{time} {labels} {line}");
        }
    }
    Ok(text)
}

/// The `matrix` text: header, then per series a blank line, its labels and its points.
fn format_matrix(series: &[Series], query: &LogQuery) -> Result<String, QueryError> {
    let since = format_duration(query.since);
    let used: Vec<&Series> = series.iter().filter(|s| !s.values.is_empty()).collect();
    if used.is_empty() {
        return Ok(no_series(query));
    }
    let mut text = format!(
        "{} for {} over the last {since}, oldest first; each point is `timestamp value`\n",
        plural(used.len(), "series", "series"),
        query.query,
    );
    for series in used {
        let _ = write!(text, "\n{}\n", format_labels(&series.metric));
        for point in &series.values {
            let (time, value) = format_point(point)?;
            let _ = writeln!(text, "{time} {value}");
        }
    }
    Ok(text)
}

/// The `vector` text: header, then one `labels timestamp value` line per sample.
fn format_vector(samples: &[Sample], query: &LogQuery) -> Result<String, QueryError> {
    if samples.is_empty() {
        return Ok(no_series(query));
    }
    let mut text = format!(
        "{} for {}, one instant value each\n",
        plural(samples.len(), "series", "series"),
        query.query,
    );
    for sample in samples {
        let (time, value) = format_point(&sample.value)?;
        let _ = writeln!(text, "{} {time} {value}", format_labels(&sample.metric));
    }
    Ok(text)
}

/// What the model reads when a metric query found nothing.
fn no_series(query: &LogQuery) -> String {
    format!(
        "no series matched {} over the last {}; try a longer `since` (at most {}) or other \
         labels in the stream selector",
        query.query,
        format_duration(query.since),
        format_duration(MAX_SINCE)
    )
}

/// A metric point `[unix seconds, "value"]` as an RFC 3339 time and the value.
fn format_point(point: &[Value]) -> Result<(String, String), QueryError> {
    let bad =
        || QueryError::NotLoki("a metric point that is not [<unix seconds>, \"<value>\"]".into());
    let [time, value, ..] = point else {
        return Err(bad());
    };
    let seconds = match time {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    }
    .filter(|s| s.is_finite())
    .ok_or_else(bad)?;
    // Loki's times are milliseconds at the finest; the float cast saturates on absurd values,
    // which `from_timestamp_millis` then refuses.
    let time = DateTime::from_timestamp_millis((seconds * 1000.0).round() as i64)
        .ok_or_else(bad)?
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    let value = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(bad()),
    };
    Ok((time, value))
}

/// Labels as LogQL writes them: `{k="v",...}` in the order given (sorted by the maps).
fn format_labels<K: AsRef<str>, V: AsRef<str>>(labels: impl IntoIterator<Item = (K, V)>) -> String {
    let mut text = String::from("{");
    for (index, (key, value)) in labels.into_iter().enumerate() {
        if index > 0 {
            text.push(',');
        }
        text.push_str(key.as_ref());
        text.push_str("=\"");
        for c in value.as_ref().chars() {
            match c {
                '"' => text.push_str("\\\""),
                '\\' => text.push_str("\\\\"),
                '\n' => text.push_str("\\n"),
                c => text.push(c),
            }
        }
        text.push('"');
    }
    text.push('}');
    text
}

/// A log line on one output line: trailing line breaks dropped, inner ones shown as `\n`,
/// cut to [`MAX_LINE_BYTES`] with a marker.
fn one_line(line: &str) -> String {
    let line = line.trim_end_matches(['\n', '\r']);
    let mut text = line.replace("\r\n", "\\n").replace('\n', "\\n");
    if text.len() > MAX_LINE_BYTES {
        let mut cut = MAX_LINE_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let dropped = text.len() - cut;
        text.truncate(cut);
        let _ = write!(text, " [... {dropped} more bytes of this line cut]");
    }
    text
}

/// `1 line`, `2 lines`.
fn plural(count: usize, one: &str, many: &str) -> String {
    if count == 1 {
        format!("1 {one}")
    } else {
        format!("{count} {many}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use actix_web::http::StatusCode as ActixStatus;
    use actix_web::{App, HttpResponse, HttpServer, web};
    use serde_json::json;
    use tempfile::TempDir;

    use super::*;
    use crate::tools::{Workspace, execute};

    /// The query parameters of every request the fake received, in order.
    type Received = Arc<Mutex<Vec<HashMap<String, String>>>>;

    /// How the fake Loki answers every query.
    #[derive(Clone)]
    struct FakeLoki {
        /// HTTP status of the answer.
        status: u16,
        /// Body of the answer: JSON for 2xx, plain text otherwise, as Loki does.
        body: String,
        /// How long to wait before answering, to test the timeout.
        delay: Duration,
        /// Where the query parameters are recorded.
        received: Received,
    }

    /// Records the query parameters, then answers as configured, like Loki's `query_range`.
    async fn query_range_handler(
        fake: web::Data<FakeLoki>,
        params: web::Query<HashMap<String, String>>,
    ) -> HttpResponse {
        fake.received.lock().unwrap().push(params.into_inner());
        if !fake.delay.is_zero() {
            tokio::time::sleep(fake.delay).await;
        }
        let status = ActixStatus::from_u16(fake.status).unwrap();
        let content_type = if status.is_success() {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        HttpResponse::build(status)
            .content_type(content_type)
            .body(fake.body.clone())
    }

    /// Starts a fake Loki on a free port; returns its base URL and what it receives.
    async fn spawn_fake_loki(
        status: u16,
        body: impl Into<String>,
        delay: Duration,
    ) -> (String, Received) {
        let fake = FakeLoki {
            status,
            body: body.into(),
            delay,
            received: Received::default(),
        };
        let received = fake.received.clone();
        let data = web::Data::new(fake);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route(QUERY_RANGE_PATH, web::get().to(query_range_handler))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        actix_rt::spawn(server.run());
        (format!("http://127.0.0.1:{port}"), received)
    }

    /// A fake Loki answering 200 with `body` at once.
    async fn spawn_loki_answering(body: Value) -> (String, Received) {
        spawn_fake_loki(200, body.to_string(), Duration::ZERO).await
    }

    /// A tool context with the given Loki client (or none).
    fn context(loki: Option<LokiClient>) -> (TempDir, ToolContext) {
        let dir = TempDir::new().unwrap();
        let ctx = ToolContext {
            workspace: Arc::new(Workspace::open(dir.path()).unwrap()),
            loki: loki.map(Arc::new),
            sandbox: Arc::new(crate::tools::sandbox::Sandbox::unconfined()),
            mcp: Default::default(),
        };
        (dir, ctx)
    }

    /// A context whose Loki is at `url`.
    fn context_for(url: &str) -> (TempDir, ToolContext) {
        context(Some(LokiClient::new(url).unwrap()))
    }

    /// Runs `loki_query` with `args` through the dispatcher, as a run does.
    async fn call(ctx: &ToolContext, args: Value) -> ToolOutcome {
        execute("loki_query", &args, ctx).await
    }

    /// A port on which nothing listens (it was free a moment ago).
    fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    /// A `streams` answer as Loki documents it.
    fn streams_answer(result: Value) -> Value {
        json!({
            "status": "success",
            "data": {
                "resultType": "streams",
                "result": result,
                "stats": {"summary": {"bytesProcessedPerSecond": 1000, "execTime": 0.01}}
            }
        })
    }

    /// Unix ns of 2024-05-01T10:00:00Z plus `ms` milliseconds, as Loki sends it.
    fn ns(ms: i64) -> String {
        ((1_714_557_600_000 + ms) * 1_000_000).to_string()
    }

    /// A query with the defaults, for the pure formatting tests.
    fn log_query(query: &str) -> LogQuery {
        LogQuery {
            query: query.into(),
            since: DEFAULT_SINCE,
            limit: DEFAULT_LIMIT,
        }
    }

    #[actix_web::test]
    async fn two_streams_are_merged_oldest_first_with_their_labels() {
        // Arrange: two streams sharing `app` and `env`, entries newest first as Loki sends them.
        let (url, _) = spawn_loki_answering(streams_answer(json!([
            {
                "stream": {"pod": "api-1", "app": "api", "env": "prod"},
                "values": [[ns(2500), "connection refused"], [ns(123), "connection refused\n"]]
            },
            {
                "stream": {"env": "prod", "app": "api", "pod": "api-2"},
                "values": [[ns(1000), "upstream timed out\n  at handler.rs:12"]]
            }
        ])))
        .await;
        let (_dir, ctx) = context_for(&url);

        // Act
        let out = call(&ctx, json!({"query": "{app=\"api\"} |= \"error\""})).await;

        // Assert
        assert!(out.ok, "{}", out.output);
        assert_eq!(out.exit_code, None);
        assert_eq!(
            out.output,
            "3 lines from 2 streams for {app=\"api\"} |= \"error\" over the last 1h, oldest first\n\
             labels on every line: {app=\"api\",env=\"prod\"}\n\
             2024-05-01T10:00:00.123Z {pod=\"api-1\"} connection refused\n\
             2024-05-01T10:00:01.000Z {pod=\"api-2\"} upstream timed out\\n  at handler.rs:12\n\
             2024-05-01T10:00:02.500Z {pod=\"api-1\"} connection refused\n"
        );
    }

    #[actix_web::test]
    async fn one_stream_prints_its_labels_once() {
        let (url, _) = spawn_loki_answering(streams_answer(json!([
            {"stream": {"job": "nginx", "level": "error"}, "values": [[ns(5), "GET / 502"]]},
            {"stream": {"job": "nginx", "level": "info"}, "values": []}
        ])))
        .await;
        let (_dir, ctx) = context_for(&url);

        let out = call(&ctx, json!({"query": "{job=\"nginx\"}", "since": "15m"})).await;

        assert!(out.ok, "{}", out.output);
        assert_eq!(
            out.output,
            "1 line from 1 stream for {job=\"nginx\"} over the last 15m, oldest first\n\
             labels on every line: {job=\"nginx\",level=\"error\"}\n\
             2024-05-01T10:00:00.005Z GET / 502\n"
        );
    }

    #[actix_web::test]
    async fn the_request_asks_for_the_newest_lines_over_since() {
        // Arrange
        let (url, received) = spawn_loki_answering(streams_answer(json!([]))).await;
        let (_dir, ctx) = context_for(&url);

        // Act
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let out = call(
            &ctx,
            json!({"query": "  {app=\"api\"} |= \"timeout\" ", "since": "2h30m", "limit": 7}),
        )
        .await;
        let after = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();

        // Assert
        assert!(out.ok, "{}", out.output);
        let received = received.lock().unwrap();
        assert_eq!(received.len(), 1);
        let params = &received[0];
        assert_eq!(params["query"], "{app=\"api\"} |= \"timeout\"");
        assert_eq!(params["limit"], "7");
        assert_eq!(params["direction"], "backward");
        let start: u128 = params["start"].parse().unwrap();
        let end: u128 = params["end"].parse().unwrap();
        assert!((before..=after).contains(&end), "end {end} is now");
        assert_eq!(
            end - start,
            9_000 * 1_000_000_000,
            "start is 2h30m before end"
        );
        assert_eq!(params.len(), 5, "{params:?}");
    }

    #[actix_web::test]
    async fn since_and_limit_default_to_one_hour_and_100_lines() {
        let (url, received) = spawn_loki_answering(streams_answer(json!([]))).await;
        let (_dir, ctx) = context_for(&format!("{url}/"));

        let out = call(&ctx, json!({"query": "{app=\"api\"}", "since": null})).await;

        assert!(out.ok, "{}", out.output);
        let params = &received.lock().unwrap()[0];
        assert_eq!(params["limit"], "100");
        let start: u128 = params["start"].parse().unwrap();
        let end: u128 = params["end"].parse().unwrap();
        assert_eq!(end - start, 3_600 * 1_000_000_000);
    }

    #[actix_web::test]
    async fn reaching_the_limit_says_older_lines_were_left_out() {
        let (url, _) = spawn_loki_answering(streams_answer(json!([
            {"stream": {"app": "api"}, "values": [[ns(2), "b"], [ns(1), "a"]]}
        ])))
        .await;
        let (_dir, ctx) = context_for(&url);

        let out = call(&ctx, json!({"query": "{app=\"api\"}", "limit": 2})).await;

        assert!(out.ok, "{}", out.output);
        let header = out.output.lines().next().unwrap();
        assert!(header.starts_with("2 lines from 1 stream for {app=\"api\"} over the last 1h"));
        assert!(
            header.contains("this is the limit of 2 lines, so older matching lines are left out")
        );
        assert!(
            out.output
                .ends_with("00.001Z a\n2024-05-01T10:00:00.002Z b\n")
        );
    }

    #[actix_web::test]
    async fn a_matrix_result_gives_one_block_per_series() {
        let (url, _) = spawn_loki_answering(json!({
            "status": "success",
            "data": {
                "resultType": "matrix",
                "result": [
                    {"metric": {"level": "error", "app": "api"},
                     "values": [[1714557600, "3"], [1714557900.5, "5"]]},
                    {"metric": {}, "values": [[1714557600, "1"]]},
                    {"metric": {"level": "debug"}, "values": []}
                ],
                "stats": {}
            }
        }))
        .await;
        let (_dir, ctx) = context_for(&url);

        let query = "sum by (app, level) (count_over_time({app=\"api\"}[5m]))";
        let out = call(&ctx, json!({"query": query, "since": "1d"})).await;

        assert!(out.ok, "{}", out.output);
        assert_eq!(
            out.output,
            format!(
                "2 series for {query} over the last 1d, oldest first; each point is `timestamp value`\n\
                 \n\
                 {{app=\"api\",level=\"error\"}}\n\
                 2024-05-01T10:00:00.000Z 3\n\
                 2024-05-01T10:05:00.500Z 5\n\
                 \n\
                 {{}}\n\
                 2024-05-01T10:00:00.000Z 1\n"
            )
        );
    }

    #[test]
    fn a_vector_result_gives_one_line_per_series() {
        let body = json!({
            "status": "success",
            "data": {"resultType": "vector", "result": [
                {"metric": {"app": "api"}, "value": [1714557600.25, "42"]}
            ]}
        });
        let text = format_answer(
            body.to_string().as_bytes(),
            &log_query("count_over_time({app=\"api\"}[1h])"),
        )
        .unwrap();
        assert_eq!(
            text,
            "1 series for count_over_time({app=\"api\"}[1h]), one instant value each\n\
             {app=\"api\"} 2024-05-01T10:00:00.250Z 42\n"
        );
    }

    #[actix_web::test]
    async fn an_empty_result_says_nothing_matched() {
        let (url, _) = spawn_loki_answering(streams_answer(json!([]))).await;
        let (_dir, ctx) = context_for(&url);

        let out = call(
            &ctx,
            json!({"query": "{app=\"api\"} |= \"panic\"", "since": "30m"}),
        )
        .await;

        assert!(out.ok, "{}", out.output);
        assert!(
            out.output
                .starts_with("no log lines matched {app=\"api\"} |= \"panic\" over the last 30m;"),
            "{}",
            out.output
        );
        let empty_matrix =
            json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
        let text = format_answer(
            empty_matrix.to_string().as_bytes(),
            &log_query("rate({a=\"b\"}[1m])"),
        )
        .unwrap();
        assert!(
            text.starts_with("no series matched rate({a=\"b\"}[1m]) over the last 1h;"),
            "{text}"
        );
    }

    #[actix_web::test]
    async fn lokis_parse_error_reaches_the_model() {
        let message = "parse error at line 1, col 5: syntax error: unexpected IDENTIFIER";
        let (url, received) = spawn_fake_loki(400, format!("{message}\n"), Duration::ZERO).await;
        let (_dir, ctx) = context_for(&url);

        let out = call(&ctx, json!({"query": "{app oops}"})).await;

        assert!(!out.ok);
        assert_eq!(
            out.output,
            format!("Loki answered 400 Bad Request: {message}")
        );
        assert_eq!(received.lock().unwrap().len(), 1);
    }

    #[actix_web::test]
    async fn long_and_json_error_bodies_are_shortened() {
        let (url, _) = spawn_fake_loki(500, "x".repeat(50_000), Duration::ZERO).await;
        let (_dir, ctx) = context_for(&url);

        let out = call(&ctx, json!({"query": "{a=\"b\"}"})).await;

        assert!(!out.ok);
        let expected = format!(
            "Loki answered 500 Internal Server Error: {}…",
            "x".repeat(MAX_ERROR_CHARS)
        );
        assert_eq!(out.output, expected);
        assert_eq!(
            loki_error_message(br#"{"status":"error","errorType":"bad_data","error":"max entries limit per query exceeded"}"#),
            "max entries limit per query exceeded"
        );
        assert_eq!(loki_error_message(b"  \n"), "(no error message)");
    }

    #[actix_web::test]
    async fn an_unreachable_loki_is_named_in_the_message() {
        let url = format!("http://127.0.0.1:{}", closed_port());
        let (_dir, ctx) = context_for(&url);

        let out = call(&ctx, json!({"query": "{a=\"b\"}"})).await;

        assert!(!out.ok);
        assert!(
            out.output
                .starts_with(&format!("could not reach Loki at {url}: ")),
            "{}",
            out.output
        );
    }

    #[actix_web::test]
    async fn credentials_in_loki_url_never_show() {
        let port = closed_port();
        let client =
            LokiClient::new(&format!("http://reader:hunter2@127.0.0.1:{port}/prefix/")).unwrap();
        assert_eq!(client.url(), format!("http://127.0.0.1:{port}/prefix"));
        let (_dir, ctx) = context(Some(client));

        let out = call(&ctx, json!({"query": "{a=\"b\"}"})).await;

        assert!(!out.ok);
        assert!(!out.output.contains("hunter2"), "{}", out.output);
        assert!(!out.output.contains("reader"), "{}", out.output);
        assert!(matches!(
            LokiClient::new("not a url"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            LokiClient::new("ftp://loki:21"),
            Err(Error::InvalidUrl { .. })
        ));
    }

    #[actix_web::test]
    async fn a_slow_loki_times_out_with_a_message() {
        let (url, _) = spawn_fake_loki(
            200,
            streams_answer(json!([])).to_string(),
            Duration::from_secs(10),
        )
        .await;
        let client = LokiClient::with_timeout(&url, Duration::from_millis(300)).unwrap();
        let (_dir, ctx) = context(Some(client));

        let started = std::time::Instant::now();
        let out = call(&ctx, json!({"query": "{a=\"b\"}"})).await;

        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!out.ok);
        assert!(
            out.output
                .starts_with(&format!("Loki at {url} did not answer within 300ms;")),
            "{}",
            out.output
        );
    }

    #[tokio::test]
    async fn without_loki_url_the_tool_says_it_is_unavailable() {
        let (_dir, ctx) = context(None);

        let out = call(&ctx, json!({"query": "{a=\"b\"}"})).await;

        assert!(!out.ok);
        assert_eq!(out.output, NOT_CONFIGURED);
        assert!(out.output.contains("LOKI_URL is not set"));
    }

    #[actix_web::test]
    async fn bad_arguments_are_refused_before_any_request() {
        let (url, received) = spawn_loki_answering(streams_answer(json!([]))).await;
        let (_dir, ctx) = context_for(&url);

        for (args, expected) in [
            (
                json!("{a=\"b\"}"),
                "loki_query: arguments must be a JSON object, got a string",
            ),
            (json!({}), "loki_query: missing string field `query`"),
            (
                json!({"query": 5}),
                "loki_query: field `query` must be a string, got a number",
            ),
            (
                json!({"query": "  "}),
                "loki_query: field `query` must not be empty",
            ),
            (
                json!({"query": "{a=\"b\"}", "since": "5x"}),
                "loki_query: field `since` `5x` has an unknown unit `x`",
            ),
            (
                json!({"query": "{a=\"b\"}", "since": "1.5h"}),
                "loki_query: field `since` `1.5h` is not a duration",
            ),
            (
                json!({"query": "{a=\"b\"}", "since": "31d"}),
                "loki_query: field `since` must be longer than zero and at most 30d, got 31d",
            ),
            (
                json!({"query": "{a=\"b\"}", "since": "0s"}),
                "loki_query: field `since` must be longer than zero",
            ),
            (
                json!({"query": "{a=\"b\"}", "since": 3600}),
                "loki_query: field `since` must be a string, got a number",
            ),
            (
                json!({"query": "{a=\"b\"}", "limit": 0}),
                "loki_query: field `limit` must be from 1 to 5000, got 0",
            ),
            (
                json!({"query": "{a=\"b\"}", "limit": 5001}),
                "loki_query: field `limit` must be from 1 to 5000, got 5001",
            ),
            (
                json!({"query": "{a=\"b\"}", "limit": -1}),
                "loki_query: field `limit` must not be negative",
            ),
            (
                json!({"query": "{a=\"b\"}", "limit": "10"}),
                "loki_query: field `limit` must be an integer, got a string",
            ),
            (
                json!({"query": "{a=\"b\"}", "start": "1h"}),
                "loki_query: unknown field `start`; allowed fields are `query`, `since`, `limit`",
            ),
        ] {
            let out = call(&ctx, args.clone()).await;
            assert!(!out.ok, "{args}");
            assert!(out.output.starts_with(expected), "{args}: {}", out.output);
        }
        assert!(received.lock().unwrap().is_empty());
    }

    #[actix_web::test]
    async fn an_answer_that_is_not_lokis_shape_is_refused() {
        let (url, _) = spawn_fake_loki(200, "<html>Grafana</html>", Duration::ZERO).await;
        let (_dir, ctx) = context_for(&url);

        let out = call(&ctx, json!({"query": "{a=\"b\"}"})).await;

        assert!(!out.ok);
        assert!(
            out.output.starts_with(
                "the answer is not a Loki query_range response (not the expected JSON"
            ),
            "{}",
            out.output
        );

        let q = log_query("{a=\"b\"}");
        for body in [
            json!({"status": "success"}),
            json!({"status": "success", "data": {"resultType": "streams", "result": {}}}),
            json!({"status": "success", "data": {"resultType": "streams", "result": [{"stream": {}, "values": [["soon", "x"]]}]}}),
            json!({"status": "success", "data": {"resultType": "streams", "result": [{"stream": {}, "values": [[1, "x"]]}]}}),
            json!({"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}, "values": [["x", "1"]]}]}}),
            json!({"status": "success", "data": {"resultType": "scalar", "result": [1, "1"]}}),
        ] {
            let error = format_answer(body.to_string().as_bytes(), &q).unwrap_err();
            assert!(matches!(error, QueryError::NotLoki(_)), "{body}: {error}");
        }
        let failed = json!({"status": "error", "errorType": "timeout", "error": "query timed out"});
        let error = format_answer(failed.to_string().as_bytes(), &q).unwrap_err();
        assert_eq!(error.to_string(), "Loki reported an error: query timed out");
    }

    #[test]
    fn entries_with_structured_metadata_still_parse() {
        let body = streams_answer(json!([
            {"stream": {"a": "b"}, "values": [[ns(0), "hello", {"structuredMetadata": {"trace_id": "t"}}]]}
        ]));
        let text = format_answer(body.to_string().as_bytes(), &log_query("{a=\"b\"}")).unwrap();
        assert!(text.ends_with("2024-05-01T10:00:00.000Z hello\n"), "{text}");
    }

    #[test]
    fn long_lines_are_cut_and_label_values_escaped() {
        let long = "é".repeat(MAX_LINE_BYTES);
        let shown = one_line(&long);
        assert!(shown.starts_with(&"é".repeat(MAX_LINE_BYTES / 2)));
        assert!(shown.ends_with(&format!(
            " [... {} more bytes of this line cut]",
            MAX_LINE_BYTES
        )));
        assert_eq!(one_line("a\r\nb\nc\n"), "a\\nb\\nc");
        assert_eq!(
            format_labels([("path", "C:\\tmp \"x\"\n")]),
            "{path=\"C:\\\\tmp \\\"x\\\"\\n\"}"
        );
    }

    #[test]
    fn durations_parse_like_prometheus() {
        for (text, secs) in [
            ("30s", 30),
            ("5m", 300),
            ("1h", 3600),
            ("2d", 172_800),
            ("1w", 604_800),
            ("1h30m", 5400),
            ("1d2h3m4s", 93_784),
            (" 90m ", 5400),
            ("30d", 2_592_000),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_are_refused() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("  "), Err(DurationError::Empty));
        for text in ["1", "h", "1.5h", "-1h", "1h 30m", "1h30", "one hour"] {
            assert!(
                matches!(parse_duration(text), Err(DurationError::Syntax(_))),
                "{text}"
            );
        }
        for text in ["5x", "1y", "1H", "10us"] {
            assert!(
                matches!(parse_duration(text), Err(DurationError::UnknownUnit { .. })),
                "{text}"
            );
        }
        for text in ["30m1h", "1h1h", "5s1m"] {
            assert!(
                matches!(parse_duration(text), Err(DurationError::Order(_))),
                "{text}"
            );
        }
        for text in ["99999999999999999999s", "999999999999999w"] {
            assert!(
                matches!(parse_duration(text), Err(DurationError::Overflow(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn durations_print_compactly() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(DEFAULT_SINCE), "1h");
        assert_eq!(format_duration(MAX_SINCE), "30d");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        for text in ["1d2h3m4s", "2d", "45s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn the_spec_states_the_limits_this_module_enforces() {
        let spec = crate::tools::spec("loki_query").unwrap();
        assert_eq!(spec.parameters["properties"]["limit"]["maximum"], MAX_LIMIT);
        assert!(spec.description.contains("default 1h, at most 30d"));
        assert!(
            spec.description
                .contains(&format!("default {DEFAULT_LIMIT}, at most {MAX_LIMIT}"))
        );
    }
}
