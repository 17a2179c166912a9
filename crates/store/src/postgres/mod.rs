//! [`PgStore`]: the store in a PostgreSQL database, shared by several
//! processes and hosts.
//!
//! Every write that adds audit entries (an append, a revocation) runs in
//! one transaction that first locks the audit log's head, the one row of
//! `audit_head` (`SELECT … FOR UPDATE`): writers of all processes take
//! turns there, so the chain has one entry for each number from 1, each
//! chained to the one before, whoever wrote it. Under that lock the
//! transaction checks the run's version, writes the events, rows and
//! grants, moves the head and commits: all or nothing. One task per store
//! commits the appends of all its callers, several per transaction
//! (`commit`). The schema and its migrations are in `schema`.

mod commit;
mod error;
mod listen;
mod outbox;
mod schema;

use std::fmt;

use async_trait::async_trait;
use deadpool_postgres::Object;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};
use toolgate_core::audit::{AuditEntry, Signer32, entry_hash, is_signed_kind};

use crate::json::{AppendJson, read as json};
use toolgate_core::grant::{Grant, Revocation};
use toolgate_core::run::{ApprovalStatus, Event};
use toolgate_core::store::{
    Append, ApprovalQuery, ApprovalRow, Delivery, DeliveryAttempt, DeliveryClaim, DeliveryNext,
    DeliveryQuery, DeliveryStatus, GrantQuery, Lease, NewDelivery, RunQuery, RunRow, Store,
    StoreError, StoredEvent, TokenRecord,
};
use toolgate_core::{Principal, Role};

use self::error::{corrupt, failed};

/// What a listing returns when asked for 0 rows.
const DEFAULT_LIMIT: usize = 50;

/// Locks the audit log's head, and reads it with the server's clock (read
/// after the lock, so that entries' times never go backwards along the
/// chain).
const HEAD: &str = "SELECT seq, hash, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint
                    FROM audit_head FOR UPDATE";

/// The store in a PostgreSQL database: for several processes and hosts
/// sharing runs, approvals and one audit log.
///
/// Appends are durable when they return (PostgreSQL's default
/// `synchronous_commit = on`, which the store leaves alone). Appends from
/// any number of stores, in any number of processes, serialise on the
/// audit log's head; reads run beside them.
///
/// The database also holds the store's Ed25519 signing key, made when the
/// store is first connected: anyone who can read the table `meta` can sign
/// as the store, so grant access to the database accordingly.
///
/// Times of audit entries are the database server's clock. Listing limits
/// of 0 mean 50, for [`Store::audit`] too.
pub struct PgStore {
    /// Commits this store's appends, several at a time; it holds the pool,
    /// where the store is (for messages, no password) and the signing key.
    committer: commit::Committer,
    /// Hears of every append, from any process (`LISTEN`).
    listener: listen::Listener,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://USER:PASSWORD@HOST:PORT/DATABASE`,
    /// or `key=value` pairs; `options=-c search_path=SCHEMA` puts the store
    /// in a schema of its own), creates or upgrades its schema, and makes
    /// the signing key on first use.
    ///
    /// # Errors
    ///
    /// The URL is not valid, the server cannot be reached or refuses the
    /// user (the message names host, port, database and user, never the
    /// password), the database holds another program's tables, or a newer
    /// toolgate wrote it.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let (pool, config, target) = schema::connect(url).await?;
        schema::migrate(&pool, &target).await?;
        let signer = schema::signing_key(&pool, &target).await?;
        let listener = listen::Listener::start(config);
        let committer = commit::Committer::start(commit::Writer {
            pool,
            target,
            signer,
        });
        Ok(PgStore {
            committer,
            listener,
        })
    }

    /// A connection from the pool.
    async fn client(&self) -> Result<Object, StoreError> {
        self.committer.writer().client().await
    }

    /// The `what` (`approval`, `token`) with id `id`, which `sql` selects
    /// by `$1` and `row` reads; [`StoreError::NotFound`] when there is none.
    async fn by_id<T>(
        &self,
        (what, id): (&'static str, &str),
        sql: &str,
        row: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let why = || format!("cannot read {what} {id}");
        let client = self.client().await?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|error| failed(why(), &error))?;
        match client
            .query_opt(&statement, &[&id])
            .await
            .map_err(|error| failed(why(), &error))?
        {
            Some(found) => row(&found),
            None => Err(StoreError::NotFound {
                what,
                id: id.to_owned(),
            }),
        }
    }

    /// The store's signing key.
    fn signer(&self) -> &Signer32 {
        &self.committer.writer().signer
    }
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.committer.writer().target)
            .field(
                "public_key",
                &toolgate_core::audit::hex(&self.signer().public_key()),
            )
            .finish_non_exhaustive()
    }
}

/// The audit log's last entry, locked by the transaction that read it.
struct Head {
    seq: i64,
    hash: [u8; 32],
    /// The server's clock when the lock was taken (Unix milliseconds).
    now: i64,
}

/// Locks and reads the audit log's head.
async fn lock_head(
    tx: &deadpool_postgres::Transaction<'_>,
    what: &(dyn Fn() -> String + Sync),
) -> Result<Head, StoreError> {
    let statement = tx
        .prepare_cached(HEAD)
        .await
        .map_err(|error| failed(what(), &error))?;
    let row = tx
        .query_one(&statement, &[])
        .await
        .map_err(|error| failed(what(), &error))?;
    head_of(&row)
}

