//! The SQLite store: the conformance checks every store passes, and what
//! only a file can show (reopening, tampering, refusing files, group
//! commit).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tempfile::TempDir;
use toolgate_core::audit::{Broken, Verifier};
use toolgate_core::run::ApprovalStatus;
use toolgate_core::store::{Append, GrantQuery, Store, StoreError};
use toolgate_store::SqliteStore;
use toolgate_store::conformance::fixtures::{
    append, approval_row, decided, grant, model_turn, requested, run_completed, started,
    tool_finished, tool_started, uses,
};

mod conformance {
    toolgate_store::store_conformance_tests!(async {
        let dir = tempfile::tempdir().unwrap();
        let store = toolgate_store::SqliteStore::open(dir.path().join("toolgate.db")).unwrap();
        toolgate_store::conformance::Subject::new(store).keep(dir)
    });
}

/// A fresh store in a temporary directory.
fn fresh() -> (TempDir, PathBuf, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("toolgate.db");
    let store = SqliteStore::open(&path).unwrap();
    (dir, path, store)
}

/// A run that emails Bob after bob approved it: 7 audit entries, the 4th
/// a signed decision.
async fn email_bob(store: &SqliteStore, run_id: &str) {
    let to = "bob@example.com";
    let events = vec![
        started("Email Bob"),
        model_turn("call-1", to),
        requested("call-1", "appr-1", to),
        decided("appr-1", to, None),
        tool_started("call-1", to),
        tool_finished("call-1"),
        run_completed(),
    ];
    store.append(append(run_id, 0, events)).await.unwrap();
}

/// Checks the whole audit log; the first entry that does not check out.
async fn verify(store: &SqliteStore) -> Result<u64, Broken> {
    let mut verifier = Verifier::new(&store.public_key().await.unwrap());
    for entry in store.audit(0, 10_000).await.unwrap() {
        verifier.check(&entry)?;
    }
    Ok(verifier.verified().entries)
}

/// Changes the file behind the store's back, as someone with the file
/// could.
fn tamper(path: &Path, sql: &str) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

