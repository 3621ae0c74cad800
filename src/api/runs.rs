//! The run endpoints: create, list, read, events, resume, cancel.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::access::Caller;
use super::openapi::{Decided, ErrorBody, EventPage, RunPage};
use super::{ApiError, AppState, read_json};
use crate::agents::AgentName;
use crate::auth::Identity;
use crate::config::MAX_APPROVAL_TIMEOUT_SECS;
use crate::domain::{ApprovalKind, RunStatus};
use crate::domain::{Command, CommandOutcome};
use crate::journal::{self, Created, RunLimits, RunRecord};
use crate::run::registry::CommandError;
use crate::run::state::{self, Env, Input, Start};
use crate::telemetry::trace::TraceRef;
use crate::tools;

/// The longest task accepted, in characters.
pub const MAX_TASK_CHARS: usize = 32_768;
/// The longest idempotency key accepted, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
/// The longest approval feedback accepted, in characters.
pub const MAX_FEEDBACK_CHARS: usize = 8_192;
/// The longest cancellation reason accepted, in characters.
pub const MAX_REASON_CHARS: usize = 8_192;

/// The body of `POST /api/runs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    /// What the agent should do: some character that is not whitespace, and
    /// no NUL characters.
    #[schema(
        min_length = 1,
        max_length = 32768,
        pattern = r"[^\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
    )]
    task: String,
    /// The agent the run starts with (default `orchestrator`).
    #[schema(value_type = Option<AgentName>)]
    agent: Option<String>,
    /// How long a dangerous call waits for a human (default `AGENT_APPROVAL_TIMEOUT_SECS`).
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 259200)]
    approval_timeout_secs: Option<serde_json::Number>,
    /// The same key again gives the same run; no NUL characters.
    #[schema(min_length = 1, max_length = 255)]
    idempotency_key: Option<String>,
    /// Limits after which the run waits for an approver to raise them
    /// (default `AGENT_RUN_MAX_TOKENS`, `AGENT_RUN_MAX_COST_USD`). Read as
    /// an object first: serde would take an array for a struct.
    #[schema(value_type = Option<BudgetBody>)]
    budget: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A run's limits as a request gives them.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetBody {
    /// Tokens, input and output, all agents together.
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 9000000000000000_i64)]
    max_tokens: Option<serde_json::Number>,
    /// USD at the prices of `AGENT_MODEL_PRICES`.
    #[schema(value_type = Option<f64>, exclusive_minimum = 0, maximum = 1000000000000_f64)]
    max_cost_usd: Option<serde_json::Number>,
}

/// The most tokens a budget or a raise may name.
const MAX_TOKENS: u64 = 9_000_000_000_000_000;

/// Whole tokens from a JSON number (`1000.0` is 1000), at least 1.
fn whole_tokens(number: &serde_json::Number, name: &str) -> Result<u64, ApiError> {
    match number.as_u64() {
        Some(n) if (1..=MAX_TOKENS).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::InvalidRequest(format!(
            "`{name}` must be at least 1"
        ))),
        None => match number.as_f64() {
            Some(f) if f.fract() == 0.0 && (1.0..=9.0e15).contains(&f) => Ok(f as u64),
            _ => Err(ApiError::InvalidRequest(format!(
                "`{name}` must be a whole number of tokens, at least 1"
            ))),
        },
    }
}

/// USD from a JSON number, more than 0.
fn usd(number: &serde_json::Number, name: &str) -> Result<f64, ApiError> {
    match number.as_f64() {
        Some(f) if f.is_finite() && f > 0.0 && f <= 1.0e12 => Ok(f),
        _ => Err(ApiError::InvalidRequest(format!(
            "`{name}` must be a number of USD greater than 0"
        ))),
    }
}

