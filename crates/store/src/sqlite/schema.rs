//! The SQLite schema, its migrations, and opening a connection to a file.
//!
//! Migrations are an ordered list of SQL scripts; `PRAGMA user_version`
//! records how many have run. A database whose version is newer than this
//! list was written by a newer toolgate and is refused rather than guessed
//! at.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};
use toolgate_core::audit::Signer32;
use toolgate_core::store::StoreError;

use super::error::{corrupt, sqlite_error};

/// `PRAGMA application_id` of a toolgate store ("tgat"), so that another
/// program's SQLite file is told apart from a toolgate store.
const APPLICATION_ID: i32 = 0x7467_6174;

/// How long a statement waits for another process's lock before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The migrations, oldest first: the database is at version `n` once the
/// first `n` have run.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema. Listings read their indexes backwards (newest
    // first): indexes kept in ascending order fill their pages as rows
    // arrive in time order, where descending ones would split them half
    // empty.
    r#"
    -- Key/value settings of the store, such as its signing key.
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID;

    -- One row per run, as listings show it. `rid` is a compact key that
    -- events and approvals refer to instead of repeating the run's id.
    -- The ids of runs and approvals that are UUIDs are kept as their 16
    -- bytes, others as text, and `status` is a number for the statuses
    -- toolgate knows, text for others (see `codes`). `updated_at` is the
    -- milliseconds since `created_at`.
    CREATE TABLE runs (
        rid        INTEGER PRIMARY KEY,
        id         NOT NULL UNIQUE,
        status     NOT NULL,
        thread     TEXT,
        prompt     TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        version    INTEGER NOT NULL
    );
    -- Listings, newest first, read this index backwards, one branch per
    -- status merged (see `read`): no index by time alone is needed.
    CREATE INDEX runs_by_status ON runs (status, created_at, id);

    -- The audit log, and with it every run's log: one row per entry. `seq`
    -- is the global sequence number; run events also have their run and
    -- their place in its log, grant entries have neither. An entry's
    -- previous hash is the hash of the row before it, so it is not stored.
    -- `at` is, for run events, the milliseconds since the run's
    -- `created_at` (a number of a byte or two), for others the time itself.
    -- `kind` is a number for the kinds toolgate knows (see `read::KINDS`),
    -- text for others; `body` is compressed (see `body`), or JSON text.
    CREATE TABLE events (
        seq       INTEGER PRIMARY KEY,
        run       INTEGER REFERENCES runs (rid),
        run_seq   INTEGER,
        at        INTEGER NOT NULL,
        kind      NOT NULL,
        body      BLOB NOT NULL,
        hash      BLOB NOT NULL,
        signature BLOB,
        CHECK ((run IS NULL) = (run_seq IS NULL))
    );
    CREATE UNIQUE INDEX events_by_run ON events (run, run_seq);

    -- The tails many event bodies share, each kept once (see `body`): the
    -- description and JSON Schema of a tool, which every approval request
    -- for it ends with. `hash` is the SHA-256 of `text`.
    CREATE TABLE parts (
        id   INTEGER PRIMARY KEY,
        hash BLOB NOT NULL UNIQUE,
        text TEXT NOT NULL
    );

    -- One row per approval, as listings show it. `status` is a number (see
    -- `read::APPROVAL_STATUSES`), `fingerprint` its 32 bytes, `approvers`
    -- NULL for anyone.
    CREATE TABLE approvals (
        id          NOT NULL PRIMARY KEY,
        run         INTEGER NOT NULL REFERENCES runs (rid),
        call_id     TEXT NOT NULL,
        tool        TEXT NOT NULL,
        args        TEXT NOT NULL,
        fingerprint BLOB NOT NULL,
        status      INTEGER NOT NULL,
        rule        TEXT NOT NULL,
        quorum      INTEGER NOT NULL,
        approvers   TEXT,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER,
        decided_by  TEXT,
        decided_at  INTEGER
    );
    -- "The newest pending approvals" is the listing people look at most:
    -- this index answers it by a scan that stops at the limit, with no sort,
    -- and listings of several statuses (or all) by merging such scans.
    CREATE INDEX approvals_by_status ON approvals (status, created_at, id);
    CREATE INDEX approvals_by_run ON approvals (run, created_at, id);

    -- Standing approvals.
    CREATE TABLE grants (
        id          TEXT PRIMARY KEY,
        tool        TEXT NOT NULL,
        condition   TEXT,
        scope       TEXT NOT NULL,
        uses_left   INTEGER,
        created_by  TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        approval_id TEXT,
        revoked_by  TEXT,
        revoked_at  INTEGER
    );
    CREATE INDEX grants_newest ON grants (created_at, id);
    "#,
    // 2: API tokens, kept as the SHA-256 of their secret (`groups` is a
    // JSON array of names), the index of approvals that expire, and run
    // leases.
    r#"
    CREATE TABLE tokens (
        id         TEXT PRIMARY KEY,
        hash       BLOB NOT NULL UNIQUE,
        name       TEXT NOT NULL,
        role       TEXT NOT NULL,
        groups     TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        expires_at INTEGER,
        revoked_at INTEGER
    );
    CREATE INDEX tokens_newest ON tokens (created_at, id);

    -- Pending approvals with a timeout, by when they expire (status 0 is
    -- pending): expiring what is due reads only those, however many
    -- approvals wait without a timeout.
    CREATE INDEX approvals_due ON approvals (expires_at)
        WHERE status = 0 AND expires_at IS NOT NULL;

    -- Who drives a run now, and until when (Unix milliseconds): see
    -- `leases`.
    ALTER TABLE runs ADD COLUMN lease_owner TEXT;
    ALTER TABLE runs ADD COLUMN lease_until INTEGER;
    "#,
    // 3: the webhook outbox. One cursor per webhook (the last audit entry
    // turned into deliveries); one delivery per (webhook, event_key), so
    // an event computed twice is kept once; `claimed_by` and
    // `lease_until` say who is sending it; each attempt is a row of
    // `webhook_attempts`. `status` is 0 pending, 1 delivered, 2 failed.
    r#"
    CREATE TABLE webhook_cursors (
        webhook TEXT PRIMARY KEY,
        seq     INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE webhook_deliveries (
        rid             INTEGER PRIMARY KEY,
        id              TEXT NOT NULL UNIQUE,
        webhook         TEXT NOT NULL,
        event_key       TEXT NOT NULL,
        event_type      TEXT NOT NULL,
        audit_seq       INTEGER NOT NULL,
        payload         TEXT NOT NULL,
        status          INTEGER NOT NULL,
        created_at      INTEGER NOT NULL,
        next_attempt_at INTEGER NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        claimed_by      TEXT,
        lease_until     INTEGER,
        UNIQUE (webhook, event_key)
    );
    -- Claims read the due pending deliveries in time order.
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
    CREATE INDEX webhook_deliveries_newest ON webhook_deliveries (created_at, rid);

    CREATE TABLE webhook_attempts (
        delivery    INTEGER NOT NULL REFERENCES webhook_deliveries (rid),
        attempt     INTEGER NOT NULL,
        at          INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        status_code INTEGER,
        error       TEXT,
        PRIMARY KEY (delivery, attempt)
    ) WITHOUT ROWID;
    "#,
    // 4: when a grant for a time ends (NULL for other scopes), and an
    // index of the grants that may still cover calls: a gate reads only
    // those, however many were revoked or used up, skipping the ended ones
    // by the index alone.
    r#"
    ALTER TABLE grants ADD COLUMN ends_at INTEGER;
    UPDATE grants SET ends_at = json_extract(scope, '$.until')
        WHERE json_extract(scope, '$.scope') = 'until';
    CREATE INDEX grants_live ON grants (ends_at)
        WHERE revoked_at IS NULL AND (uses_left IS NULL OR uses_left > 0);
    "#,
    // 5: a run's approvals by their creation time alone, without the id
    // (16 bytes of every entry, about 20 of the 1,020 bytes a pending
    // approval took): a run's listing sorts only the approvals of one
    // millisecond by id, and a run has few of those.
    r#"
    DROP INDEX approvals_by_run;
    CREATE INDEX approvals_by_run ON approvals (run, created_at);
    "#,
    // 6: which runs a grant reaches (see `crate::reach`), first in the
    // index of live grants: a gate reads the grants for any run and its
    // run's and thread's, not the run-scoped grants of every run there
    // has been (which stay live until revoked).
    r#"
    ALTER TABLE grants ADD COLUMN reach TEXT NOT NULL DEFAULT '';
    UPDATE grants SET reach = CASE json_extract(scope, '$.scope')
        WHEN 'run' THEN 'run:' || json_extract(scope, '$.run_id')
        WHEN 'thread' THEN 'thread:' || json_extract(scope, '$.thread')
        ELSE '' END;
    DROP INDEX grants_live;
    CREATE INDEX grants_live ON grants (reach, ends_at)
        WHERE revoked_at IS NULL AND (uses_left IS NULL OR uses_left > 0);
    "#,
];

