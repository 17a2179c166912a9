//! The webhook outbox on PostgreSQL: cursors, deliveries and attempts,
//! shared by every server on the database.
//!
//! Queuing is `INSERT … ON CONFLICT DO NOTHING` on (webhook, event_key),
//! so servers that turn the same audit entries into deliveries at once
//! keep one of each. Claims lock the rows they take with `FOR UPDATE SKIP
//! LOCKED`: a second claimer skips them rather than waiting, and the
//! lease they set keeps them from being claimed again until it runs out.

use tokio_postgres::Row;
use toolgate_core::store::{
    Delivery, DeliveryAttempt, DeliveryClaim, DeliveryNext, DeliveryQuery, DeliveryStatus,
    NewDelivery, StoreError,
};

use super::error::{corrupt, failed};
use super::{PgStore, get, limit};
use crate::PRUNE_CHUNK;

const COLUMNS: &str = "id, webhook, event_key, event_type, audit_seq, payload, status, \
                       created_at, next_attempt_at";

impl PgStore {
    pub(super) async fn outbox_cursor(&self, webhook: &str, start: u64) -> Result<u64, StoreError> {
        let what = || format!("cannot read the cursor of webhook {webhook}");
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO webhook_cursors (webhook, seq) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&webhook, &(start as i64)],
            )
            .await
            .map_err(|error| failed(what(), &error))?;
        let row = client
            .query_one(
                "SELECT seq FROM webhook_cursors WHERE webhook = $1",
                &[&webhook],
            )
            .await
            .map_err(|error| failed(what(), &error))?;
        let seq: i64 = get(&row, 0, &what)?;
        Ok(seq as u64)
    }

    pub(super) async fn outbox_enqueue(
        &self,
        webhook: &str,
        through: u64,
        deliveries: &[NewDelivery],
    ) -> Result<usize, StoreError> {
        let what = || format!("cannot queue deliveries for webhook {webhook}");
        let sql = |error: tokio_postgres::Error| failed(what(), &error);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(sql)?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO webhook_deliveries (id, webhook, event_key, event_type, audit_seq,
                     payload, status, created_at, next_attempt_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)
                 ON CONFLICT (webhook, event_key) DO NOTHING",
            )
            .await
            .map_err(sql)?;
        let mut kept = 0;
        for delivery in deliveries {
            kept += tx
                .execute(
                    &insert,
                    &[
                        &delivery.id,
                        &webhook,
                        &delivery.event_key,
                        &delivery.event_type,
                        &(delivery.audit_seq as i64),
                        &delivery.payload,
                        &delivery.created_at,
                    ],
                )
                .await
                .map_err(sql)?;
        }
        tx.execute(
            "INSERT INTO webhook_cursors (webhook, seq) VALUES ($1, $2)
             ON CONFLICT (webhook) DO UPDATE
             SET seq = GREATEST(webhook_cursors.seq, excluded.seq)",
            &[&webhook, &(through as i64)],
        )
        .await
        .map_err(sql)?;
        tx.commit().await.map_err(sql)?;
        Ok(kept as usize)
    }

    pub(super) async fn outbox_claim(
        &self,
        claim: &DeliveryClaim,
    ) -> Result<Vec<Delivery>, StoreError> {
        let what = || "cannot claim webhook deliveries".to_owned();
        let sql = |error: tokio_postgres::Error| failed(what(), &error);
        if claim.webhooks.is_empty() || claim.limit == 0 {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        // One statement: the due rows are locked (skipping rows another
        // claimer has locked, rather than waiting for them), leased and
        // returned. The CTE is evaluated once, so the LIMIT holds.
        let rows = client
            .query(
                &format!(
                    "WITH due AS (
                         SELECT id FROM webhook_deliveries
                         WHERE status = 'pending' AND next_attempt_at <= $3
                           AND (lease_until IS NULL OR lease_until <= $3)
                           AND webhook = ANY($4)
                         ORDER BY next_attempt_at, audit_seq, id
                         LIMIT $5
                         FOR UPDATE SKIP LOCKED)
                     UPDATE webhook_deliveries AS d SET claimed_by = $1, lease_until = $2
                     FROM due WHERE d.id = due.id
                     RETURNING {}",
                    COLUMNS
                        .split(", ")
                        .map(|column| format!("d.{column}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                &[
                    &claim.claimer,
                    &claim.lease_until,
                    &claim.now,
                    &claim.webhooks,
                    &limit(claim.limit),
                ],
            )
            .await
            .map_err(sql)?;
        let mut claimed = rows.iter().map(delivery).collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|d| (d.next_attempt_at, d.audit_seq));
        self.attempts_of(&client, &mut claimed).await?;
        Ok(claimed)
    }

    pub(super) async fn outbox_record(
        &self,
        id: &str,
        claimer: &str,
        attempt: &DeliveryAttempt,
        next: DeliveryNext,
    ) -> Result<bool, StoreError> {
        let what = || format!("cannot record an attempt at delivery {id}");
        let sql = |error: tokio_postgres::Error| failed(what(), &error);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(sql)?;
        let held = tx
            .query_opt(
                "SELECT 1 FROM webhook_deliveries
                 WHERE id = $1 AND status = 'pending' AND claimed_by = $2 FOR UPDATE",
                &[&id, &claimer],
            )
            .await
            .map_err(sql)?;
        if held.is_none() {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, duration_ms, status_code, error)
             VALUES ($1, (SELECT count(*) + 1 FROM webhook_attempts WHERE delivery_id = $1),
                     $2, $3, $4, $5)",
            &[
                &id,
                &attempt.at,
                &(attempt.duration_ms as i64),
                &attempt.status_code.map(i64::from),
                &attempt.error,
            ],
        )
        .await
        .map_err(sql)?;
        let (status, next_at) = match next {
            DeliveryNext::Delivered => ("delivered", None),
            DeliveryNext::RetryAt(at) => ("pending", Some(at)),
            DeliveryNext::Failed => ("failed", None),
        };
        tx.execute(
            "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1,
                 next_attempt_at = coalesce($3, next_attempt_at),
                 claimed_by = NULL, lease_until = NULL
             WHERE id = $1",
            &[&id, &status, &next_at],
        )
        .await
        .map_err(sql)?;
        tx.commit().await.map_err(sql)?;
        Ok(true)
    }

    pub(super) async fn outbox_redeliver(
        &self,
        id: &str,
        now: i64,
    ) -> Result<DeliveryStatus, StoreError> {
        let what = || format!("cannot send delivery {id} again");
        let sql = |error: tokio_postgres::Error| failed(what(), &error);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(sql)?;
        // Locked, so that a claim or an attempt in another process cannot
        // change it between the look and the change.
        let row = tx
            .query_opt(
                "SELECT status FROM webhook_deliveries WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(sql)?
            .ok_or_else(|| StoreError::NotFound {
                what: "webhook delivery",
                id: id.to_owned(),
            })?;
        let text: &str = get(&row, 0, &|| format!("webhook delivery {id}"))?;
        let status = DeliveryStatus::parse(text).ok_or_else(|| {
            corrupt(format!(
                "webhook delivery {id} has the unknown status {text}"
            ))
        })?;
        if status == DeliveryStatus::Failed {
            tx.execute(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $2,
                     claimed_by = NULL, lease_until = NULL
                 WHERE id = $1",
                &[&id, &now],
            )
            .await
            .map_err(sql)?;
        }
        tx.commit().await.map_err(sql)?;
        Ok(status)
    }

    pub(super) async fn outbox_prune(&self, before: i64) -> Result<u64, StoreError> {
        let what = || "cannot prune webhook deliveries".to_owned();
        let sql = |error: tokio_postgres::Error| failed(what(), &error);
        let client = self.client().await?;
        // A chunk per transaction, so that no transaction holds many rows;
        // rows another process holds are left for the next prune.
        let statement = client
            .prepare_cached(
                "WITH gone AS (
                     SELECT id FROM webhook_deliveries
                     WHERE created_at < $1 AND status <> 'pending'
                     ORDER BY created_at, id LIMIT $2
                     FOR UPDATE SKIP LOCKED
                 ), attempts AS (
                     DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM gone)
                 )
                 DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM gone)",
            )
            .await
            .map_err(sql)?;
        let most = PRUNE_CHUNK as i64;
        let mut deleted = 0;
        loop {
            let chunk = client
                .execute(&statement, &[&before, &most])
                .await
                .map_err(sql)?;
            deleted += chunk;
            if chunk < most as u64 {
                return Ok(deleted);
            }
        }
    }

    pub(super) async fn outbox_list(
        &self,
        query: &DeliveryQuery,
    ) -> Result<Vec<Delivery>, StoreError> {
        let what = || "cannot list webhook deliveries".to_owned();
        let sql = |error: tokio_postgres::Error| failed(what(), &error);
        let client = self.client().await?;
        let rows = match query.status {
            Some(status) => {
                client
                    .query(
                        &format!(
                            "SELECT {COLUMNS} FROM webhook_deliveries WHERE status = $1
                             ORDER BY created_at DESC, id DESC LIMIT $2"
                        ),
                        &[&status.as_str(), &limit(query.limit)],
                    )
                    .await
            }
            None => {
                client
                    .query(
                        &format!(
                            "SELECT {COLUMNS} FROM webhook_deliveries
                             ORDER BY created_at DESC, id DESC LIMIT $1"
                        ),
                        &[&limit(query.limit)],
                    )
                    .await
            }
        }
        .map_err(sql)?;
        let mut deliveries = rows.iter().map(delivery).collect::<Result<Vec<_>, _>>()?;
        self.attempts_of(&client, &mut deliveries).await?;
        Ok(deliveries)
    }

    /// Fills in the attempts of `deliveries`, in one query.
    async fn attempts_of(
        &self,
        client: &tokio_postgres::Client,
        deliveries: &mut [Delivery],
    ) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let what = || "cannot read the attempts of webhook deliveries".to_owned();
        let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
        let rows = client
            .query(
                "SELECT delivery_id, attempt, at, duration_ms, status_code, error
                 FROM webhook_attempts WHERE delivery_id = ANY($1)
                 ORDER BY delivery_id, attempt",
                &[&ids],
            )
            .await
            .map_err(|error| failed(what(), &error))?;
        for row in &rows {
            let id: String = get(row, 0, &what)?;
            let attempt: i64 = get(row, 1, &what)?;
            let duration: i64 = get(row, 3, &what)?;
            let status: Option<i64> = get(row, 4, &what)?;
            let attempt = DeliveryAttempt {
                attempt: attempt as u32,
                at: get(row, 2, &what)?,
                duration_ms: duration as u64,
                status_code: status.map(|code| code as u16),
                error: get(row, 5, &what)?,
            };
            if let Some(delivery) = deliveries.iter_mut().find(|d| d.id == id) {
                delivery.attempts.push(attempt);
            }
        }
        Ok(())
    }
}

fn delivery(row: &Row) -> Result<Delivery, StoreError> {
    let id: String = get(row, 0, &|| "a webhook delivery".to_owned())?;
    let what = || format!("webhook delivery {id}");
    let status: String = get(row, 6, &what)?;
    let audit_seq: i64 = get(row, 4, &what)?;
    Ok(Delivery {
        webhook: get(row, 1, &what)?,
        event_key: get(row, 2, &what)?,
        event_type: get(row, 3, &what)?,
        audit_seq: audit_seq as u64,
        payload: get(row, 5, &what)?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| corrupt(format!("{} has the unknown status `{status}`", what())))?,
        created_at: get(row, 7, &what)?,
        next_attempt_at: get(row, 8, &what)?,
        attempts: Vec::new(),
        id,
    })
}
