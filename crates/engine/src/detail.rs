//! One approval with everything its run's log says about it: who decided
//! what and when, when it expired, and what the model or agent was told.
//! The command line's `approvals show` and the server's approval pages
//! both read approvals through this.

use toolgate_core::grant::Grant;
use toolgate_core::run::{ApprovalState, ApprovalStatus, CallState, Event, RunState, RunStatus};
use toolgate_core::store::{ApprovalRow, Store, StoreError, StoredEvent};
use toolgate_core::{Message, ToolMessage};

/// An approval, its listing row, and its history in its run's log.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalDetail {
    /// The listing row.
    pub row: ApprovalRow,
    /// The approval as folded: description, schema, context, decisions.
    pub approval: ApprovalState,
    /// When each of `approval.decisions` was recorded, in order.
    pub decided_at: Vec<i64>,
    /// When it expired, if it did.
    pub expired_at: Option<i64>,
    /// The grants its decisions made, in order, as they were made (the
    /// store has how many uses they have left, and whether they were
    /// revoked).
    pub grants: Vec<Grant>,
    /// What the model (or the outside agent) was told once the call was
    /// over: the tool's result, or why it did not run.
    pub result: Option<ToolMessage>,
    /// Who started the run.
    pub run_principal: Option<String>,
    /// Whether the run is an outside agent's (see [`crate::request_call`]).
    pub external: bool,
    /// Where the run stands.
    pub run_status: RunStatus,
}

impl ApprovalDetail {
    /// Folds `events`, the log of `row`'s run, watching for the approval;
    /// `None` when the log does not have it.
    pub fn of(row: ApprovalRow, events: &[StoredEvent]) -> Option<ApprovalDetail> {
        let approval_id = row.id.as_str();
        let call_id = row.call_id.as_str();
        let mut state = RunState::fold([]);
        let mut decided_at = Vec::new();
        let mut expired_at = None;
        let mut result = None;
        let mut grants = Vec::new();
        for stored in events {
            if let Event::DecisionRecorded {
                approval_id: decided,
                grant: Some(grant),
                ..
            } = &stored.event
                && decided == approval_id
            {
                grants.push(grant.clone());
            }
            let in_turn = in_turn(&state, approval_id);
            let messages_before = state.messages.len();
            state.apply(&stored.event);
            if let Some(approval) = state.approval(approval_id) {
                while decided_at.len() < approval.decisions.len() {
                    decided_at.push(stored.at);
                }
                if approval.status == ApprovalStatus::Expired && expired_at.is_none() {
                    expired_at = Some(stored.at);
                }
            }
            if let Some(call) = open_call(&state, approval_id) {
                if let Some(over) = &call.result {
                    result = Some(over.clone());
                }
            } else if in_turn || result.is_none() {
                // The turn closed with this event (or in the same append
                // that made the approval): the call's result joined the
                // conversation.
                let joined = state.messages[messages_before..]
                    .iter()
                    .find_map(|m| match m {
                        Message::Tool(tool) if tool.tool_call_id == call_id => Some(tool),
                        _ => None,
                    });
                if let Some(joined) = joined {
                    result = Some(joined.clone());
                }
            }
        }
        let approval = state.approval(approval_id)?.clone();
        Some(ApprovalDetail {
            row,
            approval,
            decided_at,
            expired_at,
            grants,
            result,
            run_principal: state.principal.clone(),
            external: state.external,
            run_status: state.status,
        })
    }

    /// An approval made by the append that left its run at `state`, at
    /// `at`: what [`ApprovalDetail::of`] finds in the log, without reading
    /// or folding it again. Every decision the approval has was recorded
    /// with it (by policy or a grant).
    pub(crate) fn just_made(row: ApprovalRow, state: &RunState, at: i64) -> Option<ApprovalDetail> {
        let approval = state.approval(&row.id)?.clone();
        // The call's result, while the call is open; once it closed (a
        // refusal, say), the message it left in the conversation: its call
        // id is new, so no other message has it.
        let result = match open_call(state, &row.id) {
            Some(call) => call.result.clone(),
            None => state.messages.iter().rev().find_map(|m| match m {
                Message::Tool(tool) if tool.tool_call_id == row.call_id => Some(tool.clone()),
                _ => None,
            }),
        };
        Some(ApprovalDetail {
            decided_at: vec![at; approval.decisions.len()],
            expired_at: (approval.status == ApprovalStatus::Expired).then_some(at),
            // Policy or a grant decided it: no person, so no grant made.
            grants: Vec::new(),
            result,
            run_principal: state.principal.clone(),
            external: state.external,
            run_status: state.status.clone(),
            row,
            approval,
        })
    }

    /// The approval as it stood once `events`, the start of its run's log,
    /// had happened: its row computed from their fold (decided at the last
    /// event's time, if it is decided), not the row the store holds now.
    /// Webhooks describe each event this way, whenever they are computed.
    pub fn as_of(
        run_id: &str,
        approval_id: &str,
        events: &[StoredEvent],
    ) -> Option<ApprovalDetail> {
        let state = RunState::fold(events.iter().map(|stored| &stored.event));
        let approval = state.approval(approval_id)?;
        let row = crate::rows::approval_row(run_id, approval, events.last().map(|e| e.at));
        ApprovalDetail::of(row, events)
    }

    /// Why the call did not run, for an approval that was rejected, expired
    /// or cancelled: what the model or agent was told.
    pub fn refusal(&self) -> Option<&str> {
        self.result
            .as_ref()
            .filter(|result| result.is_error)
            .map(|result| result.content.as_str())
    }
}

fn in_turn(state: &RunState, approval_id: &str) -> bool {
    open_call(state, approval_id).is_some()
}

/// The open call (of the model's turn, or an outside agent's not yet
/// handed over) that approval `approval_id` is for.
fn open_call<'a>(state: &'a RunState, approval_id: &str) -> Option<&'a CallState> {
    state
        .calls
        .iter()
        .find(|c| c.approval.as_ref().is_some_and(|a| a.id == approval_id))
}

/// Reads approval `approval_id` and folds its run.
pub async fn approval_detail(
    store: &dyn Store,
    approval_id: &str,
) -> Result<ApprovalDetail, StoreError> {
    let (row, events) = store.approval_with_log(approval_id).await?;
    let run_id = row.run_id.clone();
    ApprovalDetail::of(row, &events).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "approval {approval_id} has a row but is not in the log of run {run_id}; \
             `toolgate audit verify` checks the store"
        ))
    })
}