/// The body of `POST /api/runs/{id}/resume`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    /// The `approval_id` of the run's `pending_approval`.
    #[schema(format = Uuid)]
    approval_id: String,
    #[schema(value_type = DecisionName)]
    decision: String,
    /// What the model reads with the decision.
    #[schema(max_length = 8192)]
    feedback: Option<String>,
    /// The lowercase hex SHA-256 of the RFC 8785 canonical JSON of the
    /// arguments the human saw; refused with 409 if they are not the ones
    /// waiting.
    #[schema(pattern = r"^[0-9a-fA-F]{64}$")]
    args_sha256: Option<String>,
    /// With `approved` only: the arguments to run the tool with instead of
    /// the model's; they must fit the tool's schema.
    #[schema(value_type = Option<Object>)]
    args: Option<serde_json::Value>,
    /// A budget approval only: tokens to add to the run's token limit
    /// (ignored with `rejected`).
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 9000000000000000_i64)]
    add_tokens: Option<serde_json::Number>,
    /// A budget approval only: USD to add to the run's cost limit
    /// (ignored with `rejected`).
    #[schema(value_type = Option<f64>, exclusive_minimum = 0, maximum = 1000000000000_f64)]
    add_cost_usd: Option<serde_json::Number>,
}

/// A human's decision on an approval.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionName {
    Approved,
    Rejected,
}

/// The body of `POST /api/runs/{id}/cancel` (optional).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    #[schema(max_length = 8192)]
    reason: Option<String>,
}

/// Whitespace as the API document's `task` pattern names it: what counts as
/// blank must be the same set for the server and for any client that reads
/// the document (regex engines disagree on `\s`).
pub(super) fn is_blank(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | ' ' | '\u{1C}'..='\u{1F}' | '\u{85}' | '\u{A0}'
            | '\u{1680}' | '\u{2000}'..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}'
            | '\u{205F}' | '\u{3000}' | '\u{FEFF}'
    )
}

/// `POST /api/runs`
#[utoipa::path(
    post, path = "/api/runs", tag = "runs",
    summary = "Create a run",
    description = "Starts a run of `agent` on `task`. The same idempotency key gives the same run again, never a second one. The key may also come as the `Idempotency-Key` header (one key space; a header and a field that differ are a 400).",
    request_body = CreateRun,
    responses(
        (status = 201, description = "The new run", body = RunRecord),
        (status = 200, description = "The run made earlier with this idempotency key", body = RunRecord),
        (status = 409, description = "The idempotency key was used for a different task or agent (`conflict`)", body = ErrorBody),
        (status = 429, description = "The token is over a rate limit (`rate_limited`); nothing was created", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until a retry may succeed"))),
    )
)]
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    Caller(caller): Caller,
    app: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body: CreateRun = read_json(&req, payload)
        .await?
        .ok_or_else(|| ApiError::InvalidRequest("a JSON body with a `task` is required".into()))?;
    let header_key = header_key(&req)?;
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    match create_run(&app, &caller, body, header_key, traceparent).await? {
        CreatedRun::New(run) => Ok(HttpResponse::Created().json(run)),
        CreatedRun::Existing(run) => Ok(HttpResponse::Ok().json(run)),
    }
}

/// What `create_run` did: started a run, or found the one an idempotency
/// key named before (the HTTP answer is 201 or 200).
pub enum CreatedRun {
    New(RunRecord),
    Existing(RunRecord),
}

