//! The store trait: where runs, approvals, grants and the audit log live.
//!
//! A store keeps each run's log of [`Event`]s and, beside it, rows that
//! make runs and approvals quick to list. The engine computes those rows by
//! folding the log, and hands them over with the events they follow from,
//! so a store holds no domain logic: every back end behaves the same because
//! there is nothing in one to differ.
//!
//! Every appended event is also an entry of the audit log, chained by hash
//! to the entry before it; decisions carry a signature (see
//! [`crate::audit`]).
//!
//! Architecture invariant: appends are all-or-nothing and conditional. An
//! append names the version of the run it was computed from, and fails with
//! [`StoreError::Conflict`] if another writer got there first. This one
//! rule gives "exactly one decision wins" and "a tool starts once" across
//! processes and hosts.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::audit::AuditEntry;
use crate::fingerprint::Fingerprint;
use crate::grant::Grant;
use crate::principal::Principal;
use crate::run::{ApprovalStatus, Event};

/// An event as stored: its run, its place in the run's log, and when it
/// was appended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The run.
    pub run_id: String,
    /// Its position in the run's log, from 1.
    pub seq: u64,
    /// When it was appended (Unix milliseconds).
    pub at: i64,
    /// The event.
    pub event: Event,
}

/// A run, as listings show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRow {
    /// The run's id.
    pub id: String,
    /// `running`, `waiting`, `completed` or `failed`.
    pub status: String,
    /// The thread it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// What it was asked: the first human message.
    pub prompt: String,
    /// When it started (Unix milliseconds). A store keeps the one of the
    /// run's first append: later appends' rows do not change it.
    pub created_at: i64,
    /// When its log last grew.
    pub updated_at: i64,
    /// How many events its log has.
    pub version: u64,
}

/// An approval, as listings show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRow {
    /// The approval's id.
    pub id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// The call's id.
    pub call_id: String,
    /// The tool.
    pub tool: String,
    /// The arguments it would run with.
    pub args: Map<String, Value>,
    /// The fingerprint a decision must name.
    pub fingerprint: Fingerprint,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// The rule that asked (`default` when the tool's hints did).
    pub rule: String,
    /// How many distinct approvals it needs.
    pub quorum: u32,
    /// Who may decide (`user:…`, `group:…`, `role:…`); empty for anyone.
    pub approvers: Vec<String>,
    /// When it was requested (Unix milliseconds). The store keeps the
    /// time of the approval's first row: later rows update the rest.
    pub created_at: i64,
    /// When it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Who decided it, once decided (the last decider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// When it was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<i64>,
}

/// Events to append to a run's log, with the rows they change.
#[derive(Debug, Clone, PartialEq)]
pub struct Append {
    /// The run.
    pub run_id: String,
    /// How many events the log had when the events were computed; 0
    /// creates the run.
    pub expected_version: u64,
    /// The events, oldest first; at least one.
    pub events: Vec<Event>,
    /// The run's row after the events.
    pub run: RunRow,
    /// The approval rows the events create or change.
    pub approvals: Vec<ApprovalRow>,
    /// Grants the events make.
    pub grants: Vec<Grant>,
    /// For an append that creates the run: the lease its creator takes on
    /// it, `(owner, until)`, so that no worker claims the run before its
    /// creator has driven it. Ignored for runs that exist.
    pub lease: Option<(String, i64)>,
}

impl Append {
    /// Refuses an append that no store may write: one without events, or
    /// one whose run or approval rows belong to another run. Every store
    /// calls this first, so they refuse the same appends with the same
    /// words.
    pub fn check(&self) -> Result<(), StoreError> {
        let run_id = &self.run_id;
        let refuse = |why: String| {
            StoreError::Backend(format!("cannot append to run {run_id}: {why}").into())
        };
        if self.events.is_empty() {
            return Err(refuse("an append needs at least one event".to_owned()));
        }
        if self.run.id != *run_id {
            return Err(refuse(format!(
                "the run row given is run {}'s",
                self.run.id
            )));
        }
        if let Some(approval) = self.approvals.iter().find(|a| a.run_id != *run_id) {
            return Err(refuse(format!(
                "approval {} belongs to run {}; an append can only change its own run's approvals",
                approval.id, approval.run_id
            )));
        }
        Ok(())
    }
}

