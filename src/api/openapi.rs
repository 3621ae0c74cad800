//! The OpenAPI 3.1 document served at `GET /api/openapi.json`, generated
//! from the code: each handler's `#[utoipa::path]`, the schemas derived on
//! the types the API reads and writes, and, for every operation, what
//! `access::required_permission` says it needs (its security and its 401
//! and 403) and the errors any request can meet on its way (a body that is
//! not JSON, too large or too slow, a host not allowed, the parser's 400).

use std::sync::OnceLock;

use actix_web::HttpResponse;
use actix_web::http::Method;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use super::access::required_permission;
use super::runs::DecisionName;
use crate::agents::AgentName;

/// Every error answer: `{"error": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A snake_case code, like `invalid_request` or `forbidden`.
    code: String,
    /// A sentence for a human.
    message: String,
}

/// A page of runs.
#[derive(Serialize, ToSchema)]
pub struct RunPage {
    pub runs: Vec<crate::journal::RunRecord>,
    /// The cursor for the next page (`before`), `null` on the last one.
    pub next_before: Option<String>,
}

/// The type of a journal entry (contract section 4).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(dead_code)] // Documents the values `EventBody::type_name` gives.
pub enum EventType {
    RunStarted,
    AgentStarted,
    LlmCalled,
    AgentThought,
    ToolCalled,
    RunSuspended,
    RunResumed,
    ToolStarted,
    ToolResult,
    ToolInterrupted,
    AgentFinished,
    RunCompleted,
    RunFailed,
    RunCancelled,
    OperatorMessage,
    RunPaused,
    RunUnpaused,
    RunForked,
    BudgetExceeded,
    BudgetRaised,
}

/// One journal entry; its `payload` depends on its `type`.
#[derive(Serialize, ToSchema)]
#[schema(as = Event)]
pub struct EventDoc {
    #[schema(minimum = 1)]
    seq: i64,
    r#type: EventType,
    agent: Option<AgentName>,
    at: DateTime<Utc>,
    /// Unique within the run.
    key: String,
    #[schema(value_type = Object)]
    payload: Value,
}

/// A page of journal entries.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    events: Vec<EventDoc>,
}

/// A decision, once journaled.
#[derive(Serialize, ToSchema)]
pub struct Decided {
    pub run_id: Uuid,
    pub approval_id: Uuid,
    pub decision: DecisionName,
}

/// The tokens.
#[derive(Serialize, ToSchema)]
pub struct TokenList {
    tokens: Vec<crate::auth::store::TokenInfo>,
}

/// A revoked token.
#[derive(Serialize, ToSchema)]
pub struct Revoked {
    name: String,
    revoked: bool,
}

/// A probe's answer.
#[derive(Serialize, ToSchema)]
pub struct Status {
    status: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agent-server",
        description = "Runs LLM agents durably on PostgreSQL and lets people watch and steer them. Every `/api` route but `/api/openapi.json` and `/api/session` needs a token (`Authorization: Bearer …`) or the dashboard's session cookie, with the role each operation names.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(
        super::runs::create,
        super::runs::list,
        super::runs::get,
        super::runs::events,
        super::runs::resume,
        super::runs::cancel,
        super::steer::message,
        super::steer::pause,
        super::steer::unpause,
        super::steer::fork,
        super::tokens::me,
        super::tokens::create,
        super::tokens::list,
        super::tokens::revoke,
        super::tokens::sign_in,
        super::tokens::sign_out,
        super::ws::connect,
        super::mcp::post,
        super::instances::list,
        document,
        super::healthz,
        super::readyz,
        super::metrics,
        super::dashboard::index,
        super::dashboard::file,
    ),
    components(schemas(ErrorBody, crate::journal::RunRecord, EventDoc)),
    tags(
        (name = "runs", description = "Runs and their journals"),
        (name = "access", description = "Who is asking: tokens and the dashboard's session"),
        (name = "live", description = "The WebSocket feed"),
        (name = "mcp", description = "agent-server as an MCP server (Streamable HTTP, stateless)"),
        (name = "cluster", description = "The instances sharing the database"),
        (name = "probes", description = "Health, readiness and metrics; open"),
        (name = "dashboard", description = "The web dashboard; open (the page signs in)"),
    )
)]
struct ApiDoc;

/// `GET /api/openapi.json`
#[utoipa::path(
    get, path = "/api/openapi.json", tag = "probes",
    summary = "This document",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
pub async fn document() -> HttpResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.get_or_init(|| build().to_string()).clone())
}

/// The whole document as JSON.
pub fn build() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    add_access(&mut doc);
    add_rules(&mut doc);
    add_mcp(&mut doc);
    doc
}

/// The messages of `POST /mcp`: JSON-RPC, which the MCP module describes.
fn add_mcp(doc: &mut Value) {
    if let (Some(schemas), Value::Object(mcp)) = (
        doc["components"]["schemas"].as_object_mut(),
        super::mcp::schemas(),
    ) {
        schemas.extend(mcp);
    }
    let operation = &mut doc["paths"]["/mcp"]["post"];
    if !operation.is_object() {
        return;
    }
    operation["requestBody"]["content"]["application/json"]["schema"] =
        json!({"$ref": "#/components/schemas/McpMessage"});
    operation["responses"]["200"]["content"]["application/json"]["schema"] =
        json!({"$ref": "#/components/schemas/McpAnswer"});
    if let Some(parameters) = operation["parameters"].as_array_mut() {
        for parameter in parameters {
            if parameter["name"] == "MCP-Protocol-Version" {
                parameter["schema"] = json!({"type": "string", "enum": super::mcp::revisions()});
            }
        }
    }
}

