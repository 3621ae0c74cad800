//! `POST /mcp`: agent-server as an MCP server (contract section 12), over
//! the Streamable HTTP transport, stateless, with the protocol's types from
//! the official SDK (`rmcp::model`).
//!
//! The SDK's own server transport is built on tower and hyper; this is the
//! same transport in actix, kept small because we offer no server-initiated
//! messages: one POST carries one JSON-RPC message; a request is answered
//! with `application/json` and its response, anything else with `202` and no
//! body. There is no session (no `Mcp-Session-Id`), so any instance answers
//! any POST, and `GET` (a stream from the server) and `DELETE` (ending a
//! session) are `405`.
//!
//! Who may call is `access::guard`'s, as for every API route: no credential
//! is a `401` on the POST itself. Each tool then needs the role of its HTTP
//! twin, and runs the twin's own function (`tools`); a refusal the twin
//! would answer with an HTTP error is a tool result with `isError`, so the
//! client's model reads it.
//!
//! Errors before a message is read (credentials, `Accept`, the protocol
//! version header, the body's type, size and JSON) are HTTP errors with the
//! API's error body, like on every route. A message that is not one
//! JSON-RPC message (a batch, unknown members) is a `400` the same way. A
//! request with an unknown method is answered `-32601`, with parameters that
//! do not fit its method `-32602`.

pub mod tools;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use rmcp::model::{
    CallToolRequestParams, ClientJsonRpcMessage, ClientRequest, ErrorCode, ErrorData,
    Implementation, InitializeRequestParams, InitializeResult, JsonRpcMessage, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, RequestId, ServerCapabilities, ServerJsonRpcMessage,
    ServerResult, ToolsCapability,
};
use serde_json::{Value, json};

use super::access::Caller;
use super::{ApiError, AppState, read_json};
use crate::auth::Identity;

/// The newest protocol revision spoken here. Later revisions replace the
/// `initialize` handshake with per-request metadata, which this transport
/// does not offer; a client that asks for one is answered with this one.
const NEWEST: ProtocolVersion = ProtocolVersion::V_2025_11_25;

/// The revisions spoken here, oldest first: every one with the handshake.
fn supported() -> &'static [ProtocolVersion] {
    ProtocolVersion::known_up_to(&NEWEST)
}

/// The revisions spoken here by name, for the API document.
pub fn revisions() -> Vec<&'static str> {
    supported().iter().map(ProtocolVersion::as_str).collect()
}

/// What a client's model reads about the server when it connects.
const INSTRUCTIONS: &str = "agent-server runs LLM agents durably: start runs, read them and their pending approvals, and act on them as a human would (decide an approval naming the args_sha256 of the arguments you were shown, send a message, cancel). Each tool needs the role its HTTP API twin needs, and answers with the same JSON.";

/// The members a JSON-RPC 2.0 message may have.
const MEMBERS: [&str; 6] = ["jsonrpc", "id", "method", "params", "result", "error"];

/// The members of a JSON-RPC error object.
const ERROR_MEMBERS: [&str; 3] = ["code", "message", "data"];

/// `POST /mcp`
#[utoipa::path(
    post, path = "/mcp", tag = "mcp",
    summary = "MCP (Streamable HTTP): one JSON-RPC message",
    description = "agent-server as an MCP server, stateless: no session, no stream from the server (GET and DELETE are 405). A request (`initialize`, `ping`, `tools/list`, `tools/call`) is answered with its JSON-RPC response; a notification or a response is accepted with 202. The tools are `create_run`, `get_run`, `list_runs`, `list_pending_approvals`, `decide_approval`, `cancel_run` and `send_message`, each needing the role of its HTTP twin; a refusal is a tool result with `isError` and the API's error body as its text. An unknown method is answered with the JSON-RPC error -32601, parameters that do not fit with -32602.",
    params(
        ("MCP-Protocol-Version" = Option<String>, Header,
            description = "The protocol revision the client negotiated; one this server does not speak is a 400"),
    ),
    request_body(content = Object, description = "One JSON-RPC 2.0 message; batches are refused"),
    responses(
        (status = 200, description = "The JSON-RPC response to a request", content_type = "application/json"),
        (status = 202, description = "A notification or a response, accepted"),
        (status = 400, description = "Not one JSON-RPC message, or a protocol revision this server does not speak (`invalid_request`)", body = super::openapi::ErrorBody),
        (status = 406, description = "The `Accept` header allows no JSON (`not_acceptable`)", body = super::openapi::ErrorBody),
    )
)]
pub async fn post(
    req: HttpRequest,
    payload: web::Payload,
    Caller(caller): Caller,
    app: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    check_accept(&req)?;
    check_protocol_version(&req)?;
    let body: Value = read_json(&req, payload)
        .await?
        .ok_or_else(|| ApiError::InvalidRequest("a JSON-RPC message is required".into()))?;
    let JsonRpcMessage::Request(request) = parse(body)? else {
        // Notifications need nothing from a stateless server, and it never
        // asks the client anything, so a response answers nothing here.
        return Ok(HttpResponse::Accepted().finish());
    };
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let answer = answer(&app, &caller, traceparent, request.id, request.request).await;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .json(answer))
}

