//! Group commit: one task per store commits the appends of all its callers,
//! several in one transaction.
//!
//! Every append holds the audit log's head lock from its first read to its
//! commit, and the commit waits for the WAL flush, so appends one at a
//! time are bounded by that wait: a few hundred a second, however many
//! tasks or processes append. So a store's appends go to one committing
//! task, which takes the first waiting append, drains whatever else is
//! queued (up to [`MAX_BATCH`]), and commits them in one transaction that
//! takes the head's lock once and flushes once. Processes still take
//! turns at the head, a batch each.
//!
//! Within a batch, each append's version is checked under the lock, and
//! against the appends before it in the batch for the same run: one that
//! does not match is answered with a conflict and left out, and the others
//! go on. Should a write fail (an approval id of another run, say), the
//! transaction is rolled back and each append of the batch runs again in
//! a transaction of its own, so that only the one at fault fails, with its
//! own error; a failure of the batch itself (the connection, the head's
//! lock) answers every append with it. A batch of deferred appends only
//! commits without waiting for the flush; one durable append makes the
//! whole batch durable.

use std::collections::HashMap;

use deadpool_postgres::{Object, Pool};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use toolgate_core::audit::Signer32;
use toolgate_core::store::StoreError;

use super::error::{failed, pg_error};
use super::{Entry, HEAD, INSERT_EVENT, STORE_HEAD, count, get, head_of};
use crate::json::AppendJson;

/// The most appends one transaction takes: enough to share a flush
/// widely, few enough that the first in a batch is not kept long.
const MAX_BATCH: usize = 64;

/// An append waiting for the committing task.
struct Job {
    append: AppendJson,
    deferred: bool,
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

/// What commits appends: the store's pool, where it points (for messages)
/// and its signing key.
#[derive(Clone)]
pub(crate) struct Writer {
    pub(crate) pool: Pool,
    pub(crate) target: String,
    pub(crate) signer: Signer32,
}

/// The queue to the committing task.
pub(crate) struct Committer {
    queue: mpsc::UnboundedSender<Job>,
    /// Commits here when the task is gone (its runtime shut down).
    writer: Writer,
}

impl Committer {
    /// Starts the committing task on the current runtime.
    pub(crate) fn start(writer: Writer) -> Committer {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(writer.clone().commit_queued(jobs));
        Committer { queue, writer }
    }

    /// What commits: the store's pool, where it points and its key.
    pub(crate) fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Commits `append` with the others waiting; its new version.
    pub(crate) async fn append(
        &self,
        append: AppendJson,
        deferred: bool,
    ) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            append,
            deferred,
            reply,
        };
        if let Err(mpsc::error::SendError(job)) = self.queue.send(job) {
            return self.writer.commit_one(&job.append, job.deferred).await;
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Backend(
                "the store's committing task stopped before it answered (its runtime is shutting \
                 down); the append may or may not have been made: read the run to know"
                    .into(),
            ))
        })
    }
}

/// Why a batch's transaction did not commit.
enum Failed {
    /// One append's write or values were refused; nothing was committed,
    /// so each append is tried again on its own.
    Refused(StoreError),
    /// The batch as a whole failed before it wrote (the connection, the
    /// head's lock, the versions): every append gets the error, and
    /// trying them one by one would only fail the same way, one at a time.
    Batch(StoreError),
    /// The commit itself failed: whether it took effect is unknown, so
    /// nothing is tried again.
    Commit(StoreError),
}

/// `error` again, for another append of the batch it failed. A batch
/// fails with a backend's error or corrupt data (conflicts are answered
/// one by one, never as a failure of the batch).
fn same_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Corrupt(message) => StoreError::Corrupt(message.clone()),
        StoreError::Backend(error) => StoreError::Backend(error.to_string().into()),
        other => StoreError::Backend(other.to_string().into()),
    }
}

