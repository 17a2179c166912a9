//! The writer: one thread owns the write connection and commits requests in
//! groups.
//!
//! A commit at full durability waits for the disk to sync, which takes far
//! longer than writing a few rows. So the writer takes the first request,
//! drains whatever else is already queued (up to [`MAX_BATCH`]), runs them
//! all in one transaction, commits once, and only then replies to each.
//! Many concurrent appends thus share one sync. A conflict is found before
//! a request writes anything, so requests run without savepoints; should
//! one fail after writing, the transaction is rolled back and the batch
//! runs again with each request in its own savepoint, so that the error
//! undoes only that request.
//!
//! A deferred append ([`toolgate_core::store::Store::append_deferred`])
//! commits without waiting for the disk when its whole batch is deferred;
//! syncing the log file makes every frame before it durable, so the next
//! durable commit covers it, and should none come within
//! [`DEFERRED_SYNC`], the writer syncs the log itself.
//!
//! The writer keeps the audit log's head (the last entry's sequence number
//! and hash) in memory, and advances it only for requests whose savepoint
//! was released and whose transaction committed. If another process wrote
//! to the file in between (SQLite's `data_version` tells), it reads the
//! head again.

use std::any::Any;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};
use toolgate_core::audit::{Signer32, entry_hash, is_signed_kind};
use toolgate_core::grant::Grant;
use toolgate_core::store::{Append, ApprovalRow, RunRow, StoreError};

use super::error::{corrupt, failed, sqlite_error, sqlite_failed};
use super::schema::Opened;
use super::{body, codes};
use crate::json::{AppendJson, refuse};

/// The most requests one transaction takes: enough to share a sync widely,
/// few enough that the first caller in a group is not kept waiting long.
const MAX_BATCH: usize = 512;

/// How many requests may wait for the writer before callers wait to queue.
const QUEUE: usize = 4 * MAX_BATCH;

/// The longest a deferred commit waits for a durable one to sync it before
/// the writer syncs the log itself.
pub(crate) const DEFERRED_SYNC: Duration = Duration::from_millis(20);

/// Where the writer sends a request's answer.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What the writer is asked to do.
pub(crate) enum Request {
    /// [`toolgate_core::store::Store::append`].
    Append(Box<PreparedAppend>, Reply<u64>),
    /// [`toolgate_core::store::Store::use_grant`].
    UseGrant(String, Reply<bool>),
    /// A write outside runs (grant revocations, tokens, run leases, the
    /// webhook outbox), in
    /// its own savepoint when the batch has them.
    Plain(PlainWrite, Reply<Box<dyn Any + Send>>),
}

/// A write outside runs (see `super::tokens` and `super::leases`), which
/// may add audit entries of its own through its [`Audit`], answering with
/// a value of its own type. It may run twice: a batch that must be
/// isolated runs again with savepoints.
pub(crate) type PlainWrite =
    Box<dyn Fn(&Connection, &mut Audit<'_>) -> Result<Box<dyn Any + Send>, StoreError> + Send>;

/// How a write outside runs adds entries to the audit log: chained to the
/// batch's head, and signed when their kind is.
pub(crate) struct Audit<'a> {
    signer: &'a Signer32,
    head: &'a mut Head,
    now: i64,
}