/// Starts a run for `caller` (`POST /api/runs`, and the MCP tool
/// `create_run`): the body's rules, the idempotency key (from the body, or
/// `header_key` from the request's `Idempotency-Key`; one key space), the
/// caller's rate limits, and the caller's name as `created_by`.
pub async fn create_run(
    app: &AppState,
    caller: &Identity,
    body: CreateRun,
    header_key: Option<String>,
    traceparent: Option<&str>,
) -> Result<CreatedRun, ApiError> {
    let task_chars = body.task.chars().count();
    if body.task.contains('\0') {
        return Err(ApiError::InvalidRequest(
            "`task` must not contain NUL characters".into(),
        ));
    }
    if body.task.chars().all(is_blank) {
        return Err(ApiError::InvalidRequest("`task` must not be empty".into()));
    }
    if task_chars > MAX_TASK_CHARS {
        return Err(ApiError::InvalidRequest(format!(
            "`task` has {task_chars} characters; the limit is {MAX_TASK_CHARS}"
        )));
    }
    let agent = match &body.agent {
        None => AgentName::Orchestrator,
        Some(name) => name.parse().map_err(ApiError::InvalidRequest)?,
    };
    // JSON has one number type: `60.0` is the whole number 60.
    let approval_timeout_secs = match body
        .approval_timeout_secs
        .map(|n| n.as_f64().unwrap_or(f64::NAN))
    {
        None => app.settings.approval_timeout_secs,
        Some(secs)
            if secs.fract() == 0.0 && (1.0..=MAX_APPROVAL_TIMEOUT_SECS as f64).contains(&secs) =>
        {
            secs as u64
        }
        Some(secs) => {
            return Err(ApiError::InvalidRequest(format!(
                "`approval_timeout_secs` is {secs}; it must be from 1 to {MAX_APPROVAL_TIMEOUT_SECS}"
            )));
        }
    };
    let idempotency_key = idempotency_key(header_key, body.idempotency_key)?;
    let budget = match body.budget {
        None => app.settings.default_budget,
        Some(given) => {
            let given: BudgetBody = serde_json::from_value(serde_json::Value::Object(given))
                .map_err(|e| ApiError::InvalidRequest(format!("`budget`: {e}")))?;
            crate::domain::Budget {
                max_tokens: given
                    .max_tokens
                    .as_ref()
                    .map(|n| whole_tokens(n, "budget.max_tokens"))
                    .transpose()?,
                max_cost_usd: given
                    .max_cost_usd
                    .as_ref()
                    .map(|n| usd(n, "budget.max_cost_usd"))
                    .transpose()?,
            }
        }
    };

    let start = Start {
        run_id: Uuid::new_v4(),
        agent,
        task: body.task,
        approval_timeout_secs,
        trace: TraceRef::new(traceparent),
        created_by: caller.name.clone(),
        budget,
    };
    let (task, agent) = (start.task.clone(), start.agent);
    let limits = RunLimits {
        per_minute: app.settings.access.runs_per_minute,
        max_open: app.settings.access.max_open_runs,
    };
    let run = match app
        .registry
        .create(start, idempotency_key, Some(limits))
        .await?
    {
        Created::New(run) => return Ok(CreatedRun::New(run)),
        Created::Existing(run) => run,
        Created::Limited {
            message,
            retry_after_secs,
        } => {
            return Err(ApiError::RateLimited {
                message,
                retry_after_secs,
            });
        }
    };
    if run.task != task || run.agent != agent {
        return Err(ApiError::Conflict(
            "this idempotency key was already used for a run with a different task or agent".into(),
        ));
    }
    Ok(CreatedRun::Existing(run))
}

/// The request's `Idempotency-Key` header, if any.
fn header_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    match req.headers().get("idempotency-key") {
        None => Ok(None),
        Some(value) => Ok(Some(
            value
                .to_str()
                .map_err(|_| {
                    ApiError::InvalidRequest(
                        "the Idempotency-Key header must be visible ASCII".into(),
                    )
                })?
                .to_string(),
        )),
    }
}

/// The key from the `Idempotency-Key` header or the body; both name one key.
fn idempotency_key(
    from_header: Option<String>,
    from_body: Option<String>,
) -> Result<Option<String>, ApiError> {
    let key = match (from_header, from_body) {
        (Some(h), Some(b)) if h != b => {
            return Err(ApiError::InvalidRequest(
                "the Idempotency-Key header and `idempotency_key` differ; send one".into(),
            ));
        }
        (h, b) => h.or(b),
    };
    match key {
        Some(k) if k.is_empty() || k.contains('\0') => Err(ApiError::InvalidRequest(
            "the idempotency key must be a non-empty string without NUL characters".into(),
        )),
        Some(k) if k.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS => Err(ApiError::InvalidRequest(
            format!("the idempotency key is longer than {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
        )),
        other => Ok(other),
    }
}

/// Query parameters as a map, refusing any the endpoint does not know.
fn query(req: &HttpRequest, known: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let params = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map_err(|e| ApiError::InvalidRequest(format!("invalid query string: {e}")))?
        .into_inner();
    if let Some(unknown) = params.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::InvalidRequest(format!(
            "unknown query parameter `{unknown}`; known: {}",
            known.join(", ")
        )));
    }
    Ok(params)
}

