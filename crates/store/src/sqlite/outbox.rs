//! The webhook outbox: cursors, deliveries and their attempts. Writes run
//! in the writer's transaction (one writer per file, and SQLite's write
//! lock between processes), so a claim is exclusive without row locks.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use toolgate_core::store::{
    Delivery, DeliveryAttempt, DeliveryClaim, DeliveryNext, DeliveryQuery, DeliveryStatus,
    NewDelivery, StoreError,
};

use super::error::{corrupt, sqlite_failed};
use crate::PRUNE_CHUNK;

const PENDING: i64 = 0;
const DELIVERED: i64 = 1;
const FAILED: i64 = 2;

fn code(status: DeliveryStatus) -> i64 {
    match status {
        DeliveryStatus::Pending => PENDING,
        DeliveryStatus::Delivered => DELIVERED,
        DeliveryStatus::Failed => FAILED,
    }
}

/// The status of a stored code; `None` for a code toolgate does not write.
fn status_of(code: i64) -> Option<DeliveryStatus> {
    match code {
        PENDING => Some(DeliveryStatus::Pending),
        DELIVERED => Some(DeliveryStatus::Delivered),
        FAILED => Some(DeliveryStatus::Failed),
        _ => None,
    }
}

const COLUMNS: &str = "rid, id, webhook, event_key, event_type, audit_seq, payload, status, \
                       created_at, next_attempt_at";

/// The webhook's cursor, made at `start` if it has none (in the writer's
/// transaction).
pub(crate) fn cursor(conn: &Connection, webhook: &str, start: u64) -> Result<u64, StoreError> {
    let sql = |error: rusqlite::Error| {
        sqlite_failed(
            format!("cannot read the cursor of webhook {webhook}"),
            &error,
        )
    };
    conn.prepare_cached("INSERT OR IGNORE INTO webhook_cursors (webhook, seq) VALUES (?1, ?2)")
        .and_then(|mut statement| statement.execute(params![webhook, start as i64]))
        .map_err(sql)?;
    conn.prepare_cached("SELECT seq FROM webhook_cursors WHERE webhook = ?1")
        .and_then(|mut statement| statement.query_row([webhook], |row| row.get::<_, i64>(0)))
        .map(|seq| seq as u64)
        .map_err(sql)
}

/// Keeps the deliveries whose key is new and moves the cursor (in the
/// writer's transaction).
pub(crate) fn enqueue(
    conn: &Connection,
    webhook: &str,
    through: u64,
    deliveries: &[NewDelivery],
) -> Result<usize, StoreError> {
    let sql = |error: rusqlite::Error| {
        sqlite_failed(
            format!("cannot queue deliveries for webhook {webhook}"),
            &error,
        )
    };
    let mut kept = 0;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO webhook_deliveries (id, webhook, event_key, event_type, audit_seq,
                 payload, status, created_at, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?7)
             ON CONFLICT (webhook, event_key) DO NOTHING",
        )
        .map_err(sql)?;
    for delivery in deliveries {
        kept += insert
            .execute(params![
                delivery.id,
                webhook,
                delivery.event_key,
                delivery.event_type,
                delivery.audit_seq as i64,
                delivery.payload,
                delivery.created_at,
            ])
            .map_err(sql)?;
    }
    conn.prepare_cached(
        "INSERT INTO webhook_cursors (webhook, seq) VALUES (?1, ?2)
         ON CONFLICT (webhook) DO UPDATE SET seq = max(seq, excluded.seq)",
    )
    .and_then(|mut statement| statement.execute(params![webhook, through as i64]))
    .map_err(sql)?;
    Ok(kept)
}

