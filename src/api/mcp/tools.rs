//! The tools `POST /mcp` offers: each is an HTTP endpoint's twin, with its
//! role, its input schema read off the API document (so the two cannot
//! drift apart), and its answer: the function the endpoint calls, and the
//! JSON the endpoint answers with, as `structuredContent` and as text.
//! A refusal the endpoint would answer with an HTTP error is a result with
//! `isError`, whose text is the API's error body.

use std::sync::{Arc, OnceLock};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, ErrorData, JsonObject, Tool,
    ToolAnnotations,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::access::require;
use crate::api::runs::{self, CancelBody, CreateRun, CreatedRun, ListQuery, ResumeBody};
use crate::api::steer::{self, MessageBody};
use crate::api::{ApiError, AppState};
use crate::auth::{Identity, Permission};

/// The tools, each named after what it does for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Twin {
    /// `POST /api/runs`
    CreateRun,
    /// `GET /api/runs/{id}`
    GetRun,
    /// `GET /api/runs`
    ListRuns,
    /// `GET /api/runs?status=waiting_approval`, what the dashboard's inbox lists.
    ListPendingApprovals,
    /// `POST /api/runs/{id}/resume`
    DecideApproval,
    /// `POST /api/runs/{id}/cancel`
    CancelRun,
    /// `POST /api/runs/{id}/messages`
    SendMessage,
}

impl Twin {
    const ALL: [Twin; 7] = [
        Twin::CreateRun,
        Twin::GetRun,
        Twin::ListRuns,
        Twin::ListPendingApprovals,
        Twin::DecideApproval,
        Twin::CancelRun,
        Twin::SendMessage,
    ];

