//! The one error type of the HTTP API and its mapping to status codes and the
//! contract's error body `{"error": {"code", "message"}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::run::actor::SteerError;
use crate::run::state::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("no approval with this id is waiting on this run")]
    NoPendingApproval,
    #[error("this approval was already decided")]
    AlreadyDecided,
    #[error("the run has already finished")]
    AlreadyFinished,
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    Unavailable(String),
    /// Details go to the log, never to the client.
    #[error("internal error; see the server log")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::NoPendingApproval => "no_pending_approval",
            ApiError::AlreadyDecided => "already_decided",
            ApiError::AlreadyFinished => "already_finished",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn run_not_found() -> ApiError {
        ApiError::NotFound("no run with this id".into())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_)
            | ApiError::NoPendingApproval
            | ApiError::AlreadyDecided
            | ApiError::AlreadyFinished => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(error) = self {
            tracing::error!(error = format!("{error:#}"), "internal error");
        }
        HttpResponse::build(self.status_code())
            .json(json!({"error": {"code": self.code(), "message": self.to_string()}}))
    }
}

impl From<crate::journal::Error> for ApiError {
    fn from(error: crate::journal::Error) -> Self {
        match error {
            crate::journal::Error::Pool(e) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::Unavailable(
                    "the database is not reachable right now; retry shortly".into(),
                )
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<SteerError> for ApiError {
    fn from(error: SteerError) -> Self {
        match error {
            SteerError::Refused(Refusal::NoPendingApproval) => ApiError::NoPendingApproval,
            SteerError::Refused(Refusal::AlreadyDecided) => ApiError::AlreadyDecided,
            SteerError::Refused(Refusal::AlreadyFinished) => ApiError::AlreadyFinished,
            SteerError::Refused(Refusal::Stale) | SteerError::Unavailable => {
                ApiError::Unavailable(error.to_string())
            }
        }
    }
}
