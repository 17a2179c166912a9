//! The checks every [`Store`] must pass, whatever keeps its data.
//!
//! Each check is an async function that takes a fresh, empty store and
//! panics, saying what was expected, when the store breaks the contract of
//! [`toolgate_core::store`].
//! [`store_conformance_tests!`](crate::store_conformance_tests) turns them
//! all into tests, so that SQLite, PostgreSQL and any later store run the
//! same ones; [`fixtures`] has the events and rows they are built from, for
//! a store's own tests.

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};
use tokio::sync::Barrier;
use toolgate_core::audit::{AuditEntry, Verifier, is_signed_kind};
use toolgate_core::grant::{Grant, GrantScope, Revocation};
use toolgate_core::run::{ApprovalStatus, Event};
use toolgate_core::store::{
    ApprovalQuery, Delivery, DeliveryAttempt, DeliveryClaim, DeliveryNext, DeliveryQuery,
    DeliveryStatus, GrantQuery, NewDelivery, RunQuery, RunRow, Store, StoreError,
};

use self::fixtures::*;

/// Expands to one `#[tokio::test]` per conformance check, each on a fresh,
/// empty store made by the given expression: an `async` block (or any
/// future) that yields a [`Subject`]. The expression is evaluated once per
/// test; [`Subject::keep`] holds whatever the store must not outlive (a
/// temporary directory, a database made for the test).
///
/// The tests use `#[tokio::test(flavor = "multi_thread")]`, so the crate
/// invoking the macro needs `tokio` with the `macros` and `rt-multi-thread`
/// features among its dev-dependencies.
///
/// ```
/// mod conformance {
///     toolgate_store::store_conformance_tests!(async {
///         let dir = tempfile::tempdir().unwrap();
///         let store = toolgate_store::SqliteStore::open(dir.path().join("toolgate.db")).unwrap();
///         toolgate_store::conformance::Subject::new(store).keep(dir)
///     });
/// }
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@each $make;
            append_and_load_round_trip,
            load_since_gives_only_the_newer_events,
            deferred_appends_are_appends,
            a_write_refused_midway_leaves_nothing,
            wrong_expected_version_conflicts_and_writes_nothing,
            creating_an_existing_run_conflicts,
            empty_append_is_refused,
            concurrent_appends_at_one_version_exactly_one_wins,
            appends_sent_together_are_answered_each_on_its_own,
            run_rows_are_upserted_and_listed_newest_first,
            a_runs_creation_time_is_its_first_appends,
            approval_rows_are_upserted_filtered_and_paged,
            listings_default_to_50_rows,
            unknown_ids_are_not_found,
            grants_count_down_and_revoke,
            grants_reach_only_their_run_and_thread,
            grants_are_listed_a_page_at_a_time,
            audit_log_chains_across_runs_and_verifies,
            grant_revocation_is_a_signed_audit_entry,
            audit_pages_oldest_first,
            approvals_are_counted_by_status,
            tokens_are_found_by_hash_listed_and_revoked,
            call_requests_round_trip,
            audit_head_follows_appends,
            due_approvals_are_the_pending_ones_past_their_time,
            leases_are_held_by_one_owner_until_they_lapse,
            ready_runs_are_claimed_once,
            webhook_deliveries_are_queued_once_per_event,
            webhook_deliveries_are_claimed_leased_and_recorded,
            failed_deliveries_can_be_sent_again,
            settled_deliveries_are_pruned_by_age,
            concurrent_claims_never_share_a_delivery,
        );
    };
    (@each $make:expr; $($check:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let subject: $crate::conformance::Subject = $make.await;
                $crate::conformance::$check(subject.store()).await;
            }
        )+
    };
}

/// A store under test, with whatever must live as long as it.
pub struct Subject {
    // Fields drop in order: the store goes before what it lives in.
    store: Arc<dyn Store>,
    kept: Vec<Box<dyn Any>>,
}

impl Subject {
    /// A fresh, empty store to check.
    pub fn new(store: impl Store + 'static) -> Subject {
        Subject {
            store: Arc::new(store),
            kept: Vec::new(),
        }
    }

    /// Keeps `value` (a temporary directory, say) until the store is
    /// dropped.
    pub fn keep(mut self, value: impl Any) -> Subject {
        self.kept.push(Box::new(value));
        self
    }

    /// The store.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }
}

impl Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject")
            .field("kept", &self.kept.len())
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------
// The checks.
// ---------------------------------------------------------------------

/// Appended events load back in order, numbered from 1, stamped with the
/// store's clock; each append returns the new version and upserts the
/// run's row.
pub async fn append_and_load_round_trip(store: Arc<dyn Store>) {
    let before = now();
    let first = vec![
        started("Email Bob"),
        model_turn("call-1", "bob@example.com"),
    ];
    let second = vec![
        requested("call-1", "appr-1", "bob@example.com"),
        decided("appr-1", "bob@example.com", None),
        tool_started("call-1", "bob@example.com"),
    ];
    assert_eq!(ok(store.append(append("run-1", 0, first.clone())).await), 2);
    assert_eq!(
        ok(store
            .append(append("run-2", 0, vec![started("Other")]))
            .await),
        1
    );
    assert_eq!(
        ok(store.append(append("run-1", 2, second.clone())).await),
        5
    );
    let after = now();

    let loaded = ok(store.load("run-1").await);
    let expected: Vec<&Event> = first.iter().chain(&second).collect();
    assert_eq!(
        loaded.len(),
        expected.len(),
        "run-1 has 5 events: {loaded:#?}"
    );
    for (index, (stored, event)) in loaded.iter().zip(expected).enumerate() {
        assert_eq!(stored.run_id, "run-1");
        assert_eq!(stored.seq, index as u64 + 1, "events are numbered from 1");
        assert_eq!(&stored.event, event);
        assert_recent(stored.at, before, after);
    }
    let other = ok(store.load("run-2").await);
    assert_eq!(other.len(), 1);
    assert_eq!((other[0].run_id.as_str(), other[0].seq), ("run-2", 1));
    assert_eq!(other[0].event, started("Other"));

    assert_eq!(
        ok(store.runs(&RunQuery::default()).await),
        vec![run_row("run-2", 1), run_row("run-1", 5)],
        "the run rows are the last ones appended (both created at the same time: by id)"
    );
}

/// `load_since` gives the events after a version, numbered as in the
/// whole log; none once the version is the log's; not found for an unknown
/// run, whatever the version.
pub async fn load_since_gives_only_the_newer_events(store: Arc<dyn Store>) {
    let events = vec![
        started("Email Bob"),
        model_turn("call-1", "bob@example.com"),
        requested("call-1", "appr-1", "bob@example.com"),
    ];
    assert_eq!(
        ok(store.append(append("run-1", 0, events.clone())).await),
        3
    );
    ok(store
        .append(append("run-2", 0, vec![started("Other")]))
        .await);
    let whole = ok(store.load("run-1").await);
    assert_eq!(ok(store.load_since("run-1", 0).await), whole);
    let newer = ok(store.load_since("run-1", 1).await);
    assert_eq!(newer, whole[1..], "the events after the first");
    assert_eq!(
        newer.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![2, 3],
        "numbered as in the whole log"
    );
    assert_eq!(ok(store.load_since("run-1", 3).await), Vec::new());
    assert_eq!(ok(store.load_since("run-1", 7).await), Vec::new());
    assert_not_found(store.load_since("nope", 0).await, "run", "nope");
    assert_not_found(store.load_since("nope", 2).await, "run", "nope");
}

/// A deferred append is an append in all but when it reaches the disk: it
/// is seen at once by every reader, numbered and chained with the durable
/// ones around it, and refused the same way when its version is wrong.
pub async fn deferred_appends_are_appends(store: Arc<dyn Store>) {
    let first = vec![
        started("Email Bob"),
        model_turn("call-1", "bob@example.com"),
    ];
    assert_eq!(ok(store.append(append("run-1", 0, first.clone())).await), 2);
    let finished = vec![
        tool_started("call-1", "bob@example.com"),
        tool_finished("call-1"),
    ];
    assert_eq!(
        ok(store
            .append_deferred(append("run-1", 2, finished.clone()))
            .await),
        4
    );
    assert_eq!(
        ok(store.load_since("run-1", 2).await)
            .into_iter()
            .map(|e| e.event)
            .collect::<Vec<_>>(),
        finished,
        "a deferred append is read back at once"
    );
    assert_eq!(
        ok(store.runs(&RunQuery::default()).await),
        vec![run_row("run-1", 4)]
    );
    assert_conflict(
        store
            .append_deferred(append("run-1", 2, vec![run_completed()]))
            .await,
        "run-1",
        2,
        4,
    );

    // Deferred and durable appends of many runs at once, as a gateway's
    // outcomes and its next calls are.
    let appends: Vec<_> = (0..16)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let run_id = format!("run-x{i}");
                let made = append(&run_id, 0, vec![started("Many")]);
                let made = if i % 2 == 0 {
                    store.append_deferred(made).await
                } else {
                    store.append(made).await
                };
                assert_eq!(ok(made), 1);
                let done = append(&run_id, 1, vec![run_completed()]);
                let done = if i % 3 == 0 {
                    store.append(done).await
                } else {
                    store.append_deferred(done).await
                };
                assert_eq!(ok(done), 2);
            })
        })
        .collect();
    for append in appends {
        append.await.expect("an append task panicked");
    }
    assert_eq!(
        ok(store
            .append(append("run-1", 4, vec![run_completed()]))
            .await),
        5
    );
    let entries = verified_audit(&*store).await;
    assert_eq!(
        seqs(&entries),
        (1..=37).collect::<Vec<_>>(),
        "5 events of run-1 and 2 of each of 16 runs, one chain"
    );
}

