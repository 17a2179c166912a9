//! The API's own JSON types. Core types are converted to these at the
//! boundary, so that the wire format is defined here, once, and a change
//! in the engine's types never changes what clients read.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use toolgate_core::grant::{Grant, GrantScope};
use toolgate_core::run::{ApprovalStatus, Decision};
use toolgate_core::store::{ApprovalRow, Delivery, DeliveryStatus, TokenRecord};
use toolgate_core::time::format_millis;
use toolgate_engine::ApprovalDetail;
use utoipa::ToSchema;

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// Waiting for people.
    Pending,
    /// Approved as asked: the call may run.
    Approved,
    /// Approved with edited arguments: the call may run, with `args`.
    Edited,
    /// Rejected by a person or by policy: the call must not run.
    Rejected,
    /// Nobody decided in time: the call must not run.
    Expired,
    /// Withdrawn: its run ended without it.
    Cancelled,
}

impl From<ApprovalStatus> for Status {
    fn from(status: ApprovalStatus) -> Status {
        match status {
            ApprovalStatus::Pending => Status::Pending,
            ApprovalStatus::Approved => Status::Approved,
            ApprovalStatus::Edited => Status::Edited,
            ApprovalStatus::Rejected => Status::Rejected,
            ApprovalStatus::Expired => Status::Expired,
            ApprovalStatus::Cancelled => Status::Cancelled,
        }
    }
}

impl From<Status> for ApprovalStatus {
    fn from(status: Status) -> ApprovalStatus {
        match status {
            Status::Pending => ApprovalStatus::Pending,
            Status::Approved => ApprovalStatus::Approved,
            Status::Edited => ApprovalStatus::Edited,
            Status::Rejected => ApprovalStatus::Rejected,
            Status::Expired => ApprovalStatus::Expired,
            Status::Cancelled => ApprovalStatus::Cancelled,
        }
    }
}

/// An approval, as listings show it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct Approval {
    /// The approval's id.
    pub(crate) id: String,
    /// Where it stands.
    pub(crate) status: Status,
    /// The run it belongs to.
    pub(crate) run_id: String,
    /// The call's id.
    pub(crate) call_id: String,
    /// The tool.
    pub(crate) tool: String,
    /// The arguments the call runs with: the proposed ones, or the edited
    /// ones after an edit.
    #[schema(value_type = Object)]
    pub(crate) args: Map<String, Value>,
    /// The fingerprint a decision must name (SHA-256 of the call's
    /// canonical JSON, hex).
    pub(crate) fingerprint: String,
    /// The policy rule that asked (`default` when the tool's hints did).
    pub(crate) rule: String,
    /// How many distinct approvers must approve.
    pub(crate) quorum: u32,
    /// Who may decide (`user:…`, `group:…`, `role:…`); empty for any
    /// approver.
    pub(crate) approvers: Vec<String>,
    /// When it was requested (RFC 3339).
    pub(crate) requested_at: String,
    /// When it expires, if it does (RFC 3339).
    pub(crate) expires_at: Option<String>,
    /// Who decided it last: a principal, `policy (RULE)` or `grant ID`.
    pub(crate) decided_by: Option<String>,
    /// When it was decided (RFC 3339).
    pub(crate) decided_at: Option<String>,
}

impl From<&ApprovalRow> for Approval {
    fn from(row: &ApprovalRow) -> Approval {
        Approval {
            id: row.id.clone(),
            status: row.status.into(),
            run_id: row.run_id.clone(),
            call_id: row.call_id.clone(),
            tool: row.tool.clone(),
            args: row.args.clone(),
            fingerprint: row.fingerprint.to_string(),
            rule: row.rule.clone(),
            quorum: row.quorum,
            approvers: row.approvers.clone(),
            requested_at: format_millis(row.created_at),
            expires_at: row.expires_at.map(format_millis),
            decided_by: row.decided_by.clone(),
            decided_at: row.decided_at.map(format_millis),
        }
    }
}

