//! Run leases: which process drives a run now. Kept beside the run's row
//! and never touched by appends, so the driver's appends and other
//! people's decisions leave the lease alone. Lease writes add no audit
//! entry.

use rusqlite::{Connection, OptionalExtension, params};
use toolgate_core::store::{Lease, StoreError};

use super::codes;
use super::error::{corrupt, sqlite_failed};

/// Takes or renews a lease (in the writer's transaction).
pub(crate) fn lease(
    conn: &Connection,
    run_id: &str,
    owner: &str,
    until: i64,
    now: i64,
) -> Result<Lease, StoreError> {
    let sql = |error: rusqlite::Error| sqlite_failed(format!("cannot lease run {run_id}"), &error);
    let id = codes::id_value(run_id);
    let taken = conn
        .prepare_cached(
            "UPDATE runs SET lease_owner = ?2, lease_until = ?3
             WHERE id = ?1 AND (lease_owner IS NULL OR lease_owner = ?2 OR lease_until <= ?4)",
        )
        .and_then(|mut statement| statement.execute(params![id, owner, until, now]))
        .map_err(sql)?;
    if taken > 0 {
        return Ok(Lease::Held);
    }
    let held: Option<(Option<String>, Option<i64>)> = conn
        .prepare_cached("SELECT lease_owner, lease_until FROM runs WHERE id = ?1")
        .and_then(|mut statement| {
            statement
                .query_row([&id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(sql)?;
    match held {
        None => Err(StoreError::NotFound {
            what: "run",
            id: run_id.to_owned(),
        }),
        Some((Some(owner), Some(until))) => Ok(Lease::Busy { owner, until }),
        Some(_) => Err(corrupt(format!("run {run_id} has half a lease"))),
    }
}

/// Gives up a lease (in the writer's transaction).
pub(crate) fn release(conn: &Connection, run_id: &str, owner: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE runs SET lease_owner = NULL, lease_until = NULL
         WHERE id = ?1 AND lease_owner = ?2",
    )
    .and_then(|mut statement| statement.execute(params![codes::id_value(run_id), owner]))
    .map_err(|error| sqlite_failed(format!("cannot release run {run_id}"), &error))?;
    Ok(())
}

/// Leases runs that are ready for the engine (in the writer's transaction:
/// with one writer, two claims cannot take one run).
pub(crate) fn claim_ready(
    conn: &Connection,
    owner: &str,
    until: i64,
    now: i64,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let what = "cannot claim runs";
    let mut statement = conn
        .prepare_cached(
            "UPDATE runs SET lease_owner = ?1, lease_until = ?2
             WHERE rid IN (SELECT rid FROM runs
                           WHERE status = ?3 AND (lease_owner IS NULL OR lease_until <= ?4)
                           ORDER BY created_at, rid LIMIT ?5)
             RETURNING id",
        )
        .map_err(|error| sqlite_failed(what, &error))?;
    let mut rows = statement
        .query(params![
            owner,
            until,
            codes::run_status_value("running"),
            now,
            i64::try_from(limit).unwrap_or(i64::MAX)
        ])
        .map_err(|error| sqlite_failed(what, &error))?;
    let mut ids = Vec::new();
    while let Some(row) = rows.next().map_err(|error| sqlite_failed(what, &error))? {
        let stored = row
            .get_ref(0)
            .map_err(|error| sqlite_failed(what, &error))?;
        ids.push(
            codes::id_text(stored)
                .ok_or_else(|| corrupt("a run has an id toolgate did not write"))?,
        );
    }
    Ok(ids)
}