/// An append whose later writes are refused (an approval id another run
/// has, a grant id that is taken) stores none of its earlier ones: no
/// event, no row, no audit entry; and says which write it was.
pub async fn a_write_refused_midway_leaves_nothing(store: Arc<dyn Store>) {
    let mut first = append("run-1", 0, vec![started("Email Bob")]);
    first.approvals = vec![approval_row("appr-1", "run-1", ApprovalStatus::Pending, 10)];
    first.grants = vec![grant("g-1", uses(1), 10)];
    ok(store.append(first).await);
    let audit_before = verified_audit(&*store).await;

    let mut stolen = append(
        "run-2",
        0,
        vec![started("Other"), model_turn("call-1", "bob@example.com")],
    );
    stolen.approvals = vec![approval_row("appr-1", "run-2", ApprovalStatus::Pending, 20)];
    let error = store.append(stolen).await.unwrap_err().to_string();
    assert!(
        error.contains("approval appr-1 belongs to another run"),
        "{error}"
    );
    let mut taken = append("run-1", 1, vec![model_turn("call-1", "bob@example.com")]);
    taken.grants = vec![grant("g-1", uses(2), 30)];
    let error = store.append(taken).await.unwrap_err().to_string();
    assert!(error.contains("grant g-1"), "{error}");

    assert_not_found(store.load("run-2").await, "run", "run-2");
    assert_eq!(ok(store.load("run-1").await).len(), 1);
    assert_eq!(
        ok(store.runs(&RunQuery::default()).await),
        vec![run_row("run-1", 1)]
    );
    assert_eq!(
        ok(store.approval("appr-1").await).run_id,
        "run-1",
        "the approval stays its run's"
    );
    assert_eq!(ok(store.grants(&GrantQuery::all()).await).len(), 1);
    assert_eq!(verified_audit(&*store).await, audit_before);
    // And the store goes on.
    assert_eq!(
        ok(store
            .append(append("run-1", 1, vec![run_completed()]))
            .await),
        2
    );
}

/// An append computed from another version than the log's fails with the
/// numbers of both, and writes nothing at all: no event, no row, no
/// approval, no grant, no audit entry.
pub async fn wrong_expected_version_conflicts_and_writes_nothing(store: Arc<dyn Store>) {
    let events = vec![
        started("Email Bob"),
        model_turn("call-1", "bob@example.com"),
    ];
    ok(store.append(append("run-1", 0, events.clone())).await);
    let audit_before = verified_audit(&*store).await;

    for expected in [1, 3, 7] {
        let mut late = append(
            "run-1",
            expected,
            vec![
                requested("call-1", "appr-1", "bob@example.com"),
                decided("appr-1", "bob@example.com", Some(grant("g-1", uses(2), 10))),
            ],
        );
        late.run.status = "waiting".to_owned();
        late.approvals = vec![approval_row("appr-1", "run-1", ApprovalStatus::Pending, 10)];
        late.grants = vec![grant("g-1", uses(2), 10)];
        assert_conflict(store.append(late).await, "run-1", expected, 2);
    }
    assert_conflict(
        store
            .append(append("run-9", 3, vec![started("Nobody")]))
            .await,
        "run-9",
        3,
        0,
    );

    let loaded = ok(store.load("run-1").await);
    assert_eq!(
        loaded.iter().map(|e| &e.event).collect::<Vec<_>>(),
        events.iter().collect::<Vec<_>>(),
        "a conflicting append adds no event"
    );
    assert_not_found(store.load("run-9").await, "run", "run-9");
    assert_eq!(
        ok(store.runs(&RunQuery::default()).await),
        vec![run_row("run-1", 2)],
        "a conflicting append changes no run row"
    );
    assert_eq!(ok(store.approvals(&ApprovalQuery::default()).await), vec![]);
    assert_not_found(store.approval("appr-1").await, "approval", "appr-1");
    assert_eq!(
        ok(store.grants(&GrantQuery::all()).await),
        vec![],
        "a conflicting append makes no grant"
    );
    assert_eq!(
        verified_audit(&*store).await,
        audit_before,
        "a conflicting append adds no audit entry"
    );

    // The log goes on from where it was, with no gap in the audit log.
    ok(store
        .append(append("run-1", 2, vec![run_completed()]))
        .await);
    assert_eq!(
        seqs(&verified_audit(&*store).await),
        vec![1, 2, 3],
        "the audit log has no gap where the conflicts were"
    );
}

/// Version 0 creates a run; a second creation of the same run conflicts.
pub async fn creating_an_existing_run_conflicts(store: Arc<dyn Store>) {
    ok(store
        .append(append("run-1", 0, vec![started("Email Bob")]))
        .await);
    let mut again = append("run-1", 0, vec![started("Something else")]);
    again.run.prompt = "Something else".to_owned();
    assert_conflict(store.append(again).await, "run-1", 0, 1);
    let loaded = ok(store.load("run-1").await);
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].event, started("Email Bob"));
    assert_eq!(
        ok(store.runs(&RunQuery::default()).await),
        vec![run_row("run-1", 1)]
    );
}

/// An append with no events is refused (it is not a conflict) and writes
/// nothing.
pub async fn empty_append_is_refused(store: Arc<dyn Store>) {
    let result = store.append(append("run-1", 0, vec![])).await;
    assert!(
        matches!(result, Err(ref error) if !matches!(error, StoreError::Conflict { .. })),
        "an append with no events must fail, and not as a conflict: {result:?}"
    );
    assert_not_found(store.load("run-1").await, "run", "run-1");
    assert_eq!(ok(store.runs(&RunQuery::default()).await), vec![]);
    assert_eq!(ok(store.audit(0, 100).await), vec![]);
}