/// Which approvals to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApprovalQuery {
    /// Only these statuses; empty for all.
    pub statuses: Vec<ApprovalStatus>,
    /// Only this run's.
    pub run_id: Option<String>,
    /// Only approvals created before this one (for paging, newest first).
    pub before: Option<String>,
    /// At most this many; newest first.
    pub limit: usize,
}

/// Which grants to list, newest first (by creation time, then id).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrantQuery {
    /// Only the grants that may cover calls at this time (Unix
    /// milliseconds): neither revoked, nor used up, nor past their end
    /// ([`Grant::is_live`]). `None` for every grant.
    pub live_at: Option<i64>,
    /// Only the grants whose scope reaches calls of this run: those for
    /// any run (for a time, for a number of uses), the run's own and its
    /// thread's, and not those of other runs and threads. `None` for
    /// grants of every scope.
    pub reaching: Option<GrantReach>,
    /// Only grants made before this one (for paging: the last id of the
    /// page before).
    pub before: Option<String>,
    /// At most this many; `None` for all.
    pub limit: Option<usize>,
}

/// The run a [`GrantQuery`] wants the grants of: see
/// [`GrantQuery::reaching`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrantReach {
    /// The run's id; `None` for a call of no run, which only the grants
    /// for any run reach.
    pub run_id: Option<String>,
    /// The run's thread, if it has one.
    pub thread: Option<String>,
}

impl GrantQuery {
    /// Every grant, revoked and used-up ones included.
    pub fn all() -> GrantQuery {
        GrantQuery::default()
    }

    /// Every grant that may cover calls at `now`.
    pub fn live(now: i64) -> GrantQuery {
        GrantQuery {
            live_at: Some(now),
            ..GrantQuery::default()
        }
    }

    /// The same query, for the grants that may cover calls of run
    /// `run_id` of `thread` (see [`GrantQuery::reaching`]): what a gate
    /// reads, however many grants other runs and threads have.
    pub fn reaching(self, run_id: Option<&str>, thread: Option<&str>) -> GrantQuery {
        GrantQuery {
            reaching: Some(GrantReach {
                run_id: run_id.map(str::to_owned),
                thread: thread.map(str::to_owned),
            }),
            ..self
        }
    }

    /// The same query, from the grant after `before`, at most `limit`.
    pub fn page(self, before: Option<String>, limit: usize) -> GrantQuery {
        GrantQuery {
            before,
            limit: Some(limit),
            ..self
        }
    }
}

/// Which runs to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunQuery {
    /// Only these statuses; empty for all.
    pub statuses: Vec<String>,
    /// At most this many; newest first.
    pub limit: usize,
}

/// An API token as the store keeps it: the principal it stands for and the
/// SHA-256 of the secret, never the secret itself. Tokens are long random
/// strings, so a plain hash is as good as a slow one and lets every request
/// be checked with one index lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The token's id (not secret): what listings show and revocation
    /// names.
    pub id: String,
    /// Who the token speaks for.
    pub principal: Principal,
    /// SHA-256 of the token's secret text.
    #[serde(skip)]
    pub hash: [u8; 32],
    /// When it was made (Unix milliseconds).
    pub created_at: i64,
    /// Who made it.
    pub created_by: String,
    /// When it stops working, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// When it was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

impl TokenRecord {
    /// True when the token may be used at `now`: not revoked, not expired.
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
}

/// What became of a request for a run's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// The caller holds the lease now.
    Held,
    /// Another owner holds it until `until` (Unix milliseconds).
    Busy {
        /// Who holds it.
        owner: String,
        /// Until when.
        until: i64,
    },
}

/// Where a webhook delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not yet delivered: waiting for its next attempt (or in one).
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: the receiver refused it, or every attempt failed.
    Failed,
}