/// One decision in an approval's history.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct DecisionRecord {
    /// Who decided.
    pub(crate) principal: String,
    /// `approve`, `edit` or `reject`.
    pub(crate) decision: String,
    /// When (RFC 3339).
    pub(crate) at: Option<String>,
    /// A rejection's message.
    pub(crate) message: Option<String>,
    /// An edit's new arguments.
    #[schema(value_type = Option<Object>)]
    pub(crate) args: Option<Map<String, Value>>,
}

/// An approval in full: the call, who asked and why, its history.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct ApprovalDetailBody {
    /// The listing fields.
    #[serde(flatten)]
    pub(crate) approval: Approval,
    /// What the tool does.
    pub(crate) description: String,
    /// The JSON Schema of the arguments; edits are checked against it.
    #[schema(value_type = Object)]
    pub(crate) schema: Value,
    /// The arguments as first proposed.
    #[schema(value_type = Object)]
    pub(crate) proposed_args: Map<String, Value>,
    /// What the requesting agent told the people deciding.
    #[schema(value_type = Option<Object>)]
    pub(crate) context: Option<Value>,
    /// Who approved the current arguments so far.
    pub(crate) approved_by: Vec<String>,
    /// Who edited the arguments last.
    pub(crate) edited_by: Option<String>,
    /// How many more distinct approvals it needs (0 once decided).
    pub(crate) still_needed: usize,
    /// Every decision, oldest first.
    pub(crate) decisions: Vec<DecisionRecord>,
    /// For a call that must not run: why, as the agent or model is told.
    pub(crate) message: Option<String>,
    /// True for calls asked for over this API (the agent runs the tool);
    /// false for calls of runs toolgate's engine drives.
    pub(crate) external: bool,
    /// Who started the run.
    pub(crate) requested_by: Option<String>,
}

impl From<&ApprovalDetail> for ApprovalDetailBody {
    fn from(detail: &ApprovalDetail) -> ApprovalDetailBody {
        let approval = &detail.approval;
        ApprovalDetailBody {
            approval: Approval::from(&detail.row),
            description: approval.description.clone(),
            schema: approval.schema.clone(),
            proposed_args: approval.call.args.clone(),
            context: approval.context.clone(),
            approved_by: approval.approved_by.clone(),
            edited_by: approval.edited_by.clone(),
            still_needed: if approval.status == ApprovalStatus::Pending {
                approval.still_needed()
            } else {
                0
            },
            decisions: approval
                .decisions
                .iter()
                .enumerate()
                .map(|(index, record)| {
                    let (message, args) = match &record.decision {
                        Decision::Approve => (None, None),
                        Decision::Edit { args, .. } => (None, Some(args.clone())),
                        Decision::Reject { message } => (message.clone(), None),
                    };
                    DecisionRecord {
                        principal: record.principal.clone(),
                        decision: record.decision.kind().to_owned(),
                        at: detail.decided_at.get(index).copied().map(format_millis),
                        message,
                        args,
                    }
                })
                .collect(),
            message: detail.refusal().map(str::to_owned),
            external: detail.external,
            requested_by: detail.run_principal.clone(),
        }
    }
}

/// `POST /v1/approvals`: a call an agent wants to make.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateApproval {
    /// The tool's name.
    pub(crate) tool: String,
    /// Its arguments.
    #[schema(value_type = Object)]
    pub(crate) args: Map<String, Value>,
    /// The JSON Schema of the arguments: they are checked against it now,
    /// and edits later. Without it, any arguments are accepted.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub(crate) schema: Option<Value>,
    /// What the tool does, for the people deciding.
    #[serde(default)]
    pub(crate) description: Option<String>,
    /// Anything the people deciding should see (any JSON).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub(crate) context: Option<Value>,
    /// The run to add the call to (created if new); grants made "for this
    /// run" cover its later calls. Without it, a new run.
    #[serde(default)]
    pub(crate) run_id: Option<String>,
    /// The agent's conversation thread, for grants scoped to a thread.
    #[serde(default)]
    pub(crate) thread: Option<String>,
    /// The tool's hints: a read-only tool is allowed when no policy rule
    /// matches; anything else is asked about.
    #[serde(default)]
    pub(crate) hints: Hints,
}

