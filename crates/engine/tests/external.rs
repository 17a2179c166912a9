//! Outside agents' calls over a real SQLite store: recorded as started with
//! their clearance, a default timeout, grants left out on request, and
//! what the agent reports of each call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use serde_json::{Map, json};
use toolgate_core::audit::AuditEntry;
use toolgate_core::grant::Grant;
use toolgate_core::grant::{GrantRequest, GrantScope};
use toolgate_core::policy::Policy;
use toolgate_core::run::{ApprovalStatus, Event, Outcome};
use toolgate_core::store::{
    Append, ApprovalQuery, ApprovalRow, Delivery, DeliveryAttempt, DeliveryClaim, DeliveryNext,
    DeliveryQuery, DeliveryStatus, GrantQuery, Lease, NewDelivery, RunQuery, RunRow, Store,
    StoreError, StoredEvent, TokenRecord,
};
use toolgate_core::{Principal, Role, ToolHints};
use toolgate_engine::{
    CallReport, CallRequest, DecideError, DecisionRequest, NewApprovalId, RequestError, decide,
    report_call, request_call, request_call_kept, withdraw_call,
};

const NOW: i64 = 1_800_000_000_000;

fn store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = toolgate_store::SqliteStore::open(dir.path().join("toolgate.db")).unwrap();
    (Arc::new(store), dir)
}

fn agent() -> Principal {
    Principal::new("mcp:files", Role::Agent)
}

fn read_only() -> ToolHints {
    ToolHints {
        read_only: Some(true),
        ..ToolHints::default()
    }
}

fn request(tool: &str, hints: ToolHints) -> CallRequest {
    let mut request = CallRequest::new(tool, Map::new());
    request.run_id = Some("session-1".to_owned());
    request.hints = hints;
    request
}

fn kinds(events: &[toolgate_core::store::StoredEvent]) -> Vec<&'static str> {
    events.iter().map(|stored| stored.event.kind()).collect()
}

/// `by` approves the call of `row`, with `grant` if any.
async fn approve(
    store: &dyn Store,
    by: &Principal,
    row: &ApprovalRow,
    grant: Option<GrantRequest>,
    at: i64,
) -> Result<ApprovalRow, DecideError> {
    decide(
        store,
        by,
        &row.id,
        &row.fingerprint,
        DecisionRequest::Approve,
        grant,
        at,
    )
    .await
}

/// A grant for the calls of `tool` (a glob) in the run `session-1`.
fn session_grant(tool: &str) -> GrantRequest {
    GrantRequest {
        scope: GrantScope::Run {
            run_id: "session-1".to_owned(),
        },
        tool: Some(tool.to_owned()),
        when: None,
    }
}

#[tokio::test]
async fn a_call_cleared_at_once_is_started_in_the_same_commit_and_its_end_reported() {
    let (store, _dir) = store();
    let mut cleared = request("files:read_file", read_only());
    cleared.start = true;
    let detail = request_call(&*store, &Policy::default(), &agent(), cleared, NOW)
        .await
        .unwrap();
    assert_eq!(detail.row.status, ApprovalStatus::Approved);
    let log = store.load("session-1").await.unwrap();
    assert_eq!(
        kinds(&log),
        [
            "call_requested",
            "gate_verdict",
            "approval_requested",
            "tool_started"
        ]
    );

    let outcome = Outcome::Output {
        output: json!({"content": "hello"}),
    };
    report_call(
        &*store,
        &agent(),
        &detail.row.id,
        CallReport::Finished(outcome.clone()),
        NOW + 5,
    )
    .await
    .unwrap();
    let log = store.load("session-1").await.unwrap();
    assert_eq!(
        log.last().unwrap().event,
        Event::ToolFinished {
            call_id: detail.row.call_id.clone(),
            outcome,
        }
    );
    // Reported once only.
    let again = report_call(
        &*store,
        &agent(),
        &detail.row.id,
        CallReport::Finished(Outcome::Error {
            error: "twice".into(),
        }),
        NOW + 6,
    )
    .await
    .unwrap_err();
    assert_eq!(
        again.to_string(),
        format!(
            "the call of approval {} was already reported finished",
            detail.row.id
        )
    );
}

/// A store that notes, for each append, whether it was deferred and the
/// kinds of its events, and hands everything to a SQLite store.
struct Recording {
    inner: Arc<dyn Store>,
    appends: Mutex<Vec<(bool, Vec<&'static str>)>>,
}

impl Recording {
    fn note(&self, deferred: bool, append: &Append) {
        let kinds = append.events.iter().map(Event::kind).collect();
        self.appends.lock().unwrap().push((deferred, kinds));
    }