impl DeliveryStatus {
    /// `pending`, `delivered` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// The status named `text`.
    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        match text {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A webhook delivery to put in the outbox: one event for one webhook.
/// The server computes it (the event, its payload); the store only keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The delivery's id (what the receiver sees as `Toolgate-Webhook-Id`).
    pub id: String,
    /// What the event is about, unique per webhook
    /// (`approval.decided:APPROVAL-ID`): a second delivery of the same key
    /// to the same webhook is not kept, whoever computed it.
    pub event_key: String,
    /// The event's type (`approval.decided`, …).
    pub event_type: String,
    /// The audit entry the event was derived from.
    pub audit_seq: u64,
    /// The JSON body to send, exactly.
    pub payload: String,
    /// When it was made, and when it may first be sent (Unix milliseconds).
    pub created_at: i64,
}

/// One attempt at sending a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// Its number, from 1.
    pub attempt: u32,
    /// When it started (Unix milliseconds).
    pub at: i64,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// The receiver's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// What went wrong, when something did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A delivery in the outbox, with every attempt made so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The delivery's id.
    pub id: String,
    /// The webhook (its URL).
    pub webhook: String,
    /// What the event is about (see [`NewDelivery::event_key`]).
    pub event_key: String,
    /// The event's type.
    pub event_type: String,
    /// The audit entry the event was derived from.
    pub audit_seq: u64,
    /// The JSON body.
    pub payload: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// When it was made (Unix milliseconds).
    pub created_at: i64,
    /// When it may be attempted next (pending deliveries).
    pub next_attempt_at: i64,
    /// Every attempt, oldest first.
    pub attempts: Vec<DeliveryAttempt>,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryNext {
    /// It was delivered.
    Delivered,
    /// Try again at this time (Unix milliseconds).
    RetryAt(i64),
    /// Give up.
    Failed,
}

/// Which deliveries a claimer takes, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryClaim {
    /// Who claims (unique per process): only it may record the attempt.
    pub claimer: String,
    /// Only deliveries to these webhooks (the ones whose secret the
    /// claimer knows).
    pub webhooks: Vec<String>,
    /// The time: deliveries due by now whose lease (if any) has run out.
    pub now: i64,
    /// Until when the claim holds; after it, another claimer may take the
    /// delivery over (the claimer crashed, say).
    pub lease_until: i64,
    /// At most this many.
    pub limit: usize,
}

/// Which deliveries to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryQuery {
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// At most this many, newest first; 0 means 50.
    pub limit: usize,
}

/// Why a store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another writer appended to the run first; fold its log again and
    /// retry, or report the conflict.
    #[error(
        "run {run_id} changed while this was decided (expected version {expected}, found {actual}); look at it again"
    )]
    Conflict {
        /// The run.
        run_id: String,
        /// The version the append expected.
        expected: u64,
        /// The version the log has.
        actual: u64,
    },
    /// No such run, approval or grant.
    #[error("there is no {what} `{id}`")]
    NotFound {
        /// `run`, `approval` or `grant`.
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The store's data is not what this version of toolgate writes.
    #[error("the store is corrupt or from a newer toolgate: {0}")]
    Corrupt(String),
    /// The database failed. The message already says why: it is not also
    /// given as the error's source, which would print it twice in a chain.
    #[error("the store failed: {0}")]
    Backend(crate::BoxError),
}

/// Where runs, approvals, grants and the audit log live.
///
/// Implemented for SQLite (a file, zero set-up) and PostgreSQL (several
/// processes and hosts); one conformance test suite runs against both.
#[async_trait]
pub trait Store: Send + Sync {
    /// Appends events to a run's log and updates its rows, all or nothing,
    /// if the log has exactly `expected_version` events. Returns the new
    /// version. Each event becomes an audit entry; decisions are signed.
    async fn append(&self, append: Append) -> Result<u64, StoreError>;

    /// Appends as [`Store::append`] does, all or nothing and visible to
    /// every reader at once, but may answer before the commit is on disk:
    /// it is written at once, so that a crash of this process loses
    /// nothing, and made durable by the store's next durable commit, or
    /// by the store itself within a short bound (the SQLite store syncs
    /// within 20 ms; PostgreSQL's WAL writer within three times its
    /// `wal_writer_delay`, 600 ms by default). Only a crash of the machine
    /// in that window loses it, and then only it and what came after.
    ///
    /// For records whose caller tells nobody that they are stored, such as
    /// the outcome of a call whose result was already handed on: the sync
    /// is then shared with the next durable commit instead of delaying it.
    /// Never for a decision, a call's start, or anything acknowledged.
    ///
    /// The default is [`Store::append`].
    async fn append_deferred(&self, append: Append) -> Result<u64, StoreError> {
        self.append(append).await
    }

    /// A run's log, oldest first; [`StoreError::NotFound`] for an unknown
    /// run.
    async fn load(&self, run_id: &str) -> Result<Vec<StoredEvent>, StoreError>;

