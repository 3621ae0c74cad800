//! The one error type of the HTTP API and its mapping to status codes and the
//! contract's error body `{"error": {"code", "message"}}`.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::domain::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The message, and the methods the path allows (the `Allow` header).
    #[error("{0}")]
    MethodNotAllowed(String, &'static str),
    /// The client accepts no type the server can answer with.
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    RequestTimeout(String),
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
    UnsupportedMediaType(String),
    #[error("{0}")]
    MisdirectedRequest(String),
    #[error("{message}")]
    RateLimited {
        message: String,
        /// Seconds until a retry may succeed (the `Retry-After` header).
        retry_after_secs: u64,
    },
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
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(..) => "method_not_allowed",
            ApiError::NotAcceptable(_) => "not_acceptable",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::Conflict(_) => "conflict",
            ApiError::NoPendingApproval => "no_pending_approval",
            ApiError::AlreadyDecided => "already_decided",
            ApiError::AlreadyFinished => "already_finished",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::MisdirectedRequest(_) => "misdirected_request",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn run_not_found() -> ApiError {
        ApiError::NotFound("no run with this id".into())
    }

    /// The contract's error body, `{"error": {"code", "message"}}`. An
    /// internal error's cause is logged here, the one place every answer
    /// that carries it passes (HTTP answers and MCP tool results alike).
    pub fn body(&self) -> serde_json::Value {
        if let ApiError::Internal(error) = self {
            tracing::error!(error = format!("{error:#}"), "internal error");
        }
        json!({"error": {"code": self.code(), "message": self.to_string()}})
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(..) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_)
            | ApiError::NoPendingApproval
            | ApiError::AlreadyDecided
            | ApiError::AlreadyFinished => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MisdirectedRequest(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::MethodNotAllowed(_, allow) => {
                response.insert_header((header::ALLOW, *allow));
            }
            ApiError::RateLimited {
                retry_after_secs, ..
            } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            _ => {}
        }
        response.json(self.body())
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

impl From<crate::auth::store::Error> for ApiError {
    fn from(error: crate::auth::store::Error) -> Self {
        match error {
            crate::auth::store::Error::NameTaken(_) => ApiError::Conflict(error.to_string()),
            crate::auth::store::Error::Pool(e) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::Unavailable(
                    "the database is not reachable right now; retry shortly".into(),
                )
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NoPendingApproval => ApiError::NoPendingApproval,
            Refusal::AlreadyDecided => ApiError::AlreadyDecided,
            Refusal::AlreadyFinished => ApiError::AlreadyFinished,
            Refusal::ArgsChanged | Refusal::AlreadyPaused | Refusal::NotPaused => {
                ApiError::Conflict(refusal.to_string())
            }
            Refusal::Invalid(message) => ApiError::InvalidRequest(message),
            Refusal::Stale => ApiError::Unavailable(
                "the run cannot take commands right now; retry shortly".into(),
            ),
        }
    }
}
