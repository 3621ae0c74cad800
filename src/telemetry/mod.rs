//! Telemetry: traces exported over OTLP/HTTP when an endpoint is set, logs as
//! one JSON object per line on stdout (human-readable on a terminal or with
//! `LOG_FORMAT=pretty`) carrying `trace_id`, `span_id` and `run_id`, and the
//! metrics (`metrics`).
//!
//! Layout: `metrics` (instruments and `/metrics`), `json` (the log line
//! format), `trace` (a run's trace context, the GenAI spans, `traceparent`).

pub mod json;
pub mod metrics;
pub mod trace;

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer};

/// What is logged when `RUST_LOG` is unset: our own info, others' warnings.
const DEFAULT_FILTER: &str = "info,actix_server=warn,tokio_postgres=warn,deadpool=warn";

/// Keeps the tracer provider so everything is flushed at shutdown.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is still buffered; call once, at exit.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("agent-server: flushing traces failed: {error}");
        }
    }
}

/// Whether any OTLP endpoint for traces is configured.
fn traces_endpoint_set() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// Installs the global subscriber (a second call, in tests, is a no-op) and,
/// with an OTLP endpoint, the trace exporter.
pub fn init() -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let pretty = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("pretty") => true,
        Ok("json") => false,
        _ => std::io::stdout().is_terminal(),
    };
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );

    let provider = traces_endpoint_set().then(build_provider).flatten();
    let otel_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("agent-server"))
            // Only the spans meant for the trace: ours and the HTTP server's.
            .with_filter(filter_fn(|meta| {
                meta.target().starts_with(trace::TARGET)
                    || meta.target().starts_with("tracing_actix_web")
            }))
    });
    if let Some(provider) = &provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    let logs = if pretty {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stdout)
            .boxed()
    } else {
        json::JsonLines.boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(otel_layer)
        .with(logs.with_filter(filter))
        .try_init();
    Telemetry { provider }
}

fn build_provider() -> Option<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
        .build();
    let exporter = match exporter {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("agent-server: OTLP trace export is off: {error}");
            return None;
        }
    };
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("agent-server");
    }
    Some(
        SdkTracerProvider::builder()
            .with_resource(resource.build())
            .with_batch_exporter(exporter)
            .with_id_generator(trace::PresetIds::default())
            .build(),
    )
}