/// A tool's hints (MCP's tool annotations).
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Hints {
    /// The tool changes nothing.
    #[serde(default)]
    pub(crate) read_only: Option<bool>,
    /// The tool may destroy or overwrite something.
    #[serde(default)]
    pub(crate) destructive: Option<bool>,
    /// Calling it twice has the effect of once.
    #[serde(default)]
    pub(crate) idempotent: Option<bool>,
}

/// What a person decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DecisionKind {
    /// Run the call as it is.
    Approve,
    /// Run it with `args` instead.
    Edit,
    /// Do not run it; `message` goes back to the agent or model.
    Reject,
}

/// `POST /v1/approvals/{id}/decision`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecisionBody {
    /// Approve, edit or reject.
    pub(crate) decision: DecisionKind,
    /// For `edit`: the new arguments, checked against the schema.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub(crate) args: Option<Map<String, Value>>,
    /// For `reject`: why, for the agent or model.
    #[serde(default)]
    pub(crate) message: Option<String>,
    /// The fingerprint of the call as the decider saw it; the decision is
    /// refused (409) if the call changed since. Without it, the decision
    /// is for the call as it stands when the decision is recorded.
    #[serde(default)]
    pub(crate) fingerprint: Option<String>,
    /// Also make a standing grant (not with `reject`).
    #[serde(default)]
    pub(crate) grant: Option<GrantBody>,
}

/// A grant to make with a decision: its scope as text (`run`, `thread`,
/// `uses:N`, `for:DURATION`, `until:RFC3339`), or an object with the scope
/// and optionally a tool glob and a CEL condition.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum GrantBody {
    /// Just the scope: for the decided call's tool, any arguments.
    Scope(String),
    /// The scope, with what it covers.
    Full {
        /// `run`, `thread`, `uses:N`, `for:DURATION` or `until:RFC3339`.
        scope: String,
        /// A glob over tool names; by default the decided call's tool.
        #[serde(default)]
        tool: Option<String>,
        /// A CEL condition later calls must meet.
        #[serde(default)]
        when: Option<String>,
    },
}

/// A standing approval.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct GrantView {
    /// The grant's id.
    pub(crate) id: String,
    /// The glob over tool names it covers.
    pub(crate) tool: String,
    /// The CEL condition calls must meet.
    pub(crate) when: Option<String>,
    /// `run`, `thread`, `until` or `uses`.
    pub(crate) scope: String,
    /// The run, for `run` grants.
    pub(crate) run_id: Option<String>,
    /// The thread, for `thread` grants.
    pub(crate) thread: Option<String>,
    /// When it ends, for `until` grants (RFC 3339).
    pub(crate) until: Option<String>,
    /// How many calls it covered when made, for `uses` grants.
    pub(crate) uses: Option<u32>,
    /// Calls it may still cover, for `uses` grants.
    pub(crate) uses_left: Option<u32>,
    /// Who made it.
    pub(crate) created_by: String,
    /// When (RFC 3339).
    pub(crate) created_at: String,
    /// The approval whose decision made it.
    pub(crate) approval_id: Option<String>,
    /// Who revoked it.
    pub(crate) revoked_by: Option<String>,
    /// When (RFC 3339).
    pub(crate) revoked_at: Option<String>,
    /// `live` (it covers calls), `revoked`, `used up` or `expired`.
    pub(crate) state: String,
}

impl GrantView {
    /// The view of `grant` at `now`.
    pub(crate) fn of(grant: &Grant, now: i64) -> GrantView {
        let (scope, run_id, thread, until, uses) = match &grant.scope {
            GrantScope::Run { run_id } => ("run", Some(run_id.clone()), None, None, None),
            GrantScope::Thread { thread } => ("thread", None, Some(thread.clone()), None, None),
            GrantScope::Until { until } => ("until", None, None, Some(format_millis(*until)), None),
            GrantScope::Uses { uses } => ("uses", None, None, None, Some(*uses)),
        };
        GrantView {
            id: grant.id.clone(),
            tool: grant.tool.clone(),
            when: grant.when.clone(),
            scope: scope.to_owned(),
            run_id,
            thread,
            until,
            uses,
            uses_left: grant.uses_left,
            created_by: grant.created_by.clone(),
            created_at: format_millis(grant.created_at),
            approval_id: grant.approval_id.clone(),
            revoked_by: grant.revoked.as_ref().map(|r| r.by.clone()),
            revoked_at: grant.revoked.as_ref().map(|r| format_millis(r.at)),
            state: grant.state(now).to_owned(),
        }
    }
}