/// Appends sent at once from one task (which a store may commit in one
/// transaction) are answered each on its own, as if made one after another
/// in the order sent: one that goes on from another of them succeeds, one
/// at a version another of them took conflicts, and one whose write is
/// refused fails alone, leaving the others stored.
pub async fn appends_sent_together_are_answered_each_on_its_own(store: Arc<dyn Store>) {
    let mut owner = append("run-1", 0, vec![started("Email Bob")]);
    owner.approvals = vec![approval_row("appr-1", "run-1", ApprovalStatus::Pending, 10)];
    ok(store.append(owner).await);
    let before = verified_audit(&*store).await.len() as u64;

    let mut stolen = append("run-4", 0, vec![started("Other")]);
    stolen.approvals = vec![approval_row("appr-1", "run-4", ApprovalStatus::Pending, 20)];
    let call = model_turn("call-1", "bob@example.com");
    let mut results = futures::future::join_all([
        store.append(append("run-2", 0, vec![started("First")])),
        store.append(append("run-2", 0, vec![started("Second")])),
        store.append(append("run-2", 1, vec![call.clone()])),
        store.append(append("run-3", 5, vec![run_completed()])),
        store.append(stolen),
        store.append_deferred(append("run-5", 0, vec![started("Fifth")])),
        store.append(append("run-1", 1, vec![run_completed()])),
    ])
    .await
    .into_iter();
    let mut next = || results.next().expect("one answer per append");
    assert_eq!(ok(next()), 1, "the first append of run-2 creates it");
    assert_conflict(next(), "run-2", 0, 1);
    assert_eq!(ok(next()), 2, "an append goes on from the one before it");
    assert_conflict(next(), "run-3", 5, 0);
    let refused = next().unwrap_err().to_string();
    assert!(
        refused.contains("approval appr-1 belongs to another run"),
        "the refused append says why: {refused}"
    );
    assert_eq!(ok(next()), 1, "a deferred append among durable ones");
    assert_eq!(
        ok(next()),
        2,
        "the others are not held up by the refused one"
    );

    let events = |run_id: &'static str| {
        let store = Arc::clone(&store);
        async move {
            ok(store.load(run_id).await)
                .into_iter()
                .map(|e| e.event)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(events("run-2").await, vec![started("First"), call]);
    assert_eq!(events("run-5").await, vec![started("Fifth")]);
    assert_eq!(
        events("run-1").await,
        vec![started("Email Bob"), run_completed()]
    );
    assert_eq!(ok(store.approval("appr-1").await).run_id, "run-1");
    // Neither the conflicting nor the refused append made its run.
    assert_not_found(store.load("run-3").await, "run", "run-3");
    assert_not_found(store.load("run-4").await, "run", "run-4");
    let entries = verified_audit(&*store).await;
    assert_eq!(
        seqs(&entries),
        (1..=before + 4).collect::<Vec<_>>(),
        "two entries for run-2, one each for run-5 and run-1, in one chain"
    );
}

/// Two appends at the same version, at the same moment: exactly one wins,
/// the other gets a conflict naming the winner's version; 20 races each
/// for creating a run and for going on from version 1.
pub async fn concurrent_appends_at_one_version_exactly_one_wins(store: Arc<dyn Store>) {
    for race in 0..20 {
        let run_id = format!("race-{race}");
        let created = [started("first"), started("second")];
        let winner = race_appends(&store, &run_id, 0, created.clone()).await;
        let turns = [
            model_turn("call-a", "a@example.com"),
            model_turn("call-b", "b@example.com"),
        ];
        let second = race_appends(&store, &run_id, 1, turns.clone()).await;
        let loaded = ok(store.load(&run_id).await);
        assert_eq!(
            loaded.iter().map(|e| &e.event).collect::<Vec<_>>(),
            vec![&created[winner], &turns[second]],
            "the log of {run_id} holds the winners' events, and only theirs"
        );
    }
    assert_eq!(
        seqs(&verified_audit(&*store).await),
        (1..=40).collect::<Vec<u64>>(),
        "the losers left no audit entries and no gaps"
    );
}

/// Run rows are upserted by appends and listed newest first (by creation,
/// then id), filtered by status and limited.
pub async fn run_rows_are_upserted_and_listed_newest_first(store: Arc<dyn Store>) {
    let rows = [
        ("r1", "running", 100),
        ("r2", "waiting", 200),
        ("r3", "completed", 200),
        ("r4", "failed", 300),
    ];
    for (id, status, created_at) in rows {
        let mut create = append(id, 0, vec![started("Email Bob")]);
        create.run.status = status.to_owned();
        create.run.created_at = created_at;
        create.run.thread = None;
        ok(store.append(create).await);
    }
    // A later append changes r1's row.
    let mut update = append("r1", 1, vec![run_completed()]);
    update.run = RunRow {
        id: "r1".to_owned(),
        status: "completed".to_owned(),
        thread: None,
        prompt: "Email Bob".to_owned(),
        created_at: 100,
        updated_at: 999,
        version: 2,
    };
    ok(store.append(update.clone()).await);

    let ids = |rows: Vec<RunRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let all = ok(store.runs(&RunQuery::default()).await);
    assert_eq!(
        ids(all.clone()),
        ["r4", "r3", "r2", "r1"],
        "newest first; r3 and r2 were created at the same time, so by id"
    );
    assert_eq!(all[3], update.run, "r1's row is the last one appended");
    let query = |statuses: &[&str], limit| RunQuery {
        statuses: statuses.iter().map(|s| (*s).to_owned()).collect(),
        limit,
    };
    assert_eq!(
        ids(ok(store.runs(&query(&["completed"], 0)).await)),
        ["r3", "r1"]
    );
    assert_eq!(
        ids(ok(store.runs(&query(&["running", "waiting"], 0)).await)),
        ["r2"]
    );
    assert_eq!(
        ids(ok(store.runs(&query(&["unknown"], 0)).await)),
        Vec::<String>::new()
    );
    assert_eq!(ids(ok(store.runs(&query(&[], 2)).await)), ["r4", "r3"]);
    assert_eq!(
        ids(ok(store.runs(&query(&["completed", "failed"], 1)).await)),
        ["r4"]
    );
}

/// A run's creation time is its first append's: a later append whose row
/// gives another one changes the row's other columns, not that, nor the
/// times of the run's events.
pub async fn a_runs_creation_time_is_its_first_appends(store: Arc<dyn Store>) {
    ok(store
        .append(append("run-1", 0, vec![started("Email Bob")]))
        .await);
    let first = ok(store.load("run-1").await);
    let mut later = append("run-1", 1, vec![run_completed()]);
    later.run.created_at = 5_000;
    later.run.updated_at = 7_000;
    later.run.status = "completed".to_owned();
    ok(store.append(later).await);
    let rows = ok(store.runs(&RunQuery::default()).await);
    assert_eq!(
        (
            rows[0].created_at,
            rows[0].updated_at,
            rows[0].status.as_str()
        ),
        (1_000, 7_000, "completed"),
        "created at the first append's time, updated by the later one: {rows:?}"
    );
    let loaded = ok(store.load("run-1").await);
    assert_eq!(loaded[0].at, first[0].at, "the first event keeps its time");
    assert!(loaded[1].at >= first[0].at, "{loaded:?}");
}

/// Approval rows are upserted by appends and listed newest first, filtered
/// by status and run, paged with `before`, and limited.
pub async fn approval_rows_are_upserted_filtered_and_paged(store: Arc<dyn Store>) {
    use ApprovalStatus::{Approved, Edited, Pending, Rejected};
    let mut a = append(
        "run-a",
        0,
        vec![
            started("Email Bob"),
            model_turn("call-1", "bob@example.com"),
        ],
    );
    a.approvals = vec![
        approval_row("a1", "run-a", Pending, 100),
        approval_row("a2", "run-a", Pending, 200),
        approval_row("a3", "run-a", Pending, 300),
    ];
    ok(store.append(a).await);
    let mut b = append("run-b", 0, vec![started("Email Carol")]);
    b.approvals = vec![
        approval_row("b1", "run-b", Pending, 150),
        approval_row("b2", "run-b", Pending, 300),
    ];
    ok(store.append(b).await);
    // Deciding a2 updates its row.
    let mut decided_a2 = approval_row("a2", "run-a", Approved, 200);
    decided_a2.decided_by = Some("bob".to_owned());
    decided_a2.decided_at = Some(250);
    let mut decide = append("run-a", 2, vec![decided("a2", "bob@example.com", None)]);
    decide.approvals = vec![decided_a2.clone()];
    ok(store.append(decide).await);

    assert_eq!(ok(store.approval("a2").await), decided_a2);
    assert_eq!(
        ok(store.approval("b1").await),
        approval_row("b1", "run-b", Pending, 150)
    );
    // With its run's whole log, decision included.
    let (row, log) = ok(store.approval_with_log("a2").await);
    assert_eq!(row, decided_a2);
    assert_eq!(log, ok(store.load("run-a").await));
    assert_eq!(log.len(), 3);
    let (row, log) = ok(store.approval_with_log("b1").await);
    assert_eq!(row.run_id, "run-b");
    assert_eq!(log, ok(store.load("run-b").await));

    let list =
        async |statuses: &[ApprovalStatus], run: Option<&str>, before: Option<&str>, limit| {
            let query = ApprovalQuery {
                statuses: statuses.to_vec(),
                run_id: run.map(str::to_owned),
                before: before.map(str::to_owned),
                limit,
            };
            let rows = ok(store.approvals(&query).await);
            rows.into_iter().map(|r| r.id).collect::<Vec<_>>()
        };
    assert_eq!(
        list(&[], None, None, 0).await,
        ["b2", "a3", "a2", "b1", "a1"],
        "newest first; b2 and a3 were created at the same time, so by id"
    );
    assert_eq!(
        list(&[Pending], None, None, 0).await,
        ["b2", "a3", "b1", "a1"]
    );
    assert_eq!(list(&[Approved], None, None, 0).await, ["a2"]);
    assert_eq!(
        list(&[Pending, Approved], None, None, 0).await,
        ["b2", "a3", "a2", "b1", "a1"]
    );
    assert_eq!(
        list(&[Edited, Rejected], None, None, 0).await,
        Vec::<String>::new()
    );
    assert_eq!(list(&[], Some("run-a"), None, 0).await, ["a3", "a2", "a1"]);
    assert_eq!(list(&[Pending], Some("run-a"), None, 0).await, ["a3", "a1"]);
    assert_eq!(
        list(&[], Some("run-none"), None, 0).await,
        Vec::<String>::new()
    );
    assert_eq!(list(&[], None, Some("a3"), 0).await, ["a2", "b1", "a1"]);
    assert_eq!(
        list(&[], None, Some("b2"), 0).await,
        ["a3", "a2", "b1", "a1"],
        "a3 was created with b2 but sorts after it, so it is older"
    );
    assert_eq!(list(&[], None, Some("a1"), 0).await, Vec::<String>::new());
    assert_eq!(list(&[Pending], None, Some("a3"), 0).await, ["b1", "a1"]);
    assert_eq!(list(&[], Some("run-b"), Some("b2"), 0).await, ["b1"]);
    assert_eq!(list(&[], None, None, 2).await, ["b2", "a3"]);

    // Paging through everything, two at a time.
    let mut pages = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let page = list(&[], None, before.as_deref(), 2).await;
        let Some(last) = page.last() else { break };
        before = Some(last.clone());
        pages.push(page);
    }
    assert_eq!(pages, [vec!["b2", "a3"], vec!["a2", "b1"], vec!["a1"]]);

    // An approval keeps the creation time of its first row.
    let mut moved_b1 = approval_row("b1", "run-b", Rejected, 999);
    moved_b1.decided_by = Some("carol".to_owned());
    moved_b1.decided_at = Some(260);
    let mut reject = append("run-b", 1, vec![decided("b1", "bob@example.com", None)]);
    reject.approvals = vec![moved_b1.clone()];
    ok(store.append(reject).await);
    moved_b1.created_at = 150;
    assert_eq!(ok(store.approval("b1").await), moved_b1);
    assert_eq!(
        list(&[Rejected], None, None, 0).await,
        ["b1"],
        "listed at its first time"
    );
    assert_eq!(list(&[], Some("run-b"), None, 0).await, ["b2", "b1"]);
}

/// Approvals are counted by status, decided ones moving between counts.
pub async fn approvals_are_counted_by_status(store: Arc<dyn Store>) {
    use ApprovalStatus::{Approved, Pending, Rejected};
    assert_eq!(ok(store.approval_count(Pending).await), 0);
    let mut a = append("run-a", 0, vec![started("Email Bob")]);
    a.approvals = vec![
        approval_row("a1", "run-a", Pending, 100),
        approval_row("a2", "run-a", Pending, 200),
        approval_row("a3", "run-a", Approved, 300),
    ];
    ok(store.append(a).await);
    let mut decide = append("run-a", 1, vec![decided("a2", "bob@example.com", None)]);
    decide.approvals = vec![approval_row("a2", "run-a", Rejected, 200)];
    ok(store.append(decide).await);
    assert_eq!(ok(store.approval_count(Pending).await), 1);
    assert_eq!(ok(store.approval_count(Approved).await), 1);
    assert_eq!(ok(store.approval_count(Rejected).await), 1);
    assert_eq!(ok(store.approval_count(ApprovalStatus::Expired).await), 0);
}

