//! Waiting for a person: a held call's approval is in toolgate's store,
//! where the inbox, the API and `toolgate approvals` can decide it; the
//! gateway also asks someone directly, the first that can be reached of
//! `approve_via`: the client (MCP elicitation) or the terminal.

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::pin::Pin;
use std::time::Duration;

use rmcp::model::{
    ElicitRequest, ElicitRequestParams, ElicitationAction, ErrorData, ProgressNotification,
    ProgressNotificationParam, ProgressToken, ServerNotification, ServerRequest,
};
use rmcp::service::{RequestContext, RoleServer};
use serde_json::{Value, json};
use toolgate_core::run::ApprovalStatus;
use toolgate_core::store::ApprovalRow;
use toolgate_core::{Principal, Role};
use toolgate_engine::{DecisionRequest, decide, expire_approval, withdraw_call};

use crate::config::ApproveVia;
use crate::session::Session;

/// How often a waiting call looks in the store for a decision made by
/// another process (the inbox's server, the CLI).
const POLL: Duration = Duration::from_millis(200);

type Asker = Pin<Box<dyn Future<Output = Option<(Principal, DecisionRequest)>> + Send>>;

/// What a person is asked.
pub(crate) struct Question {
    /// One line: what is asked.
    pub(crate) title: String,
    /// The details: the arguments, or a diff.
    pub(crate) body: String,
}

/// The progress a call reports to the client while it waits, when the
/// client gave a progress token.
pub(crate) struct Progress {
    token: Option<ProgressToken>,
    /// The last value sent: the server's own progress is reported above it.
    pub(crate) sent: f64,
}

impl Progress {
    pub(crate) fn new(token: Option<ProgressToken>) -> Progress {
        Progress { token, sent: 0.0 }
    }

    async fn tick(&mut self, context: &RequestContext<RoleServer>, message: String) {
        let Some(token) = &self.token else {
            return;
        };
        self.sent += 1.0;
        let mut param = ProgressNotificationParam::new(token.clone(), self.sent);
        param.message = Some(message);
        let _ = context
            .peer
            .send_notification(ServerNotification::ProgressNotification(
                ProgressNotification::new(param),
            ))
            .await;
    }
}

impl Session {
    /// Waits until approval `row` is decided, or expires (and is then
    /// rejected), asking a person meanwhile; returns its row then.
    pub(crate) async fn wait_for_decision(
        &self,
        row: &ApprovalRow,
        question: Question,
        context: &RequestContext<RoleServer>,
        progress: &mut Progress,
    ) -> Result<ApprovalRow, ErrorData> {
        let store = &*self.shared.store;
        let fail = |error: String| {
            ErrorData::internal_error(
                format!("toolgate lost track of approval {}: {error}", row.id),
                None,
            )
        };
        let waiting = format!(
            "waiting for a person to approve {} (approval {}): in the toolgate inbox, or \
             `toolgate approvals approve {}`",
            question.title, row.id, row.id
        );
        let mut asker = self.asker(row, question, context);
        let mut asked = false;
        let mut ticker = tokio::time::interval(self.shared.config.progress_every);
        ticker.tick().await;
        loop {
            let now = (self.shared.clock)();
            let mut current = store
                .approval(&row.id)
                .await
                .map_err(|e| fail(e.to_string()))?;
            if current.status == ApprovalStatus::Pending
                && current.expires_at.is_some_and(|at| at <= now)
            {
                current = expire_approval(store, &row.id, now)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
            }
            if current.status != ApprovalStatus::Pending {
                return Ok(current);
            }
            let left = current
                .expires_at
                .map_or(POLL, |at| Duration::from_millis((at - now).max(1) as u64));
            let head = store.audit_head().await.unwrap_or(0);
            let changed = async {
                match store.wait_for_change(head, POLL.min(left)).await {
                    Ok(Some(_)) => {}
                    _ => tokio::time::sleep(POLL.min(left)).await,
                }
            };
            tokio::select! {
                answer = &mut asker, if !asked => {
                    asked = true;
                    if let Some((principal, decision)) = answer {
                        let now = (self.shared.clock)();
                        if let Err(error) =
                            decide(store, &principal, &row.id, &row.fingerprint, decision, None, now).await
                        {
                            // Decided elsewhere first, or not this person's to
                            // decide: the store says what stands.
                            eprintln!("toolgate mcp: the decision of {} was not recorded: {error}", principal.name);
                        }
                    }
                }
                _ = ticker.tick() => progress.tick(context, waiting.clone()).await,
                () = changed => {}
                () = context.ct.cancelled() => {
                    // Whatever is decided now, the call will not be made:
                    // the people deciding are told so.
                    let now = (self.shared.clock)();
                    let reason = Some("the MCP client cancelled the call, or went away".to_owned());
                    if let Err(error) =
                        withdraw_call(store, &self.shared.principal, &row.id, reason, now).await
                    {
                        eprintln!("toolgate mcp: approval {} was not withdrawn: {error}", row.id);
                    }
                    return Err(ErrorData::internal_error(
                        "the call was cancelled by the client while it waited for approval",
                        None,
                    ));
                }
            }
        }
    }