/// What the writer needs from the database when it starts.
pub(crate) struct Opened {
    /// The write connection, migrated.
    pub(crate) conn: Connection,
    /// The store's signing key.
    pub(crate) signer: Signer32,
}

/// Opens the write connection: WAL, full durability, foreign keys, the
/// schema migrated to this version, and the signing key made on first use.
pub(crate) fn open_writer(path: &Path) -> Result<Opened, StoreError> {
    let mut conn = connect(path)?;
    // WAL lets readers run beside the writer. `synchronous = FULL` syncs
    // the log at every commit, so an acknowledged append survives a power
    // cut (NORMAL would only promise it survives a crash of the process).
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|error| open_error(path, error))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(
            format!(
                "cannot use the store {}: SQLite could not switch it to write-ahead logging \
                 (it stays in `{mode}` mode); put the store on a local file system",
                path.display()
            )
            .into(),
        ));
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA journal_size_limit = 67108864;",
    )
    .map_err(|error| open_error(path, error))?;
    migrate(&mut conn, path)?;
    let signer = signing_key(&mut conn, path)?;
    Ok(Opened { conn, signer })
}

/// Opens a read connection to a store the writer has opened (and so
/// migrated) already.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = connect(path)?;
    // Belt and braces: reads never write, whatever a bug might ask.
    conn.execute_batch("PRAGMA query_only = ON")
        .map_err(|error| open_error(path, error))?;
    Ok(conn)
}