/// The request rules that the derived schemas cannot say by themselves.
fn add_rules(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    // PostgreSQL text cannot hold U+0000, and a task or key that silently
    // changed would not be the one sent.
    for field in ["task", "idempotency_key"] {
        if let Some(property) = schemas["CreateRun"]["properties"][field].as_object_mut() {
            // `type` too, or `null` (no key) would match the `not`.
            property.insert(
                "not".into(),
                json!({"type": "string", "pattern": "\\u0000"}),
            );
        }
    }
    // Edited arguments go with an approval only.
    if let Some(resume) = schemas["ResumeBody"].as_object_mut() {
        resume.insert(
            "if".into(),
            json!({"properties": {"decision": {"const": "rejected"}}, "required": ["decision"]}),
        );
        resume.insert(
            "then".into(),
            json!({"properties": {"args": {"type": "null"}}}),
        );
    }
}

/// An error answer in the document.
fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

/// Adds the security schemes, each operation's security requirement and
/// role, and the errors that every request can meet.
fn add_access(doc: &mut Value) {
    doc["components"]["securitySchemes"] = json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A token from `POST /api/tokens`, `agent-server token create`, or the admin token the first start writes to `{data dir}/admin-token`."
        },
        "session": {
            "type": "apiKey",
            "in": "cookie",
            "name": super::access::SESSION_COOKIE,
            "description": "The dashboard's session (`POST /api/session`). Changes made with it must carry the server's own `Origin`."
        }
    });
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in item.iter_mut() {
            let (Ok(method), Some(operation)) = (
                method.to_ascii_uppercase().parse::<Method>(),
                operation.as_object_mut(),
            ) else {
                continue;
            };
            let probe = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
            let with_body = operation.contains_key("requestBody");
            let responses = operation
                .entry("responses")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            let Some(responses) = responses else { continue };
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status)
                    .or_insert_with(|| error(description));
            };
            add("400", "The request is not valid (`invalid_request`)");
            add(
                "408",
                "The request did not arrive in time (`request_timeout`)",
            );
            add(
                "500",
                "The server failed; the log has the details (`internal`)",
            );
            add(
                "503",
                "The database is not reachable right now (`unavailable`)",
            );
            if !probe {
                add(
                    "421",
                    "The `Host` is not one this server answers for (`misdirected_request`)",
                );
            }
            if with_body {
                add(
                    "413",
                    "The body is larger than 256 KiB (`payload_too_large`)",
                );
                add(
                    "415",
                    "The body is not declared `application/json` (`unsupported_media_type`)",
                );
            }
            let permission = required_permission(&method, path);
            if let Some(permission) = permission {
                add(
                    "401",
                    "No credential, or an unknown, revoked or malformed one (`unauthorized`)",
                );
                add(
                    "403",
                    "The credential lacks the role, or a cookie-authenticated change came from another origin (`forbidden`)",
                );
                operation.insert("security".into(), json!([{"bearer": []}, {"session": []}]));
                let note = format!("Needs the role {}.", permission.roles());
                let description = match operation.get("description").and_then(Value::as_str) {
                    Some(text) => format!("{text}\n\n{note}"),
                    None => note,
                };
                operation.insert("description".into(), Value::String(description));
            } else {
                operation.insert(
                    "security".into(),
                    Value::Array(vec![Value::Object(Map::new())]),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_security() {
        let doc = build();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in [
            ("/api/runs", "post"),
            ("/api/runs", "get"),
            ("/api/runs/{id}", "get"),
            ("/api/runs/{id}/events", "get"),
            ("/api/runs/{id}/resume", "post"),
            ("/api/runs/{id}/cancel", "post"),
            ("/api/me", "get"),
            ("/api/tokens", "post"),
            ("/api/tokens", "get"),
            ("/api/tokens/{name}", "delete"),
            ("/api/session", "post"),
            ("/api/session", "delete"),
            ("/api/ws", "get"),
            ("/mcp", "post"),
            ("/api/instances", "get"),
            ("/api/openapi.json", "get"),
            ("/healthz", "get"),
            ("/readyz", "get"),
            ("/metrics", "get"),
            ("/", "get"),
            ("/static/{file}", "get"),
        ] {
            let operation = &paths[path][method];
            assert!(operation.is_object(), "{method} {path} is documented");
            let open = operation["security"] == json!([{}]);
            let needs = required_permission(&method.to_uppercase().parse().unwrap(), path);
            assert_eq!(open, needs.is_none(), "{method} {path}");
            if !open {
                assert!(operation["responses"]["401"].is_object(), "{method} {path}");
                assert!(operation["responses"]["403"].is_object(), "{method} {path}");
            }
        }
        let resume = &paths["/api/runs/{id}/resume"]["post"];
        assert!(
            resume["description"]
                .as_str()
                .unwrap()
                .contains("approver or admin")
        );
        assert!(resume["responses"]["415"].is_object());
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