/// The answer to a decision.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct DecisionAnswer {
    /// The approval after the decision.
    pub(crate) approval: ApprovalDetailBody,
    /// The grant the decision made, if it made one.
    pub(crate) grant: Option<GrantView>,
}

/// A page of approvals, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct ApprovalPage {
    /// The approvals.
    pub(crate) approvals: Vec<Approval>,
    /// Pass as `before` for the next page; absent on the last page.
    pub(crate) next_before: Option<String>,
}

/// A page of grants, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct GrantList {
    /// The grants.
    pub(crate) grants: Vec<GrantView>,
    /// Pass as `before` for the next page; absent on the last page.
    pub(crate) next_before: Option<String>,
}

/// Who the caller is.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct Me {
    /// The name decisions are recorded under.
    pub(crate) name: String,
    /// `agent`, `approver` or `admin`.
    pub(crate) role: String,
    /// The groups they belong to.
    pub(crate) groups: Vec<String>,
    /// The token's id.
    pub(crate) token_id: String,
}

impl From<&TokenRecord> for Me {
    fn from(token: &TokenRecord) -> Me {
        Me {
            name: token.principal.name.clone(),
            role: token.principal.role.as_str().to_owned(),
            groups: token.principal.groups.clone(),
            token_id: token.id.clone(),
        }
    }
}

/// `POST /v1/tokens`: a token to make.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateToken {
    /// The principal's name, which decisions are recorded under (1 to 64
    /// letters, digits and `. _ @ -`).
    pub(crate) name: String,
    /// `agent` (asks, waits, never decides), `approver` (decides the
    /// approvals it is named for) or `admin` (decides any, manages
    /// tokens).
    pub(crate) role: String,
    /// The groups the principal belongs to, for policy rules with
    /// `approvers = ["group:NAME"]`.
    #[serde(default)]
    pub(crate) groups: Vec<String>,
    /// The token stops working after this long (`90d`, `12h`); by default
    /// it works until revoked.
    #[serde(default)]
    pub(crate) expires_in: Option<String>,
}

/// A token just made: the only time its secret is shown.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The token's id (not secret): what listings show and revocation
    /// takes.
    pub id: String,
    /// The secret, to send as `Authorization: Bearer …`. The server keeps
    /// only its SHA-256: it cannot be shown again.
    pub token: String,
    /// The principal's name.
    pub name: String,
    /// `agent`, `approver` or `admin`.
    pub role: String,
    /// The principal's groups.
    pub groups: Vec<String>,
    /// When it stops working (RFC 3339); absent when it works until
    /// revoked.
    pub expires_at: Option<String>,
}

impl From<&crate::tokens::IssuedToken> for CreatedToken {
    fn from(issued: &crate::tokens::IssuedToken) -> CreatedToken {
        let record = &issued.record;
        CreatedToken {
            id: record.id.clone(),
            token: issued.secret.clone(),
            name: record.principal.name.clone(),
            role: record.principal.role.as_str().to_owned(),
            groups: record.principal.groups.clone(),
            expires_at: record.expires_at.map(format_millis),
        }
    }
}

/// Whether a token works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TokenState {
    /// It works.
    Live,
    /// Revoked: refused from then on.
    Revoked,
    /// Past its expiry.
    Expired,
}

/// A token as listings show it, never with its secret.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TokenView {
    /// The token's id.
    pub id: String,
    /// The principal's name.
    pub name: String,
    /// `agent`, `approver` or `admin`.
    pub role: String,
    /// The principal's groups.
    pub groups: Vec<String>,
    /// Who made it.
    pub created_by: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// When it stops working, if ever.
    pub expires_at: Option<String>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
    /// Whether it works now.
    pub state: TokenState,
}

impl TokenState {
    /// Where `token` stands at `now`.
    pub fn of(token: &TokenRecord, now: i64) -> TokenState {
        if token.revoked_at.is_some() {
            TokenState::Revoked
        } else if token.is_live(now) {
            TokenState::Live
        } else {
            TokenState::Expired
        }
    }