/// A connection with the settings every connection shares.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    // NO_MUTEX: each connection is used by one thread at a time (the
    // writer's, or a reader taken from the pool), so SQLite's own locking
    // would only cost time.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|error| open_error(path, error))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|error| open_error(path, error))?;
    Ok(conn)
}

/// Brings the schema to this version, in one transaction, or refuses a
/// database this code cannot use.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|error| open_error(path, error))?;
    let version: i64 = pragma(&tx, path, "user_version")?;
    let application_id: i64 = pragma(&tx, path, "application_id")?;
    let known = MIGRATIONS.len() as i64;
    if version == 0 {
        // A database with tables but no version is another program's:
        // toolgate does not move in beside its data.
        let tables: i64 = tx
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'",
                [],
                |row| row.get(0),
            )
            .map_err(|error| open_error(path, error))?;
        if tables > 0 {
            return Err(corrupt(format!(
                "{} is an SQLite database of another program, not a toolgate store; \
                 give toolgate a path of its own",
                path.display()
            )));
        }
    } else if application_id != i64::from(APPLICATION_ID) {
        return Err(corrupt(format!(
            "{} is an SQLite database of another program (application id {application_id:#x}), \
             not a toolgate store; give toolgate a path of its own",
            path.display()
        )));
    }
    if version > known {
        return Err(corrupt(format!(
            "{} has schema version {version}, but this toolgate knows versions up to {known}: \
             a newer toolgate wrote it. Upgrade toolgate to use this store",
            path.display()
        )));
    }
    if version < 0 {
        return Err(corrupt(format!(
            "{} has schema version {version}, which no toolgate writes",
            path.display()
        )));
    }
    for (index, script) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(script).map_err(|error| {
            StoreError::Backend(
                format!(
                    "cannot upgrade the store {} to schema version {}: {}",
                    path.display(),
                    index + 1,
                    sqlite_error(&error)
                )
                .into(),
            )
        })?;
    }
    // PRAGMA takes no parameters; both values are numbers from this code.
    tx.execute_batch(&format!(
        "PRAGMA user_version = {known}; PRAGMA application_id = {APPLICATION_ID};"
    ))
    .map_err(|error| open_error(path, error))?;
    tx.commit().map_err(|error| open_error(path, error))
}

