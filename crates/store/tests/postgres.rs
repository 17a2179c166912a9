//! The PostgreSQL store: the conformance checks every store passes, and
//! what only a shared server can show (several stores, as several
//! processes, on one database; refusing databases; connection errors).
//!
//! Needs a PostgreSQL server: `TOOLGATE_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) is a URL of its
//! maintenance database, as a user that may create databases. Each test
//! makes a database of its own and drops it when done. Without a server
//! the tests fail, saying how to start one: they never skip.

use std::sync::Arc;

use tokio::sync::Barrier;
use tokio_postgres::NoTls;
use toolgate_core::audit::Verifier;
use toolgate_core::store::{Store, StoreError};
use toolgate_store::PgStore;
use toolgate_store::conformance::fixtures::{
    append, grant, model_turn, started, tool_finished, tool_started, uses,
};

/// The URL of the server's maintenance database.
fn server_url() -> String {
    std::env::var("TOOLGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        panic!("TOOLGATE_TEST_POSTGRES must be a URL (postgres://USER@HOST:PORT/DATABASE): {url}");
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let query = rest[authority_end..]
        .find('?')
        .map_or("", |at| &rest[authority_end + at..]);
    format!(
        "{}{}/{database}{query}",
        &url[..scheme_end + 3],
        &rest[..authority_end]
    )
}

/// A client of the maintenance database, or a failure that says how to
/// start the server.
async fn admin() -> tokio_postgres::Client {
    let url = server_url();
    match tokio_postgres::connect(&url, NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            client
        }
        Err(error) => panic!(
            "cannot reach the PostgreSQL server for the tests at {url} ({error}: {}). \
             Start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
             or point TOOLGATE_TEST_POSTGRES at another server's maintenance database",
            std::error::Error::source(&error).map_or_else(String::new, ToString::to_string)
        ),
    }
}

/// A database made for one test, dropped (even if the test fails) when
/// this is dropped.
struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    async fn create() -> TestDatabase {
        let name = format!("toolgate_test_{:016x}", rand::random::<u64>());
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|error| panic!("cannot create the test database {name}: {error:?}"));
        TestDatabase {
            url: with_database(&server_url(), &name),
            name,
        }
    }

    /// A client of this database, to look at it or change it behind the
    /// store's back.
    async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // On a thread of its own, with a runtime of its own: this may run
        // inside a test's runtime, where blocking is not allowed.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&server_url(), NoTls).await?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop the test database {}: {error}", self.name);
        }
    }
}

mod conformance {
    toolgate_store::store_conformance_tests!(async {
        let database = super::TestDatabase::create().await;
        let store = toolgate_store::PgStore::connect(&database.url)
            .await
            .unwrap();
        toolgate_store::conformance::Subject::new(store).keep(database)
    });
}

/// Checks the whole audit log; the number of entries, or the first that
/// does not check out.
async fn verify(store: &PgStore) -> Result<u64, toolgate_core::audit::Broken> {
    let mut verifier = Verifier::new(&store.public_key().await.unwrap());
    for entry in store.audit(0, 100_000).await.unwrap() {
        verifier.check(&entry)?;
    }
    Ok(verifier.verified().entries)
}