/// Stores `body` as audit entry `seq`'s body, as someone with the file
/// could: the store keeps bodies compressed, but also reads a body stored
/// as plain JSON text.
fn tamper_body(path: &Path, seq: u64, body: &str) {
    let conn = Connection::open(path).unwrap();
    let changed = conn
        .execute(
            "UPDATE events SET body = ?1 WHERE seq = ?2",
            rusqlite::params![body, seq as i64],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

fn open_error(path: impl AsRef<Path>) -> String {
    SqliteStore::open(path).unwrap_err().to_string()
}

#[tokio::test]
async fn data_and_signing_key_survive_reopening() {
    let (_dir, path, store) = fresh();
    let mut create = append("run-1", 0, vec![started("Email Bob")]);
    create.grants = vec![grant("g-1", uses(2), 100)];
    store.append(create).await.unwrap();
    assert!(store.revoke_grant("g-1", "carol", 200).await.unwrap());
    let key = store.public_key().await.unwrap();
    let log = store.load("run-1").await.unwrap();
    let audit = store.audit(0, 100).await.unwrap();
    drop(store);

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.public_key().await.unwrap(),
        key,
        "the same file signs with the same key"
    );
    assert_eq!(store.load("run-1").await.unwrap(), log);
    assert_eq!(store.audit(0, 100).await.unwrap(), audit);
    assert_eq!(
        store.grants(&GrantQuery::all()).await.unwrap()[0]
            .revoked
            .as_ref()
            .unwrap()
            .by,
        "carol"
    );
    // The chain goes on from where it was.
    store
        .append(append(
            "run-1",
            1,
            vec![model_turn("call-1", "bob@example.com")],
        ))
        .await
        .unwrap();
    assert_eq!(verify(&store).await, Ok(3));
}

#[tokio::test]
async fn a_changed_decision_is_named_by_the_verifier() {
    let (_dir, path, store) = fresh();
    email_bob(&store, "run-1").await;
    assert_eq!(verify(&store).await, Ok(7));
    let decision = store.audit(3, 1).await.unwrap().remove(0);
    assert_eq!(decision.kind, "decision_recorded");
    assert!(decision.body.contains(r#""principal":"bob""#));
    drop(store);
    tamper_body(
        &path,
        4,
        &decision
            .body
            .replace(r#""principal":"bob""#, r#""principal":"mallory""#),
    );
    let store = SqliteStore::open(&path).unwrap();
    let broken = verify(&store).await.unwrap_err();
    assert_eq!(broken.seq, 4, "{broken}");
    assert!(
        broken.problem.contains("does not match its hash"),
        "{broken}"
    );
}

#[tokio::test]
async fn a_deleted_entry_is_named_by_the_verifier() {
    let (_dir, path, store) = fresh();
    email_bob(&store, "run-1").await;
    drop(store);
    tamper(&path, "DELETE FROM events WHERE seq = 3");
    let store = SqliteStore::open(&path).unwrap();
    let broken = verify(&store).await.unwrap_err();
    assert_eq!(broken.seq, 3, "{broken}");
    assert!(broken.problem.starts_with("is missing"), "{broken}");
    // The run's log has a hole too, and loading it says so.
    let error = store.load("run-1").await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
    assert!(error.to_string().contains("events were deleted"), "{error}");
}

#[tokio::test]
async fn swapped_entries_are_named_by_the_verifier() {
    let (_dir, path, store) = fresh();
    email_bob(&store, "run-1").await;
    drop(store);
    tamper(
        &path,
        "UPDATE events SET body = (SELECT body FROM events e WHERE e.seq = 5 - events.seq),
                           kind = (SELECT kind FROM events e WHERE e.seq = 5 - events.seq)
         WHERE seq IN (2, 3)",
    );
    let store = SqliteStore::open(&path).unwrap();
    let broken = verify(&store).await.unwrap_err();
    assert_eq!(broken.seq, 2, "{broken}");
}

#[tokio::test]
async fn an_unreadable_event_is_reported_as_corrupt() {
    let (_dir, path, store) = fresh();
    email_bob(&store, "run-1").await;
    drop(store);
    tamper_body(&path, 2, r#"{"type":"from_the_future"}"#);
    let store = SqliteStore::open(&path).unwrap();
    let error = store.load("run-1").await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("event 2 of run run-1 cannot be read"),
        "{message}"
    );
    assert!(message.contains("newer toolgate"), "{message}");
}

#[tokio::test]
async fn a_store_from_a_newer_toolgate_is_refused() {
    let (_dir, path, store) = fresh();
    drop(store);
    tamper(&path, "PRAGMA user_version = 99");
    let message = open_error(&path);
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("schema version 99"), "{message}");
    assert!(message.contains("a newer toolgate wrote it"), "{message}");
    assert!(message.contains("Upgrade toolgate"), "{message}");
}

#[test]
fn a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let message = open_error(dir.path());
    assert_eq!(
        message,
        format!(
            "the store failed: cannot open the store {}: it is a directory; give the path of a \
             file, such as {}",
            dir.path().display(),
            dir.path().join("toolgate.db").display()
        )
    );
}

#[test]
fn a_file_that_is_not_sqlite_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "Dear diary, today I wrote no database.\n".repeat(40)).unwrap();
    let message = open_error(&path);
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains("it is not an SQLite database"),
        "{message}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "Dear diary, today I wrote no database.\n".repeat(40),
        "the file is left as it was"
    );
}

#[test]
fn another_programs_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    tamper(
        &path,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)",
    );
    let message = open_error(&path);
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("another program"), "{message}");
}