    fn take(&self) -> Vec<(bool, Vec<&'static str>)> {
        std::mem::take(&mut *self.appends.lock().unwrap())
    }
}

#[async_trait]
impl Store for Recording {
    async fn append(&self, append: Append) -> Result<u64, StoreError> {
        self.note(false, &append);
        self.inner.append(append).await
    }
    async fn append_deferred(&self, append: Append) -> Result<u64, StoreError> {
        self.note(true, &append);
        self.inner.append_deferred(append).await
    }
    async fn load(&self, run_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.load(run_id).await
    }
    async fn runs(&self, query: &RunQuery) -> Result<Vec<RunRow>, StoreError> {
        self.inner.runs(query).await
    }
    async fn approvals(&self, query: &ApprovalQuery) -> Result<Vec<ApprovalRow>, StoreError> {
        self.inner.approvals(query).await
    }
    async fn due_approvals(&self, now: i64, limit: usize) -> Result<Vec<ApprovalRow>, StoreError> {
        self.inner.due_approvals(now, limit).await
    }
    async fn approval(&self, id: &str) -> Result<ApprovalRow, StoreError> {
        self.inner.approval(id).await
    }
    async fn grants(&self, query: &GrantQuery) -> Result<Vec<Grant>, StoreError> {
        self.inner.grants(query).await
    }
    async fn use_grant(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.use_grant(id).await
    }
    async fn revoke_grant(&self, id: &str, by: &str, at: i64) -> Result<bool, StoreError> {
        self.inner.revoke_grant(id, by, at).await
    }
    async fn audit(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit(after, limit).await
    }
    async fn public_key(&self) -> Result<[u8; 32], StoreError> {
        self.inner.public_key().await
    }
    async fn audit_head(&self) -> Result<u64, StoreError> {
        self.inner.audit_head().await
    }
    async fn lease_run(
        &self,
        run_id: &str,
        owner: &str,
        until: i64,
        now: i64,
    ) -> Result<Lease, StoreError> {
        self.inner.lease_run(run_id, owner, until, now).await
    }
    async fn release_run(&self, run_id: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.release_run(run_id, owner).await
    }
    async fn claim_ready_runs(
        &self,
        owner: &str,
        until: i64,
        now: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.claim_ready_runs(owner, until, now, limit).await
    }
    async fn approval_count(&self, status: ApprovalStatus) -> Result<u64, StoreError> {
        self.inner.approval_count(status).await
    }
    async fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.inner.create_token(token).await
    }
    async fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.token_by_hash(hash).await
    }
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.inner.tokens().await
    }
    async fn revoke_token(&self, id: &str, by: &str, at: i64) -> Result<bool, StoreError> {
        self.inner.revoke_token(id, by, at).await
    }
    async fn webhook_cursor(&self, webhook: &str, start: u64) -> Result<u64, StoreError> {
        self.inner.webhook_cursor(webhook, start).await
    }
    async fn enqueue_deliveries(
        &self,
        webhook: &str,
        through: u64,
        deliveries: &[NewDelivery],
    ) -> Result<usize, StoreError> {
        self.inner
            .enqueue_deliveries(webhook, through, deliveries)
            .await
    }
    async fn claim_deliveries(&self, claim: &DeliveryClaim) -> Result<Vec<Delivery>, StoreError> {
        self.inner.claim_deliveries(claim).await
    }
    async fn record_attempt(
        &self,
        id: &str,
        claimer: &str,
        attempt: &DeliveryAttempt,
        next: DeliveryNext,
    ) -> Result<bool, StoreError> {
        self.inner.record_attempt(id, claimer, attempt, next).await
    }
    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError> {
        self.inner.deliveries(query).await
    }
    async fn redeliver(&self, id: &str, now: i64) -> Result<DeliveryStatus, StoreError> {
        self.inner.redeliver(id, now).await
    }
    async fn prune_deliveries(&self, before: i64) -> Result<u64, StoreError> {
        self.inner.prune_deliveries(before).await
    }
}

