//! Reads: a small pool of read connections, and the queries they run.
//!
//! In WAL mode readers see the last commit and never wait for the writer,
//! so loads and listings run beside group commits: listings on a blocking
//! thread of tokio's pool, lookups by key on the caller's thread.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::types::{FromSql, Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use tokio::sync::Semaphore;
use toolgate_core::audit::AuditEntry;
use toolgate_core::grant::{Grant, Revocation};
use toolgate_core::run::{ApprovalStatus, Event};
use toolgate_core::store::{
    ApprovalQuery, ApprovalRow, GrantQuery, RunQuery, RunRow, StoreError, StoredEvent,
};

use super::error::{corrupt, failed, sqlite_failed};
use super::schema::open_reader;
use super::{body, codes};
use crate::json::read as json;

/// How many reads run at once; each has its own connection.
const READERS: usize = 4;

/// What a listing returns when asked for 0 rows.
const DEFAULT_LIMIT: usize = 50;

/// The read connections, opened as needed and kept for reuse.
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection, so that a burst of reads queues here
    /// instead of opening connection after connection.
    permits: Arc<Semaphore>,
}

impl Readers {
    pub(crate) fn new(path: &Path) -> Readers {
        Readers {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::with_capacity(READERS)),
            permits: Arc::new(Semaphore::new(READERS)),
        }
    }

    /// Runs `read` on a read connection, on a blocking thread.
    pub(crate) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|error| failed("cannot read the store", error))?;
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = match readers.idle().pop() {
                Some(conn) => conn,
                None => open_reader(&readers.path)?,
            };
            let result = read(&conn);
            readers.idle().push(conn);
            result
        })
        .await
        .map_err(|error| {
            failed(
                format!("a read of the store {} failed", self.path.display()),
                error,
            )
        })?
    }

    /// Runs `read`, a lookup of a few rows by key, on the calling thread
    /// when a read connection is idle: such a read takes microseconds from
    /// the page cache, less than handing it to a blocking thread and back.
    /// Otherwise (every connection busy, or none opened yet) it waits its
    /// turn on a blocking thread, as [`Readers::run`] does.
    pub(crate) async fn quick<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let Ok(permit) = self.permits.try_acquire() else {
            return self.run(read).await;
        };
        let Some(conn) = self.idle().pop() else {
            drop(permit);
            return self.run(read).await;
        };
        let result = read(&conn);
        self.idle().push(conn);
        drop(permit);
        result
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A panic while the lock was held cannot leave the list of idle
        // connections half-changed: push and pop are single steps.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A column's value; a value of the wrong type means the data is not what
/// toolgate wrote.
fn get<T: FromSql>(
    row: &Row<'_>,
    index: usize,
    what: &dyn Fn() -> String,
) -> Result<T, StoreError> {
    row.get(index).map_err(|error| {
        corrupt(format!(
            "{} has a column toolgate did not write: {error}",
            what()
        ))
    })
}

/// An event's body as JSON text, decompressed if it is stored compressed
/// (its shared tail, if it has one, read from `conn`).
fn body_text(
    conn: &Connection,
    row: &Row<'_>,
    index: usize,
    what: &dyn Fn() -> String,
) -> Result<String, StoreError> {
    let stored = row.get_ref(index).map_err(|error| {
        corrupt(format!(
            "{} has a column toolgate did not write: {error}",
            what()
        ))
    })?;
    match stored {
        ValueRef::Text(text) => String::from_utf8(text.to_vec())
            .map_err(|_| corrupt(format!("{} has a body that is not UTF-8 text", what()))),
        ValueRef::Blob(stored) => body::decode(stored, |id| part(conn, id)).map_err(|why| {
            corrupt(format!(
                "{} has a body that cannot be read: {why}; it was changed outside toolgate, \
                 or written by a newer toolgate",
                what()
            ))
        }),
        _ => Err(corrupt(format!(
            "{} has a body toolgate did not write",
            what()
        ))),
    }
}

/// The text of the part `id` of a body.
fn part(conn: &Connection, id: i64) -> Result<String, String> {
    conn.prepare_cached("SELECT text FROM parts WHERE id = ?1")
        .and_then(|mut statement| statement.query_row([id], |row| row.get(0)).optional())
        .map_err(|error| format!("its part {id} cannot be read ({error})"))?
        .ok_or_else(|| format!("its part {id} is missing"))
}

