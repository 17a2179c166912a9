//! `GET /v1/events`: the audit log as server-sent events, as it grows.
//!
//! Each entry is one event: its `id` is the entry's sequence number (so a
//! client that reconnects with `Last-Event-ID` misses nothing), its
//! `event` the entry's kind (`approval_requested`, `decision_recorded`,
//! `run_completed`, …) and its `data` the entry as JSON. Agents see only
//! their own runs' entries; approvers and admins see all.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use toolgate_core::audit::AuditEntry;
use utoipa::IntoParams;

use crate::api::Params;
use crate::auth::Caller;
use crate::problem::Problem;
use crate::state::AppState;

/// How many entries one read of the log takes.
const PAGE: usize = 256;

/// Where to start.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventParams {
    /// Send the entries after this sequence number (0 for the whole log);
    /// by default only new ones. `Last-Event-ID` does the same.
    after: Option<u64>,
}

/// One event of the stream, as the OpenAPI document describes it (the
/// stream itself is written by [`sse_event`]).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Never built: it describes the wire format.
pub(crate) struct SentEvent {
    /// The entry's sequence number: send the last one seen back as
    /// `Last-Event-ID` (or `?after=`) to go on from there.
    id: String,
    /// The entry's kind (`approval_requested`, `decision_recorded`,
    /// `run_completed`, …).
    event: String,
    /// The entry as JSON text: `{"seq", "at", "run_id", "kind", "event"}`,
    /// `event` being the event as recorded.
    data: String,
}

/// Stream the audit log's new entries.
#[utoipa::path(
    get, path = "/v1/events", tag = "events",
    params(EventParams),
    responses(
        (status = 200, description = "A text/event-stream of audit entries, one event each", content_type = "text/event-stream", body = SentEvent),
        (status = 400, description = "A bad starting point, or one past the end of the log", body = crate::problem::ProblemDocument),
        (status = 401, description = "No token, or a bad one", body = crate::problem::ProblemDocument),
    ),
    security(("token" = []))
)]
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Params(params): Params<EventParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Problem::bad_request("Last-Event-ID must be the number of an event")
                })?,
        ),
    };
    let head = state.store.audit_head().await?;
    let after = match last_event_id.or(params.after) {
        // The log only grows: an entry past its end now was never there
        // (the store was replaced, say), and waiting for it would send
        // nothing until the log caught up.
        Some(after) if after > head => {
            return Err(Problem::bad_request(format!(
                "there is no event {after}: the log ends at {head}; start again without \
                 `after` or `Last-Event-ID` for new events, or with after=0 for all"
            )));
        }
        Some(after) => after,
        None => head,
    };
    let follower = Follower {
        state: Arc::clone(&state),
        caller,
        after,
        visible: HashMap::new(),
        queue: Vec::new().into_iter(),
        changes: state.changes.subscribe(),
        shutdown: state.shutdown.subscribe(),
    };
    let stream = futures::stream::unfold(follower, |mut follower| async move {
        let event = follower.next().await?;
        Some((Ok(event), follower))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Follows the log for one client.
struct Follower {
    state: Arc<AppState>,
    caller: Caller,
    after: u64,
    /// Whether the caller may see each run seen so far.
    visible: HashMap<String, bool>,
    queue: std::vec::IntoIter<AuditEntry>,
    changes: tokio::sync::watch::Receiver<u64>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Follower {
    /// The next entry the caller may see; `None` ends the stream (the
    /// server is shutting down, or the store failed: the client
    /// reconnects with `Last-Event-ID`).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            while let Some(entry) = self.queue.next() {
                self.after = entry.seq;
                if self.may_see(&entry).await {
                    return Some(sse_event(&entry));
                }
            }
            let page = self.state.store.audit(self.after, PAGE).await.ok()?;
            if page.is_empty() {
                tokio::select! {
                    _ = self.changes.changed() => {}
                    _ = self.shutdown.changed() => {}
                    () = tokio::time::sleep(self.state.recheck()) => {}
                }
            }
            self.queue = page.into_iter();
        }
    }

    async fn may_see(&mut self, entry: &AuditEntry) -> bool {
        // Token changes, like the token listing, are for admins.
        if entry.kind.starts_with("token_") {
            return self.caller.is_admin();
        }
        if !self.caller.is_agent() {
            return true;
        }
        let Some(run_id) = &entry.run_id else {
            return false;
        };
        if let Some(visible) = self.visible.get(run_id) {
            return *visible;
        }
        let visible = self
            .caller
            .started(self.state.store.as_ref(), run_id)
            .await
            .unwrap_or(false);
        self.visible.insert(run_id.clone(), visible);
        visible
    }
}

fn sse_event(entry: &AuditEntry) -> Event {
    Event::default()
        .id(entry.seq.to_string())
        .event(entry.kind.clone())
        .data(sse_data(entry))
}

/// An entry's `data`: `{"seq", "at", "run_id", "kind", "event"}`, where
/// `event` is the entry's body as stored (JSON text, so it goes in as it
/// is, checked but not parsed into a tree and written out again), or
/// `null` should the body not be JSON.
fn sse_data(entry: &AuditEntry) -> String {
    #[derive(Serialize)]
    struct Head<'a> {
        seq: u64,
        at: String,
        run_id: &'a Option<String>,
        kind: &'a str,
    }
    let head = Head {
        seq: entry.seq,
        at: toolgate_core::time::format_millis(entry.at),
        run_id: &entry.run_id,
        kind: &entry.kind,
    };
    let body = entry.body.trim();
    let body = match serde_json::from_str::<IgnoredAny>(body) {
        Ok(_) => body,
        Err(_) => "null",
    };
    let mut data = serde_json::to_string(&head).expect("the head is plain data");
    // `{…}` becomes `{…,"event":BODY}`.
    data.pop();
    data.reserve(body.len() + 10);
    data.push_str(",\"event\":");
    data.push_str(body);
    data.push('}');
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn entry(body: &str, run_id: Option<&str>) -> AuditEntry {
        AuditEntry {
            seq: 42,
            at: 1_800_000_000_123,
            run_id: run_id.map(str::to_owned),
            kind: "approval_requested".to_owned(),
            body: body.to_owned(),
            hash: [0; 32],
            signature: None,
        }
    }

    #[test]
    fn the_data_holds_the_body_as_stored() {
        let body = r#"{"type":"approval_requested","approval_id":"a1","args":{"to":"\"x\" <y@z>\n","n":1.5}}"#;
        let data = sse_data(&entry(body, Some("run-1")));
        let parsed: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(
            parsed,
            json!({
                "seq": 42,
                "at": toolgate_core::time::format_millis(1_800_000_000_123),
                "run_id": "run-1",
                "kind": "approval_requested",
                "event": serde_json::from_str::<Value>(body).unwrap(),
            })
        );
        assert!(data.ends_with(&format!(",\"event\":{body}}}")), "{data}");
        assert!(!data.contains('\n'), "one data line: {data}");
    }

    #[test]
    fn a_body_that_is_not_json_is_sent_as_null() {
        for body in ["", "{\"type\":", "not json", "{} {}"] {
            let data = sse_data(&entry(body, None));
            let parsed: Value = serde_json::from_str(&data).unwrap();
            assert_eq!(parsed["event"], Value::Null, "{body:?}");
            assert_eq!(parsed["run_id"], Value::Null);
        }
    }
}