    /// The events of a run's log after its first `after`, oldest first:
    /// what was appended since a fold at version `after`, so that a caller
    /// holding that fold brings it up to date without reading the whole
    /// log. Empty when nothing was; [`StoreError::NotFound`] for an
    /// unknown run.
    ///
    /// The default loads the whole log; stores override it to read only
    /// the new events.
    async fn load_since(&self, run_id: &str, after: u64) -> Result<Vec<StoredEvent>, StoreError> {
        let mut events = self.load(run_id).await?;
        let known = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(events.len());
        events.drain(..known);
        Ok(events)
    }

    /// Runs, newest first.
    async fn runs(&self, query: &RunQuery) -> Result<Vec<RunRow>, StoreError>;

    /// Approvals, newest first.
    async fn approvals(&self, query: &ApprovalQuery) -> Result<Vec<ApprovalRow>, StoreError>;

    /// Pending approvals whose time is up at `now` (their `expires_at` is
    /// at or before it), soonest first, at most `limit` (0 for 50).
    async fn due_approvals(&self, now: i64, limit: usize) -> Result<Vec<ApprovalRow>, StoreError>;

    /// One approval; [`StoreError::NotFound`] for an unknown id.
    async fn approval(&self, id: &str) -> Result<ApprovalRow, StoreError>;

    /// Approval `id` and the whole log of its run: what showing or
    /// deciding an approval reads. [`StoreError::NotFound`] for an unknown
    /// id.
    ///
    /// The default reads the row, then the log; stores override it to read
    /// both at once, at one point in time.
    async fn approval_with_log(
        &self,
        id: &str,
    ) -> Result<(ApprovalRow, Vec<StoredEvent>), StoreError> {
        let row = self.approval(id).await?;
        let events = self.load(&row.run_id).await?;
        Ok((row, events))
    }

    /// Grants, newest first: all of them, revoked and used-up ones
    /// included, or only the live ones ([`GrantQuery::live_at`]), a page
    /// at a time ([`GrantQuery::before`], [`GrantQuery::limit`]).
    /// [`StoreError::NotFound`] when `before` names no grant.
    ///
    /// A gate reads the live grants for every call it would ask about, so
    /// stores read only those for such a query, however many grants have
    /// ever been made.
    async fn grants(&self, query: &GrantQuery) -> Result<Vec<Grant>, StoreError>;

    /// One grant; [`StoreError::NotFound`] for an unknown id.
    ///
    /// The default looks through [`Store::grants`].
    async fn grant(&self, id: &str) -> Result<Grant, StoreError> {
        self.grants(&GrantQuery::all())
            .await?
            .into_iter()
            .find(|grant| grant.id == id)
            .ok_or_else(|| StoreError::NotFound {
                what: "grant",
                id: id.to_owned(),
            })
    }

    /// Takes one use of a grant, atomically: false when it has none left,
    /// or is revoked. Grants without a use count are always usable here.
    async fn use_grant(&self, id: &str) -> Result<bool, StoreError>;

    /// Revokes a grant (an audit entry records it); false when it was
    /// revoked already.
    async fn revoke_grant(&self, id: &str, by: &str, at: i64) -> Result<bool, StoreError>;