/// Leases the due deliveries to the claimer (in the writer's transaction).
pub(crate) fn claim(conn: &Connection, claim: &DeliveryClaim) -> Result<Vec<Delivery>, StoreError> {
    let sql = |error: rusqlite::Error| sqlite_failed("cannot claim webhook deliveries", &error);
    if claim.webhooks.is_empty() || claim.limit == 0 {
        return Ok(Vec::new());
    }
    let marks = vec!["?"; claim.webhooks.len()].join(", ");
    let mut values: Vec<Value> = vec![Value::Integer(claim.now)];
    values.extend(claim.webhooks.iter().cloned().map(Value::Text));
    values.push(Value::Integer(claim.limit as i64));
    let rids: Vec<i64> = {
        let mut statement = conn
            .prepare(&format!(
                "SELECT rid FROM webhook_deliveries
                 WHERE status = 0 AND next_attempt_at <= ?1
                   AND (lease_until IS NULL OR lease_until <= ?1)
                   AND webhook IN ({marks})
                 ORDER BY next_attempt_at, rid LIMIT ?"
            ))
            .map_err(sql)?;
        let rows = statement
            .query_map(params_from_iter(values), |row| row.get(0))
            .map_err(sql)?;
        rows.collect::<Result<_, _>>().map_err(sql)?
    };
    let mut lease = conn
        .prepare_cached(
            "UPDATE webhook_deliveries SET claimed_by = ?2, lease_until = ?3 WHERE rid = ?1",
        )
        .map_err(sql)?;
    let mut claimed = Vec::with_capacity(rids.len());
    for rid in rids {
        lease
            .execute(params![rid, claim.claimer, claim.lease_until])
            .map_err(sql)?;
        let delivery = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM webhook_deliveries WHERE rid = ?1"
            ))
            .and_then(|mut statement| statement.query_row([rid], |row| Ok(delivery(row))))
            .map_err(sql)??;
        claimed.push(with_attempts(conn, delivery)?);
    }
    Ok(claimed)
}

/// Records an attempt if the claimer holds the delivery (in the writer's
/// transaction).
pub(crate) fn record(
    conn: &Connection,
    id: &str,
    claimer: &str,
    attempt: &DeliveryAttempt,
    next: DeliveryNext,
) -> Result<bool, StoreError> {
    let sql = |error: rusqlite::Error| {
        sqlite_failed(format!("cannot record an attempt at delivery {id}"), &error)
    };
    let rid: Option<i64> = conn
        .prepare_cached(
            "SELECT rid FROM webhook_deliveries WHERE id = ?1 AND status = 0 AND claimed_by = ?2",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![id, claimer], |row| row.get(0))
                .optional()
        })
        .map_err(sql)?;
    let Some(rid) = rid else {
        return Ok(false);
    };
    conn.prepare_cached(
        "INSERT INTO webhook_attempts (delivery, attempt, at, duration_ms, status_code, error)
         VALUES (?1, (SELECT count(*) + 1 FROM webhook_attempts WHERE delivery = ?1), ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            rid,
            attempt.at,
            attempt.duration_ms as i64,
            attempt.status_code,
            attempt.error
        ])
    })
    .map_err(sql)?;
    let (status, next_at) = match next {
        DeliveryNext::Delivered => (DELIVERED, None),
        DeliveryNext::RetryAt(at) => (PENDING, Some(at)),
        DeliveryNext::Failed => (FAILED, None),
    };
    conn.prepare_cached(
        "UPDATE webhook_deliveries SET status = ?2, attempts = attempts + 1,
             next_attempt_at = coalesce(?3, next_attempt_at), claimed_by = NULL, lease_until = NULL
         WHERE rid = ?1",
    )
    .and_then(|mut statement| statement.execute(params![rid, status, next_at]))
    .map_err(sql)?;
    Ok(true)
}

/// [`toolgate_core::store::Store::redeliver`], on the writer.
pub(crate) fn redeliver(
    conn: &Connection,
    id: &str,
    now: i64,
) -> Result<DeliveryStatus, StoreError> {
    let sql =
        |error: rusqlite::Error| sqlite_failed(format!("cannot send delivery {id} again"), &error);
    let status: Option<i64> = conn
        .prepare_cached("SELECT status FROM webhook_deliveries WHERE id = ?1")
        .and_then(|mut statement| statement.query_row([id], |row| row.get(0)).optional())
        .map_err(sql)?;
    let Some(status) = status else {
        return Err(StoreError::NotFound {
            what: "webhook delivery",
            id: id.to_owned(),
        });
    };
    let status = status_of(status).ok_or_else(|| {
        corrupt(format!(
            "webhook delivery {id} has the unknown status {status}"
        ))
    })?;
    if status == DeliveryStatus::Failed {
        conn.prepare_cached(
            "UPDATE webhook_deliveries SET status = ?2, next_attempt_at = ?3,
                 claimed_by = NULL, lease_until = NULL
             WHERE id = ?1",
        )
        .and_then(|mut statement| statement.execute(params![id, PENDING, now]))
        .map_err(sql)?;
    }
    Ok(status)
}