impl Audit<'_> {
    /// Revokes the `what` (a grant or a token: table `{what}s`) with id
    /// `id` by running `update` (which sets its revocation where it has
    /// none; `?1` is the id) with `params`, and adds the audit entry of
    /// `kind` with `body`. False when it was revoked already (no entry
    /// then).
    pub(crate) fn revoke(
        &mut self,
        conn: &Connection,
        (what, id): (&'static str, &str),
        update: &str,
        params: impl rusqlite::Params,
        (kind, body): (&str, &str),
    ) -> Result<bool, StoreError> {
        let sql =
            |error: rusqlite::Error| sqlite_failed(format!("cannot revoke {what} {id}"), &error);
        let changed = conn
            .prepare_cached(update)
            .and_then(|mut statement| statement.execute(params))
            .map_err(sql)?;
        if changed > 0 {
            self.record(conn, kind, body)?;
            return Ok(true);
        }
        let exists = conn
            .prepare_cached(&format!("SELECT 1 FROM {what}s WHERE id = ?1"))
            .and_then(|mut statement| statement.exists([id]))
            .map_err(sql)?;
        if exists {
            Ok(false)
        } else {
            Err(StoreError::NotFound {
                what,
                id: id.to_owned(),
            })
        }
    }

    /// Appends an entry of `kind` with JSON `body`, outside any run.
    pub(crate) fn record(
        &mut self,
        conn: &Connection,
        kind: &str,
        body: &str,
    ) -> Result<(), StoreError> {
        let what = || format!("cannot add a {kind} entry to the audit log");
        let stored = body::encode(body).map_err(|error| failed(what(), error))?;
        insert_entry(
            conn,
            self.signer,
            self.head,
            None,
            self.now,
            kind,
            (body, &stored),
        )
        .map_err(|error| sqlite_failed(what(), &error))
    }
}

/// An append, checked and turned into JSON text by the caller, so that the
/// one writer thread spends its time on nothing but the database.
pub(crate) struct PreparedAppend {
    /// Whether the append may answer before its commit is on disk.
    pub(crate) deferred: bool,
    expected_version: u64,
    /// The run's row; its id is the append's run.
    run: RunRow,
    /// The run's id as stored (see [`codes::id_value`]).
    run_key: Value,
    /// Each event's kind, JSON text (which is hashed) and body as it will
    /// be stored.
    events: Vec<(&'static str, String, body::Prepared)>,
    /// Each approval row, with its arguments and approvers (`None` for
    /// anyone) as JSON text, and its id and fingerprint as stored.
    approvals: Vec<(ApprovalRow, String, Option<String>, Value, Value)>,
    /// Each grant, with its scope as JSON text.
    grants: Vec<(Grant, String)>,
    /// The creator's lease, for an append that creates the run.
    lease: Option<(String, i64)>,
}

impl PreparedAppend {
    /// Checks an append, serialises what it stores as JSON and compresses
    /// the event bodies.
    pub(crate) fn new(append: Append) -> Result<PreparedAppend, StoreError> {
        let json = AppendJson::new(append)?;
        let run_id = &json.run.id;
        let events = json
            .events
            .into_iter()
            .map(|(event, body)| {
                let stored = body::prepare(&event, &body).map_err(|error| {
                    refuse(
                        run_id,
                        format!("cannot compress a {} event: {error}", event.kind()),
                    )
                })?;
                Ok((event.kind(), body, stored))
            })
            .collect::<Result<_, StoreError>>()?;
        let approvals = json
            .approvals
            .into_iter()
            .map(|(row, args, approvers)| {
                let key = codes::id_value(&row.id);
                let fingerprint = codes::fingerprint_value(row.fingerprint.as_str());
                (row, args, approvers, key, fingerprint)
            })
            .collect();
        Ok(PreparedAppend {
            deferred: false,
            expected_version: json.expected_version,
            run_key: codes::id_value(&json.run.id),
            run: json.run,
            events,
            approvals,
            grants: json.grants,
            lease: json.lease,
        })
    }
}

/// How well group commit is grouping: see [`super::WriterStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) transactions: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) largest: AtomicU64,
}

/// The last entry of the audit log.
#[derive(Debug, Clone, Copy)]
struct Head {
    seq: u64,
    hash: [u8; 32],
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    path: PathBuf,
    signer: Signer32,
    /// The audit log's head as of the last commit.
    head: Head,
    /// SQLite's `data_version` as of the last commit: it changes when
    /// another connection (another process) commits.
    data_version: i64,
    counters: Arc<Counters>,
    /// When the oldest commit not yet on disk was made: a deferred one that
    /// no durable commit has synced since.
    unsynced: Option<Instant>,
    /// The write-ahead log, opened the first time the writer syncs it
    /// itself, and kept open (closing a file descriptor of a file drops
    /// the process's POSIX locks on it).
    wal: Option<File>,
    /// Why the writer must stop after answering the batch at hand.
    stopping: Option<String>,
}