    /// Whom to ask: the first of `approve_via` that can be reached. Only
    /// the inbox (where people sign in) may decide an approval that names
    /// its approvers or needs several.
    fn asker(
        &self,
        row: &ApprovalRow,
        question: Question,
        context: &RequestContext<RoleServer>,
    ) -> Asker {
        let never: Asker = Box::pin(std::future::pending());
        if !row.approvers.is_empty() || row.quorum > 1 {
            return never;
        }
        for via in &self.shared.config.approve_via {
            match via {
                ApproveVia::Client if self.client_can_elicit(context) => {
                    let client = context.peer.peer_info().map_or_else(
                        || "the MCP client".to_owned(),
                        |info| info.client_info.name.clone(),
                    );
                    let peer = context.peer.clone();
                    return Box::pin(async move {
                        let principal = Principal::new(format!("client:{client}"), Role::Approver);
                        let decision = elicit(&peer, &question, &client).await?;
                        Some((principal, decision))
                    });
                }
                ApproveVia::Terminal if terminal_available() => {
                    let lock = std::sync::Arc::clone(&self.shared.terminal);
                    return Box::pin(async move {
                        // One question at a time on the terminal.
                        let _turn = lock.lock().await;
                        let decision = tokio::task::spawn_blocking(move || ask_terminal(&question))
                            .await
                            .ok()?
                            .unwrap_or_else(|error| {
                                eprintln!("toolgate mcp: cannot ask on the terminal: {error}");
                                None
                            })?;
                        Some((terminal_principal(), decision))
                    });
                }
                ApproveVia::Inbox => return never,
                _ => {}
            }
        }
        never
    }
}

/// Asks the client's user through elicitation; `None` when the client
/// could not ask (the call then waits for the inbox).
async fn elicit(
    peer: &rmcp::service::Peer<RoleServer>,
    question: &Question,
    client: &str,
) -> Option<DecisionRequest> {
    let params: ElicitRequestParams = serde_json::from_value(json!({
        "mode": "form",
        "message": format!("toolgate: approve {}?\n\n{}", question.title, question.body),
        "requestedSchema": {
            "type": "object",
            "properties": {
                "decision": {
                    "type": "string",
                    "title": "Decision",
                    "enum": ["approve", "reject"],
                    "enumNames": ["Approve", "Reject"],
                },
                "reason": {
                    "type": "string",
                    "title": "Reason",
                    "description": "Told to the model when you reject.",
                },
            },
            "required": ["decision"],
        },
    }))
    .expect("the approval form is a valid elicitation");
    let request = ServerRequest::ElicitRequest(ElicitRequest::new(params));
    let result = match peer.send_request(request).await {
        Ok(rmcp::model::ClientResult::ElicitResult(result)) => result,
        Ok(other) => {
            eprintln!("toolgate mcp: {client} answered the approval form with {other:?}");
            return None;
        }
        Err(error) => {
            eprintln!("toolgate mcp: {client} could not show the approval form: {error}");
            return None;
        }
    };
    let content = result.content.unwrap_or(Value::Null);
    let reason = content
        .get("reason")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|reason| !reason.is_empty())
        .map(str::to_owned);
    Some(match result.action {
        ElicitationAction::Accept => match content.get("decision").and_then(Value::as_str) {
            Some("approve") => DecisionRequest::Approve,
            _ => DecisionRequest::Reject(reason.or_else(|| Some(format!("rejected in {client}")))),
        },
        ElicitationAction::Decline => {
            DecisionRequest::Reject(reason.or_else(|| Some(format!("declined in {client}"))))
        }
        // Dismissed (`cancel`), or an action this version of toolgate does
        // not know: not an approval.
        _ => DecisionRequest::Reject(Some(format!("the approval form was dismissed in {client}"))),
    })
}

fn terminal_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .is_ok()
}

/// The person at the controlling terminal.
fn terminal_principal() -> Principal {
    let user = std::env::var("TOOLGATE_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".to_owned());
    Principal::new(format!("terminal:{user}"), Role::Approver)
}

/// Asks on `/dev/tty`; `None` when the terminal closed before an answer.
fn ask_terminal(question: &Question) -> std::io::Result<Option<DecisionRequest>> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    let mut out = tty.try_clone()?;
    let mut input = BufReader::new(tty);
    writeln!(
        out,
        "\ntoolgate: approve {}?\n{}",
        question.title, question.body
    )?;
    loop {
        write!(out, "Approve? [y]es / [n]o: ")?;
        out.flush()?;
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        match line.trim().to_lowercase().as_str() {
            "y" | "yes" => return Ok(Some(DecisionRequest::Approve)),
            "n" | "no" => {
                write!(out, "Reason, told to the model (Enter for none): ")?;
                out.flush()?;
                let mut reason = String::new();
                input.read_line(&mut reason)?;
                let reason = reason.trim();
                return Ok(Some(DecisionRequest::Reject(
                    (!reason.is_empty()).then(|| reason.to_owned()),
                )));
            }
            _ => writeln!(out, "Answer y or n.")?,
        }
    }
}