fn connect_error(result: Result<PgStore, StoreError>) -> String {
    match result {
        Ok(store) => panic!("expected the connection to fail, got {store:?}"),
        Err(error) => {
            let message = error.to_string();
            println!("{message}");
            message
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_appending_at_once_keep_one_chain() {
    // Two pools, as two processes would have: their appends interleave,
    // and the audit log is still one chain with no gap.
    let database = TestDatabase::create().await;
    let first = Arc::new(PgStore::connect(&database.url).await.unwrap());
    let second = Arc::new(PgStore::connect(&database.url).await.unwrap());
    assert_eq!(
        first.public_key().await.unwrap(),
        second.public_key().await.unwrap(),
        "both stores sign with the database's one key"
    );
    const RUNS: usize = 6;
    const APPENDS: u64 = 10;
    let mut tasks = Vec::new();
    for (index, store) in [&first, &second].into_iter().enumerate() {
        for run in 0..RUNS {
            let store = Arc::clone(store);
            tasks.push(tokio::spawn(async move {
                let run_id = format!("store-{index}-run-{run}");
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
            }));
        }
    }
    // A signed entry with no run, from the first store, among them.
    let mut with_grant = append("granting", 0, vec![started("Grant")]);
    with_grant.grants = vec![grant("g-1", uses(2), 100)];
    second.append(with_grant).await.unwrap();
    assert!(first.revoke_grant("g-1", "carol", 500).await.unwrap());
    for task in tasks {
        assert_eq!(task.await.unwrap(), APPENDS * 2);
    }
    let total = 2 * RUNS as u64 * APPENDS * 2 + 2;
    assert_eq!(verify(&first).await, Ok(total));
    assert_eq!(verify(&second).await, Ok(total));
    let entries = first.audit(0, 100_000).await.unwrap();
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    assert!(
        entries.windows(2).all(|pair| pair[0].at <= pair[1].at),
        "times never go backwards along the chain"
    );
    for index in 0..2 {
        for run in 0..RUNS {
            let run_id = format!("store-{index}-run-{run}");
            assert_eq!(
                second.load(&run_id).await.unwrap().len() as u64,
                APPENDS * 2
            );
        }
    }
}

/// A store's appends made at once share a transaction (group commit): on
/// one thread, all 64 are queued before the committing task runs, so they
/// go in one batch, whose entries have the one time of its head's lock.
/// One at a time, each commit waits for its own WAL flush, and 64 of them
/// span many milliseconds.
#[tokio::test]
async fn appends_made_at_once_share_one_transaction() {
    let database = TestDatabase::create().await;
    let store = PgStore::connect(&database.url).await.unwrap();
    const RUNS: u64 = 64;
    let versions = futures::future::join_all((0..RUNS).map(|run| {
        let run_id = format!("run-{run}");
        let events = vec![
            started("Email Bob"),
            model_turn("call-1", "bob@example.com"),
        ];
        store.append(append(&run_id, 0, events))
    }))
    .await;
    for version in versions {
        assert_eq!(version.unwrap(), 2);
    }
    assert_eq!(verify(&store).await, Ok(2 * RUNS));
    let entries = store.audit(0, 1_000).await.unwrap();
    let mut times: Vec<i64> = entries.iter().map(|e| e.at).collect();
    times.dedup();
    assert_eq!(times.len(), 1, "one transaction, one time: {times:?}");

    // One at a time, each is a transaction of its own.
    for run in 0..8 {
        let run_id = format!("run-{run}");
        store
            .append(append(
                &run_id,
                2,
                vec![tool_started("call-1", "bob@example.com")],
            ))
            .await
            .unwrap();
    }
    let later = store.audit(2 * RUNS, 1_000).await.unwrap();
    assert_eq!(later.len(), 8);
    assert_eq!(verify(&store).await, Ok(2 * RUNS + 8));
}

/// The conformance check of appends sent together, on one thread, where
/// they all go in one batch: the refused one makes the batch run again,
/// an append per transaction.
#[tokio::test]
async fn one_batch_answers_each_append_on_its_own() {
    let database = TestDatabase::create().await;
    let store = Arc::new(PgStore::connect(&database.url).await.unwrap());
    toolgate_store::conformance::appends_sent_together_are_answered_each_on_its_own(store).await;
}

/// Once the database is gone, every append of a batch fails with why,
/// at once: none hangs, and none is reported as made.
#[tokio::test]
async fn appends_to_a_dropped_database_all_fail_with_why() {
    let database = TestDatabase::create().await;
    let store = PgStore::connect(&database.url).await.unwrap();
    store
        .append(append("run-0", 0, vec![started("Email Bob")]))
        .await
        .unwrap();
    admin()
        .await
        .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", database.name))
        .await
        .unwrap();
    let results =
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            futures::future::join_all((1..=3).map(|run| {
                store.append(append(&format!("run-{run}"), 0, vec![started("Email Bob")]))
            })),
        )
        .await
        .expect("the appends are answered");
    let whys: Vec<String> = results
        .into_iter()
        .map(|result| match result {
            Err(error @ StoreError::Backend(_)) => error.to_string(),
            other => panic!("expected the store to fail, got {other:?}"),
        })
        .collect();
    let expected = format!(
        "the store failed: cannot reach the PostgreSQL database `{}`",
        database.name
    );
    for why in &whys {
        assert!(why.starts_with(&expected), "{why}");
        assert_eq!(why, &whys[0], "each append is told the same");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_racing_on_one_run_version_exactly_one_wins() {
    let database = TestDatabase::create().await;
    let stores: [Arc<PgStore>; 2] = [
        Arc::new(PgStore::connect(&database.url).await.unwrap()),
        Arc::new(PgStore::connect(&database.url).await.unwrap()),
    ];
    for race in 0..20u64 {
        let run_id = format!("race-{race}");
        for expected in [0, 1] {
            let barrier = Arc::new(Barrier::new(2));
            let tasks: Vec<_> = stores
                .iter()
                .enumerate()
                .map(|(index, store)| {
                    let store = Arc::clone(store);
                    let barrier = Arc::clone(&barrier);
                    let event = if expected == 0 {
                        started(&format!("from store {index}"))
                    } else {
                        model_turn(&format!("call-{index}"), "bob@example.com")
                    };
                    let append = append(&run_id, expected, vec![event]);
                    tokio::spawn(async move {
                        barrier.wait().await;
                        store.append(append).await
                    })
                })
                .collect();
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.unwrap());
            }
            let winners = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(winners, 1, "{run_id} at {expected}: {results:?}");
            for result in results {
                match result {
                    Ok(version) => assert_eq!(version, expected + 1),
                    Err(StoreError::Conflict {
                        run_id: id,
                        expected: e,
                        actual: a,
                    }) => assert_eq!(
                        (id.as_str(), e, a),
                        (run_id.as_str(), expected, expected + 1)
                    ),
                    Err(other) => panic!("expected a conflict, got {other:?}"),
                }
            }
        }
    }
    assert_eq!(verify(&stores[0]).await, Ok(40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_starting_at_once_make_one_schema_and_one_key() {
    let database = TestDatabase::create().await;
    let url = Arc::new(database.url.clone());
    let barrier = Arc::new(Barrier::new(4));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = Arc::clone(&url);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                let store = PgStore::connect(&url).await.unwrap();
                store.public_key().await.unwrap()
            })
        })
        .collect();
    let mut keys = Vec::new();
    for task in tasks {
        keys.push(task.await.unwrap());
    }
    assert!(keys.iter().all(|key| *key == keys[0]), "{keys:?}");
    let client = database.client().await;
    let rows = client
        .query("SELECT count(*) FROM meta WHERE key = 'signing_key'", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 1);
    let version: i64 = client
        .query_one("SELECT version FROM toolgate_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 5, "every migration ran, once");
    // And again, on a database that has it all already.
    let again = PgStore::connect(&url).await.unwrap();
    assert_eq!(again.public_key().await.unwrap(), keys[0]);
}

#[tokio::test]
async fn a_database_from_a_newer_toolgate_is_refused() {
    let database = TestDatabase::create().await;
    drop(PgStore::connect(&database.url).await.unwrap());
    database
        .client()
        .await
        .batch_execute("UPDATE toolgate_schema SET version = 99")
        .await
        .unwrap();
    let error = PgStore::connect(&database.url).await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
    let message = error.to_string();
    println!("{message}");
    assert!(message.contains(&database.name), "{message}");
    assert!(message.contains("schema version 99"), "{message}");
    assert!(message.contains("a newer toolgate wrote it"), "{message}");
    assert!(message.contains("Upgrade toolgate"), "{message}");
}

#[tokio::test]
async fn another_programs_database_is_refused() {
    let database = TestDatabase::create().await;
    database
        .client()
        .await
        .batch_execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT)")
        .await
        .unwrap();
    let message = connect_error(PgStore::connect(&database.url).await);
    assert!(message.contains("another program"), "{message}");
    assert!(message.contains("`runs`"), "{message}");
}

#[tokio::test]
async fn a_store_can_live_in_a_schema_of_its_own() {
    let database = TestDatabase::create().await;
    let client = database.client().await;
    client
        .batch_execute("CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b")
        .await
        .unwrap();
    let in_schema = |schema: &str| {
        format!(
            "{}?options=-c%20search_path%3D{schema}",
            database.url.split('?').next().unwrap()
        )
    };
    let a = PgStore::connect(&in_schema("tenant_a")).await.unwrap();
    let b = PgStore::connect(&in_schema("tenant_b")).await.unwrap();
    a.append(append("run-1", 0, vec![started("Email Bob")]))
        .await
        .unwrap();
    b.append(append("run-1", 0, vec![started("Email Bob")]))
        .await
        .unwrap();
    assert_eq!(verify(&a).await, Ok(1));
    assert_eq!(verify(&b).await, Ok(1));
    assert_ne!(a.public_key().await.unwrap(), b.public_key().await.unwrap());
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'tenant_a' AND tablename = 'events'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1);
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_without_the_password() {
    let message = connect_error(
        PgStore::connect("postgres://toolgate:s3cret-pw@127.0.0.1:1/toolgate_nowhere").await,
    );
    assert!(message.contains("cannot connect to"), "{message}");
    assert!(message.contains("`toolgate_nowhere`"), "{message}");
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(message.contains("`toolgate`"), "{message}");
    assert!(
        message.contains("check that the server is running"),
        "{message}"
    );
    assert!(!message.contains("s3cret-pw"), "{message}");
}

#[tokio::test]
async fn a_missing_database_is_a_clear_error() {
    admin().await; // Fails, saying how to start it, without a server.
    let url = with_database(&server_url(), "toolgate_no_such_database");
    let message = connect_error(PgStore::connect(&url).await);
    assert!(message.contains("`toolgate_no_such_database`"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    assert!(message.contains("createdb"), "{message}");
}

#[tokio::test]
async fn a_bad_url_is_a_clear_error() {
    for url in [
        "postgres://toolgate:s3cret-pw@127.0.0.1:notaport/db",
        "this is not a url",
    ] {
        let message = connect_error(PgStore::connect(url).await);
        assert!(
            message.contains("the PostgreSQL URL is not valid"),
            "{message}"
        );
        assert!(
            message.contains("postgres://USER:PASSWORD@HOST:PORT/DATABASE"),
            "{message}"
        );
        assert!(!message.contains("s3cret-pw"), "{message}");
    }
}

#[test]
fn test_urls_name_the_test_database() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
        "postgres://postgres@127.0.0.1:5432/t1"
    );
    assert_eq!(
        with_database("postgresql://u:p@h/postgres?sslmode=disable", "t1"),
        "postgresql://u:p@h/t1?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h:5", "t1"), "postgres://h:5/t1");
}

/// A store hears of another store's appends (another process, in effect)
/// through `LISTEN`, long before its wait would time out; a store with
/// nothing new waits its time out and says where the head is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_hear_of_appends_made_by_other_stores() {
    let database = TestDatabase::create().await;
    let waiter = PgStore::connect(&database.url).await.unwrap();
    let writer = PgStore::connect(&database.url).await.unwrap();
    assert_eq!(
        waiter
            .wait_for_change(0, std::time::Duration::from_millis(200))
            .await
            .unwrap(),
        Some(0),
        "nothing was appended"
    );
    let waiting = tokio::spawn(async move {
        let heard = waiter
            .wait_for_change(0, std::time::Duration::from_secs(60))
            .await
            .unwrap();
        (heard, std::time::Instant::now())
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the wait ended before any append");
    let appended = std::time::Instant::now();
    writer
        .append(append("run-1", 0, vec![started("hello")]))
        .await
        .unwrap();
    let (heard, woke) = tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
        .await
        .expect("the waiter hears of the append")
        .unwrap();
    assert_eq!(heard, Some(1));
    assert!(woke >= appended);
}