fn number_param(
    params: &HashMap<String, String>,
    name: &str,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, ApiError> {
    match params.get(name) {
        None => Ok(default),
        Some(text) => match text.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::InvalidRequest(format!(
                "`{name}` must be a whole number from {min} to {max}"
            ))),
        },
    }
}

/// A listing cursor: the last run's `created_at` in microseconds and its id.
fn encode_cursor(run: &RunRecord) -> String {
    format!("{}_{}", run.created_at.timestamp_micros(), run.id)
}

fn decode_cursor(text: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = text.split_once('_')?;
    // Exactly the form `encode_cursor` writes (and the API document says).
    let digits = micros.strip_prefix('-').unwrap_or(micros);
    if !(1..=16).contains(&digits.len())
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || id.len() != 36
    {
        return None;
    }
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((at, id.parse().ok()?))
}

/// `GET /api/runs?status=&q=&agent=&created_by=&limit=&before=`
#[utoipa::path(
    get, path = "/api/runs", tag = "runs",
    summary = "List runs, newest first",
    params(
        ("status" = Option<RunStatus>, Query, description = "Only runs with this status"),
        ("q" = Option<String>, Query, max_length = 200, description = "Only runs whose task contains this text, case-insensitively"),
        ("agent" = Option<AgentName>, Query, description = "Only runs started on this agent"),
        ("created_by" = Option<String>, Query, max_length = 64, description = "Only runs created by this token"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Runs per page (default 50)"),
        ("before" = Option<String>, Query, pattern = r"^-?[0-9]{1,16}_[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
            description = "The `next_before` of the previous page"),
    ),
    responses((status = 200, description = "A page of runs", body = RunPage))
)]
pub async fn list(req: HttpRequest, app: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut params = query(
        &req,
        &["status", "q", "agent", "created_by", "limit", "before"],
    )?;
    let limit = match params.remove("limit") {
        None => None,
        Some(text) => Some(text.parse::<i64>().map_err(|_| limit_error())?),
    };
    let query = ListQuery {
        status: params.remove("status"),
        q: params.remove("q"),
        agent: params.remove("agent"),
        created_by: params.remove("created_by"),
        limit,
        before: params.remove("before"),
    };
    Ok(HttpResponse::Ok().json(list_runs(&app, query).await?))
}

/// What a listing of runs is narrowed by: the query of `GET /api/runs`, and
/// the arguments of the MCP tools `list_runs` and `list_pending_approvals`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    pub q: Option<String>,
    pub agent: Option<String>,
    pub created_by: Option<String>,
    pub limit: Option<i64>,
    pub before: Option<String>,
}

/// The most runs a page holds, and how many when the caller does not say.
const MAX_PAGE: i64 = 200;
const DEFAULT_PAGE: i64 = 50;

fn limit_error() -> ApiError {
    ApiError::InvalidRequest(format!(
        "`limit` must be a whole number from 1 to {MAX_PAGE}"
    ))
}

