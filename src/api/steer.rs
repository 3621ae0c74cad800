//! The operator's endpoints (contract section 11): a message into a running
//! run, pause and unpause, and forking a run from any entry. Each but the
//! fork is a command sent to the run's owner through its inbox, answered
//! once journaled; a fork is a new run created here.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use uuid::Uuid;

use super::access::Caller;
use super::openapi::ErrorBody;
use super::runs::{run_id, send};
use super::{ApiError, AppState, read_json};
use crate::auth::Identity;
use crate::domain::Command;
use crate::journal::{self, Created, RunLimits, RunRecord};
use crate::run::state::Fork;
use crate::telemetry::trace::TraceRef;

/// The longest operator message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 8_192;

/// The body of `POST /api/runs/{id}/messages`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    /// What the run's acting agent reads before its next model call: some
    /// character that is not whitespace (the same set as a run's `task`).
    #[schema(
        min_length = 1,
        max_length = 8192,
        pattern = r"[^\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
    )]
    text: String,
}

/// The body of `POST /api/runs/{id}/pause` (optional).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    #[schema(max_length = 8192)]
    reason: Option<String>,
}

/// The body of `POST /api/runs/{id}/fork`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkBody {
    /// The last entry of the source the fork copies.
    #[schema(value_type = i64, minimum = 1)]
    at_seq: serde_json::Number,
    /// An operator's message the fork starts with (blank: none).
    #[schema(max_length = 8192)]
    message: Option<String>,
}

/// Checks an operator's text: not blank when `required`, not too long.
fn check_text(name: &str, text: &str, required: bool) -> Result<(), ApiError> {
    if required && text.chars().all(super::runs::is_blank) {
        return Err(ApiError::InvalidRequest(format!(
            "`{name}` must not be empty"
        )));
    }
    // A NUL character is kept as U+FFFD by the journal, like a model's.
    let chars = text.chars().count();
    if chars > MAX_MESSAGE_CHARS {
        return Err(ApiError::InvalidRequest(format!(
            "`{name}` has {chars} characters; the limit is {MAX_MESSAGE_CHARS}"
        )));
    }
    Ok(())
}

/// The run as it is now, after a command was journaled.
async fn current(app: &AppState, id: Uuid) -> Result<HttpResponse, ApiError> {
    let run = journal::get_run(&app.pool, id)
        .await?
        .ok_or_else(ApiError::run_not_found)?;
    Ok(HttpResponse::Ok().json(run))
}

/// `POST /api/runs/{id}/messages`
#[utoipa::path(
    post, path = "/api/runs/{id}/messages", tag = "runs",
    summary = "Send the run a message",
    description = "Answered once `OPERATOR_MESSAGE` is journaled. The run's acting agent reads the text as a user message before its next model call (after the decision, if an approval is pending); an agent that answered meanwhile reads it before it is done.",
    params(("id" = String, Path, description = "The run's id")),
    request_body = MessageBody,
    responses(
        (status = 200, description = "The run", body = RunRecord),
        (status = 404, description = "No such run (`not_found`)", body = ErrorBody),
        (status = 409, description = "The run has already finished (`already_finished`)", body = ErrorBody),
    )
)]
pub async fn message(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    Caller(caller): Caller,
    app: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // An id that cannot name a run is a 404 whatever the body.
    run_id(&path)?;
    let body: MessageBody = read_json(&req, payload)
        .await?
        .ok_or_else(|| ApiError::InvalidRequest("a JSON body with a `text` is required".into()))?;
    Ok(HttpResponse::Ok().json(send_message(&app, &caller, &path, body).await?))
}

/// Sends a run an operator's message as `caller` (`POST /api/runs/{id}/messages`
/// and the MCP tool `send_message`), answered with the run once
/// `OPERATOR_MESSAGE` is journaled.
pub async fn send_message(
    app: &AppState,
    caller: &Identity,
    id: &str,
    body: MessageBody,
) -> Result<RunRecord, ApiError> {
    let id = run_id(id)?;
    check_text("text", &body.text, true)?;
    let command = Command::Message {
        text: body.text,
        by: caller.name.clone(),
    };
    send(app, id, command).await?;
    journal::get_run(&app.pool, id)
        .await?
        .ok_or_else(ApiError::run_not_found)
}

