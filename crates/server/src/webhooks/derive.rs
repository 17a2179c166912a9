//! Turning audit entries into webhook events.
//!
//! An entry is placed in its run's log, and the run is folded to just
//! before and just after it: an approval that appears pending is
//! `approval.requested`; one that leaves `pending` (or appears already
//! settled, as an outside agent's call that policy or a grant settled at
//! once) is `approval.decided`; a run that finishes is `run.completed`. A
//! partial quorum vote changes no status and so sends nothing.
//!
//! Payloads describe the approval as it stood at that entry (its fold up
//! to there), not as it stands when the server gets round to it, so two
//! servers compute the same event, and a slow dispatcher does not send a
//! `requested` that already says `approved`.

use std::collections::HashMap;

use serde_json::{Value, json};
use toolgate_core::audit::AuditEntry;
use toolgate_core::run::{ApprovalStatus, Event, RunState, RunStatus};
use toolgate_core::store::{NewDelivery, Store, StoreError, StoredEvent};
use toolgate_core::time::format_millis;
use toolgate_engine::ApprovalDetail;

use super::WebhookEvent;
use crate::wire::ApprovalDetailBody;

/// The kinds of entry that can change an approval's status or end a run;
/// the others are skipped without reading their run.
const KINDS: [&str; 5] = [
    "approval_requested",
    "decision_recorded",
    "approval_expired",
    "run_completed",
    "run_failed",
];

/// An event, ready to become one delivery per webhook.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Derived {
    pub(crate) kind: WebhookEvent,
    /// What it is about: one delivery per key and webhook.
    pub(crate) key: String,
    pub(crate) audit_seq: u64,
    pub(crate) at: i64,
    pub(crate) data: Value,
}

impl Derived {
    /// The delivery of this event with id `id`.
    pub(crate) fn delivery(&self, id: String) -> NewDelivery {
        let payload = json!({
            "id": id,
            "type": self.kind.as_str(),
            "created_at": format_millis(self.at),
            "data": self.data,
        });
        NewDelivery {
            id,
            event_key: self.key.clone(),
            event_type: self.kind.as_str().to_owned(),
            audit_seq: self.audit_seq,
            payload: payload.to_string(),
            created_at: self.at,
        }
    }
}

/// A run's log, folded as far as the entries placed so far.
struct Run {
    events: Vec<StoredEvent>,
    /// The next position to look at: entries come in log order.
    next: usize,
    /// The fold of `events[..next]`.
    state: RunState,
}

/// The events of `entries` (a page of the audit log, oldest first).
pub(crate) async fn events(
    store: &dyn Store,
    entries: &[AuditEntry],
) -> Result<Vec<Derived>, StoreError> {
    let mut runs: HashMap<String, Run> = HashMap::new();
    let mut derived = Vec::new();
    for entry in entries {
        let Some(run_id) = &entry.run_id else {
            continue;
        };
        if !KINDS.contains(&entry.kind.as_str()) {
            continue;
        }
        // An entry of a kind this version does not read sends nothing.
        let Ok(event) = serde_json::from_str::<Event>(&entry.body) else {
            continue;
        };
        if !runs.contains_key(run_id) {
            // Loaded after the page was read, so the log has every entry
            // of the page.
            let events = store.load(run_id).await?;
            runs.insert(
                run_id.clone(),
                Run {
                    events,
                    next: 0,
                    state: RunState::fold([]),
                },
            );
        }
        let run = runs.get_mut(run_id).expect("inserted above");
        // The run's log and the audit log are the same records in the same
        // order, with the same times: the entry is the first event from
        // `next` on with its time and content.
        let Some(offset) = run.events[run.next..]
            .iter()
            .position(|stored| stored.at == entry.at && stored.event == event)
        else {
            continue;
        };
        let position = run.next + offset;
        for stored in &run.events[run.next..position] {
            run.state.apply(&stored.event);
        }
        let before = run.state.clone();
        run.state.apply(&run.events[position].event);
        run.next = position + 1;
        let after = &run.state;
        let upto = &run.events[..=position];
        for approval in after.approvals() {
            let was = before.approval(&approval.id).map(|a| a.status);
            let kind = match (was, approval.status) {
                (None, ApprovalStatus::Pending) => WebhookEvent::ApprovalRequested,
                (None, _) | (Some(ApprovalStatus::Pending), _)
                    if approval.status != ApprovalStatus::Pending =>
                {
                    WebhookEvent::ApprovalDecided
                }
                _ => continue,
            };
            let Some(detail) = ApprovalDetail::as_of(run_id, &approval.id, upto) else {
                continue;
            };
            let data = serde_json::to_value(ApprovalDetailBody::from(&detail))
                .map_err(|error| StoreError::Backend(error.to_string().into()))?;
            derived.push(Derived {
                kind,
                key: format!("{}:{}", kind.as_str(), approval.id),
                audit_seq: entry.seq,
                at: entry.at,
                data,
            });
        }
        if !before.status.is_finished() && after.status.is_finished() {
            let mut data = json!({
                "run_id": run_id,
                "status": after.status.as_str(),
                "thread": after.thread,
                "completed_at": format_millis(entry.at),
            });
            match &after.status {
                RunStatus::Completed { answer } => data["answer"] = json!(answer),
                RunStatus::Failed { error } => data["error"] = json!(error),
                _ => {}
            }
            derived.push(Derived {
                kind: WebhookEvent::RunCompleted,
                key: format!("run.completed:{run_id}"),
                audit_seq: entry.seq,
                at: entry.at,
                data,
            });
        }
    }
    Ok(derived)
}