/// A page of runs, newest first (`GET /api/runs` and the MCP listing tools).
pub async fn list_runs(app: &AppState, query: ListQuery) -> Result<RunPage, ApiError> {
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "`status` must be one of pending, running, waiting_approval, paused, completed, failed, cancelled; got `{s}`"
            ))
        })?),
    };
    let text =
        |name: &str, value: Option<String>, max: usize| -> Result<Option<String>, ApiError> {
            match value {
                None => Ok(None),
                Some(v) if v.chars().count() > max => Err(ApiError::InvalidRequest(format!(
                    "`{name}` must be at most {max} characters"
                ))),
                // An empty filter filters nothing, as a blank search box.
                Some(v) if v.is_empty() => Ok(None),
                // PostgreSQL text holds no NUL; the journal keeps U+FFFD instead,
                // so that is what a NUL in a search can match.
                Some(v) => Ok(Some(v.replace('\0', "\u{FFFD}"))),
            }
        };
    let filter = journal::RunFilter {
        status,
        q: text("q", query.q, 200)?,
        agent: query
            .agent
            .map(|a| a.parse::<AgentName>())
            .transpose()
            .map_err(ApiError::InvalidRequest)?,
        created_by: text("created_by", query.created_by, 64)?,
    };
    let limit = match query.limit {
        None => DEFAULT_PAGE,
        Some(n) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => return Err(limit_error()),
    };
    let before = match query.before.as_deref() {
        None => None,
        Some(text) => Some(decode_cursor(text).ok_or_else(|| {
            ApiError::InvalidRequest("`before` is not a cursor this server gave out".into())
        })?),
    };
    let runs = journal::list_runs(&app.pool, &filter, before, limit).await?;
    let next_before = (runs.len() as i64 == limit)
        .then(|| runs.last().map(encode_cursor))
        .flatten();
    Ok(RunPage { runs, next_before })
}

/// A path id; anything that is not a UUID cannot name a run.
pub(super) fn run_id(path: &str) -> Result<Uuid, ApiError> {
    path.parse().map_err(|_| ApiError::run_not_found())
}

/// `GET /api/runs/{id}`
#[utoipa::path(
    get, path = "/api/runs/{id}", tag = "runs",
    summary = "Read a run",
    params(("id" = String, Path, description = "The run's id (a UUID; anything else is not found)")),
    responses(
        (status = 200, description = "The run", body = RunRecord),
        (status = 404, description = "No such run (`not_found`)", body = ErrorBody),
    )
)]
pub async fn get(
    path: web::Path<String>,
    app: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(get_run(&app, &path).await?))
}

/// A run with its forks (`GET /api/runs/{id}` and the MCP tool `get_run`);
/// `id` as the caller wrote it.
pub async fn get_run(app: &AppState, id: &str) -> Result<RunRecord, ApiError> {
    let id = run_id(id)?;
    let mut run = journal::get_run(&app.pool, id)
        .await?
        .ok_or_else(ApiError::run_not_found)?;
    run.forks = Some(journal::forks_of(&app.pool, id).await?);
    Ok(run)
}

/// `GET /api/runs/{id}/events?after=N&limit=M`
#[utoipa::path(
    get, path = "/api/runs/{id}/events", tag = "runs",
    summary = "Read a run's journal",
    params(
        ("id" = String, Path, description = "The run's id"),
        ("after" = Option<i64>, Query, minimum = 0, description = "Only entries with a greater `seq` (default 0)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Entries at most (default 1000)"),
    ),
    responses(
        (status = 200, description = "Journal entries in `seq` order", body = EventPage),
        (status = 404, description = "No such run (`not_found`)", body = ErrorBody),
    )
)]
pub async fn events(
    req: HttpRequest,
    path: web::Path<String>,
    app: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = run_id(&path)?;
    let params = query(&req, &["after", "limit"])?;
    let after = number_param(&params, "after", 0, 0, i64::MAX)?;
    let limit = number_param(&params, "limit", 1000, 1, 1000)?;
    let events = journal::events_after(&app.pool, id, after, limit).await?;
    if events.is_empty() && journal::get_run(&app.pool, id).await?.is_none() {
        return Err(ApiError::run_not_found());
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"events": events})))
}

/// `POST /api/runs/{id}/resume`
#[utoipa::path(
    post, path = "/api/runs/{id}/resume", tag = "runs",
    summary = "Decide a pending approval",
    description = "Answered once the decision is in the journal. With `AGENT_REQUIRE_SECOND_APPROVER=true` the run's creator may not decide (403).",
    params(("id" = String, Path, description = "The run's id")),
    request_body = ResumeBody,
    responses(
        (status = 200, description = "The decision is journaled", body = Decided),
        (status = 404, description = "No such run (`not_found`)", body = ErrorBody),
        (status = 409, description = "`no_pending_approval`, `already_decided`, or `conflict` (the arguments waiting are not the ones named by `args_sha256`); nothing was journaled", body = ErrorBody),
    )
)]
pub async fn resume(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    Caller(caller): Caller,
    app: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // An id that cannot name a run is a 404 whatever the body.
    run_id(&path)?;
    let body: ResumeBody = read_json(&req, payload).await?.ok_or_else(|| {
        ApiError::InvalidRequest("a JSON body with `approval_id` and `decision` is required".into())
    })?;
    Ok(HttpResponse::Ok().json(decide(&app, &caller, &path, body).await?))
}

