//! A run's trace. Each run has one trace for its whole life, across
//! restarts: its `TraceRef` (trace id, the root span's id, the caller's span
//! when `POST /api/runs` carried a `traceparent`) is journaled in
//! `RUN_STARTED`. Spans made later, by any process, name their parent by id:
//! the root span is the top agent's `invoke_agent {agent}`, a delegated
//! agent's span id is derived from the run and its `delegate` call, so it is
//! the same after a restart. Spans that cover waiting (an agent's activation,
//! an approval) are emitted when they end, with their journaled start time.
//!
//! Whether the run's trace is sampled is decided once, when the run is
//! created (by `OTEL_TRACES_SAMPLER`, or the caller's `traceparent` flags for
//! the parent-based samplers), and journaled with it, so every span of the
//! run, before and after a restart, follows the same decision.

use chrono::{DateTime, Utc};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use uuid::Uuid;

pub use crate::domain::TraceRef;

/// The `tracing` target of every span meant for export.
pub const TARGET: &str = "agent_server::trace";

/// The sampler `OTEL_TRACES_SAMPLER` (and `_ARG`) name, read once; the
/// SDK's own default configuration reads the same variables.
fn sampler() -> &'static dyn opentelemetry_sdk::trace::ShouldSample {
    static SAMPLER: std::sync::OnceLock<Box<dyn opentelemetry_sdk::trace::ShouldSample>> =
        std::sync::OnceLock::new();
    SAMPLER
        .get_or_init(|| opentelemetry_sdk::trace::Config::default().sampler)
        .as_ref()
}

/// The sampler's decision for a run's new trace, under the caller's span
/// (`Some((span id, sampled flag))`) or none.
fn decide(trace_id: &str, caller: Option<(&str, bool)>) -> bool {
    let trace = TraceId::from_hex(trace_id).unwrap_or(TraceId::INVALID);
    let parent = caller.map(|(span, sampled)| {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let span = SpanId::from_hex(span).unwrap_or(SpanId::INVALID);
        Context::new().with_remote_span_context(SpanContext::new(
            trace,
            span,
            flags,
            true,
            TraceState::default(),
        ))
    });
    let result = sampler().should_sample(
        parent.as_ref(),
        trace,
        "invoke_agent",
        &SpanKind::Internal,
        &[],
        &[],
    );
    matches!(
        result.decision,
        opentelemetry_sdk::trace::SamplingDecision::RecordAndSample
    )
}

impl TraceRef {
    /// A new trace, or a place in the caller's trace given a `traceparent`.
    pub fn new(traceparent: Option<&str>) -> TraceRef {
        let random = Uuid::new_v4().as_u128();
        let span_id = format!("{:016x}", (random as u64) | 1);
        match traceparent.and_then(parse_traceparent) {
            Some((trace_id, parent)) => {
                // The flags are the last field, already checked to be hex.
                let caller_sampled = traceparent
                    .and_then(|h| h.trim().rsplit('-').next())
                    .and_then(|flags| u8::from_str_radix(flags, 16).ok())
                    .is_some_and(|flags| flags & 1 == 1);
                TraceRef {
                    sampled: decide(&trace_id, Some((&parent, caller_sampled))),
                    trace_id,
                    span_id,
                    parent_span_id: Some(parent),
                }
            }
            None => {
                let trace_id = format!("{:032x}", Uuid::new_v4().as_u128());
                TraceRef {
                    sampled: decide(&trace_id, None),
                    trace_id,
                    span_id,
                    parent_span_id: None,
                }
            }
        }
    }

    fn trace_id(&self) -> TraceId {
        TraceId::from_hex(&self.trace_id).unwrap_or(TraceId::INVALID)
    }

    /// The span id of an agent's activation: the root for the top agent,
    /// else derived from the `delegate` call that started it.
    pub fn agent_span_id(&self, delegate_call: Option<&str>) -> SpanId {
        match delegate_call {
            None => SpanId::from_hex(&self.span_id).unwrap_or(SpanId::INVALID),
            Some(call) => {
                SpanId::from_bytes(fnv1a(&format!("{}/{call}", self.span_id)).to_be_bytes())
            }
        }
    }

    /// The context whose span is `span_id` of this trace, as a parent; it
    /// carries the run's sampling decision to the spans under it.
    pub fn context_of(&self, span_id: SpanId) -> Context {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let span = SpanContext::new(self.trace_id(), span_id, flags, true, TraceState::default());
        Context::new().with_remote_span_context(span)
    }

    /// The context of an agent's activation, as a parent.
    pub fn agent_context(&self, delegate_call: Option<&str>) -> Context {
        self.context_of(self.agent_span_id(delegate_call))
    }

    /// The root span's parent: the caller's span, or none.
    fn root_parent(&self) -> Context {
        match self
            .parent_span_id
            .as_deref()
            .and_then(|id| SpanId::from_hex(id).ok())
        {
            Some(parent) => self.context_of(parent),
            None => Context::new(),
        }
    }
}

/// `00-{trace id}-{span id}-{flags}` (W3C Trace Context), with non-zero ids.
pub fn parse_traceparent(header: &str) -> Option<(String, String)> {
    let mut parts = header.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && span.bytes().any(|b| b != b'0'))
    .then(|| (trace.to_ascii_lowercase(), span.to_ascii_lowercase()))
}