/// The head, from the row of [`HEAD`].
fn head_of(row: &Row) -> Result<Head, StoreError> {
    let head_what = || "the audit log's head".to_owned();
    let hash: Vec<u8> = get(row, 1, &head_what)?;
    Ok(Head {
        seq: get(row, 0, &head_what)?,
        hash: hash.try_into().map_err(|hash: Vec<u8>| {
            corrupt(format!(
                "the audit log's head has a hash of {} bytes instead of 32",
                hash.len()
            ))
        })?,
        now: get(row, 2, &head_what)?,
    })
}

/// Inserts an audit entry.
const INSERT_EVENT: &str =
    "INSERT INTO events (seq, run_id, run_seq, at, kind, body, hash, signature)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Moves the stored head. The notification goes out when the transaction
/// commits: listeners in every process (see `listen`) learn of the new
/// head then.
const STORE_HEAD: &str = "WITH moved AS (UPDATE audit_head SET seq = $1, hash = $2)
     SELECT pg_notify('toolgate_changes', $3)";

/// An audit entry, chained to the head it was made after.
struct Entry<'a> {
    seq: i64,
    run_id: Option<&'a str>,
    run_seq: Option<i64>,
    at: i64,
    kind: &'a str,
    body: &'a str,
    hash: Vec<u8>,
    signature: Option<Vec<u8>>,
}

impl<'a> Entry<'a> {
    /// The entry after `head`, which then points at it.
    fn next(
        signer: &Signer32,
        head: &mut Head,
        run: Option<(&'a str, i64)>,
        kind: &'a str,
        body: &'a str,
    ) -> Entry<'a> {
        let seq = head.seq + 1;
        let run_id = run.map(|(id, _)| id);
        let hash = entry_hash(&head.hash, seq as u64, head.now, run_id, kind, body);
        let signature = is_signed_kind(kind).then(|| signer.sign(&hash));
        head.seq = seq;
        head.hash = hash;
        Entry {
            seq,
            run_id,
            run_seq: run.map(|(_, run_seq)| run_seq),
            at: head.now,
            kind,
            body,
            hash: hash.to_vec(),
            signature: signature.map(|signature| signature.to_vec()),
        }
    }

    /// The parameters of [`INSERT_EVENT`].
    fn params(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.seq,
            &self.run_id,
            &self.run_seq,
            &self.at,
            &self.kind,
            &self.body,
            &self.hash,
            &self.signature,
        ]
    }
}

/// Adds one entry to the audit log, chained to `head`, which then points
/// at it.
async fn insert_entry(
    tx: &deadpool_postgres::Transaction<'_>,
    signer: &Signer32,
    head: &mut Head,
    run: Option<(&str, i64)>,
    kind: &str,
    body: &str,
) -> Result<(), tokio_postgres::Error> {
    let entry = Entry::next(signer, head, run, kind, body);
    let statement = tx.prepare_cached(INSERT_EVENT).await?;
    tx.execute(&statement, &entry.params()).await?;
    Ok(())
}

/// Moves the stored head to `head`.
async fn store_head(
    tx: &deadpool_postgres::Transaction<'_>,
    head: &Head,
) -> Result<(), tokio_postgres::Error> {
    let statement = tx.prepare_cached(STORE_HEAD).await?;
    tx.execute(
        &statement,
        &[&head.seq, &&head.hash[..], &head.seq.to_string()],
    )
    .await?;
    Ok(())
}

/// Events of run `run_id` from rows of `(run_seq, at, body)` in order,
/// numbered from `after + 1` without gaps.
fn events_of(rows: &[Row], run_id: &str, after: u64) -> Result<Vec<StoredEvent>, StoreError> {
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let expected = after + events.len() as u64 + 1;
        let entry = || format!("event {expected} of run {run_id}");
        let seq = count(get(row, 0, &entry)?, &entry)?;
        crate::check_next_event(run_id, expected, seq)?;
        let body: &str = get(row, 2, &entry)?;
        events.push(StoredEvent {
            run_id: run_id.to_owned(),
            seq,
            at: get(row, 1, &entry)?,
            event: json::<Event>(body, &entry)?,
        });
    }
    Ok(events)
}

/// A column's value; a value of the wrong type means the data is not what
/// toolgate wrote.
fn get<'a, T: FromSql<'a>>(
    row: &'a Row,
    index: usize,
    what: &dyn Fn() -> String,
) -> Result<T, StoreError> {
    row.try_get(index).map_err(|error| {
        corrupt(format!(
            "{} has a column toolgate did not write: {error}",
            what()
        ))
    })
}

fn count(n: i64, what: &dyn Fn() -> String) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| corrupt(format!("{} has a negative count ({n})", what())))
}

fn small(n: i64, what: &dyn Fn() -> String) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| corrupt(format!("{} has the count {n}", what())))
}