/// A read-only call cleared at once is recorded as started without a sync
/// of its own (it has no side effect to make at most once); any other
/// call's start is on disk before the agent is told to make it, whether
/// policy cleared it at once or a person approved it.
#[tokio::test]
async fn only_a_read_only_call_is_recorded_as_started_without_its_own_sync() {
    let (inner, _dir) = store();
    let store = Recording {
        inner,
        appends: Mutex::new(Vec::new()),
    };
    let started = [
        "call_requested",
        "gate_verdict",
        "approval_requested",
        "tool_started",
    ];
    let allow_all = Policy::from_toml_str(
        "[[policy.rules]]\ntool = \"*\"\naction = \"allow\"\n",
        "test",
    )
    .unwrap();

    let mut read = request("files:read_file", read_only());
    read.start = true;
    let kept = request_call_kept(&store, &Policy::default(), &agent(), read, NOW)
        .await
        .unwrap();
    assert_eq!(kept.detail().row.status, ApprovalStatus::Approved);
    assert_eq!(store.take(), [(true, started.to_vec())]);
    assert_eq!(
        kinds(&store.load("session-1").await.unwrap()),
        started,
        "committed all the same: the store has it"
    );

    // A tool that may write, allowed by a rule: synced first.
    let mut write = request("files:write_file", ToolHints::default());
    write.start = true;
    let kept = request_call_kept(&store, &allow_all, &agent(), write, NOW + 1)
        .await
        .unwrap();
    assert_eq!(kept.detail().row.status, ApprovalStatus::Approved);
    assert_eq!(store.take(), [(false, started.to_vec())]);

    // Read-only, but not recorded as started (the agent reports it): the
    // request alone, synced.
    let asked = request_call_kept(
        &store,
        &Policy::default(),
        &agent(),
        request("files:read_file", read_only()),
        NOW + 2,
    )
    .await
    .unwrap();
    assert_eq!(asked.detail().row.status, ApprovalStatus::Approved);
    assert_eq!(
        store.take(),
        [(false, started[..3].to_vec())],
        "nothing started, nothing deferred"
    );
}

#[tokio::test]
async fn a_held_call_gets_the_default_timeout_and_is_reported_only_once_decided() {
    let (store, _dir) = store();
    let mut held = request("files:write_file", ToolHints::default());
    held.timeout = Some(Duration::from_secs(90));
    held.start = true;
    let detail = request_call(&*store, &Policy::default(), &agent(), held, NOW)
        .await
        .unwrap();
    assert_eq!(detail.row.status, ApprovalStatus::Pending);
    assert_eq!(detail.row.expires_at, Some(NOW + 90_000));
    // Not started: it waits for people.
    let log = store.load("session-1").await.unwrap();
    assert!(!kinds(&log).contains(&"tool_started"));
    let early = report_call(&*store, &agent(), &detail.row.id, CallReport::Started, NOW)
        .await
        .unwrap_err();
    assert_eq!(
        early.to_string(),
        format!(
            "the call of approval {} is pending, not cleared to run: nothing to report",
            detail.row.id
        )
    );

    let alice = Principal::new("alice", Role::Approver);
    approve(&*store, &alice, &detail.row, None, NOW + 1)
        .await
        .unwrap();
    // Only the run's own agent (or an admin) reports on its calls.
    let stranger = Principal::new("mcp:other", Role::Agent);
    let refused = report_call(
        &*store,
        &stranger,
        &detail.row.id,
        CallReport::Started,
        NOW + 2,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(refused, RequestError::Forbidden { .. }),
        "{refused}"
    );
    report_call(
        &*store,
        &agent(),
        &detail.row.id,
        CallReport::Started,
        NOW + 2,
    )
    .await
    .unwrap();
    let twice = report_call(
        &*store,
        &agent(),
        &detail.row.id,
        CallReport::Started,
        NOW + 3,
    )
    .await
    .unwrap_err();
    assert_eq!(
        twice.to_string(),
        format!(
            "the call of approval {} was already reported started",
            detail.row.id
        )
    );
    report_call(
        &*store,
        &agent(),
        &detail.row.id,
        CallReport::Finished(Outcome::Error {
            error: "disk full".into(),
        }),
        NOW + 4,
    )
    .await
    .unwrap();
    let log = store.load("session-1").await.unwrap();
    let tail: Vec<_> = kinds(&log).into_iter().rev().take(2).collect();
    assert_eq!(tail, ["tool_finished", "tool_started"]);
}

#[tokio::test]
async fn grants_can_be_left_out_so_that_only_policy_or_people_clear_a_call() {
    let (store, _dir) = store();
    // A standing grant for every tool, made with a first decision.
    let first = request_call(
        &*store,
        &Policy::default(),
        &agent(),
        request("files:write_file", ToolHints::default()),
        NOW,
    )
    .await
    .unwrap();
    let admin = Principal::new("root", Role::Admin);
    approve(
        &*store,
        &admin,
        &first.row,
        Some(session_grant("*")),
        NOW + 1,
    )
    .await
    .unwrap();
    let granted = request_call(
        &*store,
        &Policy::default(),
        &agent(),
        request("toolgate.pin", ToolHints::default()),
        NOW + 2,
    )
    .await
    .unwrap();
    assert_eq!(granted.row.status, ApprovalStatus::Approved);
    assert!(granted.row.decided_by.unwrap().starts_with("grant "));

    let mut strict = request("toolgate.pin", ToolHints::default());
    strict.skip_grants = true;
    let asked = request_call(&*store, &Policy::default(), &agent(), strict, NOW + 3)
        .await
        .unwrap();
    assert_eq!(asked.row.status, ApprovalStatus::Pending);
}

