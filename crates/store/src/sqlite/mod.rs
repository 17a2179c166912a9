//! [`SqliteStore`]: the store in one SQLite file.
//!
//! One writer thread owns the write connection and commits appends in
//! groups (see `writer`); reads run on a small pool of read connections
//! beside it (see `read`). The schema and its migrations are in `schema`.

mod body;
mod codes;
mod error;
mod leases;
mod outbox;
mod read;
mod schema;
mod tokens;
mod writer;

use std::any::Any;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use toolgate_core::audit::AuditEntry;
use toolgate_core::grant::Grant;
use toolgate_core::run::ApprovalStatus;
use toolgate_core::store::{
    Append, ApprovalQuery, ApprovalRow, Delivery, DeliveryAttempt, DeliveryClaim, DeliveryNext,
    DeliveryQuery, DeliveryStatus, GrantQuery, Lease, NewDelivery, RunQuery, RunRow, Store,
    StoreError, StoredEvent, TokenRecord,
};

use self::read::Readers;
use self::writer::{Counters, PreparedAppend, Request};

/// The store in one SQLite file: embedded, zero set-up.
///
/// Appends are durable when they return (the write-ahead log is synced at
/// every commit), and concurrent appends share commits, so that many runs
/// can write at once without each waiting for its own sync. Reads run
/// beside writes.
///
/// The file also holds the store's Ed25519 signing key, made when the
/// store is created: anyone who can read the file can sign as the store,
/// so it is created readable by its owner only.
///
/// One process should write a store at a time; a second one (a command
/// line tool deciding an approval, say) is safe but waits for the first's
/// commits. For several processes or hosts, use PostgreSQL.
///
/// Listing limits of 0 mean 50, for [`Store::audit`] too.
pub struct SqliteStore {
    path: PathBuf,
    /// `None` only while dropping, to stop the writer.
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    readers: Arc<Readers>,
    public_key: [u8; 32],
    counters: Arc<Counters>,
}

/// How well group commit is grouping, since the store was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Write requests served (appends, grant uses and revocations).
    pub requests: u64,
    /// Transactions committed.
    pub transactions: u64,
    /// Times the log was synced to disk: each durable transaction, and the
    /// writer's own syncs of deferred ones that no durable one covered in
    /// time.
    pub syncs: u64,
    /// The most requests one transaction held.
    pub largest_batch: u64,
}

