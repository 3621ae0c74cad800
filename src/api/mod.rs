//! The HTTP API (contract section 3): routes, request parsing and the error
//! body. Only this module knows HTTP status codes.

pub mod dashboard;
pub mod error;
pub mod runs;
pub mod ws;

use actix_web::{HttpRequest, HttpResponse, web};
use deadpool_postgres::Pool;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

pub use error::ApiError;

use crate::config::Settings;
use crate::run::RunRegistry;

/// The largest request body accepted (contract section 3).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub registry: RunRegistry,
    pub settings: std::sync::Arc<Settings>,
    /// Cancelled when the server stops, so WebSocket connections close at
    /// once instead of holding the graceful stop open.
    pub stopping: tokio_util::sync::CancellationToken,
}

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    dashboard::configure(cfg);
    cfg.service(
        web::resource("/api/runs")
            .route(web::post().to(runs::create))
            .route(web::get().to(runs::list))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/api/runs/{id}")
            .route(web::get().to(runs::get))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/api/runs/{id}/events")
            .route(web::get().to(runs::events))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/api/runs/{id}/resume")
            .route(web::post().to(runs::resume))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/api/runs/{id}/cancel")
            .route(web::post().to(runs::cancel))
            .default_service(web::to(method_not_allowed)),
    )
    .route("/api/ws", web::get().to(ws::connect))
    .route("/metrics", web::get().to(metrics))
    .route("/healthz", web::get().to(healthz))
    .route("/readyz", web::get().to(readyz));
}

/// `GET /metrics`: Prometheus' text format.
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.registry.deps().metrics.render())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    crate::journal::ping(&state.pool)
        .await
        .map_err(|_| ApiError::Unavailable("the database does not answer".into()))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}

async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed(format!(
        "{} is not allowed on {}",
        req.method(),
        req.path()
    )))
}

/// The answer for any path the API does not have.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// Reads the whole body, at most `MAX_BODY_BYTES`, and parses it as `T`.
/// An empty body gives `None`. Any content type is read as JSON, so a
/// `curl -d` without a header works too.
pub async fn read_json<T: DeserializeOwned>(
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
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))
}
