//! Telemetry set-up from the standard `OTEL_*` variables: traces and logs
//! exported over OTLP/HTTP (protobuf, or JSON with
//! `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`) when an endpoint is set (metrics are pushed by
//! `metrics`, per server), logs as one JSON object per line on stdout
//! (human-readable on a terminal or with `LOG_FORMAT=pretty`) carrying
//! `trace_id`, `span_id` and `run_id`. Without an endpoint nothing is
//! exported; everything buffered is flushed by `Telemetry::shutdown`.
//!
//! Layout: `metrics` (instruments, `/metrics`, OTLP metrics), `json` (the log
//! line, on stdout and as an OTLP log record), `trace` (a run's trace
//! context, the GenAI spans, `traceparent`).

pub mod json;
pub mod metrics;
pub mod trace;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::logs::LoggerProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::dynamic_filter_fn;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer};

/// What is logged when `RUST_LOG` is unset: our own info, others' warnings.
const DEFAULT_FILTER: &str = "info,actix_server=warn,tokio_postgres=warn,deadpool=warn";

/// Whether spans and log records go to the OTLP exporters set up by `init`.
/// Always on in the server; the bench turns it off and on to measure what
/// exporting costs in one process.
static EXPORTING: AtomicBool = AtomicBool::new(true);

/// Turns OTLP export of spans and log records on or off (for the bench).
pub fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

pub(crate) fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Keeps the exporting providers so everything is flushed at shutdown.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
    logs: Option<SdkLoggerProvider>,
}

impl Telemetry {
    /// Exports what is buffered now and waits until it has left.
    pub fn flush(&self) {
        if let Some(provider) = &self.traces {
            let _ = provider.force_flush();
        }
        if let Some(provider) = &self.logs {
            let _ = provider.force_flush();
        }
    }

    /// Exports what is still buffered; call once, at exit.
    pub fn shutdown(self) {
        if let Some(provider) = self.traces
            && let Err(error) = provider.shutdown()
        {
            eprintln!("agent-server: flushing traces failed: {error}");
        }
        if let Some(provider) = self.logs
            && let Err(error) = provider.shutdown()
        {
            eprintln!("agent-server: flushing logs failed: {error}");
        }
    }
}

/// Whether an OTLP endpoint is set for `signal` (`TRACES`, `METRICS`,
/// `LOGS`), by its own variable or the common one.
pub fn otlp_endpoint_set(signal: &str) -> bool {
    [
        format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"),
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// What every signal says about its source: the SDK's detectors read
/// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`; a service neither
/// names is `agent-server`.
pub(crate) fn resource() -> Resource {
    let detected = Resource::builder().build();
    let unnamed = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_none_or(|name| name.as_str().starts_with("unknown_service"));
    if unnamed {
        Resource::builder()
            .with_service_name("agent-server")
            .build()
    } else {
        detected
    }
}

/// Installs the global subscriber (a second call, in tests, is a no-op) and,
/// with an OTLP endpoint, the trace exporter.
pub fn init() -> Telemetry {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let pretty = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("pretty") => true,
        Ok("json") => false,
        _ => std::io::stdout().is_terminal(),
    };
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );

    let traces = otlp_endpoint_set("TRACES").then(tracer_provider).flatten();
    let logs_provider = otlp_endpoint_set("LOGS").then(logger_provider).flatten();
    let otel_layer = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("agent-server"))
            // Lean spans: no busy/idle timing on every enter and exit, no
            // thread or source location attributes, which a reader of a
            // run's trace has no use for.
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            // Only the spans meant for the trace: ours and the HTTP server's.
            // Dynamic (asked per span, not cached per call site) so that
            // `set_exporting` takes effect at once.
            .with_filter(dynamic_filter_fn(|meta, _| {
                exporting()
                    && (meta.target().starts_with(trace::TARGET)
                        || meta.target().starts_with("tracing_actix_web"))
            }))
    });
    if let Some(provider) = &traces {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    // The JSON lines go to stdout unless a person reads it; the same records
    // go over OTLP either way.
    let lines = json::JsonLines {
        stdout: !pretty,
        otlp: logs_provider
            .as_ref()
            .map(|provider| provider.logger("agent-server")),
    };
    let human = pretty.then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stdout));
    let _ = tracing_subscriber::registry()
        .with(otel_layer)
        .with(human.with_filter(filter()))
        .with(lines.with_filter(filter()))
        .try_init();
    Telemetry {
        traces,
        logs: logs_provider,
    }
}

fn tracer_provider() -> Option<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build();
    let exporter = match exporter {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("agent-server: OTLP trace export is off: {error}");
            return None;
        }
    };
    // The sampler comes from OTEL_TRACES_SAMPLER(_ARG), read by the SDK.
    Some(
        SdkTracerProvider::builder()
            .with_resource(resource())
            .with_batch_exporter(exporter)
            .with_id_generator(trace::PresetIds::default())
            .build(),
    )
}

fn logger_provider() -> Option<SdkLoggerProvider> {
    let exporter = opentelemetry_otlp::LogExporter::builder()
        .with_http()
        .build();
    match exporter {
        Ok(exporter) => Some(
            SdkLoggerProvider::builder()
                .with_resource(resource())
                .with_batch_exporter(exporter)
                .build(),
        ),
        Err(error) => {
            eprintln!("agent-server: OTLP log export is off: {error}");
            None
        }
    }
}