/// Decides a run's pending approval as `caller` (`POST /api/runs/{id}/resume`
/// and the MCP tool `decide_approval`), answered once the run's owner
/// journaled the decision or refused it.
pub async fn decide(
    app: &AppState,
    caller: &Identity,
    id: &str,
    body: ResumeBody,
) -> Result<Decided, ApiError> {
    let id = run_id(id)?;
    // The hyphenated form only, as the API document's `format: uuid` says.
    let approval_id: Uuid = Some(&body.approval_id)
        .filter(|id| id.len() == 36)
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| ApiError::InvalidRequest("`approval_id` must be a UUID".into()))?;
    let (approved, decision) = match body.decision.as_str() {
        "approved" => (true, DecisionName::Approved),
        "rejected" => (false, DecisionName::Rejected),
        other => {
            return Err(ApiError::InvalidRequest(format!(
                "`decision` must be approved or rejected; got `{other}`"
            )));
        }
    };
    if let Some(feedback) = &body.feedback
        && feedback.chars().count() > MAX_FEEDBACK_CHARS
    {
        return Err(ApiError::InvalidRequest(format!(
            "`feedback` is longer than {MAX_FEEDBACK_CHARS} characters"
        )));
    }
    if let Some(hash) = &body.args_sha256
        && !(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::InvalidRequest(
            "`args_sha256` must be 64 hex digits (the SHA-256 of the RFC 8785 canonical JSON of the arguments)".into(),
        ));
    }
    let run = journal::get_run(&app.pool, id)
        .await?
        .ok_or_else(ApiError::run_not_found)?;
    if app.settings.access.require_second_approver && run.created_by == caller.name {
        return Err(ApiError::Forbidden(format!(
            "four eyes: `{}` created this run and may not decide its approvals (AGENT_REQUIRE_SECOND_APPROVER); another approver must",
            caller.name
        )));
    }
    if let Some(args) = &body.args {
        if !approved {
            return Err(ApiError::InvalidRequest(
                "edited `args` go with `approved` only; a rejection runs nothing".into(),
            ));
        }
        // The tool that waits, if this approval is the one waiting; a stale
        // approval id is refused below by the run itself.
        if let Some(pending) = run
            .pending_approval
            .as_ref()
            .filter(|p| p.approval_id == approval_id && p.kind == ApprovalKind::Tool)
        {
            tools::check_args(&pending.tool, args, &app.registry.deps().tools.mcp)
                .await
                .map_err(|e| {
                    ApiError::InvalidRequest(format!(
                        "the edited arguments do not fit the tool: {e}"
                    ))
                })?;
        }
    }
    let add_tokens = body
        .add_tokens
        .as_ref()
        .map(|n| whole_tokens(n, "add_tokens"))
        .transpose()?;
    let add_cost_usd = body
        .add_cost_usd
        .as_ref()
        .map(|n| usd(n, "add_cost_usd"))
        .transpose()?;
    // A rejection raises nothing: amounts sent with it are ignored.
    let (add_tokens, add_cost_usd) = if approved {
        (add_tokens, add_cost_usd)
    } else {
        (None, None)
    };
    let command = Command::Decide {
        approval_id,
        approved,
        feedback: body.feedback.clone(),
        decided_by: caller.name.clone(),
        args_sha256: body.args_sha256.clone(),
        edited_args: body.args.clone(),
        add_tokens,
        add_cost_usd,
    };
    send(app, id, command).await?;
    Ok(Decided {
        run_id: id,
        approval_id,
        decision,
    })
}

