//! Who may send which request (contract section 9), checked for every route
//! by one middleware, `guard`, before any handler runs:
//!
//! 1. `HEAD` is served as `GET` (the server drops the body).
//! 2. A `Host` that is not allowed gets `421` (DNS rebinding), except on the
//!    probes `/healthz`, `/readyz` and `/metrics`.
//! 3. `required_permission` says what the route needs; open routes go on.
//! 4. The credential (`Authorization: Bearer`, else the session cookie)
//!    becomes an `Identity`, or `401`; without the permission, `403`.
//! 5. A change made with the cookie must come from the server's own origin
//!    (or an allowed one), else `403`: a cross-site page cannot borrow the
//!    browser's session.
//!
//! Handlers read the identity with the `Caller` extractor.

use std::future::{Ready, ready};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};

use super::{ApiError, AppState};
use crate::auth::authenticator::Credential;
use crate::auth::{Identity, Permission};
use crate::config::AuthMode;

/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "agent_server_session";

/// The credential a request presented, kept with it so that a long-lived
/// connection (the WebSocket) can check it again later.
#[derive(Clone)]
pub struct Presented {
    pub kind: Credential,
    pub value: crate::config::Secret,
}

/// How the server decides who may do what; built once at start.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    pub mode: AuthMode,
    /// `Host` values accepted (lowercase `host` or `host:port`); `None`
    /// accepts any.
    pub allowed_hosts: Option<Vec<String>>,
    /// Origins besides the server's own that may send cookie-authenticated
    /// changes and open the WebSocket (`AGENT_SERVER_ALLOWED_ORIGINS`).
    pub allowed_origins: Vec<String>,
}

impl AccessPolicy {
    /// The policy for a server listening on `port`: under
    /// `AGENT_SERVER_AUTH=none` only the loopback names are accepted as
    /// `Host` unless `AGENT_SERVER_ALLOWED_HOSTS` says otherwise.
    pub fn new(settings: &crate::config::Settings, port: u16) -> AccessPolicy {
        let allowed_hosts = match (&settings.access.allowed_hosts, settings.access.mode) {
            (Some(hosts), _) => Some(hosts.clone()),
            (None, AuthMode::None) => Some(vec![
                format!("localhost:{port}"),
                format!("127.0.0.1:{port}"),
                format!("[::1]:{port}"),
            ]),
            (None, AuthMode::Tokens) => None,
        };
        AccessPolicy {
            mode: settings.access.mode,
            allowed_hosts,
            allowed_origins: settings.allowed_origins.clone(),
        }
    }

    fn host_allowed(&self, host: Option<&str>) -> bool {
        let Some(allowed) = &self.allowed_hosts else {
            return true;
        };
        let Some(host) = host.map(str::to_ascii_lowercase) else {
            return false;
        };
        let name = strip_port(&host);
        allowed
            .iter()
            .any(|entry| *entry == host || (!has_port(entry) && entry == name))
    }

    /// Whether `origin` is the server's own (as the `Host` names it) or one
    /// the operator allowed.
    pub fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        let own = host.map(str::to_ascii_lowercase).is_some_and(|host| {
            !host.is_empty()
                && (origin == format!("http://{host}") || origin == format!("https://{host}"))
        });
        own || self.allowed_origins.contains(&origin)
    }
}

fn has_port(host: &str) -> bool {
    // `[::1]:80` has a port; `[::1]` and `::1`-like names without brackets do not.
    match host.rfind(']') {
        Some(bracket) => host[bracket..].contains(':'),
        None => host.matches(':').count() == 1,
    }
}

fn strip_port(host: &str) -> &str {
    if has_port(host) {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    } else {
        host
    }
}

/// Paths that are not the API's: the dashboard's files and the probes.
fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/") || path == "/mcp" || path.starts_with("/mcp/")
}

/// The probes a load balancer or Prometheus calls by address, not by name.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// What a request needs, `None` for the open ones. `path` is the path the
/// router matches (percent-decoded the same way), so the check and the
/// route always agree on which endpoint a request reaches. Anything not
/// named here that changes something needs `Operate`.
pub fn required_permission(method: &Method, path: &str) -> Option<Permission> {
    if !is_api_path(path) || matches!(path, "/api/openapi.json" | "/api/session") {
        return None;
    }
    let reading = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Some(match segments.as_slice() {
        ["api", "tokens", ..] => Permission::ManageTokens,
        ["api", "runs", _, "resume"] if !reading => Permission::Decide,
        // The MCP endpoint's tools check their own roles (contract section 12).
        ["mcp", ..] => Permission::Read,
        _ if reading => Permission::Read,
        _ => Permission::Operate,
    })
}

/// The value of the session cookie, if the request has one.
pub fn session_cookie(headers: &header::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim_matches('"').to_string())
        .filter(|value| !value.is_empty())
}

