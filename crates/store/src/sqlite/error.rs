//! Turning SQLite's errors into [`StoreError`]s that say what happened and
//! what to do.

use std::fmt::Display;

use rusqlite::ErrorCode;
use toolgate_core::store::StoreError;

use super::schema::BUSY_TIMEOUT;

/// The store's data is not what this code writes.
pub(crate) fn corrupt(message: impl Into<String>) -> StoreError {
    StoreError::Corrupt(message.into())
}

/// `what` failed because of `error`.
pub(crate) fn failed(what: impl Display, error: impl Display) -> StoreError {
    StoreError::Backend(format!("{what}: {error}").into())
}

/// `what` failed because of an SQLite error: damage is reported as
/// [`StoreError::Corrupt`], anything else as a failure of the database.
pub(crate) fn sqlite_failed(what: impl Display, error: &rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => corrupt(format!(
            "{what}: {}; restore the store from a backup",
            sqlite_error(error)
        )),
        _ => failed(what, sqlite_error(error)),
    }
}

/// SQLite's description of an error, with what it usually means where the
/// bare text would puzzle.
pub(crate) fn sqlite_error(error: &rusqlite::Error) -> String {
    let hint = match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Some(format!(
            "another process kept the database locked for more than {}s",
            BUSY_TIMEOUT.as_secs()
        )),
        Some(ErrorCode::DiskFull) => Some("the disk is full".to_owned()),
        Some(ErrorCode::ReadOnly) => {
            Some("the file, or its directory, may not be written".to_owned())
        }
        Some(ErrorCode::PermissionDenied) => Some("permission denied".to_owned()),
        _ => None,
    };
    match hint {
        Some(hint) => format!("{hint} ({error})"),
        None => error.to_string(),
    }
}
