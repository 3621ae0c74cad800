//! The log line format: one JSON object per line with `timestamp`, `level`,
//! `target`, `message`, the event's own fields, and `trace_id`, `span_id` and
//! `run_id` from the spans it happened in; the same record, with the same
//! trace context, as an OTLP log record when logs are exported.

use std::io::Write;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
use opentelemetry::trace::{SpanId, TraceContextExt, TraceFlags, TraceId};
use opentelemetry_sdk::logs::SdkLogger;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The JSON line writer, a `tracing` layer.
pub struct JsonLines {
    /// Whether lines are written to stdout (not when a person reads it).
    pub stdout: bool,
    /// The OTLP logger, when logs are exported.
    pub otlp: Option<SdkLogger>,
}

/// A span's ids (`SPAN_KEYS`), kept so events inside it can carry them.
struct SpanFields(Map<String, Value>);

/// Collects fields into a JSON map.
struct Collect<'a>(&'a mut Map<String, Value>);

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

/// The fields a line takes from the spans it happened in; a span's other
/// fields are not kept (formatting them all, on every span of every step,
/// was work no line used).
const SPAN_KEYS: [&str; 4] = ["run_id", "run.id", "trace_id", "span_id"];

/// Collects only `SPAN_KEYS`.
struct CollectIds<'a>(Collect<'a>);

impl CollectIds<'_> {
    fn wanted(field: &Field) -> bool {
        SPAN_KEYS.contains(&field.name())
    }
}

impl Visit for CollectIds<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if Self::wanted(field) {
            self.0.record_str(field, value);
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if Self::wanted(field) {
            self.0.record_i64(field, value);
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if Self::wanted(field) {
            self.0.record_u64(field, value);
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if Self::wanted(field) {
            self.0.record_bool(field, value);
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if Self::wanted(field) {
            self.0.record_f64(field, value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if Self::wanted(field) {
            self.0.record_debug(field, value);
        }
    }
}

impl<S> Layer<S> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Map::new();
        attrs.record(&mut CollectIds(Collect(&mut fields)));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut CollectIds(Collect(&mut fields.0)));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let otlp = self.otlp.as_ref().filter(|_| super::exporting());
        if !self.stdout && otlp.is_none() {
            return;
        }
        let meta = event.metadata();
        let now = chrono::Utc::now();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::from(now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::from(meta.level().as_str()));
        line.insert("target".into(), Value::from(meta.target()));
        let mut fields = Map::new();
        event.record(&mut Collect(&mut fields));
        line.insert(
            "message".into(),
            fields.remove("message").unwrap_or(Value::from("")),
        );
        // The nearest span's `run_id` and `trace_id`; the OpenTelemetry span
        // gives the ids when the trace is exported.
        let mut run_id = Value::Null;
        let mut trace_id = Value::Null;
        let mut span_id = Value::Null;
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                let extensions = span.extensions();
                if let Some(SpanFields(fields)) = extensions.get::<SpanFields>() {
                    if run_id.is_null()
                        && let Some(id) = fields.get("run_id").or_else(|| fields.get("run.id"))
                    {
                        run_id = id.clone();
                    }
                    if trace_id.is_null()
                        && let Some(id) = fields.get("trace_id")
                    {
                        trace_id = id.clone();
                        // The run's root span, for lines written outside
                        // any exported span of the run.
                        span_id = fields.get("span_id").cloned().unwrap_or(Value::Null);
                    }
                }
            }
        }
        let otel = tracing::Span::current().context();
        let span_context = otel.span().span_context().clone();
        if span_context.is_valid() {
            trace_id = Value::from(span_context.trace_id().to_string());
            span_id = Value::from(span_context.span_id().to_string());
        }
        line.insert("trace_id".into(), trace_id);
        line.insert("span_id".into(), span_id);
        line.insert("run_id".into(), run_id);
        for (key, value) in fields {
            line.entry(key).or_insert(value);
        }
        if let Some(logger) = otlp {
            export(logger, meta, now, &line);
        }
        if self.stdout {
            let mut text = Value::Object(line).to_string();
            text.push('\n');
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
    }
}

/// Sends one line as an OTLP log record: the message as its body, the trace
/// context as the record's own, everything else as attributes.
fn export(
    logger: &SdkLogger,
    meta: &tracing::Metadata<'_>,
    at: chrono::DateTime<chrono::Utc>,
    line: &Map<String, Value>,
) {
    let mut record = logger.create_log_record();
    record.set_timestamp(at.into());
    record.set_target(meta.target().to_string());
    record.set_severity_number(severity(*meta.level()));
    record.set_severity_text(meta.level().as_str());
    if let Some(Value::String(message)) = line.get("message") {
        record.set_body(AnyValue::from(message.clone()));
    }
    let id = |key: &str| line.get(key).and_then(Value::as_str);
    if let Some(trace_id) = id("trace_id").and_then(|t| TraceId::from_hex(t).ok()) {
        let span_id = id("span_id")
            .and_then(|s| SpanId::from_hex(s).ok())
            .unwrap_or(SpanId::INVALID);
        record.set_trace_context(trace_id, span_id, Some(TraceFlags::SAMPLED));
    }
    for (key, value) in line {
        if matches!(
            key.as_str(),
            "timestamp" | "level" | "target" | "message" | "trace_id" | "span_id"
        ) || value.is_null()
        {
            continue;
        }
        let value = match value {
            Value::String(text) => AnyValue::from(text.clone()),
            Value::Bool(b) => AnyValue::from(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => AnyValue::from(i),
                None => AnyValue::from(n.as_f64().unwrap_or_default()),
            },
            other => AnyValue::from(other.to_string()),
        };
        record.add_attribute(key.clone(), value);
    }
    logger.emit(record);
}

fn severity(level: tracing::Level) -> Severity {
    match level {
        tracing::Level::TRACE => Severity::Trace,
        tracing::Level::DEBUG => Severity::Debug,
        tracing::Level::INFO => Severity::Info,
        tracing::Level::WARN => Severity::Warn,
        tracing::Level::ERROR => Severity::Error,
    }
}
