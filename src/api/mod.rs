//! The HTTP API (contract section 3): routes, request parsing and the error
//! body. Only this module knows HTTP status codes.

pub mod access;
pub mod dashboard;
pub mod error;
pub mod instances;
pub mod mcp;
pub mod openapi;
pub mod runs;
pub mod steer;
pub mod tokens;
pub mod wire;
pub mod ws;

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, Route, web};
use deadpool_postgres::Pool;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

pub use error::ApiError;

use crate::auth::Authenticator;
use crate::config::Settings;
use crate::run::RunRegistry;

/// The largest request body accepted (contract section 3).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// How long a request body may take to arrive (contract section 9): a body
/// that stops arriving must not hold a connection and its handler.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub registry: RunRegistry,
    pub settings: std::sync::Arc<Settings>,
    /// Turns credentials into identities (shared cache).
    pub authenticator: Authenticator,
    /// Who may send which request, from where.
    pub access: access::AccessPolicy,
    /// Cancelled when the server stops, so WebSocket connections close at
    /// once instead of holding the graceful stop open.
    pub stopping: tokio_util::sync::CancellationToken,
}

/// A path and its routes; any other method gets `405` with `Allow`.
pub(crate) fn resource(path: &str, allow: &'static str, routes: Vec<Route>) -> actix_web::Resource {
    routes
        .into_iter()
        .fold(web::resource(path), |resource, route| resource.route(route))
        .default_service(web::to(move |req: HttpRequest| async move {
            Err::<HttpResponse, _>(ApiError::MethodNotAllowed(
                format!(
                    "{} is not allowed on {}; allowed: {allow}",
                    req.method(),
                    req.path()
                ),
                allow,
            ))
        }))
}

/// Mounts every route. Who may call which is decided in one place,
/// `access::guard`, which wraps the whole application.
pub fn configure(cfg: &mut web::ServiceConfig) {
    dashboard::configure(cfg);
    cfg.service(resource(
        "/api/runs",
        "GET, HEAD, POST",
        vec![web::post().to(runs::create), web::get().to(runs::list)],
    ))
    .service(resource(
        "/api/runs/{id}",
        "GET, HEAD",
        vec![web::get().to(runs::get)],
    ))
    .service(resource(
        "/api/runs/{id}/events",
        "GET, HEAD",
        vec![web::get().to(runs::events)],
    ))
    .service(resource(
        "/api/runs/{id}/resume",
        "POST",
        vec![web::post().to(runs::resume)],
    ))
    .service(resource(
        "/api/runs/{id}/cancel",
        "POST",
        vec![web::post().to(runs::cancel)],
    ))
    .service(resource(
        "/api/runs/{id}/messages",
        "POST",
        vec![web::post().to(steer::message)],
    ))
    .service(resource(
        "/api/runs/{id}/pause",
        "POST",
        vec![web::post().to(steer::pause)],
    ))
    .service(resource(
        "/api/runs/{id}/unpause",
        "POST",
        vec![web::post().to(steer::unpause)],
    ))
    .service(resource(
        "/api/runs/{id}/fork",
        "POST",
        vec![web::post().to(steer::fork)],
    ))
    .service(resource(
        "/api/me",
        "GET, HEAD",
        vec![web::get().to(tokens::me)],
    ))
    .service(resource(
        "/api/tokens",
        "GET, HEAD, POST",
        vec![web::post().to(tokens::create), web::get().to(tokens::list)],
    ))
    .service(resource(
        "/api/tokens/{name}",
        "DELETE",
        vec![web::delete().to(tokens::revoke)],
    ))
    .service(resource(
        "/api/session",
        "POST, DELETE",
        vec![
            web::post().to(tokens::sign_in),
            web::delete().to(tokens::sign_out),
        ],
    ))
    .service(resource(
        "/api/instances",
        "GET, HEAD",
        vec![web::get().to(instances::list)],
    ))
    .service(resource(
        "/api/openapi.json",
        "GET, HEAD",
        vec![web::get().to(openapi::document)],
    ))
    .service(resource("/api/ws", "GET", vec![web::get().to(ws::connect)]))
    .service(resource("/mcp", "POST", vec![web::post().to(mcp::post)]))
    .service(resource(
        "/metrics",
        "GET, HEAD",
        vec![web::get().to(metrics)],
    ))
    .service(resource(
        "/healthz",
        "GET, HEAD",
        vec![web::get().to(healthz)],
    ))
    .service(resource(
        "/readyz",
        "GET, HEAD",
        vec![web::get().to(readyz)],
    ));
}

/// `GET /metrics`: Prometheus' text format.
#[utoipa::path(
    get, path = "/metrics", tag = "probes",
    summary = "Metrics in Prometheus' text format",
    responses((status = 200, description = "The metrics", content_type = "text/plain"))
)]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // The cluster's open runs are counted now, so the gauges are current;
    // without the database the last counts are shown.
    let metrics = &state.registry.deps().observer.metrics;
    if let Ok(counts) = crate::journal::open_run_counts(&state.pool).await {
        metrics.set_open_runs(counts);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.registry.deps().observer.metrics.render())
}

/// `GET /healthz`
#[utoipa::path(
    get, path = "/healthz", tag = "probes",
    summary = "Whether the process runs",
    responses((status = 200, description = "It runs", body = openapi::Status))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`
#[utoipa::path(
    get, path = "/readyz", tag = "probes",
    summary = "Whether the database answers",
    responses(
        (status = 200, description = "Ready", body = openapi::Status),
        (status = 503, description = "The database does not answer (`unavailable`)", body = openapi::ErrorBody),
    )
)]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    crate::journal::ping(&state.pool)
        .await
        .map_err(|_| ApiError::Unavailable("the database does not answer".into()))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}

/// The answer for any path the API does not have.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// Reads the whole body, at most `MAX_BODY_BYTES` within `BODY_TIMEOUT`,
/// and parses it as `T`. An empty body gives `None`. A body must be declared
/// `application/json`: a cross-site form or `text/plain` post (which a
/// browser sends without asking) is refused before anything happens.
pub async fn read_json<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Option<T>, ApiError> {
    match tokio::time::timeout(BODY_TIMEOUT, read_body(req, payload)).await {
        Ok(body) => body,
        Err(_) => Err(ApiError::RequestTimeout(format!(
            "the request body did not arrive within {} seconds",
            BODY_TIMEOUT.as_secs()
        ))),
    }
}

/// Whether the request says its body is JSON (`application/json`, or a
/// `+json` type, with any parameters).
fn declares_json(req: &HttpRequest) -> bool {
    let Some(value) = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

async fn read_body<T: DeserializeOwned>(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<Option<T>, ApiError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::InvalidRequest(format!("the request body could not be read: {e}"))
        })?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
        }
        body.extend_from_slice(&chunk);
    }
    // No body, or blanks not declared as JSON, is no body; blanks
    // declared as JSON are not a JSON document.
    if body.is_empty() || (body.iter().all(u8::is_ascii_whitespace) && !declares_json(req)) {
        return Ok(None);
    }
    if !declares_json(req) {
        return Err(ApiError::UnsupportedMediaType(
            "the request body must be JSON, sent with `Content-Type: application/json`".into(),
        ));
    }
    // `null` is no body, like an empty one.
    serde_json::from_slice::<Option<T>>(&body)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))
}