    fn name(self) -> &'static str {
        match self {
            Twin::CreateRun => "create_run",
            Twin::GetRun => "get_run",
            Twin::ListRuns => "list_runs",
            Twin::ListPendingApprovals => "list_pending_approvals",
            Twin::DecideApproval => "decide_approval",
            Twin::CancelRun => "cancel_run",
            Twin::SendMessage => "send_message",
        }
    }

    /// What the HTTP twin's route needs (`access::required_permission`).
    fn permission(self) -> Permission {
        match self {
            Twin::GetRun | Twin::ListRuns | Twin::ListPendingApprovals => Permission::Read,
            Twin::CreateRun | Twin::CancelRun | Twin::SendMessage => Permission::Operate,
            Twin::DecideApproval => Permission::Decide,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Twin::CreateRun => "Start a run",
            Twin::GetRun => "Read a run",
            Twin::ListRuns => "List runs",
            Twin::ListPendingApprovals => "List runs waiting for approval",
            Twin::DecideApproval => "Approve or reject a pending call",
            Twin::CancelRun => "Cancel a run",
            Twin::SendMessage => "Send a run a message",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Twin::CreateRun => {
                "Starts a run: an agent (orchestrator by default, or coding or log-analyzer) works on `task`, durably; dangerous tool calls wait for a human's approval. The same `idempotency_key` again returns the same run instead of a second one. Answers with the run (as POST /api/runs). Needs the role operator or admin."
            }
            Twin::GetRun => {
                "Reads one run: status, pending approval (with `approval_id` and `args_sha256`), usage, result or error, and the runs forked from it (as GET /api/runs/{id}). Needs any role."
            }
            Twin::ListRuns => {
                "Lists runs, newest first, optionally by status, task text (`q`), agent or creator; pass `next_before` as `before` for the next page (as GET /api/runs). Needs any role."
            }
            Twin::ListPendingApprovals => {
                "Lists the runs waiting for a human, newest first, each with its `pending_approval`: the tool and arguments (or the budget) to decide on, `approval_id`, `args_sha256` and `expires_at` (as GET /api/runs?status=waiting_approval). Needs any role."
            }
            Twin::DecideApproval => {
                "Approves or rejects a run's pending approval, answered once the decision is in the run's journal (as POST /api/runs/{id}/resume). Send the `args_sha256` of the arguments you were shown, so that a decision is never taken on other ones; `feedback` reaches the run's model; an approval may replace the arguments (`args`), and a budget approval may raise the limits (`add_tokens`, `add_cost_usd`). Needs the role approver or admin."
            }
            Twin::CancelRun => {
                "Cancels a run that has not finished, answered with the run once the cancellation is in its journal; a model request in flight is aborted and a running command killed (as POST /api/runs/{id}/cancel). Needs the role operator or admin."
            }
            Twin::SendMessage => {
                "Sends a run a message that its acting agent reads before its next model call, answered with the run once the message is in its journal (as POST /api/runs/{id}/messages). Needs the role operator or admin."
            }
        }
    }

    fn annotations(self) -> ToolAnnotations {
        let hints = ToolAnnotations::with_title(self.title());
        match self {
            Twin::GetRun | Twin::ListRuns | Twin::ListPendingApprovals => {
                hints.read_only(true).open_world(false)
            }
            // A run's agents may reach the world (shell, Loki, MCP servers).
            Twin::CreateRun => hints.read_only(false).destructive(false).idempotent(false),
            // An approval lets a dangerous call run: a client should ask its
            // human first, as it does for destructive tools.
            Twin::DecideApproval => hints
                .read_only(false)
                .destructive(true)
                .idempotent(false)
                .open_world(false),
            Twin::CancelRun => hints
                .read_only(false)
                .destructive(true)
                .idempotent(false)
                .open_world(false),
            Twin::SendMessage => hints
                .read_only(false)
                .destructive(false)
                .idempotent(false)
                .open_world(false),
        }
    }

    /// The arguments: the HTTP twin's body, or its query, with `run_id` for
    /// the run its path names.
    fn input_schema(self, doc: &Value) -> Value {
        let mut schema = match self {
            Twin::CreateRun => component(doc, "CreateRun"),
            Twin::GetRun => json!({"type": "object", "properties": {}}),
            Twin::ListRuns => query(doc, "/api/runs", &[]),
            Twin::ListPendingApprovals => query(doc, "/api/runs", &["status"]),
            Twin::DecideApproval => component(doc, "ResumeBody"),
            Twin::CancelRun => component(doc, "CancelBody"),
            Twin::SendMessage => component(doc, "MessageBody"),
        };
        if matches!(
            self,
            Twin::GetRun | Twin::DecideApproval | Twin::CancelRun | Twin::SendMessage
        ) {
            schema["properties"]["run_id"] =
                json!({"type": "string", "description": "The run's id (a UUID)"});
            let mut required = vec![json!("run_id")];
            if let Some(Value::Array(others)) = schema.get("required") {
                required.extend(others.iter().cloned());
            }
            schema["required"] = Value::Array(required);
        }
        schema["additionalProperties"] = json!(false);
        // The body's own description names the HTTP body; the tool has its own.
        if let Some(fields) = schema.as_object_mut() {
            fields.remove("description");
        }
        schema
    }

    fn parse(name: &str) -> Option<Twin> {
        Twin::ALL.into_iter().find(|twin| twin.name() == name)
    }
}

/// The tools as `tools/list` shows them, made once from the API document.
pub fn catalogue() -> &'static [Tool] {
    static TOOLS: OnceLock<Vec<Tool>> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let doc = crate::api::openapi::build();
        Twin::ALL
            .into_iter()
            .map(|twin| {
                let schema = match twin.input_schema(&doc) {
                    Value::Object(schema) => schema,
                    // Every arm above builds an object.
                    _ => JsonObject::new(),
                };
                Tool::new(twin.name(), twin.description(), Arc::new(schema))
                    .with_title(twin.title())
                    .with_annotations(twin.annotations())
            })
            .collect()
    })
}