/// What a request came to, kept until the transaction's fate is known.
enum Outcome {
    Version(Result<u64, StoreError>),
    Flag(Result<bool, StoreError>),
    Value(Result<Box<dyn Any + Send>, StoreError>),
}

impl Outcome {
    fn is_err(&self) -> bool {
        matches!(
            self,
            Outcome::Version(Err(_)) | Outcome::Flag(Err(_)) | Outcome::Value(Err(_))
        )
    }

    /// True when the request failed in a way that may have left some of
    /// its writes behind: without a savepoint, only the whole transaction
    /// can undo them.
    fn may_have_written(&self) -> bool {
        let error = match self {
            Outcome::Version(Err(error)) => error,
            Outcome::Flag(Err(error)) => error,
            Outcome::Value(Err(error)) => error,
            _ => return false,
        };
        // Both are found before a request writes anything.
        !matches!(
            error,
            StoreError::Conflict { .. } | StoreError::NotFound { .. }
        )
    }
}

impl Request {
    /// Sends `outcome`, the answer to this request.
    fn answer(self, outcome: Outcome) {
        // A caller that stopped waiting (its future was dropped) needs no
        // answer; what was committed stays committed.
        match (self, outcome) {
            (Request::Append(_, reply), Outcome::Version(result)) => drop(reply.send(result)),
            (Request::UseGrant(_, reply), Outcome::Flag(result)) => drop(reply.send(result)),
            (Request::Plain(_, reply), Outcome::Value(result)) => drop(reply.send(result)),
            (request, _) => request.fail("the store's writer mixed up its answers"),
        }
    }

    /// Answers this request with a failure: its transaction did not commit.
    fn fail(self, why: &str) {
        match self {
            Request::Append(_, reply) => drop(reply.send(Err(failure(why)))),
            Request::UseGrant(_, reply) => drop(reply.send(Err(failure(why)))),
            Request::Plain(_, reply) => drop(reply.send(Err(failure(why)))),
        }
    }
}

/// Why a batch's transaction did not commit.
enum Abandoned {
    /// The transaction is lost: every request of the batch fails.
    Lost(String),
    /// A request failed after writing, without a savepoint to undo only
    /// it; the transaction was rolled back, and the batch must run again
    /// with savepoints.
    NeedsSavepoints,
}

fn failure(why: &str) -> StoreError {
    StoreError::Backend(why.to_owned().into())
}

/// Starts the writer thread on an opened (and migrated) connection.
pub(crate) fn spawn(
    opened: Opened,
    path: &Path,
    counters: Arc<Counters>,
) -> Result<(mpsc::Sender<Request>, JoinHandle<()>), StoreError> {
    let Opened { conn, signer } = opened;
    // Every statement the writer runs stays prepared, those of the
    // transaction and savepoints included.
    conn.set_prepared_statement_cache_capacity(32);
    let head = read_head(&conn, path)?;
    let data_version = data_version(&conn).map_err(|error| {
        sqlite_failed(format!("cannot open the store {}", path.display()), &error)
    })?;
    let writer = Writer {
        conn,
        path: path.to_path_buf(),
        signer,
        head,
        data_version,
        counters,
        unsynced: None,
        wal: None,
        stopping: None,
    };
    let (sender, receiver) = mpsc::channel(QUEUE);
    let thread = std::thread::Builder::new()
        .name("toolgate-store-writer".to_owned())
        .spawn(move || writer.run(receiver))
        .map_err(|error| failed("cannot start the store's writer thread", error))?;
    Ok((sender, thread))
}