/// The middleware; see the module documentation.
pub async fn guard(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.method() == Method::HEAD {
        // The connection still knows it answers a HEAD and sends no body.
        req.head_mut().method = Method::GET;
    }
    let Some(app) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Err(ApiError::Internal(anyhow::anyhow!("the application state is missing")).into());
    };
    let policy = &app.access;
    let path = req.match_info().as_str().to_string();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    if !is_probe(&path) && !policy.host_allowed(host.as_deref()) {
        return Err(ApiError::MisdirectedRequest(format!(
            "this server does not answer for the host `{}`; add it to AGENT_SERVER_ALLOWED_HOSTS",
            host.as_deref().unwrap_or("")
        ))
        .into());
    }
    let Some(permission) = required_permission(req.method(), &path) else {
        return next.call(req).await;
    };
    let (identity, presented) = match policy.mode {
        AuthMode::None => (Identity::anonymous(), None),
        AuthMode::Tokens => {
            let (identity, presented) = identify(&req, &app).await?;
            (identity, Some(presented))
        }
    };
    let by_cookie = presented
        .as_ref()
        .is_some_and(|p| p.kind == Credential::Session);
    require(&identity, permission)?;
    let changes = !matches!(*req.method(), Method::GET | Method::OPTIONS);
    if by_cookie && changes {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok());
        if !origin.is_some_and(|o| policy.origin_allowed(o, host.as_deref())) {
            return Err(ApiError::Forbidden(
                "a change made with the session cookie must come from this server's own page (the Origin header did not match); API clients send Authorization: Bearer instead".into(),
            )
            .into());
        }
    }
    req.extensions_mut().insert(identity);
    if let Some(presented) = presented {
        req.extensions_mut().insert(presented);
    }
    next.call(req).await
}

/// `403` unless `identity` holds `permission`. The route's check above, and
/// again per tool inside `POST /mcp`, whose tools need different roles.
pub fn require(identity: &Identity, permission: Permission) -> Result<(), ApiError> {
    if identity.may(permission) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "this needs the role {}; the token `{}` has {}",
        permission.roles(),
        identity.name,
        identity
            .roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// The request's identity and the credential that says so.
async fn identify(req: &ServiceRequest, app: &AppState) -> Result<(Identity, Presented), ApiError> {
    let (kind, value) = match req.headers().get(header::AUTHORIZATION) {
        Some(value) => {
            let value = value.to_str().unwrap_or_default().trim();
            let token = value
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim())
                .filter(|token| !token.is_empty())
                .ok_or_else(|| {
                    ApiError::Unauthorized(
                        "the Authorization header must be `Bearer <token>`".into(),
                    )
                })?;
            (Credential::Token, token.to_string())
        }
        None => match session_cookie(req.headers()) {
            Some(secret) => (Credential::Session, secret),
            None => {
                return Err(ApiError::Unauthorized(
                    "this needs a credential: send `Authorization: Bearer <token>`, or sign in on the dashboard".into(),
                ));
            }
        },
    };
    let identity = app
        .authenticator
        .identify(kind, &value)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| {
            ApiError::Unauthorized(match kind {
                Credential::Token => "the token is unknown or revoked".into(),
                Credential::Session => {
                    "the session has ended (signed out, expired, or its token was revoked); sign in again".into()
                }
            })
        })?;
    Ok((
        identity,
        Presented {
            kind,
            value: crate::config::Secret::new(value),
        },
    ))
}

/// The identity of the request's sender, as `guard` found it.
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Identity>()
                .cloned()
                .map(Caller)
                .ok_or_else(|| ApiError::Unauthorized("this needs a credential".into())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_what_the_contract_says() {
        use Permission::*;
        let cases = [
            ("GET", "/", None),
            ("GET", "/app.js", None),
            ("GET", "/healthz", None),
            ("GET", "/metrics", None),
            ("GET", "/api/openapi.json", None),
            ("POST", "/api/session", None),
            ("DELETE", "/api/session", None),
            ("GET", "/api/runs", Some(Read)),
            ("HEAD", "/api/runs/x/events", Some(Read)),
            ("GET", "/api/ws", Some(Read)),
            ("GET", "/api/me", Some(Read)),
            ("POST", "/api/runs", Some(Operate)),
            ("POST", "/api/runs/x/cancel", Some(Operate)),
            ("POST", "/api/runs/x/messages", Some(Operate)),
            ("POST", "/api/runs/x/resume", Some(Decide)),
            ("GET", "/api/tokens", Some(ManageTokens)),
            ("POST", "/api/tokens", Some(ManageTokens)),
            ("DELETE", "/api/tokens/ci", Some(ManageTokens)),
            ("POST", "/api/anything-new", Some(Operate)),
            ("GET", "/api/anything-new", Some(Read)),
            ("POST", "/mcp", Some(Read)),
        ];
        for (method, path, expected) in cases {
            let method: Method = method.parse().unwrap();
            assert_eq!(
                required_permission(&method, path),
                expected,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn hosts_are_matched_with_and_without_ports() {
        let policy = AccessPolicy {
            mode: AuthMode::Tokens,
            allowed_hosts: Some(vec!["agents.example.com".into(), "127.0.0.1:3200".into()]),
            allowed_origins: vec![],
        };
        assert!(policy.host_allowed(Some("agents.example.com")));
        assert!(policy.host_allowed(Some("Agents.Example.com:8443")));
        assert!(policy.host_allowed(Some("127.0.0.1:3200")));
        assert!(!policy.host_allowed(Some("127.0.0.1:3201")));
        assert!(!policy.host_allowed(Some("evil.example")));
        assert!(!policy.host_allowed(None));
    }

    #[test]
    fn origins_must_be_the_servers_own() {
        let policy = AccessPolicy {
            mode: AuthMode::Tokens,
            allowed_hosts: None,
            allowed_origins: vec!["https://ops.example.com".into()],
        };
        assert!(policy.origin_allowed("http://127.0.0.1:3200", Some("127.0.0.1:3200")));
        assert!(policy.origin_allowed("https://ops.example.com", Some("127.0.0.1:3200")));
        assert!(!policy.origin_allowed("http://evil.example", Some("127.0.0.1:3200")));
        assert!(!policy.origin_allowed("null", Some("127.0.0.1:3200")));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = header::HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "theme=dark; agent_server_session=ass_abc; x=1"
                .parse()
                .unwrap(),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("ass_abc"));
        headers.insert(header::COOKIE, "other=1".parse().unwrap());
        assert_eq!(session_cookie(&headers), None);
    }
}
