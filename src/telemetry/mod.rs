//! Telemetry: the metrics (`metrics`) and the tracing subscriber: JSON lines on stdout (human-readable on a terminal
//! or with `LOG_FORMAT=pretty`), filtered by `RUST_LOG`.

pub mod metrics;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// What is logged when `RUST_LOG` is unset: our own info, others' warnings.
const DEFAULT_FILTER: &str = "info,actix_server=warn,tokio_postgres=warn,deadpool=warn";

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let pretty = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("pretty") => true,
        Ok("json") => false,
        _ => std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = if pretty {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    };
}