/// `POST /api/runs/{id}/cancel`
#[utoipa::path(
    post, path = "/api/runs/{id}/cancel", tag = "runs",
    summary = "Cancel a run",
    description = "Answered once the cancellation is in the journal; the model request in flight is aborted and a running command is killed.",
    params(("id" = String, Path, description = "The run's id")),
    request_body(content = Option<CancelBody>, description = "Optional"),
    responses(
        (status = 200, description = "The cancelled run", body = RunRecord),
        (status = 404, description = "No such run (`not_found`)", body = ErrorBody),
        (status = 409, description = "The run has already finished (`already_finished`)", body = ErrorBody),
    )
)]
pub async fn cancel(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    Caller(caller): Caller,
    app: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // An id that cannot name a run is a 404 whatever the body.
    run_id(&path)?;
    let body: Option<CancelBody> = read_json(&req, payload).await?;
    Ok(HttpResponse::Ok().json(cancel_run(&app, &caller, &path, body).await?))
}

/// Cancels a run as `caller` (`POST /api/runs/{id}/cancel` and the MCP tool
/// `cancel_run`), answered with the run once the cancellation is journaled.
pub async fn cancel_run(
    app: &AppState,
    caller: &Identity,
    id: &str,
    body: Option<CancelBody>,
) -> Result<RunRecord, ApiError> {
    let id = run_id(id)?;
    let reason = body.and_then(|b| b.reason);
    if let Some(reason) = &reason
        && reason.chars().count() > MAX_REASON_CHARS
    {
        return Err(ApiError::InvalidRequest(format!(
            "`reason` is longer than {MAX_REASON_CHARS} characters"
        )));
    }
    send(
        app,
        id,
        Command::Cancel {
            reason,
            by: caller.name.clone(),
        },
    )
    .await?;
    journal::get_run(&app.pool, id)
        .await?
        .ok_or_else(ApiError::run_not_found)
}

/// Sends a human's command to the run, wherever it is driven, and waits
/// until the run's owner journaled it (or refused it). A finished run
/// refuses every command; nobody drives it, so its journal answers.
pub(super) async fn send(app: &AppState, id: Uuid, command: Command) -> Result<(), ApiError> {
    let run = journal::get_run(&app.pool, id)
        .await?
        .ok_or_else(ApiError::run_not_found)?;
    if !run.status.is_terminal() {
        match app.registry.command(id, &command).await {
            Ok(CommandOutcome::Done) => return Ok(()),
            Ok(CommandOutcome::Refused { reason }) => return Err(reason.into()),
            Ok(CommandOutcome::Withdrawn) | Err(CommandError::TimedOut) => {
                return Err(ApiError::Unavailable(CommandError::TimedOut.to_string()));
            }
            Err(CommandError::NotFound) => return Err(ApiError::run_not_found()),
            Err(CommandError::Journal(error)) => return Err(error.into()),
            // It ended while the command waited: answered from the journal.
            Err(CommandError::Finished) => {}
        }
    }
    refuse_from_journal(app, id, command.into()).await
}

/// Answers a command for a finished run: folds its journal and asks the
/// state machine, which refuses it.
async fn refuse_from_journal(app: &AppState, id: Uuid, input: Input) -> Result<(), ApiError> {
    let events = journal::load(&app.pool, id).await?;
    let Some(mut run) = state::fold(id, &events) else {
        return Err(ApiError::run_not_found());
    };
    if !run.is_terminal() {
        return Err(ApiError::Unavailable(
            "the run cannot take commands right now; retry shortly".into(),
        ));
    }
    let env = Env {
        now: Utc::now(),
        fresh_id: Uuid::new_v4(),
        jitter: 0.0,
        max_iterations: app.settings.max_iterations,
        models: Default::default(),
        prices: Default::default(),
        mcp: Default::default(),
        busy: false,
    };
    match state::step(&mut run, input, &env) {
        Err(refusal) => Err(refusal.into()),
        // A finished run refuses every command; journaling is the owner's
        // job, so never write from here.
        Ok(_) => Err(ApiError::AlreadyFinished),
    }
}