/// Calls a tool as `caller`. An unknown tool is the request's error
/// (`-32602`); whatever the tool's HTTP twin would refuse is the result's.
#[tracing::instrument(skip_all, fields(tool = %params.name))]
pub async fn call(
    app: &AppState,
    caller: &Identity,
    traceparent: Option<&str>,
    params: CallToolRequestParams,
) -> Result<CallToolResult, ErrorData> {
    let Some(twin) = Twin::parse(&params.name) else {
        return Err(ErrorData::invalid_params(
            format!(
                "no tool named `{}`; the tools are {}",
                params.name,
                Twin::ALL.map(Twin::name).join(", ")
            ),
            None,
        ));
    };
    // MCP carries trace context in `_meta`; the POST's header otherwise.
    let traceparent = params
        .meta
        .as_ref()
        .and_then(|meta| meta.get_traceparent())
        .or(traceparent);
    let arguments = params.arguments.unwrap_or_default();
    let outcome = match require(caller, twin.permission()) {
        Ok(()) => perform(twin, app, caller, arguments, traceparent).await,
        Err(refused) => Err(refused),
    };
    Ok(match outcome {
        Ok(answer) => {
            let mut result = CallToolResult::success(vec![ContentBlock::text(answer.to_string())]);
            result.structured_content = Some(answer);
            result
        }
        Err(error) => {
            let mut body = error.body();
            // The HTTP twin says this in `Retry-After`; a result has no headers.
            if let ApiError::RateLimited {
                retry_after_secs, ..
            } = &error
            {
                body["error"]["retry_after_secs"] = json!(retry_after_secs);
            }
            let mut result = CallToolResult::error(vec![ContentBlock::text(body.to_string())]);
            result.structured_content = Some(body);
            result
        }
    })
}

/// The tool's work: its HTTP twin's function, on the arguments read as the
/// twin reads its body or query.
async fn perform(
    twin: Twin,
    app: &AppState,
    caller: &Identity,
    mut arguments: JsonObject,
    traceparent: Option<&str>,
) -> Result<Value, ApiError> {
    match twin {
        Twin::CreateRun => {
            let body: CreateRun = read(arguments)?;
            match runs::create_run(app, caller, body, None, traceparent).await? {
                CreatedRun::New(run) | CreatedRun::Existing(run) => answer(run),
            }
        }
        Twin::GetRun => {
            let id = run_id(&mut arguments)?;
            let _: NoArguments = read(arguments)?;
            answer(runs::get_run(app, &id).await?)
        }
        Twin::ListRuns => answer(runs::list_runs(app, read(arguments)?).await?),
        Twin::ListPendingApprovals => {
            if arguments.contains_key("status") {
                return Err(ApiError::InvalidRequest(
                    "unknown argument `status`: this tool lists the runs waiting for approval; list_runs takes a status".into(),
                ));
            }
            let query = ListQuery {
                status: Some("waiting_approval".into()),
                ..read(arguments)?
            };
            answer(runs::list_runs(app, query).await?)
        }
        Twin::DecideApproval => {
            let id = run_id(&mut arguments)?;
            let body: ResumeBody = read(arguments)?;
            answer(runs::decide(app, caller, &id, body).await?)
        }
        Twin::CancelRun => {
            let id = run_id(&mut arguments)?;
            let body: CancelBody = read(arguments)?;
            answer(runs::cancel_run(app, caller, &id, Some(body)).await?)
        }
        Twin::SendMessage => {
            let id = run_id(&mut arguments)?;
            let body: MessageBody = read(arguments)?;
            answer(steer::send_message(app, caller, &id, body).await?)
        }
    }
}

/// The arguments of a tool that takes only `run_id`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArguments {}

/// The arguments as the twin's body type; what serde refuses is a 400 there.
fn read<T: DeserializeOwned>(arguments: JsonObject) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(arguments))
        .map_err(|e| ApiError::InvalidRequest(format!("invalid arguments: {e}")))
}

/// Takes `run_id` out of the arguments: what the twin reads from its path.
fn run_id(arguments: &mut JsonObject) -> Result<String, ApiError> {
    match arguments.remove("run_id") {
        Some(Value::String(id)) => Ok(id),
        None => Err(ApiError::InvalidRequest(
            "`run_id` is required: the id of the run".into(),
        )),
        Some(_) => Err(ApiError::InvalidRequest("`run_id` must be a string".into())),
    }
}

