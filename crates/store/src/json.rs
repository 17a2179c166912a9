//! The JSON both stores keep: an append turned into JSON text before it
//! reaches a connection, and JSON columns read back, with one wording for
//! what fails either way.

use serde::de::DeserializeOwned;
use toolgate_core::grant::Grant;
use toolgate_core::run::Event;
use toolgate_core::store::{Append, ApprovalRow, RunRow, StoreError, TokenRecord};

/// An append, checked ([`Append::check`]) and turned into JSON text.
pub(crate) struct AppendJson {
    pub(crate) expected_version: u64,
    /// The run's row; its id is the append's run.
    pub(crate) run: RunRow,
    /// Each event, with its JSON text (which is hashed).
    pub(crate) events: Vec<(Event, String)>,
    /// Each approval row, with its arguments and approvers (`None` for
    /// anyone) as JSON text.
    pub(crate) approvals: Vec<(ApprovalRow, String, Option<String>)>,
    /// Each grant, with its scope as JSON text.
    pub(crate) grants: Vec<(Grant, String)>,
    /// The creator's lease, for an append that creates the run.
    pub(crate) lease: Option<(String, i64)>,
}

impl AppendJson {
    /// Checks `append` and writes what a store keeps of it as JSON.
    pub(crate) fn new(append: Append) -> Result<AppendJson, StoreError> {
        append.check()?;
        let run_id = &append.run_id;
        let json = |what: &dyn Fn() -> String, result: serde_json::Result<String>| {
            result.map_err(|error| {
                refuse(run_id, format!("cannot write {} as JSON: {error}", what()))
            })
        };
        let events = append
            .events
            .into_iter()
            .map(|event| {
                let body = json(
                    &|| format!("a {} event", event.kind()),
                    serde_json::to_string(&event),
                )?;
                Ok((event, body))
            })
            .collect::<Result<_, StoreError>>()?;
        let approvals = append
            .approvals
            .into_iter()
            .map(|row| {
                let what = || format!("approval {}", row.id);
                let args = json(&what, serde_json::to_string(&row.args))?;
                let approvers = if row.approvers.is_empty() {
                    None
                } else {
                    Some(json(&what, serde_json::to_string(&row.approvers))?)
                };
                Ok((row, args, approvers))
            })
            .collect::<Result<_, StoreError>>()?;
        let grants = append
            .grants
            .into_iter()
            .map(|grant| {
                let scope = json(
                    &|| format!("grant {}", grant.id),
                    serde_json::to_string(&grant.scope),
                )?;
                Ok((grant, scope))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(AppendJson {
            expected_version: append.expected_version,
            run: append.run,
            events,
            approvals,
            grants,
            lease: append.lease,
        })
    }
}

/// An append to `run_id` that cannot be written, and why.
pub(crate) fn refuse(run_id: &str, why: String) -> StoreError {
    StoreError::Backend(format!("cannot append to run {run_id}: {why}").into())
}

/// JSON that toolgate wrote, read back; `what` names it when it cannot be.
pub(crate) fn read<T: DeserializeOwned>(
    text: &str,
    what: &dyn Fn() -> String,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|error| {
        StoreError::Corrupt(format!(
            "{} cannot be read ({error}); it was changed outside toolgate, or written by a newer toolgate",
            what()
        ))
    })
}

/// The body of the audit entry of a grant's revocation (`grant_revoked`).
pub(crate) fn grant_revoked(id: &str, by: &str, at: i64) -> String {
    serde_json::json!({ "type": "grant_revoked", "grant_id": id, "by": by, "at": at }).to_string()
}

/// The body of the audit entry of a new token (`token_created`): who made
/// it, for whom, with what role and groups, until when; never its secret
/// or the secret's hash.
pub(crate) fn token_created(token: &TokenRecord) -> String {
    serde_json::json!({
        "type": "token_created",
        "token_id": token.id,
        "name": token.principal.name,
        "role": token.principal.role.as_str(),
        "groups": token.principal.groups,
        "by": token.created_by,
        "at": token.created_at,
        "expires_at": token.expires_at,
    })
    .to_string()
}

/// The body of the audit entry of a token's revocation (`token_revoked`).
pub(crate) fn token_revoked(id: &str, by: &str, at: i64) -> String {
    serde_json::json!({ "type": "token_revoked", "token_id": id, "by": by, "at": at }).to_string()
}