/// A run's or approval's id, as text.
fn id_text(row: &Row<'_>, index: usize, what: &dyn Fn() -> String) -> Result<String, StoreError> {
    row.get_ref(index)
        .ok()
        .and_then(codes::id_text)
        .ok_or_else(|| corrupt(format!("{} has an id toolgate did not write", what())))
}

fn count(n: i64, what: &dyn Fn() -> String) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| corrupt(format!("{} has a negative count ({n})", what())))
}

fn limit(limit: usize) -> i64 {
    let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// `?, ?, ?` for `n` parameters.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// A run's log, oldest first.
pub(crate) fn load(
    conn: &Connection,
    run_id: &str,
    after: u64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let what = || format!("cannot load run {run_id}");
    let sql = |error: rusqlite::Error| sqlite_failed(what(), &error);
    let key = codes::id_value(run_id);
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    // The run's events after `after`: a seek in `events_by_run`.
    let mut statement = conn
        .prepare_cached(
            "SELECT e.run_seq, e.at, e.body, r.created_at FROM runs r
             JOIN events e ON e.run = r.rid
             WHERE r.id = ?1 AND e.run_seq > ?2
             ORDER BY e.run_seq",
        )
        .map_err(sql)?;
    let mut rows = statement.query(params![key, after]).map_err(sql)?;
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(sql)? {
        let expected = after as u64 + events.len() as u64 + 1;
        let entry = || format!("event {expected} of run {run_id}");
        let seq = count(get(row, 0, &entry)?, &entry)?;
        crate::check_next_event(run_id, expected, seq)?;
        let body = body_text(conn, row, 2, &entry)?;
        events.push(StoredEvent {
            run_id: run_id.to_owned(),
            seq,
            at: get::<i64>(row, 1, &entry)?.wrapping_add(get(row, 3, &entry)?),
            event: json::<Event>(&body, &entry)?,
        });
    }
    if events.is_empty() {
        // Nothing new, or no such run.
        let exists = after > 0
            && conn
                .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")
                .and_then(|mut statement| statement.exists([&key]))
                .map_err(sql)?;
        if !exists {
            return Err(StoreError::NotFound {
                what: "run",
                id: run_id.to_owned(),
            });
        }
    }
    Ok(events)
}

/// The statuses a table's rows have, in the order of its status index:
/// one index seek each (`min` over an index range is a seek).
fn statuses_present(conn: &Connection, table: &str) -> rusqlite::Result<Vec<Value>> {
    let mut first = conn.prepare_cached(&format!("SELECT min(status) FROM {table}"))?;
    let mut next = conn.prepare_cached(&format!(
        "SELECT min(status) FROM {table} WHERE status > ?1"
    ))?;
    let mut statuses = Vec::new();
    let mut status: Value = first.query_row([], |row| row.get(0))?;
    while status != Value::Null {
        let after = next.query_row([&status], |row| row.get(0))?;
        statuses.push(std::mem::replace(&mut status, after));
    }
    Ok(statuses)
}

/// `values` without repeats, in their first order.
fn distinct(values: impl IntoIterator<Item = Value>) -> Vec<Value> {
    let mut distinct: Vec<Value> = Vec::new();
    for value in values {
        if !distinct.contains(&value) {
            distinct.push(value);
        }
    }
    distinct
}

/// A listing, newest first, as one ordered branch per status merged: each
/// branch is a scan of the status index that stops at the limit, and
/// SQLite merges them without sorting, so no index by time alone is
/// needed. `branch` is the SELECT of one status, its status a parameter;
/// its results' columns `created_at` and `id` are numbers `created_at`
/// and `id` (from 1). With no status, a query that finds nothing.
fn newest_by_status(
    branch: &str,
    statuses: &[Value],
    branch_values: &[Value],
    (created_at, id): (usize, usize),
    limit: i64,
) -> (String, Vec<Value>) {
    let mut values = Vec::new();
    let mut branches = Vec::new();
    for status in statuses {
        branches.push(branch.to_owned());
        values.push(status.clone());
        values.extend(branch_values.iter().cloned());
    }
    if branches.is_empty() {
        // Nothing to list; the branch with a status that no row has.
        branches.push(branch.to_owned());
        values.push(Value::Null);
        values.extend(branch_values.iter().cloned());
    }
    let mut sql = branches.join(" UNION ALL ");
    sql += &format!(" ORDER BY {created_at} DESC, {id} DESC LIMIT ?");
    values.push(Value::Integer(limit));
    (sql, values)
}

/// The SQL and parameters of a runs listing, over runs with `statuses`.
pub(crate) fn runs_sql(query: &RunQuery, statuses: &[Value]) -> (String, Vec<Value>) {
    newest_by_status(
        "SELECT id, status, thread, prompt, created_at, updated_at, version FROM runs
         WHERE status = ?",
        statuses,
        &[],
        (5, 1),
        limit(query.limit),
    )
}

/// Runs, newest first.
pub(crate) fn runs(conn: &Connection, query: &RunQuery) -> Result<Vec<RunRow>, StoreError> {
    let what = || "cannot list runs".to_owned();
    let sql = |error: rusqlite::Error| sqlite_failed(what(), &error);
    // One snapshot for the statuses and the listing.
    let tx = conn.unchecked_transaction().map_err(sql)?;
    let statuses = if query.statuses.is_empty() {
        statuses_present(&tx, "runs").map_err(sql)?
    } else {
        distinct(query.statuses.iter().map(|s| codes::run_status_value(s)))
    };
    let (text, values) = runs_sql(query, &statuses);
    let mut statement = tx.prepare_cached(&text).map_err(sql)?;
    let mut rows = statement.query(params_from_iter(values)).map_err(sql)?;
    let mut runs = Vec::new();
    while let Some(row) = rows.next().map_err(sql)? {
        let id = id_text(row, 0, &what)?;
        let what = || format!("run {id}");
        runs.push(RunRow {
            status: row
                .get_ref(1)
                .ok()
                .and_then(codes::run_status_text)
                .ok_or_else(|| {
                    corrupt(format!("{} has a status toolgate did not write", what()))
                })?,
            thread: get(row, 2, &what)?,
            prompt: get(row, 3, &what)?,
            created_at: get(row, 4, &what)?,
            // Stored from the creation time.
            updated_at: get::<i64>(row, 5, &what)?.wrapping_add(get(row, 4, &what)?),
            version: count(get(row, 6, &what)?, &what)?,
            id,
        });
    }
    Ok(runs)
}

/// The columns of an approval row, in the order [`approval_row`] reads.
const APPROVAL_COLUMNS: &str = "a.id, (SELECT id FROM runs WHERE rid = a.run), a.call_id, \
    a.tool, a.args, a.fingerprint, a.status, a.rule, a.quorum, a.approvers, a.created_at, \
    a.expires_at, a.decided_by, a.decided_at";

fn approval_row(row: &Row<'_>) -> Result<ApprovalRow, StoreError> {
    let id = id_text(row, 0, &|| "an approval".to_owned())?;
    let what = || format!("approval {id}");
    let status: i64 = get(row, 6, &what)?;
    let args: String = get(row, 4, &what)?;
    let approvers: Option<String> = get(row, 9, &what)?;
    let fingerprint = row
        .get_ref(5)
        .ok()
        .and_then(codes::fingerprint_text)
        .ok_or_else(|| {
            corrupt(format!(
                "{} has a fingerprint toolgate did not write",
                what()
            ))
        })?;
    Ok(ApprovalRow {
        run_id: id_text(row, 1, &what)?,
        call_id: get(row, 2, &what)?,
        tool: get(row, 3, &what)?,
        args: json(&args, &what)?,
        // A fingerprint is its hex text; serde is the one way to make one
        // from text.
        fingerprint: serde_json::from_value(serde_json::Value::String(fingerprint))
            .map_err(|error| corrupt(format!("{} has a bad fingerprint: {error}", what())))?,
        status: codes::status(status)
            .ok_or_else(|| corrupt(format!("{} has the unknown status {status}", what())))?,
        rule: get(row, 7, &what)?,
        quorum: get(row, 8, &what)?,
        approvers: match approvers {
            Some(approvers) => json(&approvers, &what)?,
            None => Vec::new(),
        },
        created_at: get(row, 10, &what)?,
        expires_at: get(row, 11, &what)?,
        decided_by: get(row, 12, &what)?,
        decided_at: get(row, 13, &what)?,
        id: id.clone(),
    })
}

/// The SQL and parameters of an approvals listing; `statuses` are the
/// statuses to list (all the table has, when the query names none), and
/// `before` the creation time and id of the approval to list from.
pub(crate) fn approvals_sql(
    query: &ApprovalQuery,
    statuses: &[Value],
    before: Option<(i64, &str)>,
) -> (String, Vec<Value>) {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    if let Some((created_at, id)) = before {
        // The first term bounds the index range; the second skips the
        // rows created in the same millisecond that are not older.
        conditions.push("a.created_at <= ? AND (a.created_at < ? OR a.id < ?)".to_owned());
        values.push(Value::Integer(created_at));
        values.push(Value::Integer(created_at));
        values.push(codes::id_value(id));
    }
    let Some(run_id) = &query.run_id else {
        // Newest first over all runs: one branch per status.
        let mut branch = format!("SELECT {APPROVAL_COLUMNS} FROM approvals a WHERE a.status = ?");
        for condition in &conditions {
            branch += " AND ";
            branch += condition;
        }
        return newest_by_status(&branch, statuses, &values, (11, 1), limit(query.limit));
    };
    // One run's: its index, the status only checked (`+` keeps SQLite
    // from using the status index instead).
    let mut sql = format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals a WHERE a.run = (SELECT rid FROM runs WHERE id = ?)"
    );
    let mut all = vec![codes::id_value(run_id)];
    if !query.statuses.is_empty() {
        sql += &format!(" AND +a.status IN ({})", placeholders(statuses.len()));
        all.extend(statuses.iter().cloned());
    }
    for condition in &conditions {
        sql += " AND ";
        sql += condition;
    }
    all.extend(values);
    sql += " ORDER BY a.created_at DESC, a.id DESC LIMIT ?";
    all.push(Value::Integer(limit(query.limit)));
    (sql, all)
}

