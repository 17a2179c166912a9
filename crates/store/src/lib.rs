//! Stores for toolgate: where runs, approvals, grants and the audit log live.
//!
//! [`SqliteStore`] keeps everything in one SQLite file: embedded, zero
//! set-up, the default. [`PgStore`] keeps it in a PostgreSQL database,
//! for several processes and hosts sharing the work. Both implement [`toolgate_core::store::Store`], whose
//! documentation gives the contract every store keeps.
//!
//! With the `conformance` feature, the `conformance` module holds the checks
//! of that contract and `store_conformance_tests!` turns them into tests, so
//! that every implementation (SQLite and PostgreSQL here) passes the same
//! ones.
//!
//! # Example
//!
//! ```
//! use toolgate_core::store::Store;
//! use toolgate_store::SqliteStore;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let store = SqliteStore::open(dir.path().join("toolgate.db")).unwrap();
//! assert_eq!(store.audit(0, 10).await.unwrap(), vec![]);
//! # });
//! ```

#[cfg(feature = "conformance")]
pub mod conformance;
mod json;
mod postgres;
mod reach;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::{SqliteStore, WriterStats};

/// How many webhook deliveries one transaction of a prune deletes at most,
/// so that pruning a long log does not hold up other writes for long.
pub(crate) const PRUNE_CHUNK: usize = 5_000;

/// Refuses event `seq` of run `run_id`'s log where event `expected` must
/// come: a log read back has no gaps, or events were deleted.
pub(crate) fn check_next_event(
    run_id: &str,
    expected: u64,
    seq: u64,
) -> Result<(), toolgate_core::store::StoreError> {
    if seq == expected {
        return Ok(());
    }
    Err(toolgate_core::store::StoreError::Corrupt(format!(
        "the log of run {run_id} goes from event {} to event {seq}: events were deleted",
        expected - 1
    )))
}