impl Writer {
    /// Serves requests until every sender is gone (the store was dropped).
    fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        // Waiting for a request with a time limit, while a deferred commit
        // is not yet on disk, takes a runtime's timer.
        let timer = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(timer) => timer,
            Err(error) => {
                eprintln!(
                    "toolgate: the writer of the store {} cannot start its timer: {error}",
                    self.path.display()
                );
                return;
            }
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let next = match self.unsynced {
                None => requests.blocking_recv(),
                Some(since) => {
                    let left = (since + DEFERRED_SYNC).saturating_duration_since(Instant::now());
                    // The timer must be made inside the runtime.
                    let next =
                        timer.block_on(async { tokio::time::timeout(left, requests.recv()).await });
                    match next {
                        Ok(next) => next,
                        Err(_) => {
                            self.sync_wal();
                            continue;
                        }
                    }
                }
            };
            let Some(first) = next else { break };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.commit(&mut batch);
            if let Some(why) = self.stopping.take() {
                eprintln!("toolgate: the store's writer stops: {why}");
                break;
            }
            if self
                .unsynced
                .is_some_and(|since| since.elapsed() >= DEFERRED_SYNC)
            {
                self.sync_wal();
            }
        }
        if self.unsynced.is_some() {
            self.sync_wal();
        }
    }

    /// Syncs the write-ahead log, which makes every commit in it durable.
    fn sync_wal(&mut self) {
        let mut path = self.path.clone().into_os_string();
        path.push("-wal");
        let synced = match &self.wal {
            Some(wal) => wal.sync_data(),
            None => File::open(&path).and_then(|wal| {
                wal.sync_data()?;
                self.wal = Some(wal);
                Ok(())
            }),
        };
        match synced {
            Ok(()) => {
                self.unsynced = None;
                self.counters.syncs.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                // Tried again after another wait; the next durable commit
                // syncs the log too, or fails and says why.
                self.wal = None;
                self.unsynced = Some(Instant::now());
                eprintln!(
                    "toolgate: cannot sync the store's log {}: {error}; the outcomes recorded \
                     last are not yet safe from a crash of the machine",
                    Path::new(&path).display()
                );
            }
        }
    }

    /// Runs a batch in one transaction and answers each request once the
    /// transaction's fate is known.
    ///
    /// Requests almost never fail after they have written (a conflict is
    /// found before anything is written), so the batch first runs without
    /// savepoints, which cost a statement each and a copy of every page a
    /// request touches. If one does fail after writing, the transaction is
    /// rolled back and the batch runs again, each request in its own
    /// savepoint, so that only that request is undone.
    fn commit(&mut self, batch: &mut Vec<Request>) {
        let size = batch.len() as u64;
        self.counters.requests.fetch_add(size, Ordering::Relaxed);
        self.counters.largest.fetch_max(size, Ordering::Relaxed);
        let now = toolgate_core::time::to_millis(SystemTime::now());
        // One durable request makes the whole batch durable, and with it
        // every deferred commit before it.
        let deferred = batch
            .iter()
            .all(|request| matches!(request, Request::Append(append, _) if append.deferred));
        if deferred && let Err(error) = self.statement("PRAGMA synchronous = NORMAL") {
            let why = self.cannot_write(&error);
            batch.drain(..).for_each(|r| r.fail(&why));
            return;
        }
        let result = match self.transaction(batch, now, false) {
            Err(Abandoned::NeedsSavepoints) => self.transaction(batch, now, true),
            other => other,
        };
        if deferred && let Err(error) = self.statement("PRAGMA synchronous = FULL") {
            // The writer must not go on without full durability: it stops
            // once this batch is answered.
            self.stopping = Some(format!(
                "the store {} cannot return to full durability: {}",
                self.path.display(),
                sqlite_error(&error)
            ));
        }
        if result.is_ok() {
            if deferred {
                self.unsynced.get_or_insert_with(Instant::now);
            } else {
                self.unsynced = None;
                self.counters.syncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        match result {
            Ok(outcomes) => {
                for (request, outcome) in batch.drain(..).zip(outcomes) {
                    request.answer(outcome);
                }
            }
            Err(Abandoned::Lost(why)) => batch.drain(..).for_each(|r| r.fail(&why)),
            Err(Abandoned::NeedsSavepoints) => batch
                .drain(..)
                .for_each(|r| r.fail("the store's writer could not isolate a failed write")),
        }
    }

    /// Runs every request of `batch` in one transaction and commits it;
    /// with `savepoints`, each request in its own.
    fn transaction(
        &mut self,
        batch: &[Request],
        now: i64,
        savepoints: bool,
    ) -> Result<Vec<Outcome>, Abandoned> {
        self.begin().map_err(Abandoned::Lost)?;
        let mut head = self.head;
        // Set when the transaction as a whole is lost: every request of
        // the batch then fails, whatever it came to on its own.
        let mut lost: Option<String> = None;
        let mut outcomes = Vec::with_capacity(batch.len());
        for request in batch {
            let changes = self.conn.total_changes();
            let outcome = match request {
                Request::Append(append, _) => Outcome::Version(self.request(
                    savepoints,
                    &mut head,
                    &mut lost,
                    |conn, signer, head| append_events(conn, signer, head, append, now),
                )),
                Request::UseGrant(id, _) => Outcome::Flag(self.request(
                    savepoints,
                    &mut head,
                    &mut lost,
                    |conn, _, _| use_grant(conn, id),
                )),
                Request::Plain(write, _) => Outcome::Value(self.request(
                    savepoints,
                    &mut head,
                    &mut lost,
                    |conn, signer, head| write(conn, &mut Audit { signer, head, now }),
                )),
            };
            // The counter of rows changed is a second witness that a failed
            // request wrote nothing.
            if !savepoints
                && (outcome.may_have_written()
                    || (outcome.is_err() && self.conn.total_changes() != changes))
            {
                self.rollback();
                return Err(Abandoned::NeedsSavepoints);
            }
            outcomes.push(outcome);
            if lost.is_some() {
                break;
            }
        }
        if lost.is_none()
            && let Err(error) = self.statement("COMMIT")
        {
            lost = Some(self.cannot_write(&error));
        }
        match lost {
            None => {
                self.head = head;
                self.counters.transactions.fetch_add(1, Ordering::Relaxed);
                Ok(outcomes)
            }
            Some(why) => {
                self.rollback();
                Err(Abandoned::Lost(why))
            }
        }
    }

    /// Undoes the transaction, if SQLite has not already.
    fn rollback(&self) {
        if !self.conn.is_autocommit() {
            // Nothing of the batch may stay; if even the rollback fails,
            // SQLite undoes the transaction when the connection next
            // starts one.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// Runs a statement without parameters or rows, kept prepared.
    fn statement(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }

    /// Starts the batch's transaction, taking the write lock now (a
    /// deferred transaction could fail to upgrade halfway through), and
    /// reads the audit head again if another process committed meanwhile.
    fn begin(&mut self) -> Result<(), String> {
        self.statement("BEGIN IMMEDIATE")
            .map_err(|error| self.cannot_write(&error))?;
        let head = data_version(&self.conn)
            .map_err(|error| self.cannot_write(&error))
            .and_then(|version| {
                if version == self.data_version {
                    return Ok(None);
                }
                let head = read_head(&self.conn, &self.path).map_err(|error| error.to_string())?;
                Ok(Some((head, version)))
            });
        match head {
            Ok(None) => Ok(()),
            Ok(Some((head, version))) => {
                self.head = head;
                self.data_version = version;
                Ok(())
            }
            Err(why) => {
                self.rollback();
                Err(why)
            }
        }
    }

    /// Runs one request, in its own savepoint if `savepoint`: on success
    /// its changes and audit entries join the batch; on failure, in a
    /// savepoint, they are undone and the batch goes on without them.
    fn request<T>(
        &mut self,
        savepoint: bool,
        head: &mut Head,
        lost: &mut Option<String>,
        work: impl FnOnce(&Connection, &Signer32, &mut Head) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if !savepoint {
            let mut next = *head;
            let result = work(&self.conn, &self.signer, &mut next);
            if result.is_ok() {
                *head = next;
            }
            return result;
        }
        if let Err(error) = self.statement("SAVEPOINT request") {
            return Err(self.lose(lost, &error));
        }
        let mut next = *head;
        match work(&self.conn, &self.signer, &mut next) {
            Ok(value) => match self.statement("RELEASE request") {
                Ok(()) => {
                    *head = next;
                    Ok(value)
                }
                Err(error) => Err(self.lose(lost, &error)),
            },
            Err(error) => {
                if self.conn.is_autocommit() {
                    // Some errors (a full disk, an I/O error) make SQLite
                    // roll back the whole transaction by itself.
                    *lost = Some(format!(
                        "the write to the store {} was rolled back: {error}",
                        self.path.display()
                    ));
                } else if let Err(rollback) = self
                    .conn
                    .execute_batch("ROLLBACK TO request; RELEASE request")
                {
                    self.lose(lost, &rollback);
                }
                Err(error)
            }
        }
    }

    /// What a write that failed with `error` tells its callers.
    fn cannot_write(&self, error: &rusqlite::Error) -> String {
        format!(
            "cannot write to the store {}: {}",
            self.path.display(),
            sqlite_error(error)
        )
    }

    /// Marks the batch's transaction as lost because of `error`.
    fn lose(&self, lost: &mut Option<String>, error: &rusqlite::Error) -> StoreError {
        let why = self.cannot_write(error);
        let error = failure(&why);
        *lost = Some(why);
        error
    }
}

fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("PRAGMA data_version")?
        .query_row([], |row| row.get(0))
}

/// The audit log's last entry; all zeros before the first.
fn read_head(conn: &Connection, path: &Path) -> Result<Head, StoreError> {
    let last: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(|error| {
            sqlite_failed(
                format!("cannot read the audit log of {}", path.display()),
                &error,
            )
        })?;
    let Some((seq, hash)) = last else {
        return Ok(Head {
            seq: 0,
            hash: [0; 32],
        });
    };
    let hash: [u8; 32] = hash.try_into().map_err(|hash: Vec<u8>| {
        corrupt(format!(
            "audit entry {seq} of {} has a hash of {} bytes instead of 32",
            path.display(),
            hash.len()
        ))
    })?;
    Ok(Head {
        seq: u64::try_from(seq).map_err(|_| {
            corrupt(format!(
                "the audit log of {} has entry number {seq}",
                path.display()
            ))
        })?,
        hash,
    })
}

/// Adds one entry to the audit log (and so, for run events, to the run's
/// log), chained to `head`, which then points at it. The body is its JSON
/// text (which is hashed) and its form as stored. A run event's time is
/// stored as the milliseconds since its run's `created_at` (a number of a
/// byte or two rather than six), `run`'s last field; others' as it is.
fn insert_entry(
    conn: &Connection,
    signer: &Signer32,
    head: &mut Head,
    run: Option<(&str, i64, u64, i64)>,
    at: i64,
    kind: &str,
    (body, stored): (&str, &[u8]),
) -> rusqlite::Result<()> {
    let seq = head.seq + 1;
    let hash = entry_hash(&head.hash, seq, at, run.map(|(id, ..)| id), kind, body);
    let base = run.map_or(0, |(.., created_at)| created_at);
    let signature = is_signed_kind(kind).then(|| signer.sign(&hash));
    conn.prepare_cached(
        "INSERT INTO events (seq, run, run_seq, at, kind, body, hash, signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        seq as i64,
        run.map(|(_, rid, ..)| rid),
        run.map(|(_, _, run_seq, _)| run_seq as i64),
        at.wrapping_sub(base),
        codes::kind_value(kind),
        stored,
        &hash[..],
        signature.as_ref().map(|s| &s[..]),
    ])?;
    *head = Head { seq, hash };
    Ok(())
}

/// A run's row as the writer finds it before an append.
struct StoredRun {
    rid: i64,
    created_at: i64,
    status: Value,
    thread: Option<String>,
    prompt: String,
    /// The length of its log.
    version: i64,
}

/// [`toolgate_core::store::Store::append`], inside the batch's transaction.
fn append_events(
    conn: &Connection,
    signer: &Signer32,
    head: &mut Head,
    append: &PreparedAppend,
    now: i64,
) -> Result<u64, StoreError> {
    let run = &append.run;
    let what = || format!("cannot append to run {}", run.id);
    let sql = |error: rusqlite::Error| sqlite_failed(what(), &error);
    // The log's length is its last event's place in it: one index lookup.
    // The run's creation time is what its events' times are stored from;
    // its row as it stands tells what the update changes.
    let stored: Option<StoredRun> = conn
        .prepare_cached(
            "SELECT r.rid, r.created_at, r.status, r.thread, r.prompt,
                    (SELECT e.run_seq FROM events e WHERE e.run = r.rid
                     ORDER BY e.run_seq DESC LIMIT 1)
             FROM runs r WHERE r.id = ?1",
        )
        .and_then(|mut statement| {
            statement
                .query_row([&append.run_key], |row| {
                    Ok(StoredRun {
                        rid: row.get(0)?,
                        created_at: row.get(1)?,
                        status: row.get(2)?,
                        thread: row.get(3)?,
                        prompt: row.get(4)?,
                        version: row.get::<_, Option<i64>>(5)?.unwrap_or(0),
                    })
                })
                .optional()
        })
        .map_err(sql)?;
    let actual = stored.as_ref().map_or(0, |stored| stored.version as u64);
    if actual != append.expected_version {
        return Err(StoreError::Conflict {
            run_id: run.id.clone(),
            expected: append.expected_version,
            actual,
        });
    }
    // A run's creation time is its first append's: the times of its
    // events and its `updated_at` are stored from it.
    let created_at = stored.as_ref().map_or(run.created_at, |s| s.created_at);
    let status = codes::run_status_value(&run.status);
    let updated_at = run.updated_at.wrapping_sub(created_at);
    let rid = match stored {
        None => conn
            .prepare_cached(
                "INSERT INTO runs (id, status, thread, prompt, created_at, updated_at, version,
                     lease_owner, lease_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    append.run_key,
                    status,
                    run.thread,
                    run.prompt,
                    run.created_at,
                    updated_at,
                    run.version as i64,
                    append.lease.as_ref().map(|(owner, _)| owner),
                    append.lease.as_ref().map(|(_, until)| until),
                ])
            })
            .map(|_| conn.last_insert_rowid())
            .map_err(sql)?,
        // Most appends change only the version and the time: an update of
        // those two leaves the status index alone.
        Some(stored)
            if stored.status == status
                && stored.thread == run.thread
                && stored.prompt == run.prompt =>
        {
            conn.prepare_cached("UPDATE runs SET updated_at = ?2, version = ?3 WHERE rid = ?1")
                .and_then(|mut statement| {
                    statement.execute(params![stored.rid, updated_at, run.version as i64])
                })
                .map_err(sql)?;
            stored.rid
        }
        Some(stored) => {
            conn.prepare_cached(
                "UPDATE runs SET status = ?2, thread = ?3, prompt = ?4, updated_at = ?5,
                     version = ?6
                 WHERE rid = ?1",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    stored.rid,
                    status,
                    run.thread,
                    run.prompt,
                    updated_at,
                    run.version as i64,
                ])
            })
            .map_err(sql)?;
            stored.rid
        }
    };
    for (index, (kind, body, prepared)) in append.events.iter().enumerate() {
        let run_seq = append.expected_version + index as u64 + 1;
        let stored = prepared
            .stored(|part| part_id(conn, part).map_err(|error| sqlite_error(&error)))
            .map_err(|why| StoreError::Backend(format!("{}: {why}", what()).into()))?;
        insert_entry(
            conn,
            signer,
            head,
            Some((&run.id, rid, run_seq, created_at)),
            now,
            kind,
            (body, &stored),
        )
        .map_err(sql)?;
    }
    for (row, args, approvers, key, fingerprint) in &append.approvals {
        // The WHERE keeps an approval in the run it was made in: an id
        // that another run's approval has already is refused below. Its
        // creation time stays its first row's, so that a decision leaves
        // the index by run alone (an update rewrites the index entries of
        // every column it sets).
        let changed = conn
            .prepare_cached(
                "INSERT INTO approvals (id, run, call_id, tool, args, fingerprint, status, rule,
                     quorum, approvers, created_at, expires_at, decided_by, decided_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (id) DO UPDATE SET
                     call_id = excluded.call_id, tool = excluded.tool, args = excluded.args,
                     fingerprint = excluded.fingerprint, status = excluded.status,
                     rule = excluded.rule, quorum = excluded.quorum,
                     approvers = excluded.approvers,
                     expires_at = excluded.expires_at, decided_by = excluded.decided_by,
                     decided_at = excluded.decided_at
                 WHERE approvals.run = excluded.run",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    key,
                    rid,
                    row.call_id,
                    row.tool,
                    args,
                    fingerprint,
                    codes::status_code(row.status),
                    row.rule,
                    row.quorum,
                    approvers,
                    row.created_at,
                    row.expires_at,
                    row.decided_by,
                    row.decided_at,
                ])
            })
            .map_err(sql)?;
        if changed == 0 {
            return Err(StoreError::Backend(
                format!("{}: approval {} belongs to another run", what(), row.id).into(),
            ));
        }
    }
    for (grant, scope) in &append.grants {
        conn.prepare_cached(
            "INSERT INTO grants (id, tool, condition, scope, uses_left, created_by, created_at,
                 approval_id, revoked_by, revoked_at, ends_at, reach)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                grant.id,
                grant.tool,
                grant.when,
                scope,
                grant.uses_left,
                grant.created_by,
                grant.created_at,
                grant.approval_id,
                grant.revoked.as_ref().map(|r| &r.by),
                grant.revoked.as_ref().map(|r| r.at),
                grant.ends_at(),
                crate::reach::key(&grant.scope),
            ])
        })
        .map_err(|error| sqlite_failed(format!("{}: grant {}", what(), grant.id), &error))?;
    }
    Ok(append.expected_version + append.events.len() as u64)
}

