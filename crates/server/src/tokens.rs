//! API tokens: made here, kept in the store only as the SHA-256 of their
//! secret, shown to their owner once; and the `/v1/tokens` routes, by
//! which admins make, list and revoke them over HTTP as `toolgate tokens`
//! does on the store's host.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use toolgate_core::audit::hex;
use toolgate_core::store::{StoreError, TokenRecord};
use toolgate_core::time::after;
use toolgate_core::{Principal, Role};

use crate::api::{Body, Id, require_admin};
use crate::auth::Caller;
use crate::problem::Problem;
use crate::state::AppState;
use crate::wire::{CreateToken, CreatedToken, TokenList, TokenView};

/// What every token's secret starts with, so that one found in a log or a
/// repository is recognisable.
pub const TOKEN_PREFIX: &str = "tg_";

/// A new token: the record to store, and its secret, to give its owner.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// What the store keeps.
    pub record: TokenRecord,
    /// The secret: `tg_` and 64 hex digits. It is not kept anywhere.
    pub secret: String,
}

/// Makes a token for `principal`, made by `created_by` at `now`.
///
/// # Errors
///
/// A principal or group name toolgate does not accept.
pub fn issue_token(
    principal: Principal,
    created_by: &str,
    expires_at: Option<i64>,
    now: i64,
) -> Result<IssuedToken, String> {
    check_name("principal name", &principal.name)?;
    for group in &principal.groups {
        check_name("group name", group)?;
    }
    // `rand::random` draws from the thread's CSPRNG, seeded by the
    // operating system.
    let secret = format!("{TOKEN_PREFIX}{}", hex(&rand::random::<[u8; 32]>()));
    let id = format!("tok_{}", hex(&rand::random::<[u8; 8]>()));
    Ok(IssuedToken {
        record: TokenRecord {
            id,
            principal,
            hash: secret_hash(&secret),
            created_at: now,
            created_by: created_by.to_owned(),
            expires_at,
            revoked_at: None,
        },
        secret,
    })
}

/// The SHA-256 a token's secret is stored and looked up as.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The web inbox's CSRF token for a session: derived from the secret, so
/// only someone who holds the secret (which the session cookie hides from
/// scripts) can know it.
pub(crate) fn csrf_token(secret: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"toolgate-csrf-v1\0");
    hasher.update(secret.as_bytes());
    hex(&hasher.finalize())
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    let fine = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if fine {
        Ok(())
    } else {
        Err(format!(
            "the {what} {name:?} is not one toolgate accepts: use 1 to 64 letters, digits and `. _ @ -`"
        ))
    }
}

/// Make a token (admins only). The answer holds its secret, which is
/// shown this once: the server keeps only its SHA-256.
#[utoipa::path(
    post, path = "/v1/tokens", tag = "tokens",
    request_body = CreateToken,
    responses(
        (status = 201, description = "Made; the secret is in `token`", body = CreatedToken,
         headers(("Location" = String, description = "The token's URL"))),
        (status = 400, description = "A bad name, group, role or duration", body = crate::problem::ProblemDocument),
        (status = 401, description = "No token, or a bad one", body = crate::problem::ProblemDocument),
        (status = 403, description = "Only admins make tokens", body = crate::problem::ProblemDocument),
    ),
    security(("token" = []))
)]
pub(crate) async fn create_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(body): Body<CreateToken>,
) -> Result<Response, Problem> {
    let issued = make(&state, &caller, body).await?;
    let created = CreatedToken::from(&issued);
    let id = issued.record.id;
    let mut response = (StatusCode::CREATED, axum::Json(created)).into_response();
    let headers = response.headers_mut();
    // The secret must not stay in a cache on the way.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/tokens/{id}")) {
        headers.insert(header::LOCATION, location);
    }
    Ok(response)
}

/// List the tokens, newest first, revoked and expired ones included, never
/// with their secrets (admins only).
#[utoipa::path(
    get, path = "/v1/tokens", tag = "tokens",
    responses(
        (status = 200, description = "The tokens", body = TokenList),
        (status = 401, description = "No token, or a bad one", body = crate::problem::ProblemDocument),
        (status = 403, description = "Only admins see tokens", body = crate::problem::ProblemDocument),
    ),
    security(("token" = []))
)]
pub(crate) async fn list_tokens(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<axum::Json<TokenList>, Problem> {
    require_admin(&caller, "see tokens")?;
    let now = state.now();
    let tokens = state.store.tokens().await?;
    Ok(axum::Json(TokenList {
        tokens: tokens.iter().map(|t| TokenView::of(t, now)).collect(),
    }))
}

/// One token, never with its secret (admins only).
#[utoipa::path(
    get, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "The token's id (tok_…)")),
    responses(
        (status = 200, description = "The token", body = TokenView),
        (status = 401, description = "No token, or a bad one", body = crate::problem::ProblemDocument),
        (status = 403, description = "Only admins see tokens", body = crate::problem::ProblemDocument),
        (status = 404, description = "No such token", body = crate::problem::ProblemDocument),
    ),
    security(("token" = []))
)]
pub(crate) async fn get_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Id(id): Id,
) -> Result<axum::Json<TokenView>, Problem> {
    require_admin(&caller, "see tokens")?;
    let token = match state.store.token(&id).await {
        Ok(token) => token,
        Err(StoreError::NotFound { .. }) => return Err(no_token(&id)),
        Err(error) => return Err(error.into()),
    };
    Ok(axum::Json(TokenView::of(&token, state.now())))
}

