//! Webhooks: `approval.requested`, `approval.decided` and `run.completed`
//! POSTed as signed JSON to the URLs in `toolgate.toml`, through an outbox
//! in the store.
//!
//! The dispatcher, a background task of [`crate::Server::serve`], does two
//! things each round:
//!
//! 1. It reads the audit log from each webhook's cursor and turns the
//!    entries into events (see [`derive`]), so that decisions made by any
//!    process on the store (the command line, another server) are sent,
//!    and queues one delivery per event and webhook. The store keeps one
//!    delivery per (webhook, event key) and moves the cursor in the same
//!    transaction, so several servers on one database queue each event
//!    once.
//! 2. It claims due deliveries with a lease (on PostgreSQL `FOR UPDATE
//!    SKIP LOCKED`), sends them, and records each attempt: delivered on
//!    2xx; retried with exponential backoff and jitter on network errors,
//!    timeouts, 408, 429 and 5xx (honouring `Retry-After`); failed at once
//!    on other statuses, or after the last attempt. A server that crashes
//!    mid-send leaves its lease to run out, and another server takes over.
//!
//! It wakes when this server writes (`AppState::changes`) and on a timer,
//! for other processes' writes and for retries that come due.

mod config;
mod derive;
mod send;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use toolgate_core::store::{DeliveryClaim, NewDelivery};
use toolgate_core::time::duration_millis;

pub use self::config::{Webhook, WebhookError, WebhookEvent, load_webhooks};
pub use self::send::{SIGNATURE_HEADER, TIMESTAMP_HEADER, WEBHOOK_ID_HEADER, signature};

use crate::state::AppState;

/// How many audit entries one step of a round reads.
const AUDIT_PAGE: usize = 256;

/// How many deliveries one claim takes: also how many are sent at once.
const CLAIM: usize = 16;

/// The dispatcher of one server.
pub(crate) struct Dispatcher {
    state: Arc<AppState>,
    /// Who this server is when it claims: only it may record the attempt.
    claimer: String,
    /// Where each webhook's cursor starts when the store has none: the
    /// audit log's head when the server started.
    start: Option<u64>,
    clients: HashMap<String, reqwest::Client>,
}

impl Dispatcher {
    pub(crate) fn new(state: Arc<AppState>) -> Dispatcher {
        let clients = state
            .config
            .webhooks
            .iter()
            .map(|hook| (hook.url.clone(), send::client(hook)))
            .collect();
        Dispatcher {
            state,
            claimer: uuid::Uuid::now_v7().to_string(),
            start: None,
            clients,
        }
    }

    /// Makes the cursors of webhooks the store has not seen, at the audit
    /// log's head: a new webhook is sent what happens from now on. Done
    /// before the server takes requests, so that none of theirs is missed.
    /// A store that does not answer now is asked again each round.
    pub(crate) async fn start(&mut self) {
        if self.start.is_some() {
            return;
        }
        let Ok(head) = self.state.store.audit_head().await else {
            return;
        };
        for hook in &self.state.config.webhooks {
            if self
                .state
                .store
                .webhook_cursor(&hook.url, head)
                .await
                .is_err()
            {
                return;
            }
        }
        self.start = Some(head);
    }

    /// Rounds until the server shuts down.
    pub(crate) async fn run(mut self) {
        let mut changes = self.state.changes.subscribe();
        let mut shutdown = self.state.shutdown.subscribe();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let busy = self.round().await;
            if busy {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(self.state.config.webhook_poll) => {}
                _ = changes.changed() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Queues what is new and sends what is due; true when there may be
    /// more to do at once. Errors (the store is down) wait for the next
    /// round: nothing is lost, since cursors and claims only move on
    /// success.
    async fn round(&mut self) -> bool {
        self.start().await;
        let Some(start) = self.start else {
            return false;
        };
        let mut busy = false;
        for hook in &self.state.config.webhooks {
            match self.queue(hook, start).await {
                Ok(more) => busy |= more,
                Err(error) => {
                    eprintln!(
                        "toolgate serve: webhook {}: cannot queue events: {error}",
                        hook.url
                    );
                }
            }
        }
        match self.send_due().await {
            Ok(more) => busy |= more,
            Err(error) => eprintln!("toolgate serve: webhooks: cannot claim deliveries: {error}"),
        }
        busy
    }

    /// Turns one page of the audit log after `hook`'s cursor into
    /// deliveries; true when there may be more.
    async fn queue(
        &self,
        hook: &Webhook,
        start: u64,
    ) -> Result<bool, toolgate_core::store::StoreError> {
        let store = self.state.store.as_ref();
        let cursor = store.webhook_cursor(&hook.url, start).await?;
        let entries = store.audit(cursor, AUDIT_PAGE).await?;
        let Some(last) = entries.last().map(|e| e.seq) else {
            return Ok(false);
        };
        let events = derive::events(store, &entries).await?;
        let deliveries: Vec<NewDelivery> = events
            .iter()
            .filter(|event| hook.wants(event.kind))
            .map(|event| event.delivery(uuid::Uuid::now_v7().to_string()))
            .collect();
        store
            .enqueue_deliveries(&hook.url, last, &deliveries)
            .await?;
        Ok(entries.len() == AUDIT_PAGE)
    }

    /// Claims due deliveries and sends them, all at once; true when the
    /// claim was full (there may be more due).
    async fn send_due(&self) -> Result<bool, toolgate_core::store::StoreError> {
        let now = self.state.now();
        // A lease shorter than an attempt may take would let another
        // server send the same attempt while this one still waits for its
        // answer: it is at least twice the longest timeout.
        let longest = self
            .state
            .config
            .webhooks
            .iter()
            .map(|hook| hook.timeout)
            .max()
            .unwrap_or_default();
        let lease = self.state.config.webhook_lease.max(longest * 2);
        let lease = duration_millis(lease);
        let claim = DeliveryClaim {
            claimer: self.claimer.clone(),
            webhooks: self
                .state
                .config
                .webhooks
                .iter()
                .map(|hook| hook.url.clone())
                .collect(),
            now,
            lease_until: now.saturating_add(lease),
            limit: CLAIM,
        };
        let claimed = self.state.store.claim_deliveries(&claim).await?;
        let full = claimed.len() == CLAIM;
        let sends = claimed.into_iter().filter_map(|delivery| {
            let hook = self
                .state
                .config
                .webhooks
                .iter()
                .find(|hook| hook.url == delivery.webhook)?;
            let client = self.clients.get(&hook.url)?;
            Some(async move {
                let (attempt, next) = send::attempt(client, hook, &delivery, &self.state).await;
                self.state.metrics.webhook_attempt(next);
                // False: our lease ran out mid-send and another server took
                // the delivery over; its attempt is the one that counts.
                if let Err(error) = self
                    .state
                    .store
                    .record_attempt(&delivery.id, &self.claimer, &attempt, next)
                    .await
                {
                    eprintln!(
                        "toolgate serve: webhook {}: cannot record attempt {} of delivery {}: {error}",
                        hook.url, attempt.attempt, delivery.id
                    );
                }
            })
        });
        futures::future::join_all(sends).await;
        Ok(full)
    }
}

/// The default time between looks at the store for other processes' work
/// and for retries that come due.
pub(crate) const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// The default lease of a claim: longer than an attempt may take, so that
/// a delivery being sent is not taken over.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(60);