#[tokio::test]
async fn a_withdrawn_call_is_cancelled_and_can_no_longer_be_approved() {
    let (store, _dir) = store();
    let held = request_call(
        &*store,
        &Policy::default(),
        &agent(),
        request("files:write_file", ToolHints::default()),
        NOW,
    )
    .await
    .unwrap();
    let stranger = Principal::new("mcp:other", Role::Agent);
    let refused = withdraw_call(&*store, &stranger, &held.row.id, None, NOW + 1)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, RequestError::Forbidden { .. }),
        "{refused}"
    );

    let row = withdraw_call(
        &*store,
        &agent(),
        &held.row.id,
        Some("the client cancelled the call".into()),
        NOW + 1,
    )
    .await
    .unwrap();
    assert_eq!(row.status, ApprovalStatus::Cancelled);
    let detail = toolgate_engine::approval_detail(&*store, &held.row.id)
        .await
        .unwrap();
    assert_eq!(
        detail.refusal(),
        Some("The agent withdrew this call: the client cancelled the call")
    );
    let alice = Principal::new("alice", Role::Approver);
    let late = approve(&*store, &alice, &held.row, None, NOW + 2).await;
    assert!(late.is_err(), "{late:?}");
    // Withdrawing a decided call changes nothing.
    let again = withdraw_call(&*store, &agent(), &held.row.id, None, NOW + 3)
        .await
        .unwrap();
    assert_eq!(again.status, ApprovalStatus::Cancelled);
    assert_eq!(
        store.load("session-1").await.unwrap().len(),
        4,
        "one withdrawal in the log"
    );
}

#[tokio::test]
async fn a_kept_call_reports_from_its_own_fold_and_reads_the_store_when_behind() {
    let (store, _dir) = store();
    let policy = Policy::default();
    // A new run: nothing to read before recording the call.
    let mut held = CallRequest::new("files:write_file", Map::new());
    held.start = true;
    let mut call = request_call_kept(&*store, &policy, &agent(), held, NOW)
        .await
        .unwrap();
    let row = call.detail().row.clone();
    assert_eq!(row.status, ApprovalStatus::Pending);
    let early = call
        .report(&*store, &agent(), CallReport::Started, NOW)
        .await
        .unwrap_err();
    assert_eq!(
        early.to_string(),
        format!(
            "the call of approval {} is pending, not cleared to run: nothing to report",
            row.id
        )
    );

    // Decided by a person since: the kept fold is behind, and the report
    // reads the run again.
    let alice = Principal::new("alice", Role::Approver);
    approve(&*store, &alice, &row, None, NOW + 1).await.unwrap();
    let stranger = Principal::new("mcp:other", Role::Agent);
    let refused = call
        .report(&*store, &stranger, CallReport::Started, NOW + 2)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, RequestError::Forbidden { .. }),
        "{refused}"
    );
    call.report(&*store, &agent(), CallReport::Started, NOW + 2)
        .await
        .unwrap();
    let output = Outcome::Output {
        output: json!({"written": 12}),
    };
    call.report(
        &*store,
        &agent(),
        CallReport::Finished(output.clone()),
        NOW + 3,
    )
    .await
    .unwrap();
    let twice = call
        .report(&*store, &agent(), CallReport::Finished(output), NOW + 4)
        .await
        .unwrap_err();
    assert_eq!(
        twice.to_string(),
        format!(
            "the call of approval {} was already reported finished",
            row.id
        )
    );
    let log = store.load(&row.run_id).await.unwrap();
    assert_eq!(
        kinds(&log),
        [
            "call_requested",
            "gate_verdict",
            "approval_requested",
            "decision_recorded",
            "tool_started",
            "tool_finished"
        ]
    );

    // A call cleared at once, whose end another report recorded first:
    // the kept fold does not know, and the store refuses the second end.
    let mut cleared = request("files:read_file", read_only());
    cleared.start = true;
    let mut call = request_call_kept(&*store, &policy, &agent(), cleared, NOW + 5)
        .await
        .unwrap();
    let id = call.detail().row.id.clone();
    report_call(
        &*store,
        &agent(),
        &id,
        CallReport::Finished(Outcome::Error {
            error: "gone".into(),
        }),
        NOW + 6,
    )
    .await
    .unwrap();
    let late = call
        .report(
            &*store,
            &agent(),
            CallReport::Finished(Outcome::Error {
                error: "again".into(),
            }),
            NOW + 7,
        )
        .await
        .unwrap_err();
    assert_eq!(
        late.to_string(),
        format!("the call of approval {id} was already reported finished")
    );
    let log = store.load("session-1").await.unwrap();
    assert_eq!(
        kinds(&log),
        [
            "call_requested",
            "gate_verdict",
            "approval_requested",
            "tool_started",
            "tool_finished"
        ]
    );
}