/// Tokens are kept with their principal, found by the hash of their
/// secret, listed newest first, and revoked once.
pub async fn tokens_are_found_by_hash_listed_and_revoked(store: Arc<dyn Store>) {
    use toolgate_core::store::TokenRecord;
    use toolgate_core::{Principal, Role};
    let token = |id: &str, byte: u8, created_at: i64| TokenRecord {
        id: id.to_owned(),
        principal: Principal::new(format!("user-{id}"), Role::Approver).groups(["ops", "sre"]),
        hash: [byte; 32],
        created_at,
        created_by: "admin".to_owned(),
        expires_at: Some(created_at + 1000),
        revoked_at: None,
    };
    assert_eq!(ok(store.tokens().await), []);
    assert_eq!(ok(store.token_by_hash(&[1; 32]).await), None);
    let alice = token("t-alice", 1, 100);
    let mut bot = token("t-bot", 2, 200);
    bot.principal = Principal::new("bot", Role::Agent);
    bot.expires_at = None;
    ok(store.create_token(&alice).await);
    ok(store.create_token(&bot).await);
    assert_eq!(ok(store.token_by_hash(&[1; 32]).await), Some(alice.clone()));
    assert_eq!(ok(store.token_by_hash(&[2; 32]).await), Some(bot.clone()));
    assert_eq!(ok(store.token_by_hash(&[3; 32]).await), None);
    assert_eq!(ok(store.tokens().await), [bot.clone(), alice.clone()]);
    assert_eq!(ok(store.token("t-bot").await), bot);
    assert_not_found(store.token("t-nobody").await, "token", "t-nobody");

    // The same secret (or id) twice is refused, and the first one stays.
    let mut again = token("t-again", 1, 300);
    assert!(
        store.create_token(&again).await.is_err(),
        "a second token with one hash"
    );
    again.hash = [4; 32];
    again.id = "t-alice".to_owned();
    assert!(
        store.create_token(&again).await.is_err(),
        "a second token with one id"
    );
    assert_eq!(ok(store.tokens().await).len(), 2);

    assert!(ok(store.revoke_token("t-alice", "carol", 500).await));
    assert!(
        !ok(store.revoke_token("t-alice", "dave", 600).await),
        "revoked already"
    );
    let revoked = ok(store.token_by_hash(&[1; 32]).await).unwrap();
    assert_eq!(revoked.revoked_at, Some(500));
    assert_eq!(ok(store.token("t-alice").await), revoked);
    assert!(!revoked.is_live(501));
    assert!(bot.is_live(i64::MAX));
    assert!(!alice.is_live(1100), "expired");
    match store.revoke_token("t-nobody", "carol", 1).await {
        Err(StoreError::NotFound { what: "token", id }) => assert_eq!(id, "t-nobody"),
        other => panic!("an unknown token should not be found: {other:?}"),
    }

    // Each token made and each revocation is one signed audit entry, in
    // order, saying who did what; refused writes and the repeated
    // revocation add none, and no entry holds a secret's hash.
    let entries = verified_audit(&*store).await;
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["token_created", "token_created", "token_revoked"]);
    assert!(
        entries
            .iter()
            .all(|e| e.signature.is_some() && e.run_id.is_none())
    );
    let body =
        |index: usize| -> serde_json::Value { serde_json::from_str(&entries[index].body).unwrap() };
    assert_eq!(
        body(0),
        serde_json::json!({
            "type": "token_created", "token_id": "t-alice", "name": "user-t-alice",
            "role": "approver", "groups": ["ops", "sre"], "by": "admin", "at": 100,
            "expires_at": 1100,
        })
    );
    assert_eq!(body(1)["expires_at"], serde_json::Value::Null);
    assert_eq!(
        body(2),
        serde_json::json!({ "type": "token_revoked", "token_id": "t-alice", "by": "carol", "at": 500 })
    );
    let hash_hex = toolgate_core::audit::hex(&[1; 32]);
    assert!(
        entries.iter().all(|e| !e.body.contains(&hash_hex)),
        "no entry holds a token's hash"
    );
}

