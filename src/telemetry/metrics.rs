//! The server's metrics: OpenTelemetry instruments, read out at `GET /metrics`
//! in Prometheus' text format with exactly the names of contract section 8,
//! and pushed over OTLP when an endpoint is set, together with the standard
//! GenAI client instruments (`gen_ai.client.token.usage`,
//! `gen_ai.client.operation.duration`).
//!
//! Each `Metrics` has its own meter providers and Prometheus registry
//! (several servers may share a process, in tests). Run actors report what
//! they committed (`record_committed`), model calls and journal writes report
//! their durations. The gauges of open runs and pending approvals are the
//! whole cluster's, counted in PostgreSQL (`set_open_runs`, before each
//! scrape and every few seconds), so every instance reports the same
//! figures: aggregate them across instances with `max`, not `sum`. The
//! instance's own share is `agentops_instance_runs_owned`, with its claims
//! (`agentops_instance_claims_total`) and lapsed leases
//! (`agentops_instance_leases_lost_total`).
//! The GenAI instruments live on a second provider that only OTLP reads, so
//! `/metrics` shows the contract's names and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use crate::agents::AgentName;
use crate::domain::{Decision, Event, EventBody};
use crate::domain::{PendingApproval, RunStatus};

/// Journal writes take a fraction of a millisecond to a few milliseconds.
const JOURNAL_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
];
/// Model calls take from a fraction of a second to minutes.
const LLM_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 300.0,
];
/// Tools run from milliseconds up to their 10-minute limit.
const TOOL_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 600.0,
];
/// Humans answer in seconds or in days; approvals wait up to 72 hours.
const HITL_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 43_200.0, 86_400.0, 172_800.0, 259_200.0,
];

/// The GenAI semantic conventions' advice for token counts: powers of 4.
const GENAI_TOKEN_BUCKETS: [f64; 14] = [
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16_384.0,
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];
/// The GenAI semantic conventions' advice for operation durations, seconds.
const GENAI_DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// The metrics of one server; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: prometheus::Registry,
    /// Kept so the instruments stay alive and can be flushed.
    provider: SdkMeterProvider,
    /// The standard GenAI instruments, when metrics are pushed over OTLP.
    genai: Option<GenAi>,
    llm_tokens: Counter<u64>,
    llm_cost: Counter<f64>,
    llm_duration: Histogram<f64>,
    tool_executions: Counter<u64>,
    tool_duration: Histogram<f64>,
    hitl_wait: Histogram<f64>,
    runs_finished: Counter<u64>,
    journal_append: Histogram<f64>,
    claims: Counter<u64>,
    leases_lost: Counter<u64>,
    /// Open runs of the whole cluster by status, as last counted.
    open_runs: Arc<Mutex<HashMap<RunStatus, i64>>>,
    /// Runs this instance drives now.
    owned: Arc<std::sync::atomic::AtomicI64>,
}

/// `gen_ai.client.*`, on a meter provider of their own that only OTLP reads.
struct GenAi {
    provider: SdkMeterProvider,
    token_usage: Histogram<u64>,
    operation_duration: Histogram<f64>,
}

impl GenAi {
    fn new() -> Option<GenAi> {
        let provider = SdkMeterProvider::builder()
            .with_resource(super::resource())
            .with_reader(otlp_reader()?)
            .build();
        let meter = provider.meter("agent-server");
        Some(GenAi {
            token_usage: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Number of input and output tokens used")
                .with_boundaries(GENAI_TOKEN_BUCKETS.to_vec())
                .build(),
            operation_duration: meter
                .f64_histogram("gen_ai.client.operation.duration")
                .with_unit("s")
                .with_description("GenAI operation duration")
                .with_boundaries(GENAI_DURATION_BUCKETS.to_vec())
                .build(),
            provider,
        })
    }
}

/// A reader pushing over OTLP/HTTP every `OTEL_METRIC_EXPORT_INTERVAL`
/// (the SDK reads it; 60 s by default), when an endpoint for metrics is set.
fn otlp_reader() -> Option<PeriodicReader<opentelemetry_otlp::MetricExporter>> {
    if !super::otlp_endpoint_set("METRICS") {
        return None;
    }
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .build();
    match exporter {
        Ok(exporter) => Some(PeriodicReader::builder(exporter).build()),
        Err(error) => {
            eprintln!("agent-server: OTLP metric export is off: {error}");
            None
        }
    }
}