/// Approvals, newest first.
pub(crate) fn approvals(
    conn: &Connection,
    query: &ApprovalQuery,
) -> Result<Vec<ApprovalRow>, StoreError> {
    let what = || "cannot list approvals".to_owned();
    let sql = |error: rusqlite::Error| sqlite_failed(what(), &error);
    // One snapshot for the statuses, the page's start and the listing.
    let tx = conn.unchecked_transaction().map_err(sql)?;
    let before = match &query.before {
        None => None,
        Some(id) => {
            let created_at: i64 = tx
                .prepare_cached("SELECT created_at FROM approvals WHERE id = ?1")
                .and_then(|mut statement| {
                    statement
                        .query_row([codes::id_value(id)], |row| row.get(0))
                        .optional()
                })
                .map_err(sql)?
                .ok_or_else(|| StoreError::NotFound {
                    what: "approval",
                    id: id.clone(),
                })?;
            Some((created_at, id.as_str()))
        }
    };
    let statuses = if !query.statuses.is_empty() {
        distinct(
            query
                .statuses
                .iter()
                .map(|s| Value::Integer(codes::status_code(*s))),
        )
    } else if query.run_id.is_some() {
        Vec::new()
    } else {
        statuses_present(&tx, "approvals").map_err(sql)?
    };
    let (text, values) = approvals_sql(query, &statuses, before);
    let mut statement = tx.prepare_cached(&text).map_err(sql)?;
    let mut rows = statement.query(params_from_iter(values)).map_err(sql)?;
    let mut approvals = Vec::new();
    while let Some(row) = rows.next().map_err(sql)? {
        approvals.push(approval_row(row)?);
    }
    Ok(approvals)
}

