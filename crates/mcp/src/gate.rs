//! `tools/call`, gated: the tool's pin is checked, policy decides (then
//! grants, then people), the decision and the outcome go into toolgate's
//! audit log, and only a cleared call reaches the server. A call that does
//! not run gets a normal tool result with `isError: true` and a message the
//! model can act on.

use rmcp::model::{
    CallToolRequest, CallToolResult, ClientRequest, ContentBlock, ErrorData, ServerResult, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use serde_json::{Value, json};
use toolgate_core::run::{ApprovalStatus, Outcome};
use toolgate_core::store::ApprovalRow;
use toolgate_core::{ToolHints, schema_compiles};
use toolgate_engine::{
    CallReport, CallRequest, RequestError, RequestedCall, approval_detail, request_call_kept,
};

use crate::HttpCaller;
use crate::ask::{Progress, Question};
use crate::pins::{Listed, PinCheck};
use crate::session::Session;

/// The longest arguments shown in a question, in characters.
const SHOWN_ARGS: usize = 4000;

impl Session {
    pub(crate) async fn gate_call(
        &self,
        request: CallToolRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<ServerResult, ErrorData> {
        let name = request.params.name.to_string();
        let Some(listed) = self.tool(&name, &context.ct).await? else {
            return Err(ErrorData::invalid_params(
                format!(
                    "Unknown tool: {name} (the MCP server `{}` does not list it)",
                    self.shared.name
                ),
                None,
            ));
        };
        let mut progress = Progress::new(context.meta.get_progress_token());
        if let Some(refusal) = self.check_pin(&listed, &context, &mut progress).await? {
            return Ok(refused(refusal));
        }
        let tool = &listed.tool;

        let args = request.params.arguments.clone().unwrap_or_default();
        let qualified = format!("{}:{name}", self.shared.name);
        let mut requested = match self.request(tool, &qualified, args.clone(), &context).await {
            Ok(requested) => requested,
            Err(RequestError::InvalidArguments(error)) => {
                return Ok(refused(format!("toolgate did not make the call: {error}")));
            }
            Err(error) => {
                return Ok(refused(format!(
                    "toolgate could not record the call in its audit log, so it did not make \
                     it: {error}"
                )));
            }
        };
        let detail = requested.detail();
        let row = match detail.row.status {
            ApprovalStatus::Pending => {
                let question = Question {
                    title: format!(
                        "the call of `{name}` on the MCP server `{}`",
                        self.shared.name
                    ),
                    body: show_call(tool, &args, &detail.row),
                };
                self.wait_for_decision(&detail.row, question, &context, &mut progress)
                    .await?
            }
            _ => detail.row.clone(),
        };
        if !matches!(
            row.status,
            ApprovalStatus::Approved | ApprovalStatus::Edited
        ) {
            return Ok(refused(self.refusal(&row).await));
        }
        // A call cleared at once was recorded as started with its approval.
        let started_with_approval = detail.row.status == ApprovalStatus::Approved;
        let principal = &self.shared.principal;
        let store = &*self.shared.store;
        if !started_with_approval
            && let Err(error) = requested
                .report(store, principal, CallReport::Started, (self.shared.clock)())
                .await
        {
            return Ok(refused(format!(
                "toolgate could not record that the call starts, so it did not make it: {error}"
            )));
        }

        let edited = row.status == ApprovalStatus::Edited;
        let mut call = request;
        if edited {
            call.params.arguments = Some(row.args.clone());
        }
        let result = self
            .forward(
                ClientRequest::CallToolRequest(call),
                context.meta.clone(),
                &context.ct,
                progress.sent,
            )
            .await;

        let outcome = match &result {
            Ok(ServerResult::CallToolResult(result)) if result.is_error == Some(true) => {
                Outcome::Error {
                    error: text_of(result),
                }
            }
            Ok(other) => Outcome::Output {
                output: serde_json::to_value(other).unwrap_or(Value::Null),
            },
            Err(error) => Outcome::Error {
                error: error.message.to_string(),
            },
        };
        let shared = self.shared.clone();
        let approval_id = row.id.clone();
        // Off the reply's path: the call has happened either way.
        self.shared.reports.spawn(async move {
            let now = (shared.clock)();
            if let Err(error) = requested
                .report(
                    &*shared.store,
                    &shared.principal,
                    CallReport::Finished(outcome),
                    now,
                )
                .await
            {
                eprintln!(
                    "toolgate mcp: the outcome of approval {approval_id} was not recorded: {error}"
                );
            }
        });

        let mut result = result?;
        if edited && let ServerResult::CallToolResult(result) = &mut result {
            let by = row.decided_by.as_deref().unwrap_or("a person");
            result.content.insert(
                0,
                ContentBlock::text(format!(
                    "toolgate: {by} edited this call before it ran; it ran with the arguments {}",
                    Value::Object(row.args.clone())
                )),
            );
        }
        Ok(result)
    }

    /// Records the call and its verdict.
    async fn request(
        &self,
        tool: &Tool,
        qualified: &str,
        args: serde_json::Map<String, Value>,
        context: &RequestContext<RoleServer>,
    ) -> Result<RequestedCall, RequestError> {
        let annotations = tool.annotations.as_ref();
        let mut request = CallRequest::new(qualified, args);
        // A run per call, all of the session's in one thread: a call never
        // waits on reading the session's earlier ones, and a grant for the
        // thread covers the session.
        request.thread = Some(self.state.thread.clone());
        // A schema toolgate cannot read is the server's to enforce.
        let schema = Value::Object((*tool.input_schema).clone());
        request.schema = schema_compiles(&schema).then_some(schema);
        request.description = tool.description.as_ref().map(ToString::to_string);
        request.hints = ToolHints {
            read_only: annotations.and_then(|a| a.read_only_hint),
            destructive: annotations.and_then(|a| a.destructive_hint),
            idempotent: annotations.and_then(|a| a.idempotent_hint),
        };
        let client = context.peer.peer_info().map(
            |info| json!({"name": info.client_info.name, "version": info.client_info.version}),
        );
        let mut shown = json!({
            "via": "toolgate mcp",
            "server": self.shared.name,
            "command": self.shared.downstream.describe(),
            "client": client,
        });
        if let Some(caller) = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<HttpCaller>())
        {
            shown["caller"] = Value::String(caller.name.clone());
        }
        request.context = Some(shown);
        request.timeout = Some(self.shared.config.timeout);
        request.start = true;
        let store = &*self.shared.store;
        let now = (self.shared.clock)();
        request_call_kept(
            store,
            &self.shared.policy,
            &self.shared.principal,
            request,
            now,
        )
        .await
    }

    /// Checks the tool's pin; a refusal when its changed definition was not
    /// accepted.
    async fn check_pin(
        &self,
        listed: &Listed,
        context: &RequestContext<RoleServer>,
        progress: &mut Progress,
    ) -> Result<Option<String>, ErrorData> {
        let store = &*self.shared.store;
        let now = (self.shared.clock)();
        let name = listed.tool.name.to_string();
        let detail = match self
            .shared
            .pins
            .check(store, &self.shared.principal, listed, now)
            .await
        {
            Ok(PinCheck::Trusted) => return Ok(None),
            Ok(PinCheck::Changed(detail)) => detail,
            Err(error) => {
                return Ok(Some(format!(
                    "toolgate could not check the definition of `{name}` against the one it \
                     trusts, so it did not make the call: {error}"
                )));
            }
        };
        let diff = detail
            .approval
            .context
            .as_ref()
            .and_then(|context| context.get("diff"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let question = Question {
            title: format!(
                "the changed definition of `{name}` on the MCP server `{}`",
                self.shared.name
            ),
            body: format!(
                "The server changed the tool since it was trusted; calls to it are held until \
                 the change is accepted.\n{diff}"
            ),
        };
        let row = self
            .wait_for_decision(&detail.row, question, context, progress)
            .await?;
        if row.status == ApprovalStatus::Approved {
            let fingerprint = row
                .args
                .get("fingerprint")
                .and_then(Value::as_str)
                .map_or_else(|| listed.fingerprint.clone(), str::to_owned);
            self.shared.pins.trust(&name, &fingerprint);
            return Ok(None);
        }
        Ok(Some(format!(
            "toolgate holds calls to `{name}`: the MCP server `{}` changed the tool's definition \
             since it was trusted, and the change was not accepted (approval {} is {}). Tell the \
             user: the new definition can be accepted in the toolgate inbox, or with `toolgate \
             approvals approve {}`.",
            self.shared.name, row.id, row.status, row.id
        )))
    }

    /// What the model is told of a call that did not run.
    async fn refusal(&self, row: &ApprovalRow) -> String {
        if let Ok(detail) = approval_detail(&*self.shared.store, &row.id).await
            && let Some(refusal) = detail.refusal()
        {
            return refusal.to_owned();
        }
        match row.status {
            ApprovalStatus::Expired => format!(
                "toolgate: nobody approved this call in time (approval {}), so it was not made.",
                row.id
            ),
            status => format!(
                "toolgate: this call was not made: its approval {} is {status}.",
                row.id
            ),
        }
    }
}

/// A tool result that says why the call did not run.
fn refused(message: String) -> ServerResult {
    ServerResult::CallToolResult(CallToolResult::error(vec![ContentBlock::text(message)]))
}

/// The text of a tool result, for the audit log.
fn text_of(result: &CallToolResult) -> String {
    let texts: Vec<String> = result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|text| text.text.clone()))
        .collect();
    if texts.is_empty() {
        serde_json::to_string(result).unwrap_or_default()
    } else {
        texts.join("\n")
    }
}

/// The call, as a person deciding it sees it.
fn show_call(tool: &Tool, args: &serde_json::Map<String, Value>, row: &ApprovalRow) -> String {
    let mut shown = serde_json::to_string_pretty(&Value::Object(args.clone()))
        .unwrap_or_else(|_| "{}".to_owned());
    if shown.chars().count() > SHOWN_ARGS {
        shown = shown.chars().take(SHOWN_ARGS).collect::<String>()
            + "\n… (cut; the whole call is in the inbox)";
    }
    let mut body = String::new();
    if let Some(description) = &tool.description {
        body.push_str(description);
        body.push('\n');
    }
    body.push_str(&format!("Arguments: {shown}\nAsked by rule: {}", row.rule));
    body
}