/// One statement of an append, for what its failure says.
#[derive(Clone, Copy)]
enum Write<'a> {
    Run,
    Event,
    Approval(&'a str),
    Grant(&'a str),
    Head,
}

impl Writer {
    /// A connection from the pool.
    pub(crate) async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|error| {
            let why = match &error {
                deadpool_postgres::PoolError::Backend(error) => pg_error(error),
                other => other.to_string(),
            };
            StoreError::Backend(format!("cannot reach {}: {why}", self.target).into())
        })
    }

    /// The committing task: batch after batch until the store is dropped.
    async fn commit_queued(self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.commit_jobs(&mut batch).await;
        }
    }

    /// Commits `jobs` and answers each; leaves `jobs` empty.
    async fn commit_jobs(&self, jobs: &mut Vec<Job>) {
        let deferred = jobs.iter().all(|job| job.deferred);
        let appends: Vec<&AppendJson> = jobs.iter().map(|job| &job.append).collect();
        let outcome = self.commit(&appends, deferred).await;
        drop(appends);
        match outcome {
            Ok(versions) => {
                for (job, version) in jobs.drain(..).zip(versions) {
                    let _ = job.reply.send(version);
                }
            }
            Err(Failed::Refused(_)) if jobs.len() > 1 => {
                for job in jobs.drain(..) {
                    let answer = self.commit_one(&job.append, job.deferred).await;
                    let _ = job.reply.send(answer);
                }
            }
            Err(Failed::Refused(error) | Failed::Batch(error) | Failed::Commit(error)) => {
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(same_error(&error)));
                }
            }
        }
    }

    /// Commits `append` in a transaction of its own.
    pub(crate) async fn commit_one(
        &self,
        append: &AppendJson,
        deferred: bool,
    ) -> Result<u64, StoreError> {
        match self.commit(&[append], deferred).await {
            Ok(mut versions) => versions.pop().expect("one answer for one append"),
            Err(Failed::Refused(error) | Failed::Batch(error) | Failed::Commit(error)) => {
                Err(error)
            }
        }
    }

    /// One transaction for `appends`: each one's new version, or its
    /// conflict. See [`toolgate_core::store::Store::append`].
    ///
    /// The statements are pipelined: the head's lock and the runs'
    /// versions go out together, then every write with the head's move,
    /// then the commit (four round trips, whatever the number of appends
    /// and events). The server runs them in the order sent; the first that
    /// fails is the one reported.
    async fn commit(
        &self,
        appends: &[&AppendJson],
        deferred: bool,
    ) -> Result<Vec<Result<u64, StoreError>>, Failed> {
        // Messages name the run of the first append (the only one, unless
        // the batch is tried again append by append).
        let what = |run_id: &str| format!("cannot append to run {run_id}");
        let first = &appends[0].run.id;
        let sql = |error: tokio_postgres::Error| Failed::Batch(failed(what(first), &error));
        let mut client = self.client().await.map_err(Failed::Batch)?;
        let tx = client.transaction().await.map_err(sql)?;
        let head_sql = tx.prepare_cached(HEAD).await.map_err(sql)?;
        let version_sql = tx
            .prepare_cached(
                "SELECT coalesce(max(run_seq), 0)::bigint FROM events WHERE run_id = $1",
            )
            .await
            .map_err(sql)?;
        // The commit answers before the WAL is flushed; the WAL writer
        // flushes it soon after, as does any later durable commit.
        let relax = async {
            if deferred {
                tx.batch_execute("SET LOCAL synchronous_commit = off").await
            } else {
                Ok(())
            }
        };
        let mut runs: Vec<&str> = Vec::new();
        for append in appends {
            if !runs.contains(&append.run.id.as_str()) {
                runs.push(&append.run.id);
            }
        }
        let run_params: Vec<[&(dyn ToSql + Sync); 1]> = runs
            .iter()
            .map(|run| [run as &(dyn ToSql + Sync)])
            .collect();
        // First the head: every writer takes turns here, so the versions
        // read after it are what the last writer committed. Each query is
        // sent when it is first polled, and `join!` polls in order (as
        // `join_all` does its futures); the server runs them in the order
        // sent.
        let (relaxed, head, actual) = futures::join!(
            relax,
            tx.query_one(&head_sql, &[]),
            futures::future::join_all(
                run_params
                    .iter()
                    .map(|params| tx.query_one(&version_sql, params))
            )
        );
        relaxed.map_err(sql)?;
        let mut head = head_of(&head.map_err(sql)?).map_err(Failed::Batch)?;
        let mut versions: HashMap<&str, u64> = HashMap::with_capacity(runs.len());
        for (run, actual) in runs.iter().zip(actual) {
            let log = || format!("the log of run {run}");
            let actual: i64 = get(&actual.map_err(sql)?, 0, &log).map_err(Failed::Batch)?;
            versions.insert(run, count(actual, &log).map_err(Failed::Batch)?);
        }

        // Each append in turn: the ones whose version matches (the log as
        // committed, and the batch's appends before it) go in.
        let mut answers: Vec<Result<u64, StoreError>> = Vec::with_capacity(appends.len());
        let mut taken: Vec<&AppendJson> = Vec::with_capacity(appends.len());
        for append in appends {
            let run = &append.run;
            let actual = versions
                .get_mut(run.id.as_str())
                .expect("every run's version was read");
            if *actual == append.expected_version {
                *actual += append.events.len() as u64;
                answers.push(Ok(*actual));
                taken.push(append);
            } else {
                answers.push(Err(StoreError::Conflict {
                    run_id: run.id.clone(),
                    expected: append.expected_version,
                    actual: *actual,
                }));
            }
        }
        if taken.is_empty() {
            let _ = tx.rollback().await;
            return Ok(answers);
        }

        let run_sql = tx
            .prepare_cached(
                "INSERT INTO runs (id, status, thread, prompt, created_at, updated_at, version,
                     lease_owner, lease_until)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (id) DO UPDATE SET
                     status = excluded.status, thread = excluded.thread,
                     prompt = excluded.prompt, updated_at = excluded.updated_at,
                     version = excluded.version",
            )
            .await
            .map_err(sql)?;
        let event_sql = tx.prepare_cached(INSERT_EVENT).await.map_err(sql)?;
        // The WHERE keeps an approval in the run it was made in: an id that
        // another run's approval has already is refused below. Its creation
        // time stays its first row's.
        let approval_sql = tx
            .prepare_cached(
                "INSERT INTO approvals (id, run_id, call_id, tool, args, fingerprint, status,
                     rule, quorum, approvers, created_at, expires_at, decided_by, decided_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                 ON CONFLICT (id) DO UPDATE SET
                     call_id = excluded.call_id, tool = excluded.tool, args = excluded.args,
                     fingerprint = excluded.fingerprint, status = excluded.status,
                     rule = excluded.rule, quorum = excluded.quorum,
                     approvers = excluded.approvers,
                     expires_at = excluded.expires_at, decided_by = excluded.decided_by,
                     decided_at = excluded.decided_at
                 WHERE approvals.run_id = excluded.run_id",
            )
            .await
            .map_err(sql)?;
        let grant_sql = tx
            .prepare_cached(
                "INSERT INTO grants (id, tool, condition, scope, uses_left, created_by,
                     created_at, approval_id, revoked_by, revoked_at, ends_at, reach)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .await
            .map_err(sql)?;
        let move_sql = tx.prepare_cached(STORE_HEAD).await.map_err(sql)?;

        // A grant's uses left, revocation (by, at), end and reach.
        type GrantValues<'a> = (
            Option<i64>,
            Option<&'a String>,
            Option<i64>,
            Option<i64>,
            String,
        );
        // The values each statement's parameters point into, for every
        // append taken.
        struct Values<'a> {
            version: i64,
            lease_owner: Option<&'a str>,
            lease_until: Option<i64>,
            entries: Vec<Entry<'a>>,
            approvals: Vec<(&'a str, &'a str, i64)>,
            grants: Vec<GrantValues<'a>>,
        }
        let mut values = Vec::with_capacity(taken.len());
        for append in &taken {
            let run = &append.run;
            let version = i64::try_from(run.version).map_err(|_| {
                Failed::Refused(StoreError::Backend(
                    format!("{}: version {} is too large", what(&run.id), run.version).into(),
                ))
            })?;
            let entries = append
                .events
                .iter()
                .enumerate()
                .map(|(index, (event, body))| {
                    let run_seq = (append.expected_version + index as u64 + 1) as i64;
                    Entry::next(
                        &self.signer,
                        &mut head,
                        Some((&run.id, run_seq)),
                        event.kind(),
                        body,
                    )
                })
                .collect();
            values.push(Values {
                version,
                lease_owner: append.lease.as_ref().map(|(owner, _)| owner.as_str()),
                lease_until: append.lease.as_ref().map(|(_, until)| *until),
                entries,
                approvals: append
                    .approvals
                    .iter()
                    .map(|(row, ..)| {
                        (
                            row.fingerprint.as_str(),
                            row.status.as_str(),
                            i64::from(row.quorum),
                        )
                    })
                    .collect(),
                grants: append
                    .grants
                    .iter()
                    .map(|(grant, _)| {
                        (
                            grant.uses_left.map(i64::from),
                            grant.revoked.as_ref().map(|r| &r.by),
                            grant.revoked.as_ref().map(|r| r.at),
                            grant.ends_at(),
                            crate::reach::key(&grant.scope),
                        )
                    })
                    .collect(),
            });
        }
        let head_seq = head.seq.to_string();
        let head_params: [&(dyn ToSql + Sync); 3] = [&head.seq, &&head.hash[..], &head_seq];

        // The parameters of every statement, in the order they are sent.
        let mut statements: Vec<(usize, Write<'_>, Vec<&(dyn ToSql + Sync)>)> = Vec::new();
        for (index, (append, values)) in taken.iter().zip(&values).enumerate() {
            let run = &append.run;
            statements.push((
                index,
                Write::Run,
                vec![
                    &run.id,
                    &run.status,
                    &run.thread,
                    &run.prompt,
                    &run.created_at,
                    &run.updated_at,
                    &values.version,
                    &values.lease_owner,
                    &values.lease_until,
                ],
            ));
            for entry in &values.entries {
                statements.push((index, Write::Event, entry.params().to_vec()));
            }
            for ((row, args, approvers), (fingerprint, status, quorum)) in
                append.approvals.iter().zip(&values.approvals)
            {
                statements.push((
                    index,
                    Write::Approval(&row.id),
                    vec![
                        &row.id,
                        &run.id,
                        &row.call_id,
                        &row.tool,
                        args,
                        fingerprint,
                        status,
                        &row.rule,
                        quorum,
                        approvers,
                        &row.created_at,
                        &row.expires_at,
                        &row.decided_by,
                        &row.decided_at,
                    ],
                ));
            }
            for ((grant, scope), (uses_left, revoked_by, revoked_at, ends_at, reach)) in
                append.grants.iter().zip(&values.grants)
            {
                statements.push((
                    index,
                    Write::Grant(&grant.id),
                    vec![
                        &grant.id,
                        &grant.tool,
                        &grant.when,
                        scope,
                        uses_left,
                        &grant.created_by,
                        &grant.created_at,
                        &grant.approval_id,
                        revoked_by,
                        revoked_at,
                        ends_at,
                        reach,
                    ],
                ));
            }
        }
        statements.push((0, Write::Head, head_params.to_vec()));

        // Sent in this order, run by the server in this order.
        let results = futures::future::join_all(statements.iter().map(|(_, write, params)| {
            let statement = match write {
                Write::Run => &run_sql,
                Write::Event => &event_sql,
                Write::Approval(_) => &approval_sql,
                Write::Grant(_) => &grant_sql,
                Write::Head => &move_sql,
            };
            tx.execute(statement, params)
        }))
        .await;
        for ((index, write, _), result) in statements.iter().zip(results) {
            let run_id = &taken[*index].run.id;
            let refused = match (write, result) {
                (Write::Grant(id), Err(error)) => {
                    failed(format!("{}: grant {id}", what(run_id)), &error)
                }
                (_, Err(error)) => failed(what(run_id), &error),
                (Write::Approval(id), Ok(0)) => StoreError::Backend(
                    format!("{}: approval {id} belongs to another run", what(run_id)).into(),
                ),
                _ => continue,
            };
            let _ = tx.rollback().await;
            return Err(Failed::Refused(refused));
        }
        tx.commit()
            .await
            .map_err(|error| Failed::Commit(failed(what(first), &error)))?;
        Ok(answers)
    }
}