/// One approval.
pub(crate) fn approval(conn: &Connection, id: &str) -> Result<ApprovalRow, StoreError> {
    let what = || format!("cannot read approval {id}");
    let mut statement = conn
        .prepare_cached(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals a WHERE a.id = ?1"
        ))
        .map_err(|error| sqlite_failed(what(), &error))?;
    let mut rows = statement
        .query([codes::id_value(id)])
        .map_err(|error| sqlite_failed(what(), &error))?;
    match rows.next().map_err(|error| sqlite_failed(what(), &error))? {
        Some(row) => approval_row(row),
        None => Err(StoreError::NotFound {
            what: "approval",
            id: id.to_owned(),
        }),
    }
}

/// [`approval`] and the [`load`] of its run, in one read transaction: both
/// as of one commit, and the connection's page cache (which SQLite empties
/// when another connection has committed since its last read) filled once.
pub(crate) fn approval_with_log(
    conn: &Connection,
    id: &str,
) -> Result<(ApprovalRow, Vec<StoredEvent>), StoreError> {
    let statement = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([]));
    statement("BEGIN")
        .map_err(|error| sqlite_failed(format!("cannot read approval {id}"), &error))?;
    let read = approval(conn, id).and_then(|row| {
        let events = load(conn, &row.run_id, 0)?;
        Ok((row, events))
    });
    // A read commits nothing; ending it lets the log be checkpointed past
    // its snapshot. Should even that fail, the connection must not keep
    // the snapshot for its next read.
    if let Err(error) = statement("COMMIT") {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        return read.and(Err(sqlite_failed(
            format!("cannot end the read of approval {id}"),
            &error,
        )));
    }
    read
}

