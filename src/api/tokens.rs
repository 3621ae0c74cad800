//! Identity endpoints (contract section 9): `GET /api/me`, token management
//! for admins, and the dashboard's session (sign in, sign out).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::access::{Caller, SESSION_COOKIE, session_cookie};
use super::openapi::{ErrorBody, Revoked, TokenList};
use super::{ApiError, AppState, read_json};
use crate::auth::Identity;
use crate::auth::authenticator::Credential;
use crate::auth::{self, Role, store};

/// How long a dashboard session lasts; the page then asks to sign in again.
pub const SESSION_LIFETIME: chrono::Duration = chrono::Duration::hours(12);

/// The body of `POST /api/tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Unique, never reused (revoked tokens keep their names).
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    name: String,
    #[schema(value_type = Vec<Role>, min_items = 1)]
    roles: Vec<String>,
}

/// The answer of `POST /api/tokens`: the only time the token is shown.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct NewToken {
    name: String,
    roles: Vec<Role>,
    token: String,
}

/// The body of `POST /api/session`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    token: String,
}

/// `GET /api/me`
#[utoipa::path(
    get, path = "/api/me", tag = "access",
    summary = "Who the credential is",
    responses((status = 200, description = "The token's name and roles", body = Identity))
)]
pub async fn me(Caller(identity): Caller) -> HttpResponse {
    HttpResponse::Ok().json(identity)
}

/// `POST /api/tokens`: the new token is in this answer and nowhere else.
#[utoipa::path(
    post, path = "/api/tokens", tag = "access",
    summary = "Create a token",
    description = "The token is in this answer and nowhere else; the server keeps only its hash.",
    request_body = CreateToken,
    responses(
        (status = 201, description = "The new token", body = NewToken),
        (status = 409, description = "The name is taken (`conflict`)", body = ErrorBody),
    )
)]
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    Caller(caller): Caller,
    app: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body: CreateToken = read_json(&req, payload).await?.ok_or_else(|| {
        ApiError::InvalidRequest("a JSON body with `name` and `roles` is required".into())
    })?;
    if !auth::valid_token_name(&body.name) {
        return Err(ApiError::InvalidRequest(
            "`name` must be 1 to 64 characters of a-z, 0-9, `_` and `-`".into(),
        ));
    }
    let roles = auth::parse_roles(body.roles.iter().map(String::as_str))
        .map_err(ApiError::InvalidRequest)?;
    let token = auth::new_token();
    let client = app.pool.get().await.map_err(store::Error::from)?;
    let info = store::create_token(
        &client,
        &body.name,
        &auth::credential_hash(token.expose()),
        &roles,
        &caller.name,
        crate::journal::now(),
    )
    .await?;
    tracing::info!(name = %info.name, roles = ?info.roles, by = %caller.name, "token created");
    // The only copy of the token: no cache, proxy or browser keeps it.
    Ok(HttpResponse::Created()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(NewToken {
            name: info.name,
            roles: info.roles,
            token: token.expose().to_string(),
        }))
}

/// `GET /api/tokens`: never a token or its hash.
#[utoipa::path(
    get, path = "/api/tokens", tag = "access",
    summary = "List tokens",
    responses((status = 200, description = "Every token, revoked ones included; never a value or a hash", body = TokenList))
)]
pub async fn list(app: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let client = app.pool.get().await.map_err(store::Error::from)?;
    let tokens = store::list_tokens(&client).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "tokens": tokens })))
}

/// `DELETE /api/tokens/{name}`: felt here at once, elsewhere within a second.
#[utoipa::path(
    delete, path = "/api/tokens/{name}", tag = "access",
    summary = "Revoke a token",
    description = "Refused everywhere within a second; its sessions end. A token cannot revoke itself.",
    params(("name" = String, Path, description = "The token's name")),
    responses(
        (status = 200, description = "Revoked", body = Revoked),
        (status = 404, description = "No such token (`not_found`)", body = ErrorBody),
        (status = 409, description = "The token making the request cannot revoke itself (`conflict`)", body = ErrorBody),
    )
)]
pub async fn revoke(
    path: web::Path<String>,
    Caller(caller): Caller,
    app: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    if name == caller.name {
        return Err(ApiError::Conflict(
            "a token cannot revoke itself; revoke it with another admin token or `agent-server token revoke`".into(),
        ));
    }
    if !store::revoke_token(&app.pool, &name, crate::journal::now()).await? {
        return Err(ApiError::NotFound(format!("no token named `{name}`")));
    }
    app.authenticator.forget(&name);
    tracing::info!(name = %name, by = %caller.name, "token revoked");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "name": name, "revoked": true })))
}

/// `POST /api/session`: trades a token for a session cookie, so the page
/// never keeps the token where scripts could read it.
#[utoipa::path(
    post, path = "/api/session", tag = "access",
    summary = "Sign a browser in",
    description = "Sets the `agent_server_session` cookie (`HttpOnly`, `SameSite=Strict`). Changes made with the cookie must carry the server's own `Origin`.",
    request_body = SignIn,
    responses(
        (status = 204, description = "Signed in", headers(("Set-Cookie" = String, description = "The session cookie"))),
        (status = 401, description = "The token is unknown or revoked (`unauthorized`)", body = ErrorBody),
    )
)]
pub async fn sign_in(
    req: HttpRequest,
    payload: web::Payload,
    app: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body: SignIn = read_json(&req, payload)
        .await?
        .ok_or_else(|| ApiError::InvalidRequest("a JSON body with `token` is required".into()))?;
    let identity = app
        .authenticator
        .identify(Credential::Token, body.token.trim())
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the token is unknown or revoked".into()))?;
    let secret = auth::new_session_secret();
    let now = crate::journal::now();
    store::create_session(
        &app.pool,
        &auth::credential_hash(secret.expose()),
        &identity.name,
        now,
        now + SESSION_LIFETIME,
    )
    .await?;
    let secure = req.connection_info().scheme() == "https";
    Ok(HttpResponse::NoContent()
        .insert_header((
            actix_web::http::header::SET_COOKIE,
            cookie_header_value(secret.expose(), SESSION_LIFETIME.num_seconds(), secure),
        ))
        .finish())
}

/// `DELETE /api/session`: ends the session and clears the cookie.
#[utoipa::path(
    delete, path = "/api/session", tag = "access",
    summary = "Sign a browser out",
    responses((status = 204, description = "Signed out; the cookie is cleared", headers(("Set-Cookie" = String, description = "The cleared cookie"))))
)]
pub async fn sign_out(
    req: HttpRequest,
    app: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if let Some(secret) = session_cookie(req.headers()) {
        store::delete_session(&app.pool, &auth::credential_hash(&secret)).await?;
        app.authenticator
            .forget_credential(Credential::Session, &secret);
    }
    let secure = req.connection_info().scheme() == "https";
    Ok(HttpResponse::NoContent()
        .insert_header((
            actix_web::http::header::SET_COOKIE,
            cookie_header_value("", 0, secure),
        ))
        .finish())
}

/// The `Set-Cookie` value for the session: not readable by scripts, never
/// sent by another site's requests.
fn cookie_header_value(value: &str, max_age_secs: i64, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{}",
        if secure { "; Secure" } else { "" }
    )
}
