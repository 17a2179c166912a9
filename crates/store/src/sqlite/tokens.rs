//! API tokens, approval counts and the audit log's head: small queries
//! beside the audit log. Making and revoking a token each add a signed
//! audit entry.

use rusqlite::{Connection, OptionalExtension, Row, params};
use toolgate_core::run::ApprovalStatus;
use toolgate_core::store::{StoreError, TokenRecord};
use toolgate_core::{Principal, Role};

use super::codes;
use super::error::{corrupt, sqlite_failed};
use super::writer::Audit;
use crate::json::read as json;

const COLUMNS: &str =
    "id, hash, name, role, groups, created_at, created_by, expires_at, revoked_at";

/// Adds a token and its audit entry (in the writer's transaction).
pub(crate) fn create(
    conn: &Connection,
    audit: &mut Audit<'_>,
    token: &TokenRecord,
) -> Result<bool, StoreError> {
    let groups = serde_json::to_string(&token.principal.groups)
        .map_err(|error| corrupt(format!("cannot write token {}: {error}", token.id)))?;
    conn.prepare_cached(&format!(
        "INSERT INTO tokens ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))
    .and_then(|mut statement| {
        statement.execute(params![
            token.id,
            &token.hash[..],
            token.principal.name,
            token.principal.role.as_str(),
            groups,
            token.created_at,
            token.created_by,
            token.expires_at,
            token.revoked_at,
        ])
    })
    .map_err(|error| sqlite_failed(format!("cannot create token {}", token.id), &error))?;
    audit.record(conn, "token_created", &crate::json::token_created(token))?;
    Ok(true)
}

/// Revokes a token and records who did in the audit log (in the writer's
/// transaction).
pub(crate) fn revoke(
    conn: &Connection,
    audit: &mut Audit<'_>,
    id: &str,
    by: &str,
    at: i64,
) -> Result<bool, StoreError> {
    audit.revoke(
        conn,
        ("token", id),
        "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id, at],
        ("token_revoked", &crate::json::token_revoked(id, by, at)),
    )
}

/// The token with this hash.
pub(crate) fn by_hash(
    conn: &Connection,
    hash: &[u8; 32],
) -> Result<Option<TokenRecord>, StoreError> {
    let what = || "cannot look up a token".to_owned();
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tokens WHERE hash = ?1"))
        .and_then(|mut statement| {
            statement
                .query_row([&hash[..]], |row| Ok(token(row)))
                .optional()
        })
        .map_err(|error| sqlite_failed(what(), &error))?
        .transpose()
}

/// The token with this id.
pub(crate) fn by_id(conn: &Connection, id: &str) -> Result<TokenRecord, StoreError> {
    let what = || format!("cannot read token {id}");
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tokens WHERE id = ?1"))
        .and_then(|mut statement| statement.query_row([id], |row| Ok(token(row))).optional())
        .map_err(|error| sqlite_failed(what(), &error))?
        .unwrap_or_else(|| {
            Err(StoreError::NotFound {
                what: "token",
                id: id.to_owned(),
            })
        })
}

/// Every token, newest first.
pub(crate) fn all(conn: &Connection) -> Result<Vec<TokenRecord>, StoreError> {
    let what = || "cannot list tokens".to_owned();
    let mut statement = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM tokens ORDER BY created_at DESC, id DESC"
        ))
        .map_err(|error| sqlite_failed(what(), &error))?;
    let rows = statement
        .query_map([], |row| Ok(token(row)))
        .map_err(|error| sqlite_failed(what(), &error))?;
    let mut tokens = Vec::new();
    for row in rows {
        tokens.push(row.map_err(|error| sqlite_failed(what(), &error))??);
    }
    Ok(tokens)
}

/// How many approvals have `status`: a count over its index.
pub(crate) fn approval_count(conn: &Connection, status: ApprovalStatus) -> Result<u64, StoreError> {
    conn.prepare_cached("SELECT count(*) FROM approvals WHERE status = ?1")
        .and_then(|mut statement| {
            statement.query_row([codes::status_code(status)], |row| row.get::<_, i64>(0))
        })
        .map(|n| n as u64)
        .map_err(|error| sqlite_failed(format!("cannot count {status} approvals"), &error))
}

fn token(row: &Row<'_>) -> Result<TokenRecord, StoreError> {
    let id: String = row
        .get(0)
        .map_err(|error| corrupt(format!("a token has an unreadable id: {error}")))?;
    let what = || format!("token {id}");
    let column = |error: rusqlite::Error| {
        corrupt(format!(
            "{} has a column toolgate did not write: {error}",
            what()
        ))
    };
    let hash: Vec<u8> = row.get(1).map_err(column)?;
    let role: String = row.get(3).map_err(column)?;
    let groups: String = row.get(4).map_err(column)?;
    Ok(TokenRecord {
        hash: hash
            .try_into()
            .map_err(|_| corrupt(format!("{} has a hash that is not 32 bytes", what())))?,
        principal: Principal {
            name: row.get(2).map_err(column)?,
            role: Role::parse(&role)
                .ok_or_else(|| corrupt(format!("{} has the unknown role `{role}`", what())))?,
            groups: json(&groups, &what)?,
        },
        created_at: row.get(5).map_err(column)?,
        created_by: row.get(6).map_err(column)?,
        expires_at: row.get(7).map_err(column)?,
        revoked_at: row.get(8).map_err(column)?,
        id,
    })
}

/// The last audit entry's number.
pub(crate) fn audit_head(conn: &Connection) -> Result<u64, StoreError> {
    conn.prepare_cached("SELECT coalesce(max(seq), 0) FROM events")
        .and_then(|mut statement| statement.query_row([], |row| row.get::<_, i64>(0)))
        .map(|n| n as u64)
        .map_err(|error| sqlite_failed("cannot read the audit log's head", &error))
}
