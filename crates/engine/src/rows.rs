//! The listing rows a store keeps beside a run's log, computed from the
//! fold of the log so that stores hold no domain logic.

use toolgate_core::Message;
use toolgate_core::run::{ApprovalState, ApprovalStatus, RunState};
use toolgate_core::store::{ApprovalRow, RunRow};

/// How much of the first request a run listing keeps.
const PROMPT_CHARS: usize = 200;

/// The run's row after its log reached `state`.
pub(crate) fn run_row(run_id: &str, state: &RunState, created_at: i64, now: i64) -> RunRow {
    let prompt = state
        .messages
        .iter()
        .find_map(|m| match m {
            Message::Human { content } => Some(content.as_str()),
            _ => None,
        })
        .unwrap_or_default();
    let asks_over_api;
    let prompt = match (&state.principal, state.external) {
        (Some(principal), true) => {
            asks_over_api = format!("calls asked for by {principal} over the API");
            asks_over_api.as_str()
        }
        _ => prompt,
    };
    // An external run the engine has nothing to do for is `open`, not
    // `running`: workers claim `running` runs to drive them.
    let status = match (&state.status, state.external) {
        (toolgate_core::run::RunStatus::Running, true) => "open",
        (status, _) => status.as_str(),
    };
    RunRow {
        id: run_id.to_owned(),
        status: status.to_owned(),
        thread: state.thread.clone(),
        // No more bytes than characters wanted: nothing to cut.
        prompt: if prompt.len() <= PROMPT_CHARS {
            prompt.to_owned()
        } else {
            prompt.chars().take(PROMPT_CHARS).collect()
        },
        created_at,
        updated_at: now,
        version: state.version,
    }
}

/// The row of one approval of `state`.
pub(crate) fn approval_row(
    run_id: &str,
    approval: &ApprovalState,
    decided_at: Option<i64>,
) -> ApprovalRow {
    let rule = approval.rule.to_string();
    ApprovalRow {
        id: approval.id.clone(),
        run_id: run_id.to_owned(),
        call_id: approval.call.id.clone(),
        tool: approval.call.name.clone(),
        args: approval.args.clone(),
        fingerprint: approval.fingerprint.clone(),
        status: approval.status,
        rule,
        quorum: approval.ask.quorum,
        approvers: approval
            .ask
            .approvers
            .iter()
            .map(ToString::to_string)
            .collect(),
        created_at: approval.requested_at,
        expires_at: approval.expires_at,
        decided_by: approval
            .decisions
            .last()
            .map(|d| d.principal.clone())
            .or_else(|| approval.settled_by.clone()),
        decided_at: if approval.status == ApprovalStatus::Pending {
            None
        } else {
            decided_at
        },
    }
}

/// What tells whether an approval changed: its status and how many
/// decisions it has, by id.
pub(crate) struct ApprovalMarks(Vec<(String, ApprovalStatus, usize)>);

impl ApprovalMarks {
    pub(crate) fn of(state: &RunState) -> ApprovalMarks {
        ApprovalMarks(
            state
                .approvals()
                .map(|a| (a.id.clone(), a.status, a.decisions.len()))
                .collect(),
        )
    }
}

/// The rows of the approvals that are new in `after`, or changed since
/// `before`.
pub(crate) fn changed_approvals(
    run_id: &str,
    before: &ApprovalMarks,
    after: &RunState,
    now: i64,
) -> Vec<ApprovalRow> {
    after
        .approvals()
        .filter(|approval| {
            before
                .0
                .iter()
                .find(|(id, ..)| *id == approval.id)
                .is_none_or(|(_, status, decisions)| {
                    *status != approval.status || *decisions != approval.decisions.len()
                })
        })
        .map(|approval| approval_row(run_id, approval, Some(now)))
        .collect()
}