/// `POST /api/runs/{id}/pause`
#[utoipa::path(
    post, path = "/api/runs/{id}/pause", tag = "runs",
    summary = "Pause a run",
    description = "Answered with the run, status `paused`, once `RUN_PAUSED` is journaled. A model call or tool already running finishes and is journaled; nothing new starts until the run is unpaused, also across restarts.",
    params(("id" = String, Path, description = "The run's id")),
    request_body(content = Option<PauseBody>, description = "Optional"),
    responses(
        (status = 200, description = "The paused run", body = RunRecord),
        (status = 404, description = "No such run (`not_found`)", body = ErrorBody),
        (status = 409, description = "`already_finished`, or `conflict` when it is already paused", body = ErrorBody),
    )
)]
pub async fn pause(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    Caller(caller): Caller,
    app: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = run_id(&path)?;
    let body: Option<PauseBody> = read_json(&req, payload).await?;
    let reason = body.and_then(|b| b.reason);
    if let Some(reason) = &reason {
        check_text("reason", reason, false)?;
    }
    let command = Command::Pause {
        reason,
        by: caller.name.clone(),
    };
    send(&app, id, command).await?;
    current(&app, id).await
}

/// `POST /api/runs/{id}/unpause`
#[utoipa::path(
    post, path = "/api/runs/{id}/unpause", tag = "runs",
    summary = "Unpause a run",
    description = "Answered once `RUN_UNPAUSED` is journaled; the run goes on where it stopped.",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run", body = RunRecord),
        (status = 404, description = "No such run (`not_found`)", body = ErrorBody),
        (status = 409, description = "`conflict` when the run is not paused, `already_finished` when it ended", body = ErrorBody),
    )
)]
pub async fn unpause(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    Caller(caller): Caller,
    app: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = run_id(&path)?;
    // No body is needed; an empty object is accepted too.
    let _: Option<NoFields> = read_json(&req, payload).await?;
    send(
        &app,
        id,
        Command::Unpause {
            by: caller.name.clone(),
        },
    )
    .await?;
    current(&app, id).await
}

/// The body of `POST /api/runs/{id}/unpause`: none, or `{}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

/// `POST /api/runs/{id}/fork`
#[utoipa::path(
    post, path = "/api/runs/{id}/fork", tag = "runs",
    summary = "Fork a run from one of its entries",
    description = "Creates a run whose journal holds copies of the source's entries `1..=at_seq` (same types, payloads and keys), then `RUN_FORKED`, then the message as an `OPERATOR_MESSAGE` when given; it goes on from there. Nothing the copies hold is done again: no tool with a result runs again, no answered model call is sent again, no decided approval is asked again; an approval pending at the fork point is asked again in the fork. Forks share the workspace.",
    params(("id" = String, Path, description = "The source run's id")),
    request_body = ForkBody,
    responses(
        (status = 201, description = "The fork", body = RunRecord),
        (status = 400, description = "`at_seq` is below 1, past the source's last entry, or at an entry that ends the run (`invalid_request`)", body = ErrorBody),
        (status = 404, description = "No such run (`not_found`)", body = ErrorBody),
        (status = 429, description = "The token is over a rate limit (`rate_limited`); nothing was created", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until a retry may succeed"))),
    )
)]
pub async fn fork(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    Caller(caller): Caller,
    app: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = run_id(&path)?;
    let body: ForkBody = read_json(&req, payload)
        .await?
        .ok_or_else(|| ApiError::InvalidRequest("a JSON body with `at_seq` is required".into()))?;
    let at_seq = body
        .at_seq
        .as_i64()
        .or_else(|| {
            body.at_seq
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        })
        .ok_or_else(|| ApiError::InvalidRequest("`at_seq` must be a whole number".into()))?;
    // A blank message is no message, as an empty box in the dashboard.
    let message = body.message.filter(|m| !m.trim().is_empty());
    if let Some(message) = &message {
        check_text("message", message, true)?;
    }
    let source = journal::get_run(&app.pool, id)
        .await?
        .ok_or_else(ApiError::run_not_found)?;
    if at_seq < 1 || at_seq > source.last_seq {
        return Err(ApiError::InvalidRequest(format!(
            "`at_seq` is {at_seq}; the run's entries are 1 to {}",
            source.last_seq
        )));
    }
    let copied = journal::events_after(&app.pool, id, 0, at_seq).await?;
    if copied.len() as i64 != at_seq {
        return Err(ApiError::Unavailable(
            "the source's journal could not be read whole; retry shortly".into(),
        ));
    }
    let fork = Fork {
        run_id: Uuid::new_v4(),
        from_run_id: id,
        from_seq: at_seq,
        by: caller.name.clone(),
        trace: TraceRef::new(
            req.headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok()),
        ),
        message,
    };
    let limits = RunLimits {
        per_minute: app.settings.access.runs_per_minute,
        max_open: app.settings.access.max_open_runs,
    };
    match app.registry.fork(&copied, fork, Some(limits)).await? {
        Err(refusal) => Err(refusal.into()),
        Ok(Created::New(run)) => Ok(HttpResponse::Created().json(run)),
        Ok(Created::Limited {
            message,
            retry_after_secs,
        }) => Err(ApiError::RateLimited {
            message,
            retry_after_secs,
        }),
        // Forks have no idempotency key.
        Ok(Created::Existing(run)) => Ok(HttpResponse::Ok().json(run)),
    }
}