/// How one model call went, for the metrics.
pub struct ModelCall<'a> {
    pub agent: AgentName,
    /// The model asked for.
    pub model: &'a str,
    pub provider: &'static str,
    pub elapsed: Duration,
    /// The model that answered and what it used, or the error's type.
    pub outcome: Result<(&'a str, crate::llm::Usage), &'a str>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The server's metrics, pushed over OTLP when an endpoint is set.
    pub fn new() -> Metrics {
        Metrics::with_export(true)
    }

    /// `export: false` keeps them in `/metrics` only (for the bench).
    pub fn with_export(export: bool) -> Metrics {
        let registry = prometheus::Registry::new();
        // Without a registry the exporter cannot fail to build; a failure
        // would leave /metrics empty rather than stop the server.
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_units()
            .without_counter_suffixes()
            .without_scope_info()
            .without_target_info()
            .build();
        let mut builder = SdkMeterProvider::builder().with_resource(super::resource());
        match exporter {
            Ok(exporter) => builder = builder.with_reader(exporter),
            Err(error) => tracing::warn!(%error, "the Prometheus exporter failed to build"),
        }
        if let Some(reader) = export.then(otlp_reader).flatten() {
            builder = builder.with_reader(reader);
        }
        let provider = builder.build();
        let meter = provider.meter("agent-server");
        let open_runs: Arc<Mutex<HashMap<RunStatus, i64>>> = Arc::default();
        let owned: Arc<std::sync::atomic::AtomicI64> = Arc::default();

        let counts = |open: &Arc<Mutex<HashMap<RunStatus, i64>>>| {
            open.lock().unwrap_or_else(|p| p.into_inner()).clone()
        };
        let for_active = open_runs.clone();
        meter
            .i64_observable_gauge("agentops_runs_active")
            .with_description("Open runs by status")
            .with_callback(move |observer| {
                let counts = counts(&for_active);
                for status in [
                    RunStatus::Pending,
                    RunStatus::Running,
                    RunStatus::WaitingApproval,
                    RunStatus::Paused,
                ] {
                    let n = counts.get(&status).copied().unwrap_or(0);
                    observer.observe(n, &[KeyValue::new("status", status.as_str())]);
                }
            })
            .build();
        let for_owned = owned.clone();
        meter
            .i64_observable_gauge("agentops_instance_runs_owned")
            .with_description("Runs this instance drives now")
            .with_callback(move |observer| {
                observer.observe(for_owned.load(std::sync::atomic::Ordering::Relaxed), &[]);
            })
            .build();
        let for_pending = open_runs.clone();
        meter
            .i64_observable_gauge("agentops_hitl_pending")
            .with_description("Approvals waiting for a human")
            .with_callback(move |observer| {
                let n = counts(&for_pending)
                    .get(&RunStatus::WaitingApproval)
                    .copied()
                    .unwrap_or(0);
                observer.observe(n, &[]);
            })
            .build();

        let histogram = |name: &'static str, description: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_description(description)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        Metrics {
            inner: Arc::new(Inner {
                llm_tokens: meter
                    .u64_counter("agentops_llm_tokens_total")
                    .with_description("Tokens reported by the model providers")
                    .build(),
                llm_cost: meter
                    .f64_counter("agentops_llm_cost_usd_total")
                    .with_description("What model answers cost in USD, at AGENT_MODEL_PRICES (models without a price count nothing)")
                    .build(),
                llm_duration: histogram(
                    "agentops_llm_request_duration_seconds",
                    "Model call duration",
                    &LLM_BUCKETS,
                ),
                tool_executions: meter
                    .u64_counter("agentops_tool_executions_total")
                    .with_description("Tool calls by outcome")
                    .build(),
                tool_duration: histogram(
                    "agentops_tool_duration_seconds",
                    "Tool run time",
                    &TOOL_BUCKETS,
                ),
                hitl_wait: histogram(
                    "agentops_hitl_wait_seconds",
                    "Time from an approval request to its decision",
                    &HITL_BUCKETS,
                ),
                runs_finished: meter
                    .u64_counter("agentops_runs_finished_total")
                    .with_description("Runs that ended, by status")
                    .build(),
                journal_append: histogram(
                    "agentops_journal_append_seconds",
                    "Duration of one journal commit",
                    &JOURNAL_BUCKETS,
                ),
                claims: meter
                    .u64_counter("agentops_instance_claims_total")
                    .with_description("Runs this instance claimed to drive them (takeovers, parked runs woken, runs given back)")
                    .build(),
                leases_lost: meter
                    .u64_counter("agentops_instance_leases_lost_total")
                    .with_description("Runs this instance let go because its leases lapsed")
                    .build(),
                registry,
                provider,
                genai: export.then(GenAi::new).flatten(),
                open_runs,
                owned,
            }),
        }
    }

    /// The Prometheus text exposition of every instrument.
    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode_to_string(&self.inner.registry.gather())
            .unwrap_or_default()
    }

    /// Pushes what the OTLP readers have not sent yet; call once, when the
    /// server stops.
    pub fn shutdown(&self) {
        let _ = self.inner.provider.shutdown();
        if let Some(genai) = &self.inner.genai {
            let _ = genai.provider.shutdown();
        }
    }

    /// The cluster's open runs by status, as counted in PostgreSQL.
    pub fn set_open_runs(&self, counts: HashMap<RunStatus, i64>) {
        *self
            .inner
            .open_runs
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = counts;
    }

    /// How many runs this instance drives now.
    pub fn set_owned(&self, runs: usize) {
        self.inner
            .owned
            .store(runs as i64, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn record_claims(&self, runs: usize) {
        self.inner.claims.add(runs as u64, &[]);
    }

    pub fn record_leases_lost(&self, runs: usize) {
        self.inner.leases_lost.add(runs as u64, &[]);
    }

    pub fn record_journal_append(&self, elapsed: Duration) {
        self.inner.journal_append.record(elapsed.as_secs_f64(), &[]);
    }

    /// One model call's duration and outcome, and its tokens when it answered.
    pub fn record_model_call(&self, call: ModelCall<'_>) {
        let outcome = if call.outcome.is_ok() { "ok" } else { "error" };
        let labels = [
            KeyValue::new("agent", call.agent.as_str()),
            KeyValue::new("model", call.model.to_string()),
            KeyValue::new("provider", call.provider),
        ];
        let mut with_outcome = labels.to_vec();
        with_outcome.push(KeyValue::new("outcome", outcome));
        let seconds = call.elapsed.as_secs_f64();
        self.inner.llm_duration.record(seconds, &with_outcome);
        if let Ok((_, usage)) = call.outcome {
            for (kind, n) in [
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
            ] {
                let mut with_type = labels.to_vec();
                with_type.push(KeyValue::new("type", kind));
                self.inner.llm_tokens.add(n, &with_type);
            }
        }
        if let Some(genai) = &self.inner.genai {
            let mut attributes = vec![
                KeyValue::new("gen_ai.operation.name", "chat"),
                KeyValue::new("gen_ai.provider.name", call.provider),
                KeyValue::new("gen_ai.request.model", call.model.to_string()),
            ];
            match call.outcome {
                Ok((response_model, usage)) => {
                    attributes.push(KeyValue::new(
                        "gen_ai.response.model",
                        response_model.to_string(),
                    ));
                    genai.operation_duration.record(seconds, &attributes);
                    for (kind, n) in [
                        ("input", usage.input_tokens),
                        ("output", usage.output_tokens),
                    ] {
                        let mut with_type = attributes.clone();
                        with_type.push(KeyValue::new("gen_ai.token.type", kind));
                        genai.token_usage.record(n, &with_type);
                    }
                }
                Err(error_type) => {
                    attributes.push(KeyValue::new("error.type", error_type.to_string()));
                    genai.operation_duration.record(seconds, &attributes);
                }
            }
        }
    }

    /// What a committed batch of entries says: tool outcomes and durations,
    /// approval waits (`pending_before` is the approval the run waited for
    /// before the batch), runs that ended.
    pub fn record_committed(&self, events: &[Event], pending_before: Option<&PendingApproval>) {
        let mut denial: Option<Decision> = None;
        for event in events {
            let agent = event.agent.map_or("", AgentName::as_str);
            match &event.body {
                EventBody::RunResumed { decision, .. } => {
                    if let Some(pending) = pending_before {
                        let wait = (event.at - pending.requested_at)
                            .to_std()
                            .unwrap_or_default();
                        let decision = decision_name(*decision);
                        self.inner.hitl_wait.record(
                            wait.as_secs_f64(),
                            &[
                                KeyValue::new("tool", pending.tool.clone()),
                                KeyValue::new("decision", decision),
                            ],
                        );
                    }
                    denial = (*decision != Decision::Approved).then_some(*decision);
                }
                EventBody::ToolResult {
                    tool,
                    ok,
                    duration_ms,
                    ..
                } if tool != "delegate" => {
                    let outcome = match denial.take() {
                        Some(decision) => decision_name(decision),
                        None => {
                            self.inner.tool_duration.record(
                                *duration_ms as f64 / 1000.0,
                                &[KeyValue::new("tool", tool.clone())],
                            );
                            if *ok { "ok" } else { "error" }
                        }
                    };
                    self.tool_execution(agent, tool, outcome);
                }
                EventBody::AgentThought {
                    model,
                    cost_usd: Some(cost),
                    ..
                } => self.inner.llm_cost.add(
                    *cost,
                    &[
                        KeyValue::new("agent", agent.to_string()),
                        KeyValue::new("model", model.clone()),
                    ],
                ),
                EventBody::ToolInterrupted { tool, .. } => {
                    self.tool_execution(agent, tool, "interrupted")
                }
                EventBody::RunCompleted { .. } => self.finished("completed"),
                EventBody::RunFailed { .. } => self.finished("failed"),
                EventBody::RunCancelled { .. } => self.finished("cancelled"),
                _ => {}
            }
        }
    }

    fn tool_execution(&self, agent: &str, tool: &str, outcome: &'static str) {
        self.inner.tool_executions.add(
            1,
            &[
                KeyValue::new("agent", agent.to_string()),
                KeyValue::new("tool", tool.to_string()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    fn finished(&self, status: &'static str) {
        self.inner
            .runs_finished
            .add(1, &[KeyValue::new("status", status)]);
    }
}

fn decision_name(decision: Decision) -> &'static str {
    match decision {
        Decision::Approved => "approved",
        Decision::Rejected => "rejected",
        Decision::Expired => "expired",
    }
}
