//! Who is calling: a bearer token, or the web inbox's session cookie
//! (which holds the same token, out of reach of scripts), checked against
//! the store's tokens.
//!
//! A request authenticated by the cookie that could change something must
//! also carry the session's CSRF token (`X-CSRF-Token`, or a form's
//! `csrf` field, checked by the inbox): another site can make a browser
//! send the cookie, but cannot read the CSRF token.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use toolgate_core::grant::Grant;
use toolgate_core::store::{Store, TokenRecord};
use toolgate_core::{Principal, Role};

use crate::problem::Problem;
use crate::state::AppState;
use crate::tokens::{TOKEN_PREFIX, csrf_token, secret_hash};
use crate::wire::TokenState;

/// The web inbox's session cookie.
pub(crate) const SESSION_COOKIE: &str = "toolgate_session";

/// The header that carries a session's CSRF token.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// An authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) token: TokenRecord,
}

impl Caller {
    pub(crate) fn principal(&self) -> &Principal {
        &self.token.principal
    }

    pub(crate) fn name(&self) -> &str {
        &self.token.principal.name
    }

    pub(crate) fn is_agent(&self) -> bool {
        self.token.principal.role == Role::Agent
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.token.principal.role == Role::Admin
    }

    /// True when this caller may revoke `grant`: admins any, others those
    /// they made.
    pub(crate) fn may_revoke(&self, grant: &Grant) -> bool {
        self.is_admin() || grant.created_by == self.name()
    }

    /// True when run `run_id` was started by this caller. Who started a run
    /// is in its first event, so only that one is folded.
    pub(crate) async fn started(
        &self,
        store: &dyn toolgate_core::store::Store,
        run_id: &str,
    ) -> Result<bool, toolgate_core::store::StoreError> {
        let events = store.load(run_id).await?;
        let first = toolgate_core::run::RunState::fold(events.first().map(|e| &e.event));
        Ok(first.principal.as_deref() == Some(self.name()))
    }

    /// Refuses agents: they ask, and never see or decide others' calls.
    pub(crate) fn require_decider(&self, what: &str) -> Result<(), Problem> {
        if self.is_agent() {
            return Err(Problem::forbidden(format!(
                "{} is an agent; agents may not {what}: use an approver's or an admin's token",
                self.name()
            )));
        }
        Ok(())
    }
}

/// Where a request's token came from.
enum Presented {
    Bearer(String),
    Cookie(String),
}

fn presented(headers: &HeaderMap) -> Result<Presented, Problem> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or("");
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                Problem::unauthorized(
                    "the Authorization header must be `Bearer ` and a token (tg_…)",
                )
            })?;
        return Ok(Presented::Bearer(secret.to_owned()));
    }
    if let Some(secret) = session_cookie(headers) {
        return Ok(Presented::Cookie(secret));
    }
    Err(Problem::unauthorized(
        "this needs a token: send `Authorization: Bearer tg_…` (make one with \
         `toolgate tokens create`)",
    ))
}

/// The session cookie's token, if the request has one.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE && !value.is_empty()).then(|| value.to_owned())
        })
}

/// Why a token's secret was refused.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// It does not look like a token at all.
    Malformed,
    /// No token has this secret.
    Unknown,
    /// The token was revoked.
    Revoked(String),
    /// The token is past its expiry.
    Expired(String),
    /// The store did not answer.
    Store(Problem),
}

impl From<Refusal> for Problem {
    fn from(refusal: Refusal) -> Problem {
        match refusal {
            Refusal::Malformed => Problem::unauthorized(format!(
                "that is not a toolgate token (they start with `{TOKEN_PREFIX}`)"
            )),
            Refusal::Unknown => Problem::unauthorized("the token is not known to this server"),
            Refusal::Revoked(id) => Problem::unauthorized(format!(
                "the token {id} was revoked; ask an admin for a new one"
            )),
            Refusal::Expired(id) => Problem::unauthorized(format!(
                "the token {id} has expired; ask an admin for a new one"
            )),
            Refusal::Store(problem) => problem,
        }
    }
}

/// Checks a token's secret; the token, or why it does not work.
pub(crate) async fn check_secret(state: &AppState, secret: &str) -> Result<TokenRecord, Refusal> {
    let hash = hash_of(secret)?;
    let token = match state.cached_token(&hash) {
        Some(token) => token,
        None => {
            let token = stored_token(&*state.store, &hash).await?;
            state.cache_token(&token);
            token
        }
    };
    live(token, state.now())
}

/// The hash a token's secret is stored by; refused when `secret` is no
/// toolgate token at all.
fn hash_of(secret: &str) -> Result<[u8; 32], Refusal> {
    if !secret.starts_with(TOKEN_PREFIX) {
        return Err(Refusal::Malformed);
    }
    Ok(secret_hash(secret))
}

/// The token whose secret hashes to `hash`.
async fn stored_token(store: &dyn Store, hash: &[u8; 32]) -> Result<TokenRecord, Refusal> {
    store
        .token_by_hash(hash)
        .await
        .map_err(|error| Refusal::Store(error.into()))?
        .ok_or(Refusal::Unknown)
}

/// The token, if it is neither revoked nor expired at `now`.
fn live(token: TokenRecord, now: i64) -> Result<TokenRecord, Refusal> {
    match TokenState::of(&token, now) {
        TokenState::Live => Ok(token),
        TokenState::Revoked => Err(Refusal::Revoked(token.id)),
        TokenState::Expired => Err(Refusal::Expired(token.id)),
    }
}

/// Checks the bearer token of a request to another of toolgate's HTTP
/// services (the MCP gateway's) against `store`'s tokens, as the approval
/// server does, without its cache: the token, or the problem to answer
/// with (401, with `WWW-Authenticate`).
///
/// # Errors
///
/// No `Authorization: Bearer` header, or a token that is not one, not
/// known, revoked or expired.
pub async fn bearer_token(
    store: &dyn Store,
    headers: &HeaderMap,
    now: i64,
) -> Result<TokenRecord, Problem> {
    let missing = || {
        Problem::unauthorized(
            "this needs a token: send `Authorization: Bearer tg_…` (make one with `toolgate \
             tokens create --role agent --name NAME`)",
        )
    };
    let secret = match presented(headers) {
        Ok(Presented::Bearer(secret)) => secret,
        Ok(Presented::Cookie(_)) => return Err(missing()),
        Err(problem) => return Err(problem),
    };
    let token = stored_token(store, &hash_of(&secret)?).await?;
    Ok(live(token, now)?)
}

/// Checks a token's secret; the caller it stands for.
pub(crate) async fn authenticate(state: &AppState, secret: &str) -> Result<TokenRecord, Problem> {
    Ok(check_secret(state, secret).await?)
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Caller, Problem> {
        match presented(&parts.headers)? {
            Presented::Bearer(secret) => Ok(Caller {
                token: authenticate(state, &secret).await?,
            }),
            Presented::Cookie(secret) => {
                let token = authenticate(state, &secret).await?;
                let csrf = csrf_token(&secret);
                let safe = matches!(parts.method, Method::GET | Method::HEAD);
                let header_csrf = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
                if !safe && header_csrf != Some(csrf.as_str()) {
                    return Err(Problem::forbidden(
                        "a request signed in by the session cookie must carry the session's \
                         CSRF token in the X-CSRF-Token header",
                    ));
                }
                Ok(Caller { token })
            }
        }
    }
}