#[tokio::test]
async fn parent_directories_are_created_and_the_file_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/toolgate.db");
    let store = SqliteStore::open(&path).unwrap();
    email_bob(&store, "run-1").await;
    assert_eq!(store.path(), path);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the file holds the signing key: owner only"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_appends_to_different_runs_all_succeed() {
    let (_dir, _path, store) = fresh();
    let store = Arc::new(store);
    const RUNS: u64 = 16;
    const APPENDS: u64 = 25;
    let tasks: Vec<_> = (0..RUNS)
        .map(|run| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let run_id = format!("run-{run}");
                let to = "bob@example.com";
                let mut version = 0;
                for step in 0..APPENDS {
                    let events = if step == 0 {
                        vec![started("Email Bob"), model_turn("call-0", to)]
                    } else {
                        let call = format!("call-{step}");
                        vec![tool_started(&call, to), tool_finished(&call)]
                    };
                    version = store
                        .append(append(&run_id, version, events))
                        .await
                        .unwrap();
                }
                version
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), APPENDS * 2);
    }
    assert_eq!(verify(&store).await, Ok(RUNS * APPENDS * 2));
    for run in 0..RUNS {
        assert_eq!(
            store.load(&format!("run-{run}")).await.unwrap().len() as u64,
            APPENDS * 2
        );
    }
    let stats = store.writer_stats();
    assert_eq!(stats.requests, RUNS * APPENDS);
    assert!(stats.transactions <= stats.requests, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_request_rolls_back_only_itself_in_a_group() {
    let (_dir, path, store) = fresh();
    let store = Arc::new(store);
    for run in 0..10 {
        let mut create = append(&format!("run-{run}"), 0, vec![started("Email Bob")]);
        if run == 0 {
            create.grants = vec![grant("g-taken", uses(1), 100)];
        }
        store.append(create).await.unwrap();
    }
    let before = store.writer_stats();

    // Another connection holds the write lock, so the writer waits in its
    // next transaction while every other request queues behind it: they
    // are then all served by one transaction.
    let lock = Connection::open(&path).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let spawn = |append: Append| {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.append(append).await })
    };
    let first = spawn(append("first", 0, vec![started("Wait")]));
    // The writer counts a request when it takes it, before it waits.
    while store.writer_stats().requests == before.requests {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let to = "bob@example.com";
    let mut good = Vec::new();
    let mut conflicts = Vec::new();
    let mut failing = Vec::new();
    for run in 0..10 {
        let run_id = format!("run-{run}");
        good.push(spawn(append(&run_id, 1, vec![model_turn("call-1", to)])));
        good.push(spawn(append(
            &format!("new-{run}"),
            0,
            vec![started("Email Bob")],
        )));
        conflicts.push(spawn(append(&run_id, 5, vec![run_completed()])));
        conflicts.push(spawn(append(&run_id, 0, vec![started("Again")])));
        // Writes its events, then fails on the grant id that is taken:
        // its savepoint must take the events back with it.
        let mut duplicate = append(
            &format!("dup-{run}"),
            0,
            vec![started("Dup"), run_completed()],
        );
        duplicate.grants = vec![grant("g-taken", uses(1), 100)];
        failing.push(spawn(duplicate));
    }
    // Time for the tasks to queue their requests.
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.execute_batch("COMMIT").unwrap();

    assert_eq!(first.await.unwrap().unwrap(), 1);
    for task in good {
        assert!(task.await.unwrap().is_ok());
    }
    for task in conflicts {
        let result = task.await.unwrap();
        assert!(
            matches!(result, Err(StoreError::Conflict { .. })),
            "{result:?}"
        );
    }
    for task in failing {
        let message = task.await.unwrap().unwrap_err().to_string();
        assert!(message.contains("grant g-taken"), "{message}");
        assert!(message.contains("UNIQUE constraint failed"), "{message}");
    }

    let stats = store.writer_stats();
    assert_eq!(stats.transactions - before.transactions, 2, "{stats:?}");
    assert_eq!(
        stats.largest_batch, 50,
        "all queued requests share one transaction"
    );
    for run in 0..10 {
        assert_eq!(store.load(&format!("run-{run}")).await.unwrap().len(), 2);
        assert_eq!(store.load(&format!("new-{run}")).await.unwrap().len(), 1);
        assert!(matches!(
            store.load(&format!("dup-{run}")).await,
            Err(StoreError::NotFound { .. })
        ));
    }
    assert_eq!(verify(&store).await, Ok(10 + 1 + 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_keep_one_chain() {
    // As when a command line tool decides an approval while a server runs:
    // each writer notices the other's commits and chains after them.
    let (_dir, path, first) = fresh();
    let second = SqliteStore::open(&path).unwrap();
    assert_eq!(
        first.public_key().await.unwrap(),
        second.public_key().await.unwrap()
    );
    let mut versions = [0, 0];
    for round in 0..10 {
        for (index, store) in [&first, &second].into_iter().enumerate() {
            let run_id = format!("run-{index}");
            let event = if round == 0 {
                started("Email Bob")
            } else {
                model_turn(&format!("call-{round}"), "bob@example.com")
            };
            versions[index] = store
                .append(append(&run_id, versions[index], vec![event]))
                .await
                .unwrap();
        }
    }
    assert!(first.revoke_grant("nope", "carol", 1).await.is_err());
    assert_eq!(verify(&first).await, Ok(20));
    assert_eq!(verify(&second).await, Ok(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, not a check: cargo test -p toolgate-store --release -- --ignored --nocapture"]
async fn group_commit_throughput() {
    let (_dir, _path, store) = fresh();
    let store = Arc::new(store);
    const RUNS: usize = 64;
    const CYCLES: usize = 200;
    let start = Instant::now();
    let tasks: Vec<_> = (0..RUNS)
        .map(|run| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let run_id = format!("run-{run}");
                let to = "bob@example.com";
                let mut version = store
                    .append(append(&run_id, 0, vec![started("Email Bob")]))
                    .await
                    .unwrap();
                // One engine cycle: the model's turn, the tool starting,
                // the tool finishing.
                for cycle in 0..CYCLES {
                    let call = format!("call-{cycle}");
                    for event in [
                        model_turn(&call, to),
                        tool_started(&call, to),
                        tool_finished(&call),
                    ] {
                        version = store
                            .append(append(&run_id, version, vec![event]))
                            .await
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let stats = store.writer_stats();
    println!(
        "{RUNS} runs x {CYCLES} cycles of 3 appends: {:.0} cycles/s, {:.0} appends/s, \
         {:.1} appends per commit (largest {}), {:.2}s",
        (RUNS * CYCLES) as f64 / elapsed,
        stats.requests as f64 / elapsed,
        stats.requests as f64 / stats.transactions as f64,
        stats.largest_batch,
        elapsed
    );
}

#[tokio::test]
async fn appends_that_do_not_fit_their_run_are_refused() {
    let (_dir, _path, store) = fresh();
    let mut other = append("run-2", 0, vec![started("Email Carol")]);
    other.approvals = vec![approval_row(
        "appr-2",
        "run-2",
        ApprovalStatus::Pending,
        100,
    )];
    store.append(other).await.unwrap();

    let mut wrong_row = append("run-1", 0, vec![started("Email Bob")]);
    wrong_row.run.id = "run-2".to_owned();
    let message = store.append(wrong_row).await.unwrap_err().to_string();
    assert_eq!(
        message,
        "the store failed: cannot append to run run-1: the run row given is run run-2's"
    );

    let mut foreign = append("run-1", 0, vec![started("Email Bob")]);
    foreign.approvals = vec![approval_row(
        "appr-2",
        "run-2",
        ApprovalStatus::Approved,
        100,
    )];
    let message = store.append(foreign).await.unwrap_err().to_string();
    assert!(
        message.contains("approval appr-2 belongs to run run-2"),
        "{message}"
    );

    let mut taken = append("run-1", 0, vec![started("Email Bob")]);
    taken.approvals = vec![approval_row(
        "appr-2",
        "run-1",
        ApprovalStatus::Pending,
        100,
    )];
    let message = store.append(taken).await.unwrap_err().to_string();
    assert_eq!(
        message,
        "the store failed: cannot append to run run-1: approval appr-2 belongs to another run"
    );

    assert!(matches!(
        store.load("run-1").await,
        Err(StoreError::NotFound { .. })
    ));
    let approval = store.approval("appr-2").await.unwrap();
    assert_eq!(
        (approval.run_id.as_str(), approval.status),
        ("run-2", ApprovalStatus::Pending)
    );
    assert_eq!(verify(&store).await, Ok(1));
}

#[tokio::test]
async fn event_times_survive_a_run_row_with_another_creation_time() {
    let (_dir, _path, store) = fresh();
    store
        .append(append("run-1", 0, vec![started("Email Bob")]))
        .await
        .unwrap();
    let before = store.audit(0, 100).await.unwrap();
    let mut later = append("run-1", 1, vec![model_turn("call-1", "bob@example.com")]);
    later.run.created_at = -5_000_000_000_000;
    later.run.updated_at = i64::MAX;
    store.append(later).await.unwrap();
    let after = store.audit(0, 100).await.unwrap();
    assert_eq!(after[0].at, before[0].at);
    assert_eq!(verify(&store).await.unwrap(), 2);
    let loaded = store.load("run-1").await.unwrap();
    assert_eq!(loaded[0].at, before[0].at);
    assert_eq!(loaded[1].at, after[1].at);
    let runs = store.runs(&Default::default()).await.unwrap();
    assert_eq!(
        runs[0].created_at, 1_000,
        "a run's creation time is its first append's"
    );
    assert_eq!(runs[0].updated_at, i64::MAX);
}

/// Waits until the writer has synced the log `syncs` times, for at most 5 s.
async fn wait_for_syncs(store: &SqliteStore, syncs: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.writer_stats().syncs < syncs && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    store.writer_stats().syncs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deferred_append_is_synced_by_the_next_durable_commit_or_by_the_writer() {
    let (_dir, path, store) = fresh();
    let store = Arc::new(store);
    store
        .append(append("run-1", 0, vec![started("Email Bob")]))
        .await
        .unwrap();
    let durable = store.writer_stats();
    assert_eq!(
        (durable.transactions, durable.syncs),
        (1, 1),
        "a durable commit is a sync"
    );

    // Alone, a deferred append is committed at once (another connection
    // reads it) and synced by the writer itself soon after, once.
    store
        .append_deferred(append(
            "run-1",
            1,
            vec![model_turn("call-1", "bob@example.com")],
        ))
        .await
        .unwrap();
    let other = Connection::open(&path).unwrap();
    let events: i64 = other
        .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
        .unwrap();
    assert_eq!(events, 2, "the deferred commit is in the file");
    assert_eq!(
        wait_for_syncs(&store, 2).await,
        2,
        "{:?}",
        store.writer_stats()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = store.writer_stats();
    assert_eq!((stats.transactions, stats.syncs), (2, 2), "{stats:?}");

    // In a batch with a durable append, the deferred one shares its sync,
    // and the writer adds none of its own.
    let lock = Connection::open(&path).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let first = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .append(append("first", 0, vec![started("Wait")]))
                .await
        })
    };
    while store.writer_stats().requests == stats.requests {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let deferred = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .append_deferred(append("run-1", 2, vec![run_completed()]))
                .await
        })
    };
    let durable = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .append(append("run-2", 0, vec![started("Email Carol")]))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    lock.execute_batch("COMMIT").unwrap();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(deferred.await.unwrap().unwrap(), 3);
    assert_eq!(durable.await.unwrap().unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = store.writer_stats();
    assert_eq!(
        (
            after.transactions - stats.transactions,
            after.syncs - stats.syncs
        ),
        (2, 2),
        "the first append, then the two queued behind it in one durable transaction: {after:?}"
    );
    assert_eq!(verify(&store).await, Ok(5));
}

/// A prune of a long delivery log deletes it a chunk per transaction, and
/// all of it.
#[tokio::test]
async fn a_long_delivery_log_is_pruned_in_chunks() {
    let (_dir, path, store) = fresh();
    let deliveries: Vec<toolgate_core::store::NewDelivery> = (0..12_001)
        .map(|n| toolgate_core::store::NewDelivery {
            id: format!("d-{n}"),
            event_key: format!("k{n}"),
            event_type: "approval.requested".to_owned(),
            audit_seq: n + 1,
            payload: "{}".to_owned(),
            created_at: 100,
        })
        .collect();
    store
        .enqueue_deliveries("http://127.0.0.1:9/a", 12_001, &deliveries)
        .await
        .unwrap();
    // Settled behind the store's back: delivered, with one attempt each.
    let other = Connection::open(&path).unwrap();
    other
        .execute_batch(
            "UPDATE webhook_deliveries SET status = 1, attempts = 1;
             INSERT INTO webhook_attempts (delivery, attempt, at, duration_ms)
                 SELECT rid, 1, 150, 3 FROM webhook_deliveries;",
        )
        .unwrap();
    let before = store.writer_stats().transactions;
    assert_eq!(store.prune_deliveries(200).await.unwrap(), 12_001);
    assert_eq!(
        store.writer_stats().transactions - before,
        3,
        "5,000 at a time"
    );
    let left: (i64, i64) = other
        .query_row(
            "SELECT (SELECT count(*) FROM webhook_deliveries), (SELECT count(*) FROM webhook_attempts)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(left, (0, 0));
}