impl SqliteStore {
    /// Opens the store in the file at `path`, creating it (and its parent
    /// directories) if it does not exist, and upgrading its schema if an
    /// older toolgate wrote it.
    ///
    /// # Errors
    ///
    /// The path is a directory, the file cannot be read or written, it is
    /// not a toolgate store (another file, or another program's SQLite
    /// database), or a newer toolgate wrote it.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        create_file(&path)?;
        let opened = schema::open_writer(&path)?;
        let public_key = opened.signer.public_key();
        let counters = Arc::new(Counters::default());
        let (requests, writer) = writer::spawn(opened, &path, Arc::clone(&counters))?;
        Ok(SqliteStore {
            readers: Arc::new(Readers::new(&path)),
            path,
            requests: Some(requests),
            writer: Some(writer),
            public_key,
            counters,
        })
    }

    /// The file the store is in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How well group commit is grouping: requests per transaction.
    pub fn writer_stats(&self) -> WriterStats {
        WriterStats {
            requests: self.counters.requests.load(Ordering::Relaxed),
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            syncs: self.counters.syncs.load(Ordering::Relaxed),
            largest_batch: self.counters.largest.load(Ordering::Relaxed),
        }
    }

    /// Asks the writer to do something, and waits until it is committed
    /// (or has failed).
    async fn write<T>(
        &self,
        request: impl FnOnce(writer::Reply<T>) -> Request,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || {
            StoreError::Backend(
                format!(
                    "the writer of the store {} has stopped (it failed; see the messages \
                     before this one); open the store again",
                    self.path.display()
                )
                .into(),
            )
        };
        let requests = self.requests.as_ref().ok_or_else(stopped)?;
        requests.send(request(reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl SqliteStore {
    /// Runs a write outside runs that adds no audit entry on the writer
    /// thread, in the batch's transaction.
    async fn plain<T: Send + 'static>(
        &self,
        write: impl Fn(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.audited(move |conn, _| write(conn)).await
    }

    /// Runs a write outside runs that may add audit entries on the writer
    /// thread, in the batch's transaction.
    async fn audited<T: Send + 'static>(
        &self,
        write: impl Fn(&rusqlite::Connection, &mut writer::Audit<'_>) -> Result<T, StoreError>
        + Send
        + 'static,
    ) -> Result<T, StoreError> {
        let boxed: writer::PlainWrite = Box::new(move |conn, audit| {
            write(conn, audit).map(|value| Box::new(value) as Box<dyn Any + Send>)
        });
        let value = self.write(|reply| Request::Plain(boxed, reply)).await?;
        value.downcast::<T>().map(|value| *value).map_err(|_| {
            StoreError::Backend("the store's writer answered with a value of the wrong type".into())
        })
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("public_key", &toolgate_core::audit::hex(&self.public_key))
            .finish_non_exhaustive()
    }
}

impl Drop for SqliteStore {
    /// Stops the writer and waits for it, so that the file is closed (and
    /// its write-ahead log checkpointed) when the store is gone. Nothing
    /// is lost either way: every acknowledged append is committed already.
    fn drop(&mut self) {
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn append(&self, append: Append) -> Result<u64, StoreError> {
        let append = Box::new(PreparedAppend::new(append)?);
        self.write(|reply| Request::Append(append, reply)).await
    }

    async fn append_deferred(&self, append: Append) -> Result<u64, StoreError> {
        let mut append = Box::new(PreparedAppend::new(append)?);
        append.deferred = true;
        self.write(|reply| Request::Append(append, reply)).await
    }

    async fn load(&self, run_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let run_id = run_id.to_owned();
        self.readers
            .quick(move |conn| read::load(conn, &run_id, 0))
            .await
    }

    async fn load_since(&self, run_id: &str, after: u64) -> Result<Vec<StoredEvent>, StoreError> {
        let run_id = run_id.to_owned();
        self.readers
            .quick(move |conn| read::load(conn, &run_id, after))
            .await
    }

    async fn runs(&self, query: &RunQuery) -> Result<Vec<RunRow>, StoreError> {
        let query = query.clone();
        self.readers.run(move |conn| read::runs(conn, &query)).await
    }

    async fn approvals(&self, query: &ApprovalQuery) -> Result<Vec<ApprovalRow>, StoreError> {
        let query = query.clone();
        self.readers
            .run(move |conn| read::approvals(conn, &query))
            .await
    }

    async fn due_approvals(&self, now: i64, limit: usize) -> Result<Vec<ApprovalRow>, StoreError> {
        self.readers
            .run(move |conn| read::due_approvals(conn, now, limit))
            .await
    }

    async fn approval(&self, id: &str) -> Result<ApprovalRow, StoreError> {
        let id = id.to_owned();
        self.readers
            .quick(move |conn| read::approval(conn, &id))
            .await
    }

    async fn approval_with_log(
        &self,
        id: &str,
    ) -> Result<(ApprovalRow, Vec<StoredEvent>), StoreError> {
        let id = id.to_owned();
        self.readers
            .quick(move |conn| read::approval_with_log(conn, &id))
            .await
    }

    async fn grants(&self, query: &GrantQuery) -> Result<Vec<Grant>, StoreError> {
        let query = query.clone();
        // A gate's read, of the few live grants that reach one run, is a
        // lookup of some index entries like a read by key; listings of
        // every grant are not.
        if query.live_at.is_some() && query.reaching.is_some() {
            return self
                .readers
                .quick(move |conn| read::grants(conn, &query))
                .await;
        }
        self.readers
            .run(move |conn| read::grants(conn, &query))
            .await
    }

    async fn grant(&self, id: &str) -> Result<Grant, StoreError> {
        let id = id.to_owned();
        self.readers.quick(move |conn| read::grant(conn, &id)).await
    }

    async fn use_grant(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(|reply| Request::UseGrant(id, reply)).await
    }

    async fn revoke_grant(&self, id: &str, by: &str, at: i64) -> Result<bool, StoreError> {
        let (id, by) = (id.to_owned(), by.to_owned());
        self.audited(move |conn, audit| writer::revoke_grant(conn, audit, &id, &by, at))
            .await
    }

    async fn audit(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.readers
            .run(move |conn| read::audit(conn, after, limit))
            .await
    }

    async fn public_key(&self) -> Result<[u8; 32], StoreError> {
        Ok(self.public_key)
    }

    async fn audit_head(&self) -> Result<u64, StoreError> {
        self.readers.quick(tokens::audit_head).await
    }

    async fn approval_count(&self, status: ApprovalStatus) -> Result<u64, StoreError> {
        self.readers
            .run(move |conn| tokens::approval_count(conn, status))
            .await
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let token = token.clone();
        self.audited(move |conn, audit| tokens::create(conn, audit, &token))
            .await
            .map(drop)
    }

    async fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        let hash = *hash;
        self.readers
            .quick(move |conn| tokens::by_hash(conn, &hash))
            .await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.readers.run(tokens::all).await
    }

    async fn token(&self, id: &str) -> Result<TokenRecord, StoreError> {
        let id = id.to_owned();
        self.readers
            .quick(move |conn| tokens::by_id(conn, &id))
            .await
    }

    async fn revoke_token(&self, id: &str, by: &str, at: i64) -> Result<bool, StoreError> {
        let (id, by) = (id.to_owned(), by.to_owned());
        self.audited(move |conn, audit| tokens::revoke(conn, audit, &id, &by, at))
            .await
    }

    async fn lease_run(
        &self,
        run_id: &str,
        owner: &str,
        until: i64,
        now: i64,
    ) -> Result<Lease, StoreError> {
        let (run_id, owner) = (run_id.to_owned(), owner.to_owned());
        self.plain(move |conn| leases::lease(conn, &run_id, &owner, until, now))
            .await
    }

    async fn release_run(&self, run_id: &str, owner: &str) -> Result<(), StoreError> {
        let (run_id, owner) = (run_id.to_owned(), owner.to_owned());
        self.plain(move |conn| leases::release(conn, &run_id, &owner))
            .await
    }

    async fn claim_ready_runs(
        &self,
        owner: &str,
        until: i64,
        now: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let owner = owner.to_owned();
        self.plain(move |conn| leases::claim_ready(conn, &owner, until, now, limit))
            .await
    }

    async fn webhook_cursor(&self, webhook: &str, start: u64) -> Result<u64, StoreError> {
        let webhook = webhook.to_owned();
        self.plain(move |conn| outbox::cursor(conn, &webhook, start))
            .await
    }

    async fn enqueue_deliveries(
        &self,
        webhook: &str,
        through: u64,
        deliveries: &[NewDelivery],
    ) -> Result<usize, StoreError> {
        let webhook = webhook.to_owned();
        let deliveries = deliveries.to_vec();
        self.plain(move |conn| outbox::enqueue(conn, &webhook, through, &deliveries))
            .await
    }

    async fn claim_deliveries(&self, claim: &DeliveryClaim) -> Result<Vec<Delivery>, StoreError> {
        let claim = claim.clone();
        self.plain(move |conn| outbox::claim(conn, &claim)).await
    }

    async fn record_attempt(
        &self,
        id: &str,
        claimer: &str,
        attempt: &DeliveryAttempt,
        next: DeliveryNext,
    ) -> Result<bool, StoreError> {
        let (id, claimer, attempt) = (id.to_owned(), claimer.to_owned(), attempt.clone());
        self.plain(move |conn| outbox::record(conn, &id, &claimer, &attempt, next))
            .await
    }

    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError> {
        let query = query.clone();
        self.readers
            .run(move |conn| outbox::list(conn, &query))
            .await
    }

    async fn redeliver(&self, id: &str, now: i64) -> Result<DeliveryStatus, StoreError> {
        let id = id.to_owned();
        self.plain(move |conn| outbox::redeliver(conn, &id, now))
            .await
    }

    async fn prune_deliveries(&self, before: i64) -> Result<u64, StoreError> {
        // A chunk per transaction: other writes go on between them.
        let mut deleted = 0;
        loop {
            let chunk = self.plain(move |conn| outbox::prune(conn, before)).await?;
            deleted += chunk;
            if chunk < crate::PRUNE_CHUNK as u64 {
                return Ok(deleted);
            }
        }
    }
}

/// Makes sure `path` can be a store file: not a directory, with its
/// directory in place. A new file is created readable by its owner only,
/// since it will hold the signing key; SQLite gives its `-wal` and `-shm`
/// files the same permissions.
fn create_file(path: &Path) -> Result<(), StoreError> {
    let cannot = |why: String| {
        StoreError::Backend(format!("cannot open the store {}: {why}", path.display()).into())
    };
    if path.is_dir() {
        return Err(cannot(format!(
            "it is a directory; give the path of a file, such as {}",
            path.join("toolgate.db").display()
        )));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|error| {
            cannot(format!(
                "cannot create its directory {}: {error}",
                parent.display()
            ))
        })?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(cannot(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::types::Value;
    use rusqlite::{Connection, params_from_iter};
    use toolgate_core::run::ApprovalStatus;
    use toolgate_core::store::{ApprovalQuery, RunQuery};

    use super::*;

    /// SQLite's plan for a query, one step a line.
    fn plan(conn: &Connection, sql: &str, values: Vec<rusqlite::types::Value>) -> String {
        let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let steps = statement
            .query_map(params_from_iter(values), |row| row.get::<_, String>(3))
            .unwrap();
        steps.collect::<Result<Vec<_>, _>>().unwrap().join("\n")
    }

    #[test]
    fn listings_are_index_scans_without_a_sort() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("toolgate.db");
        let _store = SqliteStore::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        let pending = ApprovalQuery {
            statuses: vec![ApprovalStatus::Pending],
            ..ApprovalQuery::default()
        };
        let of_run = ApprovalQuery {
            run_id: Some("run-1".to_owned()),
            ..ApprovalQuery::default()
        };
        let of_run_pending = ApprovalQuery {
            statuses: vec![ApprovalStatus::Pending, ApprovalStatus::Approved],
            ..of_run.clone()
        };
        let code = |status| Value::Integer(codes::status_code(status));
        let one = [code(ApprovalStatus::Pending)];
        let three = [
            code(ApprovalStatus::Pending),
            code(ApprovalStatus::Approved),
            code(ApprovalStatus::Expired),
        ];
        let cases: [(ApprovalQuery, &[Value], _, &str); 7] = [
            (pending.clone(), &one, None, "approvals_by_status"),
            (
                pending.clone(),
                &one,
                Some((100, "a1")),
                "approvals_by_status",
            ),
            (ApprovalQuery::default(), &three, None, "MERGE"),
            (ApprovalQuery::default(), &three, Some((100, "a1")), "MERGE"),
            (ApprovalQuery::default(), &[], None, "approvals_by_status"),
            (of_run, &[], None, "approvals_by_run"),
            (of_run_pending, &three[..2], None, "approvals_by_run"),
        ];
        for (query, statuses, before, index) in cases {
            let (sql, values) = read::approvals_sql(&query, statuses, before);
            let plan = plan(&conn, &sql, values);
            println!("{query:?} {before:?}:\n{plan}\n");
            assert!(
                plan.contains(index),
                "{query:?} {before:?} uses {index}:\n{plan}"
            );
            // A run's listing sorts, by id, only the approvals its index
            // finds in one millisecond; others sort nothing.
            let sorts = plan.matches("TEMP B-TREE").count();
            let ties = plan
                .matches("TEMP B-TREE FOR LAST TERM OF ORDER BY")
                .count()
                + plan
                    .matches("TEMP B-TREE FOR RIGHT PART OF ORDER BY")
                    .count();
            if query.run_id.is_some() {
                assert_eq!((sorts, ties), (1, 1), "{query:?} {before:?}:\n{plan}");
            } else {
                assert_eq!(sorts, 0, "{query:?} {before:?} sorts:\n{plan}");
            }
            if statuses.len() > 1 && query.run_id.is_none() {
                assert_eq!(
                    plan.matches("approvals_by_status").count(),
                    statuses.len(),
                    "{plan}"
                );
            }
        }
        let runs = RunQuery::default();
        let statuses = [
            codes::run_status_value("waiting"),
            codes::run_status_value("completed"),
            Value::Text("paused".to_owned()),
        ];
        for statuses in [&statuses[..1], &statuses[..]] {
            let (sql, values) = read::runs_sql(&runs, statuses);
            let plan = plan(&conn, &sql, values);
            println!("{statuses:?}:\n{plan}\n");
            assert_eq!(
                plan.matches("runs_by_status").count(),
                statuses.len(),
                "{plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{statuses:?} sorts:\n{plan}");
        }
    }
}