/// `406` when the client sent `Accept` and it allows no JSON. A missing
/// header accepts anything; `text/event-stream` need not be listed, since
/// no answer here is a stream.
fn check_accept(req: &HttpRequest) -> Result<(), ApiError> {
    let mut ranges = req
        .headers()
        .get_all(header::ACCEPT)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .peekable();
    if ranges.peek().is_none() {
        return Ok(());
    }
    let json = ranges.any(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let refused = parts.any(|parameter| {
            parameter
                .trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        !refused && matches!(media.as_str(), "application/json" | "application/*" | "*/*")
    });
    if json {
        Ok(())
    } else {
        Err(ApiError::NotAcceptable(
            "POST /mcp answers with application/json; the Accept header must allow it".into(),
        ))
    }
}

/// `400` for an `MCP-Protocol-Version` this server does not speak, as the
/// transport's specification asks; none is fine (the handshake, and older
/// clients, send none).
fn check_protocol_version(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(value) = req.headers().get("mcp-protocol-version") else {
        return Ok(());
    };
    let version = value.to_str().unwrap_or_default().trim();
    if supported().iter().any(|known| known.as_str() == version) {
        return Ok(());
    }
    Err(ApiError::InvalidRequest(format!(
        "this server does not speak the MCP revision `{version}` (MCP-Protocol-Version); it speaks {}",
        supported()
            .iter()
            .map(ProtocolVersion::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// One JSON-RPC message, checked the way the API checks a body: unknown
/// members are refused, and so is a batch (an array), which the protocol
/// dropped after its 2025-03-26 revision.
fn parse(mut body: Value) -> Result<ClientJsonRpcMessage, ApiError> {
    // JSON has one number type: an id or an error code of `7.0` is the
    // integer 7, which the SDK's integer types would not take as written.
    if let Some(fields) = body.as_object_mut() {
        if let Some(id) = fields.get_mut("id") {
            whole(id);
        }
        if let Some(code) = fields.get_mut("error").and_then(|e| e.get_mut("code")) {
            whole(code);
        }
    }
    let fields = match &body {
        Value::Object(fields) => fields,
        Value::Array(_) => {
            return Err(ApiError::InvalidRequest(
                "batches are not supported: send one JSON-RPC message per POST".into(),
            ));
        }
        _ => {
            return Err(ApiError::InvalidRequest(
                "the body must be one JSON-RPC message (an object)".into(),
            ));
        }
    };
    if fields.get("jsonrpc") != Some(&json!("2.0")) {
        return Err(ApiError::InvalidRequest("`jsonrpc` must be \"2.0\"".into()));
    }
    if let Some(unknown) = fields.keys().find(|k| !MEMBERS.contains(&k.as_str())) {
        return Err(ApiError::InvalidRequest(format!(
            "unknown member `{unknown}`; a JSON-RPC message has {}",
            MEMBERS.join(", ")
        )));
    }
    // A response names the request it answers, `null` when it cannot.
    if (fields.contains_key("result") || fields.contains_key("error")) && !fields.contains_key("id")
    {
        return Err(ApiError::InvalidRequest(
            "a response needs the `id` of the request it answers".into(),
        ));
    }
    // MCP's parameters and results are objects, never arrays or scalars.
    for member in ["params", "result"] {
        if fields.get(member).is_some_and(|value| !value.is_object()) {
            return Err(ApiError::InvalidRequest(format!(
                "`{member}` must be an object"
            )));
        }
    }
    if let Some(error) = fields.get("error") {
        let members = error.as_object().ok_or_else(|| {
            ApiError::InvalidRequest("`error` must be an object with `code` and `message`".into())
        })?;
        if let Some(unknown) = members
            .keys()
            .find(|k| !ERROR_MEMBERS.contains(&k.as_str()))
        {
            return Err(ApiError::InvalidRequest(format!(
                "unknown member `{unknown}` in `error`; it has {}",
                ERROR_MEMBERS.join(", ")
            )));
        }
    }
    serde_json::from_value(body)
        .map_err(|e| ApiError::InvalidRequest(format!("not a JSON-RPC message: {e}")))
}

/// A number with no fraction, written with one, as the integer it is. Only
/// below 2^53, where every such float is exactly the number written: a larger
/// integer that overflowed `i64` was rounded into a float, and stays one, to
/// be refused.
fn whole(number: &mut Value) {
    if let Some(float) = number
        .as_f64()
        .filter(|_| !number.is_i64() && !number.is_u64())
        && float.fract() == 0.0
        && float.abs() < 9_007_199_254_740_992.0
    {
        *number = json!(float as i64);
    }
}

/// The response to one request.
#[tracing::instrument(skip_all, fields(mcp.method = request.method(), caller = %caller.name))]
async fn answer(
    app: &AppState,
    caller: &Identity,
    traceparent: Option<String>,
    id: RequestId,
    request: ClientRequest,
) -> ServerJsonRpcMessage {
    let result = match request {
        ClientRequest::InitializeRequest(initialize) => Ok(ServerResult::InitializeResult(
            handshake(&initialize.params),
        )),
        ClientRequest::PingRequest(_) => Ok(ServerResult::empty(())),
        ClientRequest::ListToolsRequest(_) => Ok(ServerResult::ListToolsResult(
            ListToolsResult::with_all_items(tools::catalogue().to_vec()),
        )),
        ClientRequest::CallToolRequest(call) => {
            tools::call(app, caller, traceparent.as_deref(), call.params)
                .await
                .map(ServerResult::CallToolResult)
        }
        // The SDK reads a request whose parameters do not fit its method as
        // a method of its own; ours are named here so that they get -32602.
        ClientRequest::CustomRequest(custom) => match custom.method.as_str() {
            "ping" => Ok(ServerResult::empty(())),
            method => Err(misfit(method, custom.params)),
        },
        other => Err(not_found(other.method())),
    };
    match result {
        Ok(mut result) => {
            // The result's `resultType` belongs to a revision we do not speak.
            result.strip_result_type_for_legacy_peer();
            ServerJsonRpcMessage::response(result, id)
        }
        Err(error) => ServerJsonRpcMessage::error(error, Some(id)),
    }
}

/// The answer to `initialize`: the client's revision when spoken here, else
/// the newest that is (the client then decides whether it can go on).
fn handshake(params: &InitializeRequestParams) -> InitializeResult {
    let version = supported()
        .iter()
        .find(|known| **known == params.protocol_version)
        .cloned()
        .unwrap_or(NEWEST);
    let mut tools = ToolsCapability::default();
    tools.list_changed = Some(false);
    let mut capabilities = ServerCapabilities::default();
    capabilities.tools = Some(tools);
    InitializeResult::new(capabilities)
        .with_protocol_version(version)
        .with_server_info(Implementation::new(
            "agent-server",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(INSTRUCTIONS)
}

/// `-32602` for a method of ours whose parameters do not fit it, saying
/// why; `-32601` for any other method.
fn misfit(method: &str, params: Option<Value>) -> ErrorData {
    let params = params.unwrap_or(Value::Null);
    let why = match method {
        "initialize" => serde_json::from_value::<InitializeRequestParams>(params).err(),
        "tools/call" => serde_json::from_value::<CallToolRequestParams>(params).err(),
        "tools/list" => serde_json::from_value::<Option<PaginatedRequestParams>>(params).err(),
        _ => return not_found(method),
    };
    let why = why.map_or_else(|| "they do not fit".to_string(), |e| e.to_string());
    ErrorData::invalid_params(format!("invalid parameters for `{method}`: {why}"), None)
}

fn not_found(method: &str) -> ErrorData {
    ErrorData::new(
        ErrorCode::METHOD_NOT_FOUND,
        format!(
            "this server has no method `{method}`; it answers initialize, ping, tools/list and tools/call"
        ),
        None,
    )
}

/// The JSON Schemas of the messages `POST /mcp` takes and answers with, for
/// the API document: JSON-RPC 2.0 as MCP uses it.
pub fn schemas() -> Value {
    let id = json!({"oneOf": [
        {"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX},
        {"type": "string"},
    ]});
    let version = json!({"type": "string", "enum": ["2.0"]});
    let error = json!({
        "type": "object",
        "required": ["code", "message"],
        "additionalProperties": false,
        "properties": {
            "code": {"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX},
            "message": {"type": "string"},
            "data": {},
        },
    });
    json!({
        "McpMessage": {
            "description": "One JSON-RPC 2.0 message: a request (answered), a notification, or a response to the server (accepted; the server asks nothing, so it answers nothing)",
            "oneOf": [
                {"$ref": "#/components/schemas/McpRequest"},
                {"$ref": "#/components/schemas/McpNotification"},
                {"$ref": "#/components/schemas/McpResult"},
                {"$ref": "#/components/schemas/McpError"},
            ],
        },
        "McpRequest": {
            "type": "object",
            "required": ["jsonrpc", "id", "method"],
            "additionalProperties": false,
            "properties": {
                "jsonrpc": version,
                "id": id,
                "method": {"type": "string", "description": "initialize, ping, tools/list or tools/call; any other is answered with -32601"},
                "params": {"type": "object"},
            },
        },
        "McpNotification": {
            "type": "object",
            "required": ["jsonrpc", "method"],
            "additionalProperties": false,
            "properties": {
                "jsonrpc": version,
                "method": {"type": "string"},
                "params": {"type": "object"},
            },
        },
        "McpResult": {
            "type": "object",
            "required": ["jsonrpc", "id", "result"],
            "additionalProperties": false,
            "properties": {"jsonrpc": version, "id": id, "result": {"type": "object"}},
        },
        "McpError": {
            "type": "object",
            "required": ["jsonrpc", "id", "error"],
            "additionalProperties": false,
            "properties": {
                "jsonrpc": version,
                "id": {"oneOf": [id, {"type": "null"}]},
                "error": error,
            },
        },
        "McpAnswer": {
            "description": "The JSON-RPC response to a request: its result, or its error",
            "oneOf": [
                {"$ref": "#/components/schemas/McpResult"},
                {"$ref": "#/components/schemas/McpError"},
            ],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: Value) -> Result<ClientJsonRpcMessage, String> {
        parse(body).map_err(|e| e.to_string())
    }

    #[test]
    fn one_message_is_read_and_anything_else_refused() {
        let call = message(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "get_run", "arguments": {"run_id": "x"}}}))
        .unwrap();
        assert!(matches!(
            call,
            JsonRpcMessage::Request(r) if matches!(r.request, ClientRequest::CallToolRequest(_))
        ));
        let note = message(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        assert!(matches!(note, Ok(JsonRpcMessage::Notification(_))));
        let answer = message(json!({"jsonrpc": "2.0", "id": "a", "result": {}}));
        assert!(matches!(answer, Ok(JsonRpcMessage::Response(_))));
        let whole = message(json!({"jsonrpc": "2.0", "id": 2.0,
            "error": {"code": 201362.0, "message": "m"}}));
        assert!(matches!(whole, Ok(JsonRpcMessage::Error(e)) if e.error.code.0 == 201362));

        for (body, why) in [
            (
                json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]),
                "batches",
            ),
            (json!("ping"), "an object"),
            (json!({"id": 1, "method": "ping"}), "jsonrpc"),
            (
                json!({"jsonrpc": "1.0", "id": 1, "method": "ping"}),
                "jsonrpc",
            ),
            (
                json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "extra": 1}),
                "unknown member",
            ),
            (
                json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}),
                "`params`",
            ),
            (json!({"jsonrpc": "2.0", "id": 1, "result": 3}), "`result`"),
            (json!({"jsonrpc": "2.0", "result": {}}), "`id`"),
            (
                json!({"jsonrpc": "2.0", "id": 1.5, "result": {}}),
                "JSON-RPC",
            ),
            (
                json!({"jsonrpc": "2.0", "id": 1, "error": {"code": 1, "message": "m", "x": 1}}),
                "`error`",
            ),
            (
                json!({"jsonrpc": "2.0", "id": null, "method": "ping"}),
                "JSON-RPC",
            ),
            (
                json!({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}),
                "JSON-RPC",
            ),
            (
                json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "result": {}}),
                "JSON-RPC",
            ),
        ] {
            let refused = message(body.clone()).expect_err(&body.to_string());
            assert!(refused.contains(why), "{body}: {refused}");
        }
    }

    #[test]
    fn the_handshake_names_a_revision_spoken_here() {
        let asked = |version: ProtocolVersion| {
            handshake(&InitializeRequestParams::default().with_protocol_version(version))
        };
        let answer = asked(ProtocolVersion::V_2025_06_18);
        assert_eq!(answer.protocol_version, ProtocolVersion::V_2025_06_18);
        assert_eq!(answer.server_info.name, "agent-server");
        assert_eq!(
            answer.capabilities.tools.as_ref().unwrap().list_changed,
            Some(false)
        );
        assert_eq!(
            asked(ProtocolVersion::V_2026_07_28).protocol_version,
            NEWEST
        );
        assert_eq!(
            asked(ProtocolVersion::V_2024_11_05).protocol_version,
            ProtocolVersion::V_2024_11_05
        );
    }

    #[test]
    fn misfitting_parameters_are_told_apart_from_unknown_methods() {
        assert_eq!(
            misfit("tools/call", Some(json!({"name": 5}))).code,
            ErrorCode::INVALID_PARAMS
        );
        assert_eq!(misfit("initialize", None).code, ErrorCode::INVALID_PARAMS);
        assert_eq!(
            misfit("resources/list", None).code,
            ErrorCode::METHOD_NOT_FOUND
        );
    }
}