fn answer(value: impl serde::Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.into()))
}

/// A schema of the API document's components, its references resolved:
/// a tool's input schema must stand alone.
fn component(doc: &Value, name: &str) -> Value {
    inline(doc, &doc["components"]["schemas"][name])
}

/// The query parameters of `GET path` as an object's properties, but those
/// named in `without`.
fn query(doc: &Value, path: &str, without: &[&str]) -> Value {
    let mut properties = serde_json::Map::new();
    let parameters = doc["paths"][path]["get"]["parameters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for parameter in parameters {
        let Some(name) = parameter["name"].as_str() else {
            continue;
        };
        if parameter["in"] != "query" || without.contains(&name) {
            continue;
        }
        let mut schema = inline(doc, &parameter["schema"]);
        if let Some(description) = parameter.get("description") {
            schema["description"] = description.clone();
        }
        properties.insert(name.to_string(), schema);
    }
    json!({"type": "object", "properties": properties})
}

/// `schema` with every `$ref` to a component replaced by the component.
fn inline(doc: &Value, schema: &Value) -> Value {
    match schema {
        Value::Object(fields) => {
            if let Some(name) = fields
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                let mut target = component(doc, name);
                for (key, value) in fields.iter().filter(|(key, _)| *key != "$ref") {
                    target[key] = inline(doc, value);
                }
                return target;
            }
            Value::Object(
                fields
                    .iter()
                    .map(|(key, value)| (key.clone(), inline(doc, value)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(|item| inline(doc, item)).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> &'static Tool {
        catalogue().iter().find(|t| t.name == name).unwrap()
    }

    #[test]
    fn every_tool_has_a_standalone_strict_schema() {
        assert_eq!(catalogue().len(), 7);
        for tool in catalogue() {
            let schema = Value::Object(tool.input_schema.as_ref().clone());
            assert_eq!(schema["type"], "object", "{}", tool.name);
            assert_eq!(schema["additionalProperties"], false, "{}", tool.name);
            assert!(
                !schema.to_string().contains("$ref"),
                "{}: {schema}",
                tool.name
            );
            assert!(tool.description.as_ref().is_some_and(|d| d.len() > 40));
        }
    }

    #[test]
    fn schemas_follow_the_http_twins() {
        let create = Value::Object(tool("create_run").input_schema.as_ref().clone());
        assert_eq!(create["required"], json!(["task"]));
        assert_eq!(create["properties"]["task"]["maxLength"], 32768);
        let decide = Value::Object(tool("decide_approval").input_schema.as_ref().clone());
        assert_eq!(
            decide["required"],
            json!(["run_id", "approval_id", "decision"])
        );
        assert!(decide["properties"]["args_sha256"].is_object());
        let pending = Value::Object(tool("list_pending_approvals").input_schema.as_ref().clone());
        assert!(pending["properties"]["status"].is_null());
        assert_eq!(pending["properties"]["limit"]["maximum"], 200);
        let list = Value::Object(tool("list_runs").input_schema.as_ref().clone());
        assert!(list["properties"]["status"]["enum"].is_array(), "{list}");
        let get = Value::Object(tool("get_run").input_schema.as_ref().clone());
        assert_eq!(get["required"], json!(["run_id"]));
    }

    #[test]
    fn hints_say_what_each_tool_changes() {
        for name in ["get_run", "list_runs", "list_pending_approvals"] {
            assert_eq!(
                tool(name).annotations.as_ref().unwrap().read_only_hint,
                Some(true)
            );
        }
        for name in [
            "create_run",
            "decide_approval",
            "cancel_run",
            "send_message",
        ] {
            assert_eq!(
                tool(name).annotations.as_ref().unwrap().read_only_hint,
                Some(false)
            );
        }
        assert_eq!(
            tool("cancel_run")
                .annotations
                .as_ref()
                .unwrap()
                .destructive_hint,
            Some(true)
        );
    }
}