/// Revoke a token (admins only): requests with it are refused from then
/// on, by this server at once and by other servers on the same store
/// within their token cache's time (2 seconds by default).
#[utoipa::path(
    delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "The token's id (tok_…)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No token, or a bad one", body = crate::problem::ProblemDocument),
        (status = 403, description = "Only admins revoke tokens", body = crate::problem::ProblemDocument),
        (status = 404, description = "No such token", body = crate::problem::ProblemDocument),
        (status = 409, description = "Revoked already", body = crate::problem::ProblemDocument),
    ),
    security(("token" = []))
)]
pub(crate) async fn revoke_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Id(id): Id,
) -> Result<StatusCode, Problem> {
    revoke(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Makes and keeps the token `body` asks for, by `caller`, who must be an
/// admin: what `POST /v1/tokens` and the inbox's tokens page share.
pub(crate) async fn make(
    state: &AppState,
    caller: &Caller,
    body: CreateToken,
) -> Result<IssuedToken, Problem> {
    require_admin(caller, "make tokens")?;
    let role = Role::parse(body.role.trim()).ok_or_else(|| {
        Problem::bad_request(format!(
            "`{}` is not a role; use agent, approver or admin",
            body.role
        ))
    })?;
    let now = state.now();
    let expires_at = match body.expires_in.as_deref().map(str::trim) {
        None => None,
        Some(text) => {
            let duration = humantime::parse_duration(text)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    Problem::bad_request(format!(
                        "`expires_in` must be a duration such as 90d or 12h, not `{text}`; leave \
                         it out for a token that works until it is revoked"
                    ))
                })?;
            Some(after(now, duration))
        }
    };
    let principal = Principal::new(body.name, role).groups(body.groups);
    let issued =
        issue_token(principal, caller.name(), expires_at, now).map_err(Problem::bad_request)?;
    state.store.create_token(&issued.record).await?;
    Ok(issued)
}

/// Revokes token `id` by `caller`, who must be an admin, and stops
/// trusting it at once in this server: what `DELETE /v1/tokens/{id}` and
/// the inbox's tokens page share.
pub(crate) async fn revoke(state: &AppState, caller: &Caller, id: &str) -> Result<(), Problem> {
    require_admin(caller, "revoke tokens")?;
    match state
        .store
        .revoke_token(id, caller.name(), state.now())
        .await
    {
        Ok(true) => {
            state.forget_token(id);
            Ok(())
        }
        Ok(false) => Err(Problem::conflict(
            "already-revoked",
            format!("token {id} is revoked already"),
        )),
        Err(StoreError::NotFound { .. }) => Err(no_token(id)),
        Err(error) => Err(error.into()),
    }
}

fn no_token(id: &str) -> Problem {
    Problem::not_found(format!(
        "there is no token `{id}`; GET /v1/tokens lists them"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_core::Role;

    #[test]
    fn tokens_are_random_and_stored_as_their_hash() {
        let alice = Principal::new("alice", Role::Approver).groups(["ops"]);
        let one = issue_token(alice.clone(), "admin", None, 5).unwrap();
        let two = issue_token(alice, "admin", None, 5).unwrap();
        assert_ne!(one.secret, two.secret);
        assert_ne!(one.record.id, two.record.id);
        assert!(one.secret.starts_with("tg_") && one.secret.len() == 67);
        assert_eq!(one.record.hash, secret_hash(&one.secret));
        assert!(!format!("{:?}", one.record).contains(&one.secret));
        assert_ne!(csrf_token(&one.secret), csrf_token(&two.secret));
    }

    #[test]
    fn names_are_checked() {
        let error = issue_token(Principal::new("al ice", Role::Agent), "x", None, 0).unwrap_err();
        assert!(error.contains("\"al ice\""), "{error}");
        let error = issue_token(
            Principal::new("alice", Role::Agent).groups(["<ops>"]),
            "x",
            None,
            0,
        )
        .unwrap_err();
        assert!(error.contains("group name"), "{error}");
        assert!(issue_token(Principal::new("", Role::Agent), "x", None, 0).is_err());
    }
}