/// The id of `part` in `parts`, added if it is not there yet.
fn part_id(conn: &Connection, part: &body::Part) -> rusqlite::Result<i64> {
    let known: Option<i64> = conn
        .prepare_cached("SELECT id FROM parts WHERE hash = ?1")?
        .query_row([&part.hash[..]], |row| row.get(0))
        .optional()?;
    if let Some(id) = known {
        return Ok(id);
    }
    conn.prepare_cached("INSERT INTO parts (hash, text) VALUES (?1, ?2)")?
        .execute(params![&part.hash[..], part.text])?;
    Ok(conn.last_insert_rowid())
}

/// [`toolgate_core::store::Store::use_grant`]: one statement takes a use,
/// so two callers can never both take the last one.
fn use_grant(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    let what = || format!("cannot use grant {id}");
    let taken = conn
        .prepare_cached(
            "UPDATE grants SET uses_left = uses_left - 1
             WHERE id = ?1 AND revoked_at IS NULL AND uses_left > 0",
        )
        .and_then(|mut statement| statement.execute([id]))
        .map_err(|error| sqlite_failed(what(), &error))?;
    if taken > 0 {
        return Ok(true);
    }
    let grant: Option<(Option<i64>, Option<i64>)> = conn
        .prepare_cached("SELECT uses_left, revoked_at FROM grants WHERE id = ?1")
        .and_then(|mut statement| {
            statement
                .query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(|error| sqlite_failed(what(), &error))?;
    match grant {
        None => Err(StoreError::NotFound {
            what: "grant",
            id: id.to_owned(),
        }),
        // Not revoked, and not counted: always usable.
        Some((None, None)) => Ok(true),
        // Revoked, or used up.
        Some(_) => Ok(false),
    }
}

/// [`toolgate_core::store::Store::revoke_grant`]: marks the grant and
/// records who revoked it in the audit log, signed.
pub(crate) fn revoke_grant(
    conn: &Connection,
    audit: &mut Audit<'_>,
    id: &str,
    by: &str,
    at: i64,
) -> Result<bool, StoreError> {
    audit.revoke(
        conn,
        ("grant", id),
        "UPDATE grants SET revoked_by = ?2, revoked_at = ?3
         WHERE id = ?1 AND revoked_at IS NULL",
        params![id, by, at],
        ("grant_revoked", &crate::json::grant_revoked(id, by, at)),
    )
}