fn limit(limit: usize) -> i64 {
    let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The columns of an approval row, in the order [`approval_row`] reads.
const APPROVAL_COLUMNS: &str = "id, run_id, call_id, tool, args, fingerprint, status, rule, \
    quorum, approvers, created_at, expires_at, decided_by, decided_at";

fn approval_row(row: &Row) -> Result<ApprovalRow, StoreError> {
    let id: String = get(row, 0, &|| "an approval".to_owned())?;
    let what = || format!("approval {id}");
    let status: String = get(row, 6, &what)?;
    let args: String = get(row, 4, &what)?;
    let approvers: Option<String> = get(row, 9, &what)?;
    let fingerprint: String = get(row, 5, &what)?;
    Ok(ApprovalRow {
        run_id: get(row, 1, &what)?,
        call_id: get(row, 2, &what)?,
        tool: get(row, 3, &what)?,
        args: json(&args, &what)?,
        // A fingerprint is its hex text; serde is the one way to make one
        // from text.
        fingerprint: serde_json::from_value(serde_json::Value::String(fingerprint))
            .map_err(|error| corrupt(format!("{} has a bad fingerprint: {error}", what())))?,
        status: serde_json::from_value::<ApprovalStatus>(serde_json::Value::String(status.clone()))
            .map_err(|_| corrupt(format!("{} has the unknown status `{status}`", what())))?,
        rule: get(row, 7, &what)?,
        quorum: small(get(row, 8, &what)?, &what)?,
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

/// Numbers placeholders `$1`, `$2`, … in the order they are asked for.
#[derive(Default)]
struct Placeholders(usize);

impl Placeholders {
    fn next(&mut self) -> String {
        self.0 += 1;
        format!("${}", self.0)
    }
}

/// `WHERE a AND b …`, or nothing.
fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

/// The condition on `statuses` statuses: none for 0, `=` for one (so
/// that the status index gives the order, with no sort), `ANY` of a text
/// array for more.
fn status_condition(statuses: usize, placeholders: &mut Placeholders) -> Option<String> {
    match statuses {
        0 => None,
        1 => Some(format!("status = {}", placeholders.next())),
        _ => Some(format!("status = ANY({})", placeholders.next())),
    }
}

/// The SQL of a runs listing; its parameters are the status (one) or
/// statuses (a text array, for several), if any, and the limit. Newest
/// first is a backward scan of `runs_newest`, or of `runs_by_status` for
/// one status.
pub(crate) fn runs_sql(statuses: usize) -> String {
    let mut placeholders = Placeholders::default();
    let conditions: Vec<String> = status_condition(statuses, &mut placeholders)
        .into_iter()
        .collect();
    format!(
        "SELECT id, status, thread, prompt, created_at, updated_at, version FROM runs{}
         ORDER BY created_at DESC, id DESC LIMIT {}",
        where_clause(&conditions),
        placeholders.next()
    )
}

/// The SQL of an approvals listing; its parameters are, in this order,
/// the status or statuses (as for [`runs_sql`]), the run, the creation
/// time and id of the approval to list from, each if asked for, and the
/// limit.
pub(crate) fn approvals_sql(statuses: usize, run: bool, before: bool) -> String {
    let mut placeholders = Placeholders::default();
    let mut conditions: Vec<String> = status_condition(statuses, &mut placeholders)
        .into_iter()
        .collect();
    if run {
        conditions.push(format!("run_id = {}", placeholders.next()));
    }
    if before {
        // A row comparison: one bound on the (created_at, id) indexes.
        let created_at = placeholders.next();
        let id = placeholders.next();
        conditions.push(format!("(created_at, id) < ({created_at}, {id})"));
    }
    format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals{}
         ORDER BY created_at DESC, id DESC LIMIT {}",
        where_clause(&conditions),
        placeholders.next()
    )
}

/// The columns of a grant, in the order [`PgStore::grants_where`] reads.
const GRANT_COLUMNS: &str = "id, tool, condition, scope, uses_left, created_by, created_at, \
    approval_id, revoked_by, revoked_at";

impl PgStore {
    /// Revokes the `what` (a grant or a token: table `{what}s`) with id
    /// `id` by running `update` (which sets its revocation where it has
    /// none; `$1` is the id) with `params`, and adds the audit entry of
    /// `kind` with `body`, in one transaction that holds the audit head.
    /// False when it was revoked already (no entry then).
    async fn revoke_audited(
        &self,
        what: &'static str,
        id: &str,
        update: &str,
        params: &[&(dyn ToSql + Sync)],
        kind: &str,
        body: &str,
    ) -> Result<bool, StoreError> {
        let why = || format!("cannot revoke {what} {id}");
        let sql = |error: tokio_postgres::Error| failed(why(), &error);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(sql)?;
        let mut head = lock_head(&tx, &why).await?;
        let statement = tx.prepare_cached(update).await.map_err(sql)?;
        if tx.execute(&statement, params).await.map_err(sql)? == 0 {
            let statement = tx
                .prepare_cached(&format!("SELECT 1 FROM {what}s WHERE id = $1"))
                .await
                .map_err(sql)?;
            let exists = tx
                .query_opt(&statement, &[&id])
                .await
                .map_err(sql)?
                .is_some();
            let _ = tx.rollback().await;
            return if exists {
                Ok(false)
            } else {
                Err(StoreError::NotFound {
                    what,
                    id: id.to_owned(),
                })
            };
        }
        insert_entry(&tx, self.signer(), &mut head, None, kind, body)
            .await
            .map_err(sql)?;
        store_head(&tx, &head).await.map_err(sql)?;
        tx.commit().await.map_err(sql)?;
        Ok(true)
    }

    /// The grants of `sql` (which selects [`GRANT_COLUMNS`]) with `params`.
    async fn grants_where(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        what: &(dyn Fn() -> String + Sync),
    ) -> Result<Vec<Grant>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|error| failed(what(), &error))?;
        let rows = client
            .query(&statement, params)
            .await
            .map_err(|error| failed(what(), &error))?;
        rows.iter()
            .map(|row| {
                let id: String = get(row, 0, &what)?;
                let what = || format!("grant {id}");
                let scope: &str = get(row, 3, &what)?;
                let revoked_by: Option<String> = get(row, 8, &what)?;
                let revoked_at: Option<i64> = get(row, 9, &what)?;
                let uses_left: Option<i64> = get(row, 4, &what)?;
                Ok(Grant {
                    tool: get(row, 1, &what)?,
                    when: get(row, 2, &what)?,
                    scope: json(scope, &what)?,
                    uses_left: uses_left.map(|n| small(n, &what)).transpose()?,
                    created_by: get(row, 5, &what)?,
                    created_at: get(row, 6, &what)?,
                    approval_id: get(row, 7, &what)?,
                    revoked: match (revoked_by, revoked_at) {
                        (Some(by), Some(at)) => Some(Revocation { by, at }),
                        _ => None,
                    },
                    id,
                })
            })
            .collect()
    }
}

#[async_trait]
impl Store for PgStore {
    async fn append(&self, append: Append) -> Result<u64, StoreError> {
        let append = AppendJson::new(append)?;
        self.committer.append(append, false).await
    }

    async fn append_deferred(&self, append: Append) -> Result<u64, StoreError> {
        let append = AppendJson::new(append)?;
        self.committer.append(append, true).await
    }

    async fn load(&self, run_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let what = || format!("cannot load run {run_id}");
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT run_seq, at, body FROM events WHERE run_id = $1 ORDER BY run_seq",
            )
            .await
            .map_err(|error| failed(what(), &error))?;
        let rows = client
            .query(&statement, &[&run_id])
            .await
            .map_err(|error| failed(what(), &error))?;
        let events = events_of(&rows, run_id, 0)?;
        if events.is_empty() {
            return Err(StoreError::NotFound {
                what: "run",
                id: run_id.to_owned(),
            });
        }
        Ok(events)
    }

    async fn load_since(&self, run_id: &str, after: u64) -> Result<Vec<StoredEvent>, StoreError> {
        let what = || format!("cannot load run {run_id}");
        let client = self.client().await?;
        // The run's row tells a known run with nothing new (one row of
        // nulls) from an unknown one (no row), in one round trip.
        let statement = client
            .prepare_cached(
                "SELECT e.run_seq, e.at, e.body FROM runs r
                 LEFT JOIN events e ON e.run_id = r.id AND e.run_seq > $2
                 WHERE r.id = $1 ORDER BY e.run_seq",
            )
            .await
            .map_err(|error| failed(what(), &error))?;
        let after_seq = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = client
            .query(&statement, &[&run_id, &after_seq])
            .await
            .map_err(|error| failed(what(), &error))?;
        if rows.is_empty() {
            return Err(StoreError::NotFound {
                what: "run",
                id: run_id.to_owned(),
            });
        }
        let found: Vec<Row> = rows
            .into_iter()
            .filter(|row| row.try_get::<_, Option<i64>>(0).ok().flatten().is_some())
            .collect();
        events_of(&found, run_id, after)
    }

    async fn runs(&self, query: &RunQuery) -> Result<Vec<RunRow>, StoreError> {
        let what = || "cannot list runs".to_owned();
        let client = self.client().await?;
        let limit = limit(query.limit);
        let mut values: Vec<&(dyn ToSql + Sync)> = Vec::new();
        match &query.statuses[..] {
            [] => {}
            [one] => values.push(one),
            _ => values.push(&query.statuses),
        }
        values.push(&limit);
        let statement = client
            .prepare_cached(&runs_sql(query.statuses.len()))
            .await
            .map_err(|error| failed(what(), &error))?;
        let rows = client
            .query(&statement, &values)
            .await
            .map_err(|error| failed(what(), &error))?;
        rows.iter()
            .map(|row| {
                let id: String = get(row, 0, &what)?;
                let what = || format!("run {id}");
                Ok(RunRow {
                    status: get(row, 1, &what)?,
                    thread: get(row, 2, &what)?,
                    prompt: get(row, 3, &what)?,
                    created_at: get(row, 4, &what)?,
                    updated_at: get(row, 5, &what)?,
                    version: count(get(row, 6, &what)?, &what)?,
                    id,
                })
            })
            .collect()
    }

    async fn approvals(&self, query: &ApprovalQuery) -> Result<Vec<ApprovalRow>, StoreError> {
        let what = || "cannot list approvals".to_owned();
        let sql = |error: tokio_postgres::Error| failed(what(), &error);
        let mut client = self.client().await?;
        // One snapshot for the page's start and the listing.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(sql)?;
        let before: Option<i64> = match &query.before {
            None => None,
            Some(id) => {
                let statement = tx
                    .prepare_cached("SELECT created_at FROM approvals WHERE id = $1")
                    .await
                    .map_err(sql)?;
                let row = tx.query_opt(&statement, &[id]).await.map_err(sql)?;
                let row = row.ok_or_else(|| StoreError::NotFound {
                    what: "approval",
                    id: id.clone(),
                })?;
                Some(get(&row, 0, &|| format!("approval {id}"))?)
            }
        };
        let statuses: Vec<&str> = query.statuses.iter().map(|s| s.as_str()).collect();
        let limit = limit(query.limit);
        let mut values: Vec<&(dyn ToSql + Sync)> = Vec::new();
        match &statuses[..] {
            [] => {}
            [one] => values.push(one),
            _ => values.push(&statuses),
        }
        if let Some(run_id) = &query.run_id {
            values.push(run_id);
        }
        if let (Some(created_at), Some(id)) = (&before, &query.before) {
            values.push(created_at);
            values.push(id);
        }
        values.push(&limit);
        let text = approvals_sql(statuses.len(), query.run_id.is_some(), before.is_some());
        let statement = tx.prepare_cached(&text).await.map_err(sql)?;
        let rows = tx.query(&statement, &values).await.map_err(sql)?;
        tx.commit().await.map_err(sql)?;
        rows.iter().map(approval_row).collect()
    }

    async fn due_approvals(&self, now: i64, max: usize) -> Result<Vec<ApprovalRow>, StoreError> {
        let what = || "cannot list the approvals that are due".to_owned();
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals
                 WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= $1
                 ORDER BY expires_at LIMIT $2"
            ))
            .await
            .map_err(|error| failed(what(), &error))?;
        let rows = client
            .query(&statement, &[&now, &limit(max)])
            .await
            .map_err(|error| failed(what(), &error))?;
        rows.iter().map(approval_row).collect()
    }

    async fn approval(&self, id: &str) -> Result<ApprovalRow, StoreError> {
        self.by_id(
            ("approval", id),
            &format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1"),
            approval_row,
        )
        .await
    }

    async fn grants(&self, query: &GrantQuery) -> Result<Vec<Grant>, StoreError> {
        // A grant's creation time never changes, so the page's start may
        // be read on its own.
        let before = match &query.before {
            None => None,
            Some(id) => Some((self.grant(id).await?.created_at, id)),
        };
        let limit = query
            .limit
            .map(|limit| i64::try_from(limit).unwrap_or(i64::MAX));
        let reach = query.reaching.as_ref().map(crate::reach::keys);
        let mut values: Vec<&(dyn ToSql + Sync)> = Vec::new();
        let mut conditions = Vec::new();
        if let Some(reach) = &reach {
            values.push(reach);
            conditions.push(format!("reach = ANY(${})", values.len()));
        }
        if let Some(now) = &query.live_at {
            // The condition of the partial index `grants_live`, word for
            // word, so that the planner can use it.
            values.push(now);
            conditions.push(format!(
                "revoked_at IS NULL AND (uses_left IS NULL OR uses_left > 0) \
                 AND (ends_at IS NULL OR ends_at > ${})",
                values.len()
            ));
        }
        if let Some((created_at, id)) = &before {
            values.push(created_at);
            values.push(id);
            conditions.push(format!(
                "(created_at, id) < (${}, ${})",
                values.len() - 1,
                values.len()
            ));
        }
        let mut text = format!(
            "SELECT {GRANT_COLUMNS} FROM grants{} ORDER BY created_at DESC, id DESC",
            where_clause(&conditions)
        );
        if let Some(limit) = &limit {
            values.push(limit);
            text.push_str(&format!(" LIMIT ${}", values.len()));
        }
        let live = query.live_at.is_some();
        self.grants_where(&text, &values, &|| {
            if live {
                "cannot read the live grants".to_owned()
            } else {
                "cannot list grants".to_owned()
            }
        })
        .await
    }

    async fn grant(&self, id: &str) -> Result<Grant, StoreError> {
        self.grants_where(
            &format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = $1"),
            &[&id],
            &|| format!("cannot read grant {id}"),
        )
        .await?
        .pop()
        .ok_or_else(|| StoreError::NotFound {
            what: "grant",
            id: id.to_owned(),
        })
    }

    async fn use_grant(&self, id: &str) -> Result<bool, StoreError> {
        let what = || format!("cannot use grant {id}");
        let sql = |error: tokio_postgres::Error| failed(what(), &error);
        let client = self.client().await?;
        // One statement takes a use, so two callers (in any processes) can
        // never both take the last one.
        let statement = client
            .prepare_cached(
                "UPDATE grants SET uses_left = uses_left - 1
                 WHERE id = $1 AND revoked_at IS NULL AND uses_left > 0
                 RETURNING uses_left",
            )
            .await
            .map_err(sql)?;
        if client
            .query_opt(&statement, &[&id])
            .await
            .map_err(sql)?
            .is_some()
        {
            return Ok(true);
        }
        let statement = client
            .prepare_cached("SELECT uses_left, revoked_at FROM grants WHERE id = $1")
            .await
            .map_err(sql)?;
        let Some(row) = client.query_opt(&statement, &[&id]).await.map_err(sql)? else {
            return Err(StoreError::NotFound {
                what: "grant",
                id: id.to_owned(),
            });
        };
        let grant = || format!("grant {id}");
        let uses_left: Option<i64> = get(&row, 0, &grant)?;
        let revoked_at: Option<i64> = get(&row, 1, &grant)?;
        // Not revoked and not counted: always usable. Revoked, or used
        // up: not.
        Ok(uses_left.is_none() && revoked_at.is_none())
    }

    async fn revoke_grant(&self, id: &str, by: &str, at: i64) -> Result<bool, StoreError> {
        self.revoke_audited(
            "grant",
            id,
            "UPDATE grants SET revoked_by = $2, revoked_at = $3
             WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &by, &at],
            "grant_revoked",
            &crate::json::grant_revoked(id, by, at),
        )
        .await
    }

    async fn audit(&self, after: u64, max: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let what = || "cannot read the audit log".to_owned();
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT seq, at, run_id, kind, body, hash, signature FROM events
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .await
            .map_err(|error| failed(what(), &error))?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = client
            .query(&statement, &[&after, &limit(max)])
            .await
            .map_err(|error| failed(what(), &error))?;
        rows.iter()
            .map(|row| {
                let seq: i64 = get(row, 0, &what)?;
                let what = || format!("audit entry {seq}");
                let hash: Vec<u8> = get(row, 5, &what)?;
                let signature: Option<Vec<u8>> = get(row, 6, &what)?;
                Ok(AuditEntry {
                    seq: count(seq, &what)?,
                    at: get(row, 1, &what)?,
                    run_id: get(row, 2, &what)?,
                    kind: get(row, 3, &what)?,
                    body: get(row, 4, &what)?,
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
                })
            })
            .collect()
    }

    async fn public_key(&self) -> Result<[u8; 32], StoreError> {
        Ok(self.signer().public_key())
    }

    async fn wait_for_change(
        &self,
        after: u64,
        timeout: std::time::Duration,
    ) -> Result<Option<u64>, StoreError> {
        // Looked at once first: a change made before the listener was
        // connected, or while it reconnects, is not missed.
        let head = self.audit_head().await?;
        if head > after {
            return Ok(Some(head));
        }
        Ok(Some(
            self.listener.wait_past(after, timeout).await.max(head),
        ))
    }

    async fn audit_head(&self) -> Result<u64, StoreError> {
        let what = || "cannot read the audit log's head".to_owned();
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT seq FROM audit_head")
            .await
            .map_err(|error| failed(what(), &error))?;
        let row = client
            .query_one(&statement, &[])
            .await
            .map_err(|error| failed(what(), &error))?;
        count(get(&row, 0, &what)?, &what)
    }

    async fn lease_run(
        &self,
        run_id: &str,
        owner: &str,
        until: i64,
        now: i64,
    ) -> Result<Lease, StoreError> {
        let what = || format!("cannot lease run {run_id}");
        let sql = |error: tokio_postgres::Error| failed(what(), &error);
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE runs SET lease_owner = $2, lease_until = $3
                 WHERE id = $1 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until <= $4)",
            )
            .await
            .map_err(sql)?;
        if client
            .execute(&statement, &[&run_id, &owner, &until, &now])
            .await
            .map_err(sql)?
            > 0
        {
            return Ok(Lease::Held);
        }
        let statement = client
            .prepare_cached("SELECT lease_owner, lease_until FROM runs WHERE id = $1")
            .await
            .map_err(sql)?;
        let Some(row) = client
            .query_opt(&statement, &[&run_id])
            .await
            .map_err(sql)?
        else {
            return Err(StoreError::NotFound {
                what: "run",
                id: run_id.to_owned(),
            });
        };
        let run = || format!("run {run_id}");
        match (get(&row, 0, &run)?, get(&row, 1, &run)?) {
            (Some(owner), Some(until)) => Ok(Lease::Busy { owner, until }),
            _ => Err(corrupt(format!("run {run_id} has half a lease"))),
        }
    }

    async fn release_run(&self, run_id: &str, owner: &str) -> Result<(), StoreError> {
        let what = || format!("cannot release run {run_id}");
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE runs SET lease_owner = NULL, lease_until = NULL
                 WHERE id = $1 AND lease_owner = $2",
            )
            .await
            .map_err(|error| failed(what(), &error))?;
        client
            .execute(&statement, &[&run_id, &owner])
            .await
            .map_err(|error| failed(what(), &error))?;
        Ok(())
    }

    async fn claim_ready_runs(
        &self,
        owner: &str,
        until: i64,
        now: i64,
        max: usize,
    ) -> Result<Vec<String>, StoreError> {
        let what = || "cannot claim runs".to_owned();
        let client = self.client().await?;
        // SKIP LOCKED: claimers in other processes pass over the rows this
        // one is taking instead of waiting for them, and never take them.
        let statement = client
            .prepare_cached(
                "UPDATE runs SET lease_owner = $1, lease_until = $2
                 WHERE id IN (SELECT id FROM runs
                              WHERE status = 'running'
                                AND (lease_owner IS NULL OR lease_until <= $3)
                              ORDER BY created_at, id LIMIT $4
                              FOR UPDATE SKIP LOCKED)
                 RETURNING id",
            )
            .await
            .map_err(|error| failed(what(), &error))?;
        let rows = client
            .query(&statement, &[&owner, &until, &now, &limit(max)])
            .await
            .map_err(|error| failed(what(), &error))?;
        rows.iter().map(|row| get(row, 0, &what)).collect()
    }

    async fn approval_count(&self, status: ApprovalStatus) -> Result<u64, StoreError> {
        let what = || format!("cannot count {status} approvals");
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT count(*) FROM approvals WHERE status = $1")
            .await
            .map_err(|error| failed(what(), &error))?;
        let row = client
            .query_one(&statement, &[&status.as_str()])
            .await
            .map_err(|error| failed(what(), &error))?;
        count(get(&row, 0, &what)?, &what)
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let what = || format!("cannot create token {}", token.id);
        let sql = |error: tokio_postgres::Error| failed(what(), &error);
        let groups = serde_json::to_string(&token.principal.groups)
            .map_err(|error| corrupt(format!("{}: {error}", what())))?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(sql)?;
        let mut head = lock_head(&tx, &what).await?;
        let statement = tx
            .prepare_cached(&format!(
                "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .await
            .map_err(sql)?;
        tx.execute(
            &statement,
            &[
                &token.id,
                &&token.hash[..],
                &token.principal.name,
                &token.principal.role.as_str(),
                &groups,
                &token.created_at,
                &token.created_by,
                &token.expires_at,
                &token.revoked_at,
            ],
        )
        .await
        .map_err(sql)?;
        let body = crate::json::token_created(token);
        insert_entry(&tx, self.signer(), &mut head, None, "token_created", &body)
            .await
            .map_err(sql)?;
        store_head(&tx, &head).await.map_err(sql)?;
        tx.commit().await.map_err(sql)?;
        Ok(())
    }

    async fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        let what = || "cannot look up a token".to_owned();
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"
            ))
            .await
            .map_err(|error| failed(what(), &error))?;
        client
            .query_opt(&statement, &[&&hash[..]])
            .await
            .map_err(|error| failed(what(), &error))?
            .map(|row| token_record(&row))
            .transpose()
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let what = || "cannot list tokens".to_owned();
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at DESC, id DESC"
            ))
            .await
            .map_err(|error| failed(what(), &error))?;
        let rows = client
            .query(&statement, &[])
            .await
            .map_err(|error| failed(what(), &error))?;
        rows.iter().map(token_record).collect()
    }

    async fn token(&self, id: &str) -> Result<TokenRecord, StoreError> {
        self.by_id(
            ("token", id),
            &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"),
            token_record,
        )
        .await
    }

    async fn revoke_token(&self, id: &str, by: &str, at: i64) -> Result<bool, StoreError> {
        self.revoke_audited(
            "token",
            id,
            "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &at],
            "token_revoked",
            &crate::json::token_revoked(id, by, at),
        )
        .await
    }

    async fn webhook_cursor(&self, webhook: &str, start: u64) -> Result<u64, StoreError> {
        self.outbox_cursor(webhook, start).await
    }

    async fn enqueue_deliveries(
        &self,
        webhook: &str,
        through: u64,
        deliveries: &[NewDelivery],
    ) -> Result<usize, StoreError> {
        self.outbox_enqueue(webhook, through, deliveries).await
    }

    async fn claim_deliveries(&self, claim: &DeliveryClaim) -> Result<Vec<Delivery>, StoreError> {
        self.outbox_claim(claim).await
    }

    async fn record_attempt(
        &self,
        id: &str,
        claimer: &str,
        attempt: &DeliveryAttempt,
        next: DeliveryNext,
    ) -> Result<bool, StoreError> {
        self.outbox_record(id, claimer, attempt, next).await
    }

    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError> {
        self.outbox_list(query).await
    }

    async fn redeliver(&self, id: &str, now: i64) -> Result<DeliveryStatus, StoreError> {
        self.outbox_redeliver(id, now).await
    }

    async fn prune_deliveries(&self, before: i64) -> Result<u64, StoreError> {
        self.outbox_prune(before).await
    }
}