    /// Audit entries after `after` (a global sequence number; 0 for the
    /// start), at most `limit`, oldest first.
    async fn audit(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    /// The public key that verifies the store's signatures (Ed25519, 32
    /// bytes).
    async fn public_key(&self) -> Result<[u8; 32], StoreError>;

    /// The sequence number of the audit log's last entry; 0 when empty.
    async fn audit_head(&self) -> Result<u64, StoreError>;

    /// Waits until the audit log's head is past `after` (another writer, in
    /// any process, appended), or `timeout` passes; returns the head then.
    /// `None` from a store that cannot be told of other processes' writes:
    /// the caller looks at [`Store::audit_head`] from time to time instead.
    async fn wait_for_change(
        &self,
        after: u64,
        timeout: std::time::Duration,
    ) -> Result<Option<u64>, StoreError> {
        let _ = (after, timeout);
        Ok(None)
    }

    /// Takes, or renews, `owner`'s lease on a run until `until`: while one
    /// process drives a run, no other does. A lease that another owner
    /// holds past `now` is refused with [`Lease::Busy`];
    /// [`StoreError::NotFound`] for an unknown run.
    async fn lease_run(
        &self,
        run_id: &str,
        owner: &str,
        until: i64,
        now: i64,
    ) -> Result<Lease, StoreError>;

    /// Gives up `owner`'s lease on a run; nothing when another owner
    /// holds it, or nobody.
    async fn release_run(&self, run_id: &str, owner: &str) -> Result<(), StoreError>;

    /// Leases to `owner` until `until` at most `limit` runs that the engine
    /// can take further (status `running`) and nobody holds a lease on at
    /// `now`, oldest first; their ids. Two callers at once never get the
    /// same run.
    async fn claim_ready_runs(
        &self,
        owner: &str,
        until: i64,
        now: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// How many approvals have this status.
    async fn approval_count(&self, status: ApprovalStatus) -> Result<u64, StoreError>;

    /// Keeps a new API token. Its id and hash must be new. A signed audit
    /// entry (`token_created`) records who made it for whom, never its
    /// secret or hash.
    async fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError>;

    /// The token whose secret has this SHA-256, revoked and expired ones
    /// included (the caller decides what they may do).
    async fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError>;

    /// All tokens, newest first, revoked ones included.
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// The token with id `id`, revoked and expired ones included;
    /// [`StoreError::NotFound`] for an unknown id.
    ///
    /// The default lists every token; stores override it to look the one
    /// up by its key.
    async fn token(&self, id: &str) -> Result<TokenRecord, StoreError> {
        self.tokens()
            .await?
            .into_iter()
            .find(|token| token.id == id)
            .ok_or_else(|| StoreError::NotFound {
                what: "token",
                id: id.to_owned(),
            })
    }

    /// Revokes a token at `at`, by principal `by`, which a signed audit
    /// entry (`token_revoked`) records; false when it was revoked already
    /// (no entry then), [`StoreError::NotFound`] for an unknown id.
    async fn revoke_token(&self, id: &str, by: &str, at: i64) -> Result<bool, StoreError>;

    /// How far the audit log has been turned into deliveries for
    /// `webhook`: the last audit entry looked at. A webhook the store has
    /// not seen starts at `start` (so a new webhook gets what happens from
    /// now on, not the whole history).
    async fn webhook_cursor(&self, webhook: &str, start: u64) -> Result<u64, StoreError>;

    /// Puts deliveries for `webhook` in the outbox and moves its cursor to
    /// `through` (never backwards), in one transaction. A delivery whose
    /// `event_key` the webhook has already is not kept, so that servers
    /// computing the same events at once make one delivery of each.
    /// Returns how many were kept.
    async fn enqueue_deliveries(
        &self,
        webhook: &str,
        through: u64,
        deliveries: &[NewDelivery],
    ) -> Result<usize, StoreError>;

    /// Claims pending deliveries that are due and not leased to another
    /// claimer, oldest due first, leasing them to `claim.claimer` until
    /// `claim.lease_until`. Two claimers never get the same delivery while
    /// a lease holds.
    async fn claim_deliveries(&self, claim: &DeliveryClaim) -> Result<Vec<Delivery>, StoreError>;

    /// Records an attempt at delivery `id` by `claimer` and what happens
    /// next, and ends the lease. False (and nothing recorded) when the
    /// claimer no longer holds the delivery: its lease ran out and another
    /// claimer took it over, or it is no longer pending.
    async fn record_attempt(
        &self,
        id: &str,
        claimer: &str,
        attempt: &DeliveryAttempt,
        next: DeliveryNext,
    ) -> Result<bool, StoreError>;

    /// Deliveries, newest first, with their attempts.
    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError>;

    /// Makes a failed delivery pending again, due at `now`, its attempts
    /// kept: the next claim sends it again. Answers the status the delivery
    /// had; only a failed one is changed. [`StoreError::NotFound`] for an
    /// unknown id.
    async fn redeliver(&self, id: &str, now: i64) -> Result<DeliveryStatus, StoreError>;

    /// Deletes the settled deliveries (delivered or failed) made before
    /// `before` (Unix milliseconds), with their attempts; pending ones
    /// stay. Answers how many were deleted. An event is never queued again
    /// for a webhook once its delivery is gone: a webhook's cursor is past
    /// it.
    async fn prune_deliveries(&self, before: i64) -> Result<u64, StoreError>;
}