#[tokio::test]
async fn the_approval_handed_back_is_the_one_its_stored_log_shows() {
    let (store, _dir) = store();
    let policy = Policy::from_toml_str(
        r#"
[[policy.rules]]
tool = "files:delete_*"
action = "deny"
reason = "deleting is never allowed here"

[[policy.rules]]
tool = "files:read_*"
action = "allow"

[[policy.rules]]
tool = "files:write_*"
action = "ask"
timeout = "1m"
"#,
        "toolgate.toml",
    )
    .unwrap();
    // A grant for the run, to clear a call through it.
    let asked = request_call(
        &*store,
        &policy,
        &agent(),
        request("files:write_file", ToolHints::default()),
        NOW,
    )
    .await
    .unwrap();
    approve(
        &*store,
        &Principal::new("root", Role::Admin),
        &asked.row,
        Some(session_grant("files:write_*")),
        NOW + 1,
    )
    .await
    .unwrap();
    // Denied, allowed (and started), granted (in the grant's run), asked,
    // each in the long run and in a new one; each as the store's log has
    // it.
    let mut at = NOW + 2;
    use ApprovalStatus::{Approved, Pending, Rejected};
    for (tool, statuses) in [
        ("files:delete_file", [Rejected, Rejected]),
        ("files:read_file", [Approved, Approved]),
        ("files:write_file", [Approved, Pending]),
        ("files:move_file", [Pending, Pending]),
    ] {
        for (same_run, status) in [true, false].into_iter().zip(statuses) {
            let mut call = request(tool, ToolHints::default());
            call.start = true;
            if !same_run {
                call.run_id = None;
            }
            let handed = request_call(&*store, &policy, &agent(), call, at)
                .await
                .unwrap();
            assert_eq!(handed.row.status, status, "{tool}");
            let stored = toolgate_engine::approval_detail(&*store, &handed.row.id)
                .await
                .unwrap();
            assert_eq!(handed, stored, "{tool}, same run: {same_run}");
            at += 1;
        }
    }
}

#[tokio::test]
async fn an_approval_id_made_beforehand_names_the_approval_and_only_once() {
    let (store, _dir) = store();
    let id = NewApprovalId::new();
    let mut first = request("files:write_file", ToolHints::default());
    first.approval_id = Some(id.clone());
    let detail = request_call(&*store, &Policy::default(), &agent(), first, NOW)
        .await
        .unwrap();
    assert_eq!(detail.row.id, id.as_str());
    assert_eq!(store.approval(id.as_str()).await.unwrap().id, id.as_str());

    // The same id for another call of the run is refused, and nothing is
    // stored for it.
    let before = store.load("session-1").await.unwrap().len();
    let mut again = request("files:write_file", ToolHints::default());
    again.approval_id = Some(id.clone());
    let refused = request_call(&*store, &Policy::default(), &agent(), again, NOW + 1)
        .await
        .unwrap_err();
    assert!(matches!(refused, RequestError::Invalid(_)), "{refused}");
    assert_eq!(
        refused.to_string(),
        format!(
            "run session-1 already has approval {}: make a new id for each call",
            id.as_str()
        )
    );
    assert_eq!(store.load("session-1").await.unwrap().len(), before);

    // In another run, the store refuses it: an approval stays in its run.
    let mut elsewhere = request("files:write_file", ToolHints::default());
    elsewhere.run_id = Some("session-2".to_owned());
    elsewhere.approval_id = Some(id.clone());
    let refused = request_call(&*store, &Policy::default(), &agent(), elsewhere, NOW + 2)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("belongs to another run"),
        "{refused}"
    );
    assert!(matches!(
        store.load("session-2").await,
        Err(StoreError::NotFound { .. })
    ));
    let row = store.approval(id.as_str()).await.unwrap();
    assert_eq!(row.run_id, "session-1");
    assert_eq!(row.status, ApprovalStatus::Pending);
}