const TOKEN_COLUMNS: &str =
    "id, hash, name, role, groups, created_at, created_by, expires_at, revoked_at";

fn token_record(row: &Row) -> Result<TokenRecord, StoreError> {
    let id: String = get(row, 0, &|| "a token".to_owned())?;
    let what = || format!("token {id}");
    let hash: Vec<u8> = get(row, 1, &what)?;
    let role: String = get(row, 3, &what)?;
    let groups: String = get(row, 4, &what)?;
    Ok(TokenRecord {
        hash: hash
            .try_into()
            .map_err(|_| corrupt(format!("{} has a hash that is not 32 bytes", what())))?,
        principal: Principal {
            name: get(row, 2, &what)?,
            role: Role::parse(&role)
                .ok_or_else(|| corrupt(format!("{} has the unknown role `{role}`", what())))?,
            groups: json(&groups, &what)?,
        },
        created_at: get(row, 5, &what)?,
        created_by: get(row, 6, &what)?,
        expires_at: get(row, 7, &what)?,
        revoked_at: get(row, 8, &what)?,
        id,
    })
}

#[cfg(test)]
mod tests {
    use tokio_postgres::NoTls;

    use super::error::pg_error;
    use super::*;

    /// Migration 4 gives the grants made before it their end times, in a
    /// schema of a transaction of the test server's maintenance database
    /// that is never committed.
    #[tokio::test]
    async fn grants_made_before_migration_4_get_their_end_times() {
        let url = std::env::var("TOOLGATE_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let (mut client, connection) =
            tokio_postgres::connect(&url, NoTls)
                .await
                .unwrap_or_else(|error| {
                    panic!(
                        "cannot reach the PostgreSQL server for the tests at {url} ({})",
                        pg_error(&error)
                    )
                });
        tokio::spawn(connection);
        let tx = client.transaction().await.unwrap();
        tx.batch_execute(
            "CREATE SCHEMA toolgate_migration_test; SET LOCAL search_path = toolgate_migration_test;",
        )
        .await
        .unwrap();
        for script in &schema::MIGRATIONS[..3] {
            tx.batch_execute(script).await.unwrap();
        }
        tx.batch_execute(
            r#"INSERT INTO grants (id, tool, scope, created_by, created_at)
               VALUES ('g-until', 'send_*', '{"scope":"until","until":5000}', 'bob', 1),
                      ('g-run', 'send_*', '{"scope":"run","run_id":"run-1"}', 'bob', 2);"#,
        )
        .await
        .unwrap();
        tx.batch_execute(schema::MIGRATIONS[3]).await.unwrap();
        let ends: Vec<(String, Option<i64>)> = tx
            .query("SELECT id, ends_at FROM grants ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        assert_eq!(
            ends,
            [
                ("g-run".to_owned(), None),
                ("g-until".to_owned(), Some(5000))
            ]
        );
    }

    /// The plans of the listings, on the schema in a transaction of the
    /// test server's maintenance database that is never committed (so
    /// nothing is left behind). Needs the server of `tests/postgres.rs`.
    #[tokio::test]
    async fn listings_are_index_scans() {
        let url = std::env::var("TOOLGATE_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let (mut client, connection) = tokio_postgres::connect(&url, NoTls)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "cannot reach the PostgreSQL server for the tests at {url} ({}); start it \
                     with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`",
                    pg_error(&error)
                )
            });
        tokio::spawn(connection);
        let tx = client.transaction().await.unwrap();
        tx.batch_execute(
            "CREATE SCHEMA toolgate_plan_test; SET LOCAL search_path = toolgate_plan_test;",
        )
        .await
        .unwrap();
        tx.batch_execute(schema::MIGRATIONS[0]).await.unwrap();
        // Enough rows, of every status, for the planner to prefer indexes
        // as it will on a store in use.
        tx.batch_execute(
            "INSERT INTO runs (id, status, prompt, created_at, updated_at, version)
             SELECT 'run-' || n, (ARRAY['running', 'waiting', 'completed', 'failed'])[n % 4 + 1],
                    'Email Bob', n, n, 1
             FROM generate_series(1, 20000) n;
             INSERT INTO approvals (id, run_id, call_id, tool, args, fingerprint, status, rule,
                                    quorum, created_at)
             SELECT 'a' || n, 'run-' || (n % 2000 + 1), 'call', 'send_email', '{}', 'f',
                    (ARRAY['pending', 'approved', 'rejected', 'expired'])[n % 4 + 1], 'r', 1, n
             FROM generate_series(1, 20000) n;
             ANALYZE runs; ANALYZE approvals;",
        )
        .await
        .unwrap();
        let explain = async |sql: String, values: &[&(dyn ToSql + Sync)]| {
            let rows = tx.query(&format!("EXPLAIN {sql}"), values).await.unwrap();
            let plan: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
            plan.join("\n")
        };
        let one = "pending";
        let many = vec!["pending", "approved"];
        let (run, at, id, limit) = ("run-1", 10_000i64, "a10000", 50i64);
        // (plan, index, whether the planner may sort): the listings of
        // everything and of one status read an index backwards and stop at
        // the limit.
        let cases = [
            (explain(runs_sql(0), &[&limit]).await, "runs_newest", false),
            (
                explain(runs_sql(1), &[&one, &limit]).await,
                "runs_by_status",
                false,
            ),
            (explain(runs_sql(2), &[&many, &limit]).await, "runs_", true),
            (
                explain(approvals_sql(0, false, false), &[&limit]).await,
                "approvals_newest",
                false,
            ),
            (
                explain(approvals_sql(1, false, false), &[&one, &limit]).await,
                "approvals_by_status",
                false,
            ),
            (
                explain(approvals_sql(1, false, true), &[&one, &at, &id, &limit]).await,
                // By status or by time: the planner weighs them.
                "Index Scan Backward using approvals_",
                false,
            ),
            (
                explain(approvals_sql(0, true, false), &[&run, &limit]).await,
                "approvals_by_run",
                // A run has few approvals: sorting them may be cheaper.
                true,
            ),
            (
                explain(approvals_sql(0, true, true), &[&run, &at, &id, &limit]).await,
                "approvals_by_run",
                // A run has few approvals: sorting them may be cheaper.
                true,
            ),
            (
                explain(approvals_sql(2, false, false), &[&many, &limit]).await,
                "approvals_",
                true,
            ),
        ];
        for (plan, index, may_sort) in cases {
            println!("{plan}\n");
            assert!(plan.contains(index), "uses {index}:\n{plan}");
            assert!(!plan.contains("Seq Scan"), "{plan}");
            if !may_sort {
                assert!(!plan.contains("Sort"), "no sort:\n{plan}");
            }
        }
        tx.rollback().await.unwrap();
    }
}