/// The `traceparent` of the current `tracing` span, for an outgoing request.
pub fn current_traceparent() -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = tracing::Span::current().context();
    let span = context.span().span_context().clone();
    span.is_valid()
        .then(|| format!("00-{}-{}-01", span.trace_id(), span.span_id()))
}

/// A span with known ids and times, emitted now (for what spans waiting).
pub struct FinishedSpan<'a> {
    pub name: String,
    /// The trace, for a span without a parent.
    pub trace_id: Option<TraceId>,
    pub span_id: Option<SpanId>,
    pub parent: Context,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub attributes: Vec<KeyValue>,
    pub error: Option<&'a str>,
}

pub fn emit(span: FinishedSpan<'_>) {
    if !super::exporting() {
        return;
    }
    let tracer = opentelemetry::global::tracer("agent-server");
    let builder = tracer
        .span_builder(span.name)
        .with_kind(SpanKind::Internal)
        .with_start_time(std::time::SystemTime::from(span.start))
        .with_attributes(span.attributes);
    PRESET_SPAN_ID.set(span.span_id);
    PRESET_TRACE_ID.set(span.trace_id);
    let mut otel = builder.start_with_context(&tracer, &span.parent);
    PRESET_SPAN_ID.set(None);
    PRESET_TRACE_ID.set(None);
    if let Some(error) = span.error {
        otel.set_attribute(KeyValue::new("error.type", error.to_string()));
        otel.set_status(opentelemetry::trace::Status::error(error.to_string()));
    }
    otel.end_with_timestamp(std::time::SystemTime::from(span.end));
}

/// Emits an agent's `invoke_agent {agent}` span when its activation ends.
pub fn emit_agent(
    trace: &TraceRef,
    run_id: Uuid,
    agent: crate::agents::AgentName,
    delegate_call: Option<&str>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    error: Option<&str>,
) {
    let parent = match delegate_call {
        None => trace.root_parent(),
        // A delegated agent sits under its parent; the parent of a delegate
        // call is always the top agent in this network.
        Some(_) => trace.agent_context(None),
    };
    emit(FinishedSpan {
        name: format!("invoke_agent {agent}"),
        trace_id: Some(trace.trace_id()),
        span_id: Some(trace.agent_span_id(delegate_call)),
        parent,
        start,
        end,
        attributes: vec![
            KeyValue::new("gen_ai.operation.name", "invoke_agent"),
            KeyValue::new("gen_ai.agent.name", agent.as_str()),
            KeyValue::new("gen_ai.conversation.id", run_id.to_string()),
            KeyValue::new("run.id", run_id.to_string()),
        ],
        error,
    });
}

thread_local! {
    /// The id the next span started on this thread must have; set by `emit`
    /// around starting a span whose id was decided earlier.
    static PRESET_SPAN_ID: std::cell::Cell<Option<SpanId>> = const { std::cell::Cell::new(None) };
    /// Likewise for the trace id of a span without a parent (a run's root).
    static PRESET_TRACE_ID: std::cell::Cell<Option<TraceId>> = const { std::cell::Cell::new(None) };
}

/// Random ids, except for a span `emit` starts with an id of its own.
#[derive(Debug, Default)]
pub struct PresetIds {
    random: opentelemetry_sdk::trace::RandomIdGenerator,
}

impl opentelemetry_sdk::trace::IdGenerator for PresetIds {
    fn new_trace_id(&self) -> TraceId {
        PRESET_TRACE_ID
            .get()
            .unwrap_or_else(|| self.random.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        PRESET_SPAN_ID
            .get()
            .unwrap_or_else(|| self.random.new_span_id())
    }
}

/// FNV-1a: a stable 64-bit hash (std's hasher may change between releases).
fn fnv1a(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_strictly() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(good),
            Some((
                "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                "00f067aa0ba902b7".into()
            ))
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_run_keeps_the_callers_sampling_decision_and_old_runs_are_sampled() {
        // The default sampler (parent-based, always on) follows the caller.
        let kept = TraceRef::new(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        let dropped = TraceRef::new(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        ));
        assert!(kept.sampled && !dropped.sampled);
        assert!(TraceRef::new(None).sampled);
        let flags = |t: &TraceRef| t.agent_context(None).span().span_context().trace_flags();
        assert!(flags(&kept).is_sampled() && !flags(&dropped).is_sampled());
        let old: TraceRef = serde_json::from_value(serde_json::json!({
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id": "00f067aa0ba902b7",
            "parent_span_id": null
        }))
        .unwrap();
        assert!(old.sampled);
    }

    #[test]
    fn a_run_joins_the_callers_trace_and_agent_spans_are_stable() {
        let trace = TraceRef::new(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        let fresh = TraceRef::new(None);
        assert_eq!(fresh.trace_id.len(), 32);
        assert!(fresh.parent_span_id.is_none());
        assert_eq!(
            trace.agent_span_id(Some("call_1")),
            trace.agent_span_id(Some("call_1"))
        );
        assert_ne!(
            trace.agent_span_id(Some("call_1")),
            trace.agent_span_id(None)
        );
        assert_eq!(trace.agent_span_id(None).to_string(), trace.span_id);
    }
}