/// Deletes up to [`PRUNE_CHUNK`] settled deliveries made before `before`,
/// oldest first, with their attempts; how many.
pub(crate) fn prune(conn: &Connection, before: i64) -> Result<u64, StoreError> {
    let sql = |error: rusqlite::Error| {
        sqlite_failed("cannot prune webhook deliveries".to_owned(), &error)
    };
    // The same chunk both times: the writer's transaction holds the file,
    // and the order is total.
    let chunk = "SELECT rid FROM webhook_deliveries INDEXED BY webhook_deliveries_newest
         WHERE created_at < ?1 AND status != ?2 ORDER BY created_at, rid LIMIT ?3";
    let values = params![before, PENDING, PRUNE_CHUNK as i64];
    conn.prepare_cached(&format!(
        "DELETE FROM webhook_attempts WHERE delivery IN ({chunk})"
    ))
    .and_then(|mut statement| statement.execute(values))
    .map_err(sql)?;
    let deleted = conn
        .prepare_cached(&format!(
            "DELETE FROM webhook_deliveries WHERE rid IN ({chunk})"
        ))
        .and_then(|mut statement| statement.execute(values))
        .map_err(sql)?;
    Ok(deleted as u64)
}

/// Deliveries, newest first (on a read connection).
pub(crate) fn list(conn: &Connection, query: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError> {
    let sql = |error: rusqlite::Error| sqlite_failed("cannot list webhook deliveries", &error);
    let limit = if query.limit == 0 { 50 } else { query.limit } as i64;
    let (filter, values) = match query.status {
        Some(status) => (
            "WHERE status = ?1",
            vec![Value::Integer(code(status)), Value::Integer(limit)],
        ),
        None => ("", vec![Value::Integer(limit)]),
    };
    let mut statement = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM webhook_deliveries {filter}
             ORDER BY created_at DESC, rid DESC LIMIT ?"
        ))
        .map_err(sql)?;
    let rows = statement
        .query_map(params_from_iter(values), |row| Ok(delivery(row)))
        .map_err(sql)?;
    let mut deliveries = Vec::new();
    for row in rows {
        let delivery = row.map_err(sql)??;
        deliveries.push(with_attempts(conn, delivery)?);
    }
    Ok(deliveries)
}

/// A delivery row, with its `rid` in place of the attempts still to read.
fn delivery(row: &Row<'_>) -> Result<(i64, Delivery), StoreError> {
    let column = |error: rusqlite::Error| {
        corrupt(format!(
            "a webhook delivery has a column toolgate did not write: {error}"
        ))
    };
    let status: i64 = row.get(7).map_err(column)?;
    let audit_seq: i64 = row.get(5).map_err(column)?;
    Ok((
        row.get(0).map_err(column)?,
        Delivery {
            id: row.get(1).map_err(column)?,
            webhook: row.get(2).map_err(column)?,
            event_key: row.get(3).map_err(column)?,
            event_type: row.get(4).map_err(column)?,
            audit_seq: audit_seq as u64,
            payload: row.get(6).map_err(column)?,
            status: status_of(status).ok_or_else(|| {
                corrupt(format!(
                    "a webhook delivery has the unknown status {status}"
                ))
            })?,
            created_at: row.get(8).map_err(column)?,
            next_attempt_at: row.get(9).map_err(column)?,
            attempts: Vec::new(),
        },
    ))
}

fn with_attempts(
    conn: &Connection,
    (rid, mut delivery): (i64, Delivery),
) -> Result<Delivery, StoreError> {
    let id = delivery.id.clone();
    let sql = |error: rusqlite::Error| {
        sqlite_failed(format!("cannot read the attempts of delivery {id}"), &error)
    };
    let mut statement = conn
        .prepare_cached(
            "SELECT attempt, at, duration_ms, status_code, error FROM webhook_attempts
             WHERE delivery = ?1 ORDER BY attempt",
        )
        .map_err(sql)?;
    let rows = statement
        .query_map([rid], |row| {
            Ok(DeliveryAttempt {
                attempt: row.get(0)?,
                at: row.get(1)?,
                duration_ms: row.get::<_, i64>(2)? as u64,
                status_code: row.get(3)?,
                error: row.get(4)?,
            })
        })
        .map_err(sql)?;
    delivery.attempts = rows.collect::<Result<_, _>>().map_err(sql)?;
    Ok(delivery)
}