/// Pending approvals due at `now`, soonest first.
pub(crate) fn due_approvals(
    conn: &Connection,
    now: i64,
    limit: usize,
) -> Result<Vec<ApprovalRow>, StoreError> {
    let what = || "cannot list the approvals that are due".to_owned();
    let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
    let mut statement = conn
        // The status is written into the text, not bound: SQLite uses a
        // partial index only when the query's own terms imply its WHERE.
        .prepare_cached(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals a INDEXED BY approvals_due
             WHERE a.status = {pending} AND a.expires_at IS NOT NULL AND a.expires_at <= ?1
             ORDER BY a.expires_at LIMIT ?2",
            pending = codes::status_code(ApprovalStatus::Pending)
        ))
        .map_err(|error| sqlite_failed(what(), &error))?;
    let mut rows = statement
        .query(params![now, i64::try_from(limit).unwrap_or(i64::MAX)])
        .map_err(|error| sqlite_failed(what(), &error))?;
    let mut due = Vec::new();
    while let Some(row) = rows.next().map_err(|error| sqlite_failed(what(), &error))? {
        due.push(approval_row(row)?);
    }
    Ok(due)
}

/// The columns of a grant, in the order [`grant_of`] reads them.
const GRANT_COLUMNS: &str = "id, tool, condition, scope, uses_left, created_by, created_at, \
    approval_id, revoked_by, revoked_at";

/// A grant from a row of [`GRANT_COLUMNS`].
fn grant_of(row: &rusqlite::Row<'_>, what: &dyn Fn() -> String) -> Result<Grant, StoreError> {
    let id: String = get(row, 0, what)?;
    let what = || format!("grant {id}");
    let scope: String = get(row, 3, &what)?;
    let revoked_by: Option<String> = get(row, 8, &what)?;
    let revoked_at: Option<i64> = get(row, 9, &what)?;
    Ok(Grant {
        tool: get(row, 1, &what)?,
        when: get(row, 2, &what)?,
        scope: json(&scope, &what)?,
        uses_left: get(row, 4, &what)?,
        created_by: get(row, 5, &what)?,
        created_at: get(row, 6, &what)?,
        approval_id: get(row, 7, &what)?,
        revoked: match (revoked_by, revoked_at) {
            (Some(by), Some(at)) => Some(Revocation { by, at }),
            _ => None,
        },
        id,
    })
}

/// The grants of `sql` (which selects [`GRANT_COLUMNS`]) with `params`.
fn grants_where(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    what: &dyn Fn() -> String,
) -> Result<Vec<Grant>, StoreError> {
    let mut statement = conn
        .prepare_cached(sql)
        .map_err(|error| sqlite_failed(what(), &error))?;
    let mut rows = statement
        .query(params)
        .map_err(|error| sqlite_failed(what(), &error))?;
    let mut grants = Vec::new();
    while let Some(row) = rows.next().map_err(|error| sqlite_failed(what(), &error))? {
        grants.push(grant_of(row, what)?);
    }
    Ok(grants)
}