/// Due approvals are the pending ones whose time is up, soonest first.
pub async fn due_approvals_are_the_pending_ones_past_their_time(store: Arc<dyn Store>) {
    use ApprovalStatus::{Approved, Pending};
    let row = |id: &str, status, expires_at: Option<i64>| {
        let mut row = approval_row(id, "run-a", status, 100);
        row.expires_at = expires_at;
        row
    };
    let mut a = append("run-a", 0, vec![started("Email Bob")]);
    a.approvals = vec![
        row("late", Pending, Some(5_000)),
        row("early", Pending, Some(1_000)),
        row("never", Pending, None),
        row("decided", Approved, Some(500)),
        row("future", Pending, Some(9_000)),
    ];
    ok(store.append(a).await);
    let due = |now, limit| {
        let store = Arc::clone(&store);
        async move {
            ok(store.due_approvals(now, limit).await)
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(due(999, 0).await, Vec::<String>::new());
    assert_eq!(due(1_000, 0).await, ["early"], "due at its time exactly");
    assert_eq!(due(8_000, 0).await, ["early", "late"]);
    assert_eq!(due(8_000, 1).await, ["early"]);
    assert_eq!(due(i64::MAX, 0).await, ["early", "late", "future"]);
}

/// A run's lease is held by one owner at a time until it lapses or is
/// given up, and appends leave it alone.
pub async fn leases_are_held_by_one_owner_until_they_lapse(store: Arc<dyn Store>) {
    use toolgate_core::store::Lease;
    assert_not_found(store.lease_run("run-x", "a", 10, 0).await, "run", "run-x");
    ok(store
        .append(append("run-a", 0, vec![started("Email Bob")]))
        .await);
    assert_eq!(
        ok(store.lease_run("run-a", "a", 1_000, 0).await),
        Lease::Held
    );
    let busy = Lease::Busy {
        owner: "a".to_owned(),
        until: 1_000,
    };
    assert_eq!(ok(store.lease_run("run-a", "b", 2_000, 500).await), busy);
    // The holder renews; appends (by anyone) leave the lease as it is.
    assert_eq!(
        ok(store.lease_run("run-a", "a", 1_500, 600).await),
        Lease::Held
    );
    ok(store
        .append(append(
            "run-a",
            1,
            vec![model_turn("call-1", "bob@example.com")],
        ))
        .await);
    assert_eq!(
        ok(store.lease_run("run-a", "b", 2_000, 1_400).await),
        Lease::Busy {
            owner: "a".to_owned(),
            until: 1_500
        }
    );
    // Lapsed: another owner takes it; the old owner's release does nothing.
    assert_eq!(
        ok(store.lease_run("run-a", "b", 3_000, 1_500).await),
        Lease::Held
    );
    ok(store.release_run("run-a", "a").await);
    assert!(matches!(
        ok(store.lease_run("run-a", "a", 4_000, 2_000).await),
        Lease::Busy { owner, .. } if owner == "b"
    ));
    ok(store.release_run("run-a", "b").await);
    assert_eq!(
        ok(store.lease_run("run-a", "a", 4_000, 2_000).await),
        Lease::Held
    );
    ok(store.release_run("run-x", "a").await);
}

/// Runs ready for the engine (`running`) and not leased are claimed, each
/// by one claimer, even when two claim at once.
pub async fn ready_runs_are_claimed_once(store: Arc<dyn Store>) {
    for i in 0..20 {
        ok(store
            .append(append(
                &format!("run-{i:02}"),
                0,
                vec![started("Email Bob")],
            ))
            .await);
    }
    let mut waiting = append("run-waiting", 0, vec![started("Email Bob")]);
    waiting.run.status = "waiting".to_owned();
    ok(store.append(waiting).await);
    let mut done = append("run-done", 0, vec![started("Email Bob")]);
    done.run.status = "completed".to_owned();
    ok(store.append(done).await);
    assert_eq!(
        ok(store.lease_run("run-00", "holder", 10_000, 0).await),
        toolgate_core::store::Lease::Held
    );

    let barrier = Arc::new(Barrier::new(2));
    let claims: Vec<_> = ["one", "two"]
        .into_iter()
        .map(|owner| {
            let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                let mut claimed = Vec::new();
                loop {
                    let page = ok(store.claim_ready_runs(owner, 5_000, 100, 3).await);
                    if page.is_empty() {
                        return claimed;
                    }
                    claimed.extend(page);
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for claim in claims {
        all.extend(claim.await.unwrap());
    }
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), count, "a run was claimed twice: {all:?}");
    let expected: Vec<String> = (1..20).map(|i| format!("run-{i:02}")).collect();
    assert_eq!(
        all, expected,
        "every running run not leased, and nothing else, is claimed"
    );
    assert_eq!(
        ok(store.claim_ready_runs("three", 5_000, 200, 50).await),
        Vec::<String>::new()
    );
    // Claims lapse like any lease.
    let again = ok(store.claim_ready_runs("three", 20_000, 10_000, 50).await);
    assert_eq!(again.len(), 20, "{again:?}");
}

/// The audit head is the last entry's number, from 0.
pub async fn audit_head_follows_appends(store: Arc<dyn Store>) {
    assert_eq!(ok(store.audit_head().await), 0);
    ok(store
        .append(append("run-a", 0, vec![started("Email Bob")]))
        .await);
    assert_eq!(ok(store.audit_head().await), 1);
    ok(store
        .append(append(
            "run-a",
            1,
            vec![model_turn("call-1", "bob@example.com"), run_completed()],
        ))
        .await);
    assert_eq!(ok(store.audit_head().await), 3);
    let last = ok(store.audit(0, 0).await).pop().unwrap();
    assert_eq!(last.seq, 3);
}

/// An external run's call request, with its context, is stored and read
/// back as it was, and chains into the audit log like any event.
pub async fn call_requests_round_trip(store: Arc<dyn Store>) {
    let request = Event::CallRequested {
        call: toolgate_core::ToolCall::new("call-1", "send_email", Value::Object(args("x@y.z"))),
        principal: "bot".to_owned(),
        thread: Some("thread-1".to_owned()),
        context: Some(json!({"ticket": 42, "why": "<b>customer</b> asked"})),
    };
    let events = vec![request, requested("call-1", "a1", "x@y.z")];
    ok(store.append(append("run-x", 0, events.clone())).await);
    let loaded: Vec<Event> = ok(store.load("run-x").await)
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(loaded, events);
    verified_audit(store.as_ref()).await;
}

/// A limit of 0 lists the newest 50.
pub async fn listings_default_to_50_rows(store: Arc<dyn Store>) {
    let mut create = append("run-01", 0, vec![started("Email everyone")]);
    create.run.created_at = 1;
    create.approvals = (1..=55)
        .map(|n| {
            approval_row(
                &format!("appr-{n:02}"),
                "run-01",
                ApprovalStatus::Pending,
                n,
            )
        })
        .collect();
    ok(store.append(create).await);
    for n in 2..=55 {
        let mut run = append(&format!("run-{n:02}"), 0, vec![started("Email someone")]);
        run.run.created_at = n;
        ok(store.append(run).await);
    }
    let approvals = ok(store.approvals(&ApprovalQuery::default()).await);
    assert_eq!(approvals.len(), 50);
    assert_eq!(
        (approvals[0].id.as_str(), approvals[49].id.as_str()),
        ("appr-55", "appr-06")
    );
    let runs = ok(store.runs(&RunQuery::default()).await);
    assert_eq!(runs.len(), 50);
    assert_eq!(
        (runs[0].id.as_str(), runs[49].id.as_str()),
        ("run-55", "run-06")
    );
}

/// Unknown runs, approvals and grants are [`StoreError::NotFound`], naming
/// what was asked for.
pub async fn unknown_ids_are_not_found(store: Arc<dyn Store>) {
    ok(store
        .append(append("run-1", 0, vec![started("Email Bob")]))
        .await);
    assert_not_found(store.load("nope").await, "run", "nope");
    assert_not_found(store.approval("nope").await, "approval", "nope");
    assert_not_found(store.approval_with_log("nope").await, "approval", "nope");
    // The reader that found nothing reads on as before.
    assert_eq!(ok(store.load("run-1").await).len(), 1);
    assert_not_found(
        store
            .approvals(&ApprovalQuery {
                before: Some("nope".to_owned()),
                ..ApprovalQuery::default()
            })
            .await,
        "approval",
        "nope",
    );
    assert_not_found(store.use_grant("nope").await, "grant", "nope");
    assert_not_found(
        store.revoke_grant("nope", "carol", 500).await,
        "grant",
        "nope",
    );
    assert_eq!(
        seqs(&verified_audit(&*store).await),
        vec![1],
        "a revocation of an unknown grant adds no audit entry"
    );
}

/// Grants made by appends are listed newest first; counted grants count
/// down to false, uncounted ones stay usable; a revocation is recorded
/// once, and a revoked grant is used no more.
pub async fn grants_count_down_and_revoke(store: Arc<dyn Store>) {
    let counted = grant("g-uses", uses(2), 100);
    let for_run = grant(
        "g-run",
        GrantScope::Run {
            run_id: "run-1".to_owned(),
        },
        200,
    );
    let until = grant("g-until", GrantScope::Until { until: 10_000 }, 300);
    let mut create = append(
        "run-1",
        0,
        vec![
            started("Email Bob"),
            model_turn("call-1", "bob@example.com"),
            requested("call-1", "appr-1", "bob@example.com"),
            decided("appr-1", "bob@example.com", Some(counted.clone())),
        ],
    );
    create.grants = vec![counted.clone(), for_run.clone(), until.clone()];
    ok(store.append(create).await);
    assert_eq!(
        ok(store.grants(&GrantQuery::all()).await),
        vec![until.clone(), for_run.clone(), counted.clone()],
        "grants are listed newest first, as made"
    );
    assert_eq!(
        ok(store.grants(&GrantQuery::live(1_000)).await),
        vec![until.clone(), for_run.clone(), counted.clone()],
        "all three cover calls"
    );
    assert_eq!(
        ok(store.grants(&GrantQuery::live(10_000)).await),
        vec![for_run.clone(), counted.clone()],
        "a grant for a time covers calls until its end, not at it"
    );
    assert_eq!(ok(store.grant("g-run").await), for_run);
    assert_not_found(store.grant("g-nope").await, "grant", "g-nope");

    assert!(ok(store.use_grant("g-uses").await));
    assert!(ok(store.use_grant("g-uses").await));
    assert!(
        !ok(store.use_grant("g-uses").await),
        "a grant of 2 uses covers 2 calls"
    );
    assert!(!ok(store.use_grant("g-uses").await));
    for _ in 0..3 {
        assert!(
            ok(store.use_grant("g-run").await),
            "a grant without a use count is always usable"
        );
    }

    assert!(ok(store.revoke_grant("g-run", "carol", 500).await));
    assert!(
        !ok(store.revoke_grant("g-run", "dave", 600).await),
        "a second revocation reports that the grant was revoked already"
    );
    assert!(
        !ok(store.use_grant("g-run").await),
        "a revoked grant is used no more"
    );
    assert!(ok(store.revoke_grant("g-uses", "carol", 700).await));

    let grants = ok(store.grants(&GrantQuery::all()).await);
    let revoked = |grant: &Grant, by: &str, at| Grant {
        revoked: Some(Revocation {
            by: by.to_owned(),
            at,
        }),
        ..grant.clone()
    };
    let used_up = Grant {
        uses_left: Some(0),
        ..counted
    };
    assert_eq!(
        grants,
        vec![
            until.clone(),
            revoked(&for_run, "carol", 500),
            revoked(&used_up, "carol", 700)
        ],
        "revoked grants are listed with their first revocation, and counted grants with their uses left"
    );
    assert_eq!(
        ok(store.grants(&GrantQuery::live(1_000)).await),
        vec![until.clone()],
        "neither revoked nor used-up grants cover calls"
    );
    assert_eq!(
        ok(store.grant("g-uses").await),
        revoked(&used_up, "carol", 700)
    );
    assert_eq!(
        ok(store.grants(&GrantQuery::live(10_000)).await),
        Vec::<Grant>::new()
    );
    let kinds: Vec<String> = verified_audit(&*store)
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds[4..],
        ["grant_revoked", "grant_revoked"],
        "each revocation is one audit entry; the repeated one adds none"
    );
}

/// A gate's query ([`GrantQuery::reaching`]) gives the live grants of its
/// run, of its run's thread and for any run, newest first, and none of
/// other runs and threads, however the ids look.
pub async fn grants_reach_only_their_run_and_thread(store: Arc<dyn Store>) {
    let run = |id: &str| GrantScope::Run {
        run_id: id.to_owned(),
    };
    let thread = |name: &str| GrantScope::Thread {
        thread: name.to_owned(),
    };
    let made = [
        grant("g-mine", run("run-1"), 100),
        grant("g-other", run("run-2"), 110),
        grant("g-prefix", run("run-10"), 120),
        grant("g-thread", thread("t-1"), 130),
        grant("g-thread-other", thread("t-2"), 140),
        // A thread named like a run's key reaches that thread only.
        grant("g-lookalike", thread("run:run-1"), 150),
        grant("g-until", GrantScope::Until { until: 10_000 }, 160),
        grant("g-uses", uses(1), 170),
        grant("g-ended", GrantScope::Until { until: 500 }, 180),
    ];
    let mut create = append("run-1", 0, vec![started("Email Bob")]);
    create.grants = made.to_vec();
    ok(store.append(create).await);
    let ids = |query: GrantQuery| {
        let store = Arc::clone(&store);
        async move {
            ok(store.grants(&query).await)
                .into_iter()
                .map(|grant| grant.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        ids(GrantQuery::live(1_000).reaching(Some("run-1"), Some("t-1"))).await,
        ["g-uses", "g-until", "g-thread", "g-mine"],
        "run-1 of thread t-1"
    );
    assert_eq!(
        ids(GrantQuery::live(1_000).reaching(Some("run-2"), None)).await,
        ["g-uses", "g-until", "g-other"],
        "run-2, of no thread"
    );
    assert_eq!(
        ids(GrantQuery::live(1_000).reaching(None, Some("run:run-1"))).await,
        ["g-uses", "g-until", "g-lookalike"],
        "no run, of the thread named like run-1's key"
    );
    assert_eq!(
        ids(GrantQuery::live(1_000).reaching(None, None)).await,
        ["g-uses", "g-until"],
        "a call of no run: only the grants for any run"
    );
    assert!(ok(store.use_grant("g-uses").await));
    assert!(ok(store.revoke_grant("g-mine", "carol", 600).await));
    assert_eq!(
        ids(GrantQuery::live(1_000).reaching(Some("run-1"), Some("t-1"))).await,
        ["g-until", "g-thread"],
        "used-up and revoked grants reach no run"
    );
    assert_eq!(
        ids(GrantQuery::all()).await.len(),
        made.len(),
        "listings without a run see every grant"
    );
}

/// Grants are listed newest first (by creation time, then id), all or
/// only the live ones, a page at a time from the grant `before` names.
pub async fn grants_are_listed_a_page_at_a_time(store: Arc<dyn Store>) {
    let made = [
        grant("g-1", uses(3), 100),
        grant("g-2", uses(3), 200),
        grant("g-3", uses(3), 200),
        grant("g-4", uses(3), 300),
        grant("g-5", uses(1), 400),
        grant("g-6", GrantScope::Until { until: 1_000 }, 500),
    ];
    let mut create = append("run-1", 0, vec![started("Email Bob")]);
    create.grants = made.to_vec();
    ok(store.append(create).await);
    assert!(ok(store.revoke_grant("g-4", "carol", 600).await));
    assert!(ok(store.use_grant("g-5").await));

    let ids = |grants: Vec<Grant>| grants.into_iter().map(|g| g.id).collect::<Vec<_>>();
    let page = |query: GrantQuery| {
        let store = Arc::clone(&store);
        async move { ids(ok(store.grants(&query).await)) }
    };
    assert_eq!(
        page(GrantQuery::all()).await,
        ["g-6", "g-5", "g-4", "g-3", "g-2", "g-1"],
        "newest first; grants made at the same time by id, highest first"
    );
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let next = page(GrantQuery::all().page(before.clone(), 4)).await;
        let Some(last) = next.last().cloned() else {
            break;
        };
        pages.push(next);
        before = Some(last);
    }
    assert_eq!(
        pages,
        vec![vec!["g-6", "g-5", "g-4", "g-3"], vec!["g-2", "g-1"]],
        "pages of 4 from the start: each goes on after the last of the one before"
    );
    assert_eq!(
        page(GrantQuery::all().page(Some("g-3".to_owned()), 1)).await,
        ["g-2"],
        "a grant made at the same time as the page's start comes after it if its id is lower"
    );

    assert_eq!(
        page(GrantQuery::live(700)).await,
        ["g-6", "g-3", "g-2", "g-1"],
        "the revoked g-4 and the used-up g-5 are not live"
    );
    assert_eq!(
        page(GrantQuery::live(700).page(Some("g-6".to_owned()), 2)).await,
        ["g-3", "g-2"],
        "a page of live grants starts after the grant named, live or not"
    );
    assert_eq!(
        page(GrantQuery::live(700).page(Some("g-4".to_owned()), 2)).await,
        ["g-3", "g-2"],
        "a revoked grant may start a page of live ones"
    );
    assert_eq!(
        page(GrantQuery::live(1_000).page(None, 10)).await,
        ["g-3", "g-2", "g-1"],
        "a grant for a time is not live at its end"
    );
    assert_not_found(
        store
            .grants(&GrantQuery::all().page(Some("g-nope".to_owned()), 10))
            .await,
        "grant",
        "g-nope",
    );
    assert_not_found(
        store
            .grants(&GrantQuery::live(700).page(Some("g-nope".to_owned()), 10))
            .await,
        "grant",
        "g-nope",
    );
}

/// Every event of every run is an audit entry: numbered from 1 across
/// runs with no gaps, at the time it was appended, with its run, kind and
/// JSON; the chain verifies with the store's public key, and decisions are
/// signed (other events are not).
pub async fn audit_log_chains_across_runs_and_verifies(store: Arc<dyn Store>) {
    let before = now();
    let steps: Vec<(&str, Vec<Event>)> = vec![
        (
            "run-a",
            vec![
                started("Email Bob"),
                model_turn("call-1", "bob@example.com"),
                requested("call-1", "appr-1", "bob@example.com"),
            ],
        ),
        ("run-b", vec![started("Email Carol")]),
        (
            "run-a",
            vec![
                decided("appr-1", "bob@example.com", None),
                tool_started("call-1", "bob@example.com"),
                tool_finished("call-1"),
            ],
        ),
        ("run-b", vec![model_turn("call-2", "carol@example.com")]),
        ("run-a", vec![run_completed()]),
    ];
    let mut versions = std::collections::HashMap::new();
    let mut expected: Vec<(&str, Event)> = Vec::new();
    for (run_id, events) in steps {
        let version: &mut u64 = versions.entry(run_id).or_default();
        *version = ok(store.append(append(run_id, *version, events.clone())).await);
        expected.extend(events.into_iter().map(|event| (run_id, event)));
    }
    let after = now();

    let entries = verified_audit(&*store).await;
    assert_eq!(
        seqs(&entries),
        (1..=expected.len() as u64).collect::<Vec<_>>()
    );
    for (entry, (run_id, event)) in entries.iter().zip(&expected) {
        assert_eq!(
            entry.run_id.as_deref(),
            Some(*run_id),
            "entry {}",
            entry.seq
        );
        assert_eq!(entry.kind, event.kind(), "entry {}", entry.seq);
        let body: Event = serde_json::from_str(&entry.body).unwrap_or_else(|error| {
            panic!(
                "entry {} is not an event ({error}): {}",
                entry.seq, entry.body
            )
        });
        assert_eq!(&body, event, "entry {} holds its event", entry.seq);
        assert_recent(entry.at, before, after);
        assert_eq!(
            entry.signature.is_some(),
            is_signed_kind(&entry.kind),
            "entry {} ({}): decisions are signed, other events are not",
            entry.seq,
            entry.kind
        );
    }
    let mut verifier = Verifier::new(&ok(store.public_key().await));
    for entry in &entries {
        verifier.check(entry).unwrap();
    }
    assert_eq!(
        verifier.verified().signatures,
        1,
        "the one decision is signed"
    );

    // The runs' logs and the audit log are the same records.
    let run_a = ok(store.load("run-a").await);
    let audit_a: Vec<&AuditEntry> = entries
        .iter()
        .filter(|e| e.run_id.as_deref() == Some("run-a"))
        .collect();
    assert_eq!(run_a.len(), audit_a.len());
    for (stored, entry) in run_a.iter().zip(audit_a) {
        assert_eq!(
            stored.at, entry.at,
            "event {} of run-a and entry {}",
            stored.seq, entry.seq
        );
    }
    assert_eq!(ok(store.public_key().await), ok(store.public_key().await));
}

/// Revoking a grant adds a signed audit entry with no run, of kind
/// `grant_revoked`, whose body names the grant, who revoked it and when.
pub async fn grant_revocation_is_a_signed_audit_entry(store: Arc<dyn Store>) {
    let mut create = append("run-1", 0, vec![started("Email Bob")]);
    create.grants = vec![grant("g-1", uses(3), 100)];
    ok(store.append(create).await);
    let before = now();
    assert!(ok(store.revoke_grant("g-1", "carol", 1_234).await));
    let after = now();

    let entries = verified_audit(&*store).await;
    assert_eq!(seqs(&entries), vec![1, 2]);
    let entry = &entries[1];
    assert_eq!(entry.run_id, None, "a grant's entry belongs to no run");
    assert_eq!(entry.kind, "grant_revoked");
    assert!(entry.signature.is_some(), "a revocation is signed");
    assert_recent(entry.at, before, after);
    let body: Value = serde_json::from_str(&entry.body).unwrap();
    assert_eq!(
        body,
        json!({"type": "grant_revoked", "grant_id": "g-1", "by": "carol", "at": 1_234})
    );
}

/// `audit(after, limit)` pages through the log oldest first.
pub async fn audit_pages_oldest_first(store: Arc<dyn Store>) {
    let events = vec![
        started("Email Bob"),
        model_turn("call-1", "bob@example.com"),
        requested("call-1", "appr-1", "bob@example.com"),
        decided("appr-1", "bob@example.com", None),
        tool_started("call-1", "bob@example.com"),
    ];
    ok(store.append(append("run-1", 0, events)).await);
    let page = |after, limit| {
        let store = Arc::clone(&store);
        async move { seqs(&ok(store.audit(after, limit).await)) }
    };
    assert_eq!(page(0, 2).await, [1, 2]);
    assert_eq!(page(2, 2).await, [3, 4]);
    assert_eq!(page(4, 2).await, [5]);
    assert_eq!(page(5, 2).await, Vec::<u64>::new());
    assert_eq!(page(0, 100).await, [1, 2, 3, 4, 5]);
    assert_eq!(page(3, 100).await, [4, 5]);
}

/// A webhook's cursor starts where it is first asked for and then only
/// moves forward; a delivery is kept once per (webhook, event key), so
/// that two servers queuing the same event make one delivery; listings are
/// newest first and filter by status.
pub async fn webhook_deliveries_are_queued_once_per_event(store: Arc<dyn Store>) {
    let hook = "http://127.0.0.1:9/a";
    assert_eq!(
        ok(store.webhook_cursor(hook, 5).await),
        5,
        "a new cursor starts at `start`"
    );
    assert_eq!(
        ok(store.webhook_cursor(hook, 0).await),
        5,
        "and stays there"
    );
    let batch = [
        new_delivery("d-1", "approval.requested:a1", 6, 100),
        new_delivery("d-2", "approval.decided:a1", 7, 200),
    ];
    assert_eq!(ok(store.enqueue_deliveries(hook, 7, &batch).await), 2);
    assert_eq!(ok(store.webhook_cursor(hook, 0).await), 7);
    // Another server queues the same events under other ids, from an older
    // cursor: nothing new is kept, and the cursor does not go back.
    let again = [
        new_delivery("d-3", "approval.requested:a1", 6, 100),
        new_delivery("d-4", "approval.decided:a1", 7, 200),
    ];
    assert_eq!(ok(store.enqueue_deliveries(hook, 6, &again).await), 0);
    assert_eq!(ok(store.webhook_cursor(hook, 0).await), 7);
    // The same event for another webhook is that webhook's own delivery.
    let other = "http://127.0.0.1:9/b";
    assert_eq!(
        ok(store
            .enqueue_deliveries(
                other,
                9,
                &[new_delivery("d-5", "approval.decided:a1", 7, 300)]
            )
            .await),
        1
    );
    assert_eq!(
        ok(store.webhook_cursor(other, 0).await),
        9,
        "enqueue makes the cursor"
    );
    // An empty batch still moves the cursor.
    assert_eq!(ok(store.enqueue_deliveries(hook, 12, &[]).await), 0);
    assert_eq!(ok(store.webhook_cursor(hook, 0).await), 12);

    let all = ok(store.deliveries(&DeliveryQuery::default()).await);
    assert_eq!(
        all.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["d-5", "d-2", "d-1"],
        "newest first"
    );
    let first = &all[2];
    assert_eq!(
        first,
        &Delivery {
            id: "d-1".to_owned(),
            webhook: hook.to_owned(),
            event_key: "approval.requested:a1".to_owned(),
            event_type: "approval.requested".to_owned(),
            audit_seq: 6,
            payload: r#"{"id":"d-1"}"#.to_owned(),
            status: DeliveryStatus::Pending,
            created_at: 100,
            next_attempt_at: 100,
            attempts: vec![],
        }
    );
    let limited = ok(store
        .deliveries(&DeliveryQuery {
            status: Some(DeliveryStatus::Pending),
            limit: 1,
        })
        .await);
    assert_eq!(limited.len(), 1);
    assert!(
        ok(store
            .deliveries(&DeliveryQuery {
                status: Some(DeliveryStatus::Delivered),
                limit: 0,
            })
            .await)
        .is_empty()
    );
}

/// Claims take due, unleased deliveries of the webhooks named, oldest due
/// first, and lease them; only the holder records an attempt, which ends
/// the lease and sets what happens next; a lease that ran out is taken
/// over, and the old holder can no longer record.
pub async fn webhook_deliveries_are_claimed_leased_and_recorded(store: Arc<dyn Store>) {
    let hook = "http://127.0.0.1:9/a";
    let other = "http://127.0.0.1:9/b";
    ok(store
        .enqueue_deliveries(
            hook,
            3,
            &[
                new_delivery("d-2", "k2", 2, 200),
                new_delivery("d-1", "k1", 1, 100),
                new_delivery("d-3", "k3", 3, 5_000),
            ],
        )
        .await);
    ok(store
        .enqueue_deliveries(other, 4, &[new_delivery("d-9", "k9", 4, 100)])
        .await);
    let claim = |claimer: &str, now: i64| claim_of(hook, claimer, now);
    let ids = |deliveries: &[Delivery]| deliveries.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    let first = ok(store.claim_deliveries(&claim("one", 1_000)).await);
    assert_eq!(
        ids(&first),
        ["d-1", "d-2"],
        "due ones of the webhooks named, oldest due first; d-3 is not due, d-9 another's"
    );
    assert!(
        ok(store.claim_deliveries(&claim("two", 1_500)).await).is_empty(),
        "leased deliveries are not claimed again while the lease holds"
    );
    let attempt = |n, code: Option<u16>, error: Option<&str>| DeliveryAttempt {
        attempt: n,
        at: 1_100,
        duration_ms: 12,
        status_code: code,
        error: error.map(str::to_owned),
    };
    assert!(
        !ok(store
            .record_attempt(
                "d-1",
                "two",
                &attempt(1, Some(200), None),
                DeliveryNext::Delivered
            )
            .await),
        "only the holder records"
    );
    assert!(ok(store
        .record_attempt(
            "d-1",
            "one",
            &attempt(1, Some(500), Some("HTTP 500")),
            DeliveryNext::RetryAt(1_200)
        )
        .await));
    assert!(ok(store
        .record_attempt(
            "d-2",
            "one",
            &attempt(1, Some(400), None),
            DeliveryNext::Failed
        )
        .await));
    assert!(
        !ok(store
            .record_attempt(
                "d-2",
                "one",
                &attempt(2, Some(200), None),
                DeliveryNext::Delivered
            )
            .await),
        "a failed delivery takes no more attempts"
    );
    assert!(
        ok(store.claim_deliveries(&claim("two", 1_150)).await).is_empty(),
        "a retry waits for its time"
    );
    let retried = ok(store.claim_deliveries(&claim("two", 1_200)).await);
    assert_eq!(ids(&retried), ["d-1"]);
    assert_eq!(
        retried[0].attempts,
        vec![attempt(1, Some(500), Some("HTTP 500"))]
    );
    // "two" crashes; after its lease, "three" takes d-1 over.
    assert!(ok(store.claim_deliveries(&claim("three", 2_100)).await).is_empty());
    let taken = ok(store.claim_deliveries(&claim("three", 2_200)).await);
    assert_eq!(ids(&taken), ["d-1"], "a lease that ran out is taken over");
    assert!(
        !ok(store
            .record_attempt(
                "d-1",
                "two",
                &attempt(2, None, Some("timed out")),
                DeliveryNext::Failed
            )
            .await),
        "the old holder lost the delivery"
    );
    assert!(ok(store
        .record_attempt(
            "d-1",
            "three",
            &attempt(2, Some(204), None),
            DeliveryNext::Delivered
        )
        .await));
    assert!(
        ok(store.claim_deliveries(&claim("four", 9_000)).await).len() == 1,
        "only d-3"
    );

    let listed = ok(store.deliveries(&DeliveryQuery::default()).await);
    let by_id = |id: &str| listed.iter().find(|d| d.id == id).unwrap().clone();
    let d1 = by_id("d-1");
    assert_eq!(d1.status, DeliveryStatus::Delivered);
    assert_eq!(
        d1.attempts,
        vec![
            attempt(1, Some(500), Some("HTTP 500")),
            attempt(2, Some(204), None)
        ],
        "every attempt is logged, numbered from 1"
    );
    assert_eq!(by_id("d-2").status, DeliveryStatus::Failed);
    assert_eq!(by_id("d-2").attempts.len(), 1);
    assert_eq!(by_id("d-9").status, DeliveryStatus::Pending);
    let failed = ok(store
        .deliveries(&DeliveryQuery {
            status: Some(DeliveryStatus::Failed),
            limit: 0,
        })
        .await);
    assert_eq!(ids(&failed), ["d-2"]);
}

/// A failed delivery is made pending again, due at once, with its attempts
/// kept; pending and delivered ones are left as they are.
pub async fn failed_deliveries_can_be_sent_again(store: Arc<dyn Store>) {
    let hook = "http://127.0.0.1:9/a";
    ok(store
        .enqueue_deliveries(
            hook,
            2,
            &[
                new_delivery("d-1", "k1", 1, 100),
                new_delivery("d-2", "k2", 2, 100),
            ],
        )
        .await);
    let claim = |claimer: &str, now: i64| claim_of(hook, claimer, now);
    assert_eq!(
        ok(store.claim_deliveries(&claim("one", 1_000)).await).len(),
        2
    );
    let refused = DeliveryAttempt {
        attempt: 1,
        at: 1_100,
        duration_ms: 12,
        status_code: Some(410),
        error: Some("HTTP 410".to_owned()),
    };
    assert!(ok(store
        .record_attempt("d-1", "one", &refused, DeliveryNext::Failed)
        .await));
    let delivered = DeliveryAttempt {
        status_code: Some(204),
        error: None,
        ..refused.clone()
    };
    assert!(ok(store
        .record_attempt("d-2", "one", &delivered, DeliveryNext::Delivered)
        .await));

    assert_eq!(
        ok(store.redeliver("d-1", 5_000).await),
        DeliveryStatus::Failed,
        "answers the status it had"
    );
    assert!(
        ok(store.claim_deliveries(&claim("two", 4_999)).await).is_empty(),
        "due at the time of the redelivery, not before"
    );
    let again = ok(store.claim_deliveries(&claim("two", 5_000)).await);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, "d-1");
    assert_eq!(again[0].status, DeliveryStatus::Pending);
    assert_eq!(again[0].next_attempt_at, 5_000);
    assert_eq!(
        again[0].attempts,
        vec![refused.clone()],
        "its attempts are kept"
    );
    let second = DeliveryAttempt {
        attempt: 2,
        at: 5_100,
        ..delivered.clone()
    };
    assert!(
        ok(store
            .record_attempt("d-1", "two", &second, DeliveryNext::Delivered)
            .await),
        "the new claimer records the next attempt"
    );

    assert_eq!(
        ok(store.redeliver("d-2", 6_000).await),
        DeliveryStatus::Delivered
    );
    assert_eq!(
        ok(store.redeliver("d-1", 6_000).await),
        DeliveryStatus::Delivered,
        "delivered now"
    );
    let listed = ok(store.deliveries(&DeliveryQuery::default()).await);
    assert!(
        listed.iter().all(|d| d.status == DeliveryStatus::Delivered),
        "a delivered delivery is not sent again: {listed:?}"
    );
    assert_eq!(
        listed.iter().find(|d| d.id == "d-1").unwrap().attempts,
        vec![refused, second],
        "attempts numbered on from before the redelivery"
    );
    assert_not_found(
        store.redeliver("d-nope", 6_000).await,
        "webhook delivery",
        "d-nope",
    );
}

/// Pruning deletes the settled deliveries made before a time, with their
/// attempts, and keeps pending ones and newer ones.
pub async fn settled_deliveries_are_pruned_by_age(store: Arc<dyn Store>) {
    let hook = "http://127.0.0.1:9/a";
    ok(store
        .enqueue_deliveries(
            hook,
            4,
            &[
                new_delivery("d-1", "k1", 1, 100),
                new_delivery("d-2", "k2", 2, 200),
                new_delivery("d-3", "k3", 3, 300),
                new_delivery("d-4", "k4", 4, 400),
            ],
        )
        .await);
    let claim = claim_of(hook, "one", 1_000);
    assert_eq!(ok(store.claim_deliveries(&claim).await).len(), 4);
    let attempt = DeliveryAttempt {
        attempt: 1,
        at: 1_100,
        duration_ms: 3,
        status_code: Some(200),
        error: None,
    };
    // d-1 delivered, d-2 failed, d-3 still pending (a retry), d-4 delivered.
    for (id, next) in [
        ("d-1", DeliveryNext::Delivered),
        ("d-2", DeliveryNext::Failed),
        ("d-3", DeliveryNext::RetryAt(9_000)),
        ("d-4", DeliveryNext::Delivered),
    ] {
        assert!(ok(store.record_attempt(id, "one", &attempt, next).await));
    }

    assert_eq!(
        ok(store.prune_deliveries(100).await),
        0,
        "none made before 100"
    );
    assert_eq!(
        ok(store.prune_deliveries(400).await),
        2,
        "d-1 and d-2; d-3 is pending, d-4 is not older"
    );
    let left = ok(store.deliveries(&DeliveryQuery::default()).await);
    let ids: Vec<&str> = left.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["d-4", "d-3"]);
    assert!(left.iter().all(|d| d.attempts.len() == 1), "{left:?}");
    assert_eq!(
        ok(store.prune_deliveries(400).await),
        0,
        "nothing left to prune"
    );
    // The webhook's cursor is past the pruned events: none is queued again.
    assert_eq!(ok(store.webhook_cursor(hook, 0).await), 4);
    assert_eq!(ok(store.prune_deliveries(i64::MAX).await), 1, "d-4");
    assert_eq!(
        ok(store.deliveries(&DeliveryQuery::default()).await).len(),
        1
    );
}

/// Four claimers at once, over and over until the outbox is empty: every
/// delivery is claimed exactly once.
pub async fn concurrent_claims_never_share_a_delivery(store: Arc<dyn Store>) {
    let hook = "http://127.0.0.1:9/a";
    let deliveries: Vec<NewDelivery> = (0..60)
        .map(|n| new_delivery(&format!("d-{n:02}"), &format!("k{n}"), n + 1, 100))
        .collect();
    ok(store.enqueue_deliveries(hook, 60, &deliveries).await);
    let barrier = Arc::new(Barrier::new(4));
    let claimers: Vec<_> = (0..4)
        .map(|n| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                let mut mine = Vec::new();
                // Nothing is due again before the lease runs out, so an empty
                // claim means every delivery has been claimed by someone.
                loop {
                    let claim = DeliveryClaim {
                        claimer: format!("claimer-{n}"),
                        webhooks: vec![hook.to_owned()],
                        now: 1_000,
                        lease_until: 100_000,
                        limit: 3,
                    };
                    let claimed = ok(store.claim_deliveries(&claim).await);
                    if claimed.is_empty() {
                        return mine;
                    }
                    mine.extend(claimed.into_iter().map(|d| d.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.expect("a claimer panicked"));
    }
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        all.len(),
        "no delivery was claimed twice: {all:?}"
    );
    assert_eq!(unique.len(), 60, "every delivery was claimed: {unique:?}");
}

/// `claimer`'s claim at `now` of up to 10 deliveries to `hook`, for a
/// lease of a second.
fn claim_of(hook: &str, claimer: &str, now: i64) -> DeliveryClaim {
    DeliveryClaim {
        claimer: claimer.to_owned(),
        webhooks: vec![hook.to_owned()],
        now,
        lease_until: now + 1_000,
        limit: 10,
    }
}

fn new_delivery(id: &str, key: &str, audit_seq: u64, created_at: i64) -> NewDelivery {
    NewDelivery {
        id: id.to_owned(),
        event_key: key.to_owned(),
        event_type: key.split_once(':').map_or(key, |(kind, _)| kind).to_owned(),
        audit_seq,
        payload: format!(r#"{{"id":"{id}"}}"#),
        created_at,
    }
}

// ---------------------------------------------------------------------
// Building blocks.
// ---------------------------------------------------------------------

/// How far a store's clock may be from this process's (a database server
/// may run on another host).
const CLOCK_SLACK_MS: i64 = 5_000;

fn now() -> i64 {
    toolgate_core::time::to_millis(SystemTime::now())
}

fn assert_recent(at: i64, before: i64, after: i64) {
    assert!(
        (before - CLOCK_SLACK_MS..=after + CLOCK_SLACK_MS).contains(&at),
        "`at` is the store's clock when it appended ({at}), between {before} and {after}"
    );
}

fn ok<T>(result: Result<T, StoreError>) -> T {
    result.unwrap_or_else(|error| panic!("the store failed: {error} ({error:?})"))
}

fn assert_conflict(result: Result<u64, StoreError>, run_id: &str, expected: u64, actual: u64) {
    match result {
        Err(StoreError::Conflict {
            run_id: id,
            expected: e,
            actual: a,
        }) => assert_eq!(
            (id.as_str(), e, a),
            (run_id, expected, actual),
            "the conflict names the run, the version expected and the version found"
        ),
        other => panic!(
            "expected a conflict on {run_id} (expected {expected}, found {actual}), got {other:?}"
        ),
    }
}

fn assert_not_found<T: Debug>(result: Result<T, StoreError>, what: &str, id: &str) {
    match result {
        Err(StoreError::NotFound { what: w, id: i }) => {
            assert_eq!(
                (w, i.as_str()),
                (what, id),
                "NotFound names what was asked for"
            );
        }
        other => panic!("expected {what} {id} not to be found, got {other:?}"),
    }
}

/// Runs two appends to `run_id` at `expected` at the same moment; exactly
/// one must win. Returns which.
async fn race_appends(
    store: &Arc<dyn Store>,
    run_id: &str,
    expected: u64,
    events: [Event; 2],
) -> usize {
    let barrier = Arc::new(Barrier::new(2));
    let tasks = events.map(|event| {
        let store = Arc::clone(store);
        let barrier = Arc::clone(&barrier);
        let append = append(run_id, expected, vec![event]);
        tokio::spawn(async move {
            barrier.wait().await;
            store.append(append).await
        })
    });
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("an append task panicked"));
    }
    let winners: Vec<usize> = (0..2).filter(|&i| results[i].is_ok()).collect();
    let [winner] = winners[..] else {
        panic!(
            "exactly one of two appends to {run_id} at version {expected} must win: {results:?}"
        );
    };
    assert_eq!(ok(results.remove(winner)), expected + 1);
    assert_conflict(results.remove(0), run_id, expected, expected + 1);
    winner
}

/// The whole audit log, checked entry by entry with the store's key.
async fn verified_audit(store: &dyn Store) -> Vec<AuditEntry> {
    let key = ok(store.public_key().await);
    let mut verifier = Verifier::new(&key);
    let mut entries = Vec::new();
    loop {
        let after = entries.last().map_or(0, |e: &AuditEntry| e.seq);
        let page = ok(store.audit(after, 100).await);
        if page.is_empty() {
            break;
        }
        for entry in &page {
            verifier
                .check(entry)
                .unwrap_or_else(|broken| panic!("the audit log does not verify: {broken}"));
        }
        entries.extend(page);
    }
    entries
}

fn seqs(entries: &[AuditEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

/// Building blocks for a store's own tests: real events of one run that
/// emails Bob, and the rows and grants that go with them.
pub mod fixtures {
    use serde_json::{Map, Value, json};
    use toolgate_core::grant::{Grant, GrantScope};
    use toolgate_core::policy::AskSpec;
    use toolgate_core::run::{ApprovalStatus, Decision, Event, Outcome};
    use toolgate_core::store::{Append, ApprovalRow, RunRow};
    use toolgate_core::{AiMessage, Fingerprint, Message, ToolCall};

    /// An append with a run row that says `running`, created at 1000.
    pub fn append(run_id: &str, expected_version: u64, events: Vec<Event>) -> Append {
        let version = expected_version + events.len() as u64;
        Append {
            run_id: run_id.to_owned(),
            expected_version,
            events,
            run: run_row(run_id, version),
            approvals: Vec::new(),
            grants: Vec::new(),
            lease: None,
        }
    }

    /// A `running` run row of `version` events, created at 1000.
    pub fn run_row(id: &str, version: u64) -> RunRow {
        RunRow {
            id: id.to_owned(),
            status: "running".to_owned(),
            thread: Some("thread-1".to_owned()),
            prompt: "Email Bob".to_owned(),
            created_at: 1_000,
            updated_at: 1_000 + version as i64,
            version,
        }
    }

    /// An approval of an email to Bob, by two of `group:ops` and
    /// `user:alice`, expiring a minute after it was made.
    pub fn approval_row(
        id: &str,
        run_id: &str,
        status: ApprovalStatus,
        created_at: i64,
    ) -> ApprovalRow {
        ApprovalRow {
            id: id.to_owned(),
            run_id: run_id.to_owned(),
            call_id: format!("call-{id}"),
            tool: "send_email".to_owned(),
            args: args("bob@example.com"),
            fingerprint: fingerprint("bob@example.com"),
            status,
            rule: "emails need a look".to_owned(),
            quorum: 2,
            approvers: vec!["group:ops".to_owned(), "user:alice".to_owned()],
            created_at,
            expires_at: Some(created_at + 60_000),
            decided_by: None,
            decided_at: None,
        }
    }

    /// A grant by bob for `send_*` to `@example.com` addresses, made by
    /// the decision on `appr-1`; `uses` grants start with all their uses.
    pub fn grant(id: &str, scope: GrantScope, created_at: i64) -> Grant {
        Grant {
            id: id.to_owned(),
            tool: "send_*".to_owned(),
            when: Some(r#"args.to.endsWith("@example.com")"#.to_owned()),
            uses_left: match scope {
                GrantScope::Uses { uses } => Some(uses),
                _ => None,
            },
            scope,
            created_by: "bob".to_owned(),
            created_at,
            approval_id: Some("appr-1".to_owned()),
            revoked: None,
        }
    }

    /// The scope of a grant for `uses` calls.
    pub fn uses(uses: u32) -> GrantScope {
        GrantScope::Uses { uses }
    }

    /// The `send_email` tool's argument schema.
    pub fn schema() -> Value {
        json!({"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]})
    }

    /// Arguments of `send_email` to `to`.
    pub fn args(to: &str) -> Map<String, Value> {
        Map::from_iter([("to".to_owned(), Value::from(to))])
    }

    /// The fingerprint of a `send_email` call to `to`.
    pub fn fingerprint(to: &str) -> Fingerprint {
        Fingerprint::of_call("send_email", &args(to), &schema())
    }

    /// A run by alice in `thread-1`, asked `prompt`.
    pub fn started(prompt: &str) -> Event {
        Event::RunStarted {
            messages: vec![Message::human(prompt)],
            thread: Some("thread-1".to_owned()),
            principal: Some("alice".to_owned()),
        }
    }

    /// The model calls `send_email` to `to`.
    pub fn model_turn(call_id: &str, to: &str) -> Event {
        Event::ModelTurn {
            message: AiMessage::with_tool_calls([ToolCall::new(
                call_id,
                "send_email",
                Value::Object(args(to)),
            )]),
        }
    }

    /// The call waits for an approval.
    pub fn requested(call_id: &str, approval_id: &str, to: &str) -> Event {
        Event::ApprovalRequested {
            call_id: call_id.to_owned(),
            approval_id: approval_id.to_owned(),
            fingerprint: fingerprint(to),
            ask: AskSpec::default(),
            requested_at: 1_000,
            expires_at: Some(1_000_000),
            description: "Sends an email.".to_owned(),
            schema: schema(),
        }
    }

    /// bob approves the call, maybe granting later ones too.
    pub fn decided(approval_id: &str, to: &str, grant: Option<Grant>) -> Event {
        Event::DecisionRecorded {
            approval_id: approval_id.to_owned(),
            decision: Decision::Approve,
            principal: "bob".to_owned(),
            fingerprint: fingerprint(to),
            grant,
        }
    }

    /// The tool starts.
    pub fn tool_started(call_id: &str, to: &str) -> Event {
        Event::ToolStarted {
            call_id: call_id.to_owned(),
            args: args(to),
        }
    }

    /// The tool returns `"sent"`.
    pub fn tool_finished(call_id: &str) -> Event {
        Event::ToolFinished {
            call_id: call_id.to_owned(),
            outcome: Outcome::Output {
                output: json!("sent"),
            },
        }
    }

    /// The run ends with an answer.
    pub fn run_completed() -> Event {
        Event::RunCompleted {
            answer: "Done.".to_owned(),
        }
    }
}