/// The store's signing key, made (32 random bytes) on first use and kept in
/// `meta`, so that the same file always signs with the same key.
fn signing_key(conn: &mut Connection, path: &Path) -> Result<Signer32, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|error| open_error(path, error))?;
    let stored: Option<Vec<u8>> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'signing_key'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(|error| open_error(path, error))?;
    let secret: [u8; 32] = match stored {
        Some(bytes) => bytes.try_into().map_err(|bytes: Vec<u8>| {
            corrupt(format!(
                "the signing key in {} has {} bytes instead of 32",
                path.display(),
                bytes.len()
            ))
        })?,
        None => {
            // `rand::random` draws from the thread's CSPRNG, seeded by the
            // operating system.
            let secret: [u8; 32] = rand::random();
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('signing_key', ?1)",
                [&secret[..]],
            )
            .map_err(|error| open_error(path, error))?;
            secret
        }
    };
    tx.commit().map_err(|error| open_error(path, error))?;
    Ok(Signer32::from_secret(&secret))
}

fn pragma(tx: &Transaction<'_>, path: &Path, name: &str) -> Result<i64, StoreError> {
    tx.pragma_query_value(None, name, |row| row.get(0))
        .map_err(|error| open_error(path, error))
}

/// An error while opening, naming the file and saying what to do.
pub(crate) fn open_error(path: &Path, error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    let path = path.display();
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => corrupt(format!(
            "{path} is not a toolgate store: it is not an SQLite database. \
             Give the path of a toolgate store, or of a file that does not exist yet to make one"
        )),
        Some(ErrorCode::DatabaseCorrupt) => corrupt(format!(
            "{path} is damaged ({}); restore it from a backup",
            sqlite_error(&error)
        )),
        Some(ErrorCode::CannotOpen) => StoreError::Backend(
            format!(
                "cannot open the store {path}: {}; check that the path is a file this user \
                 may read and write, in a directory it may write to",
                sqlite_error(&error)
            )
            .into(),
        ),
        _ => StoreError::Backend(
            format!("cannot open the store {path}: {}", sqlite_error(&error)).into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_core::store::{ApprovalQuery, GrantQuery};

    #[test]
    fn every_migration_runs_on_an_empty_database() {
        let conn = Connection::open_in_memory().unwrap();
        for script in MIGRATIONS {
            conn.execute_batch(script).unwrap();
        }
    }

    /// Migration 4 gives the grants made before it their end times, and
    /// the gate's query reads the index of live grants.
    #[test]
    fn grants_made_before_migration_4_get_their_end_times() {
        let conn = Connection::open_in_memory().unwrap();
        for script in &MIGRATIONS[..3] {
            conn.execute_batch(script).unwrap();
        }
        conn.execute_batch(
            r#"INSERT INTO grants (id, tool, scope, created_by, created_at)
               VALUES ('g-until', 'send_*', '{"scope":"until","until":5000}', 'bob', 1),
                      ('g-run', 'send_*', '{"scope":"run","run_id":"run-1"}', 'bob', 2);"#,
        )
        .unwrap();
        conn.execute_batch(MIGRATIONS[3]).unwrap();
        let ends: Vec<(String, Option<i64>)> = conn
            .prepare("SELECT id, ends_at FROM grants ORDER BY id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            ends,
            [
                ("g-run".to_owned(), None),
                ("g-until".to_owned(), Some(5000))
            ]
        );
        let live: Vec<String> = crate::sqlite::read::grants(&conn, &GrantQuery::live(4_000))
            .unwrap()
            .into_iter()
            .map(|grant| grant.id)
            .collect();
        assert_eq!(live, ["g-run", "g-until"]);
        let live: Vec<String> = crate::sqlite::read::grants(&conn, &GrantQuery::live(5_000))
            .unwrap()
            .into_iter()
            .map(|grant| grant.id)
            .collect();
        assert_eq!(live, ["g-run"]);
    }

    /// Migration 6 gives the grants made before it their reach, and a
    /// gate's query finds them through the index by reach.
    #[test]
    fn grants_made_before_migration_6_reach_their_runs() {
        let conn = Connection::open_in_memory().unwrap();
        for script in &MIGRATIONS[..5] {
            conn.execute_batch(script).unwrap();
        }
        conn.execute_batch(
            r#"INSERT INTO grants (id, tool, scope, created_by, created_at)
               VALUES ('g-run', 'send_*', '{"scope":"run","run_id":"run-1"}', 'bob', 1),
                      ('g-other', 'send_*', '{"scope":"run","run_id":"run-2"}', 'bob', 2),
                      ('g-thread', 'send_*', '{"scope":"thread","thread":"t-1"}', 'bob', 3),
                      ('g-uses', 'send_*', '{"scope":"uses","uses":2}', 'bob', 4);
               UPDATE grants SET uses_left = 2 WHERE id = 'g-uses';"#,
        )
        .unwrap();
        conn.execute_batch(MIGRATIONS[5]).unwrap();
        let query = GrantQuery::live(1_000).reaching(Some("run-1"), Some("t-1"));
        let reached: Vec<String> = crate::sqlite::read::grants(&conn, &query)
            .unwrap()
            .into_iter()
            .map(|grant| grant.id)
            .collect();
        assert_eq!(reached, ["g-uses", "g-thread", "g-run"]);
        let plan: String = conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT id FROM grants INDEXED BY grants_live
                 WHERE revoked_at IS NULL AND (uses_left IS NULL OR uses_left > 0)
                 AND (ends_at IS NULL OR ends_at > 5) AND reach = 'run:run-1'",
            )
            .unwrap()
            .query_map([], |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
            .join("\n");
        assert!(plan.contains("grants_live (reach=?"), "{plan}");
    }

    /// Migration 5 indexes a run's approvals by time alone: approvals
    /// made before it list as they did, newest first and by id within a
    /// millisecond, page by page.
    #[test]
    fn a_runs_approvals_list_the_same_after_migration_5() {
        let conn = Connection::open_in_memory().unwrap();
        for script in &MIGRATIONS[..4] {
            conn.execute_batch(script).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO runs (rid, id, status, prompt, created_at, updated_at, version)
             VALUES (1, 'run-1', 1, 'p', 100, 0, 1), (2, 'run-2', 1, 'p', 100, 0, 1);",
        )
        .unwrap();
        for (id, run, at) in [
            ("a-b", 1, 200),
            ("a-a", 1, 200),
            ("a-c", 1, 200),
            ("a-old", 1, 150),
            ("a-new", 1, 300),
            ("b-1", 2, 250),
        ] {
            conn.execute(
                "INSERT INTO approvals (id, run, call_id, tool, args, fingerprint, status, rule,
                     quorum, created_at)
                 VALUES (?1, ?2, 'call', 'send_email', '{}', zeroblob(32), 0, 'rule 1', 1, ?3)",
                rusqlite::params![id, run, at],
            )
            .unwrap();
        }
        conn.execute_batch(MIGRATIONS[4]).unwrap();
        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_index_info('approvals_by_run') ORDER BY seqno")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(columns, ["run", "created_at"]);
        let page = |before: Option<&str>| -> Vec<String> {
            let query = ApprovalQuery {
                run_id: Some("run-1".to_owned()),
                before: before.map(str::to_owned),
                limit: 2,
                ..ApprovalQuery::default()
            };
            crate::sqlite::read::approvals(&conn, &query)
                .unwrap()
                .into_iter()
                .map(|row| row.id)
                .collect()
        };
        assert_eq!(page(None), ["a-new", "a-c"]);
        assert_eq!(page(Some("a-c")), ["a-b", "a-a"]);
        assert_eq!(page(Some("a-a")), ["a-old"]);
    }

    #[test]
    fn the_writer_syncs_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let Opened { conn, .. } = open_writer(&dir.path().join("toolgate.db")).unwrap();
        let pragma = |name: &str| -> String {
            conn.pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
                .map(|value| match value {
                    rusqlite::types::Value::Integer(n) => n.to_string(),
                    rusqlite::types::Value::Text(text) => text,
                    other => format!("{other:?}"),
                })
                .unwrap()
        };
        assert_eq!(pragma("journal_mode"), "wal");
        assert_eq!(pragma("synchronous"), "2", "FULL");
        assert_eq!(pragma("foreign_keys"), "1");
        assert_eq!(pragma("user_version"), MIGRATIONS.len().to_string());
        assert_eq!(pragma("application_id"), APPLICATION_ID.to_string());
    }
}