/// The grants of `query`, newest first. Live grants are read through the
/// partial index `grants_live` (not revoked, not used up), which the
/// query names so that it fails loudly rather than scan every grant ever
/// made; the others through `grants_newest`, backwards from the page's
/// start.
pub(crate) fn grants(conn: &Connection, query: &GrantQuery) -> Result<Vec<Grant>, StoreError> {
    let what = || {
        if query.live_at.is_some() {
            "cannot read the live grants".to_owned()
        } else {
            "cannot list grants".to_owned()
        }
    };
    let mut text = format!("SELECT {GRANT_COLUMNS} FROM grants");
    let mut values: Vec<Value> = Vec::new();
    let mut conditions: Vec<String> = Vec::new();
    if let Some(now) = query.live_at {
        text.push_str(" INDEXED BY grants_live");
        values.push(Value::Integer(now));
        conditions.push(format!(
            "revoked_at IS NULL AND (uses_left IS NULL OR uses_left > 0) \
             AND (ends_at IS NULL OR ends_at > ?{})",
            values.len()
        ));
    }
    if let Some(id) = &query.before {
        // A grant's creation time never changes, so the page's start may
        // be read on its own.
        let created_at = grant(conn, id)?.created_at;
        values.push(Value::Integer(created_at));
        values.push(Value::Text(id.clone()));
        conditions.push(format!(
            "(created_at, id) < (?{}, ?{})",
            values.len() - 1,
            values.len()
        ));
    }
    if let Some(reach) = &query.reaching {
        // One index lookup per reach (for any run, the run's, its
        // thread's), and the few grants found sorted here: `reach IN
        // (…)` and `ORDER BY` would each make SQLite build a temporary
        // b-tree, which costs more than the reads.
        conditions.push(format!("reach = ?{}", values.len() + 1));
        text.push_str(" WHERE ");
        text.push_str(&conditions.join(" AND "));
        // One snapshot (and one read transaction) for the lookups.
        let tx = conn
            .unchecked_transaction()
            .map_err(|error| sqlite_failed(what(), &error))?;
        let mut grants = Vec::new();
        for key in crate::reach::keys(reach) {
            let params = values.iter().cloned().chain([Value::Text(key)]);
            grants.extend(grants_where(&tx, &text, params_from_iter(params), &what)?);
        }
        drop(tx);
        grants.sort_unstable_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        grants.truncate(query.limit.unwrap_or(usize::MAX));
        return Ok(grants);
    }
    if !conditions.is_empty() {
        text.push_str(" WHERE ");
        text.push_str(&conditions.join(" AND "));
    }
    text.push_str(" ORDER BY created_at DESC, id DESC");
    if let Some(limit) = query.limit {
        values.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        text.push_str(&format!(" LIMIT ?{}", values.len()));
    }
    grants_where(conn, &text, params_from_iter(values), &what)
}

/// One grant.
pub(crate) fn grant(conn: &Connection, id: &str) -> Result<Grant, StoreError> {
    grants_where(
        conn,
        &format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = ?1"),
        [id],
        &|| format!("cannot read grant {id}"),
    )?
    .pop()
    .ok_or_else(|| StoreError::NotFound {
        what: "grant",
        id: id.to_owned(),
    })
}

/// Audit entries after `after`, oldest first.
pub(crate) fn audit(
    conn: &Connection,
    after: u64,
    max: usize,
) -> Result<Vec<AuditEntry>, StoreError> {
    let what = || "cannot read the audit log".to_owned();
    let mut statement = conn
        .prepare_cached(
            "SELECT e.seq, e.at, r.id, e.kind, e.body, e.hash, e.signature, r.created_at
             FROM events e LEFT JOIN runs r ON r.rid = e.run
             WHERE e.seq > ?1 ORDER BY e.seq LIMIT ?2",
        )
        .map_err(|error| sqlite_failed(what(), &error))?;
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let mut rows = statement
        .query(params![after, limit(max)])
        .map_err(|error| sqlite_failed(what(), &error))?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next().map_err(|error| sqlite_failed(what(), &error))? {
        let seq: i64 = get(row, 0, &what)?;
        let what = || format!("audit entry {seq}");
        let hash: Vec<u8> = get(row, 5, &what)?;
        let signature: Option<Vec<u8>> = get(row, 6, &what)?;
        entries.push(AuditEntry {
            seq: count(seq, &what)?,
            // A run event's time is stored from its run's creation time.
            at: get::<i64>(row, 1, &what)?
                .wrapping_add(get::<Option<i64>>(row, 7, &what)?.unwrap_or(0)),
            run_id: match row.get_ref(2) {
                Ok(ValueRef::Null) => None,
                _ => Some(id_text(row, 2, &what)?),
            },
            kind: row
                .get_ref(3)
                .ok()
                .and_then(codes::kind_text)
                .ok_or_else(|| corrupt(format!("{} has a kind toolgate did not write", what())))?,
            body: body_text(conn, row, 4, &what)?,
            hash: hash.try_into().map_err(|hash: Vec<u8>| {
                corrupt(format!(
                    "{} has a hash of {} bytes instead of 32",
                    what(),
                    hash.len()
                ))
            })?,
            signature: signature
                .map(|signature| {
                    signature.try_into().map_err(|signature: Vec<u8>| {
                        corrupt(format!(
                            "{} has a signature of {} bytes instead of 64",
                            what(),
                            signature.len()
                        ))
                    })
                })
                .transpose()?,
        });
    }
    Ok(entries)
}