    /// The state as the API and the command line spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Live => "live",
            TokenState::Revoked => "revoked",
            TokenState::Expired => "expired",
        }
    }
}

impl TokenView {
    /// How `token` shows at `now`.
    pub fn of(token: &TokenRecord, now: i64) -> TokenView {
        TokenView {
            id: token.id.clone(),
            name: token.principal.name.clone(),
            role: token.principal.role.as_str().to_owned(),
            groups: token.principal.groups.clone(),
            created_by: token.created_by.clone(),
            created_at: format_millis(token.created_at),
            expires_at: token.expires_at.map(format_millis),
            revoked_at: token.revoked_at.map(format_millis),
            state: TokenState::of(token, now),
        }
    }
}

/// The tokens, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct TokenList {
    /// The tokens, revoked and expired ones included.
    pub(crate) tokens: Vec<TokenView>,
}

/// Where a webhook delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: refused (a 4xx other than 408 and 429), or every attempt
    /// failed.
    Failed,
}

impl From<DeliveryStatus> for DeliveryState {
    fn from(status: DeliveryStatus) -> DeliveryState {
        match status {
            DeliveryStatus::Pending => DeliveryState::Pending,
            DeliveryStatus::Delivered => DeliveryState::Delivered,
            DeliveryStatus::Failed => DeliveryState::Failed,
        }
    }
}

/// One attempt at a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct AttemptView {
    /// Its number, from 1.
    pub(crate) attempt: u32,
    /// When it started (RFC 3339).
    pub(crate) at: String,
    /// How long it took, in milliseconds.
    pub(crate) duration_ms: u64,
    /// The receiver's HTTP status, if it answered.
    pub(crate) status_code: Option<u16>,
    /// What went wrong, if something did.
    pub(crate) error: Option<String>,
}

/// A webhook delivery: one event for one receiver, and its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct DeliveryView {
    /// The delivery's id (the `Toolgate-Webhook-Id` header and the
    /// payload's `id`).
    pub(crate) id: String,
    /// The webhook's URL.
    pub(crate) webhook: String,
    /// `approval.requested`, `approval.decided` or `run.completed`.
    #[serde(rename = "type")]
    pub(crate) event_type: String,
    /// Where it stands.
    pub(crate) status: DeliveryState,
    /// When it was made (RFC 3339).
    pub(crate) created_at: String,
    /// When it is attempted next, while pending (RFC 3339).
    pub(crate) next_attempt_at: Option<String>,
    /// The audit entry it was derived from.
    pub(crate) audit_seq: u64,
    /// The body sent.
    #[schema(value_type = Object)]
    pub(crate) payload: Value,
    /// Every attempt, oldest first.
    pub(crate) attempts: Vec<AttemptView>,
}

impl From<&Delivery> for DeliveryView {
    fn from(delivery: &Delivery) -> DeliveryView {
        DeliveryView {
            id: delivery.id.clone(),
            webhook: delivery.webhook.clone(),
            event_type: delivery.event_type.clone(),
            status: delivery.status.into(),
            created_at: format_millis(delivery.created_at),
            next_attempt_at: (delivery.status == DeliveryStatus::Pending)
                .then(|| format_millis(delivery.next_attempt_at)),
            audit_seq: delivery.audit_seq,
            payload: serde_json::from_str(&delivery.payload)
                .unwrap_or_else(|_| Value::String(delivery.payload.clone())),
            attempts: delivery
                .attempts
                .iter()
                .map(|attempt| AttemptView {
                    attempt: attempt.attempt,
                    at: format_millis(attempt.at),
                    duration_ms: attempt.duration_ms,
                    status_code: attempt.status_code,
                    error: attempt.error.clone(),
                })
                .collect(),
        }
    }
}

/// A delivery made pending again.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct Redelivery {
    /// The delivery's id.
    pub(crate) id: String,
    /// `pending`.
    pub(crate) status: &'static str,
}

/// Webhook deliveries, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct DeliveryList {
    /// The deliveries.
    pub(crate) deliveries: Vec<DeliveryView>,
}
