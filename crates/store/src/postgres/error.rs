//! Turning PostgreSQL's errors into [`StoreError`]s that say what happened.

use std::fmt::Display;

use toolgate_core::store::StoreError;

/// The store's data is not what this code writes.
pub(crate) fn corrupt(message: impl Into<String>) -> StoreError {
    StoreError::Corrupt(message.into())
}

/// `what` failed because of a PostgreSQL error.
pub(crate) fn failed(what: impl Display, error: &tokio_postgres::Error) -> StoreError {
    StoreError::Backend(format!("{what}: {}", pg_error(error)).into())
}

/// PostgreSQL's description of an error: the server's message, detail and
/// hint when the server answered, the client's error otherwise (with its
/// cause, which `tokio_postgres::Error`'s own text leaves out).
pub(crate) fn pg_error(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{} ({})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text += &format!("; {detail}");
        }
        if let Some(hint) = db.hint() {
            text += &format!("; {hint}");
        }
        return text;
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text += &format!(": {cause_text}");
        }
        source = cause.source();
    }
    text
}
