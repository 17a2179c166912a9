//! The `/v1` API: agents ask about calls and wait for decisions; approvers
//! list, read and decide them, and manage grants.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use toolgate_core::grant::{GrantRequest, GrantSpec};
use toolgate_core::run::ApprovalStatus;
use toolgate_core::store::{ApprovalQuery, DeliveryQuery, DeliveryStatus, GrantQuery, StoreError};
use toolgate_core::{Fingerprint, ToolHints};
use toolgate_engine::{
    ApprovalDetail, CallRequest, DecideError, DecisionRequest, NewApprovalId, approval_detail,
    decide_detailed, expire_approval, request_call,
};
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::problem::Problem;
use crate::state::{AppState, Waiting};
use crate::wire::{
    Approval, ApprovalDetailBody, ApprovalPage, CreateApproval, DecisionAnswer, DecisionBody,
    DecisionKind, DeliveryList, DeliveryView, GrantBody, GrantList, GrantView, Me, Redelivery,
};

/// The most approvals one page lists.
const MAX_LIMIT: usize = 500;

/// A JSON body whose rejection is a problem document.
pub(crate) struct Body<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let axum::Json(value) = axum::Json::<T>::from_request(request, state).await?;
        Ok(Body(value))
    }
}

/// A query string whose rejection is a problem document.
pub(crate) struct Params<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Problem> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(Params(value))
    }
}

/// A path parameter whose rejection is a problem document.
pub(crate) struct Id(pub(crate) String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Id {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Problem> {
        let Path(id) = Path::<String>::from_request_parts(parts, state).await?;
        Ok(Id(id))
    }
}

/// Ask about a call.
///
/// The call is gated at once: by policy (`allow`, `deny`), by a standing
/// grant, or it waits for people (`pending`). Run the tool only when the
/// status is `approved` or `edited` (then with `args`, which an approver
/// may have changed). With `?wait=30s`, a call that waits for people is
/// answered when they decide (or the wait ends, still `pending`: wait
/// again on the `Location`), in the one request.
#[utoipa::path(
    post, path = "/v1/approvals", tag = "approvals",
    params(WaitParams),
    request_body = CreateApproval,
    responses(
        (status = 201, description = "Recorded; decided or pending", body = ApprovalDetailBody,
         headers(("Location" = String, description = "The approval's URL"))),
        (status = 400, description = "Malformed request, or a bad wait", body = crate::problem::ProblemDocument),
        (status = 401, description = "No token, or a bad one", body = crate::problem::ProblemDocument),
        (status = 403, description = "The run belongs to another principal", body = crate::problem::ProblemDocument),
        (status = 409, description = "The run is not an outside agent's", body = crate::problem::ProblemDocument),
        (status = 422, description = "The arguments fail the schema", body = crate::problem::ProblemDocument),
    ),
    security(("token" = []))
)]
pub(crate) async fn create_approval(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Params(params): Params<WaitParams>,
    Body(body): Body<CreateApproval>,
) -> Result<Response, Problem> {
    let wait = wait_of(&state, params.wait.as_deref())?;
    let mut request = CallRequest::new(body.tool, body.args);
    // The wait starts before the call is recorded, so that no decision
    // made as soon as it is comes unseen.
    let waiting = (!wait.is_zero()).then(|| {
        let id = NewApprovalId::new();
        let waiting = state.wait_on(id.as_str());
        request.approval_id = Some(id);
        waiting
    });
    request.run_id = body.run_id;
    request.thread = body.thread;
    request.schema = body.schema;
    request.description = body.description;
    request.context = body.context;
    request.hints = ToolHints {
        read_only: body.hints.read_only,
        destructive: body.hints.destructive,
        idempotent: body.hints.idempotent,
    };
    let detail = request_call(
        state.store.as_ref(),
        &state.config.policy,
        caller.principal(),
        request,
        state.now(),
    )
    .await?;
    state.changed();
    let detail = match waiting {
        Some(waiting) if detail.row.status == ApprovalStatus::Pending => {
            wait_for_decision(&state, detail, wait, waiting).await?
        }
        _ => detail,
    };
    let location = format!("/v1/approvals/{}", detail.row.id);
    let mut response = (
        StatusCode::CREATED,
        axum::Json(ApprovalDetailBody::from(&detail)),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Which approvals to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// Statuses, comma-separated (`pending`, `approved`, `edited`,
    /// `rejected`, `expired`, `cancelled`), or `all` (the default).
    status: Option<String>,
    /// Only this run's. Agents must give one of their own runs.
    run_id: Option<String>,
    /// Only approvals older than this one: the previous page's
    /// `next_before`.
    before: Option<String>,
    /// At most this many (default 50, at most 500).
    limit: Option<usize>,
}

/// List approvals, newest first.
#[utoipa::path(
    get, path = "/v1/approvals", tag = "approvals",
    params(ListParams),
    responses(
        (status = 200, description = "A page of approvals", body = ApprovalPage),
        (status = 400, description = "Malformed query", body = crate::problem::ProblemDocument),
        (status = 401, description = "No token, or a bad one", body = crate::problem::ProblemDocument),
        (status = 403, description = "An agent listing beyond its own runs", body = crate::problem::ProblemDocument),
        (status = 404, description = "`before` names no approval, or `run_id` no run", body = crate::problem::ProblemDocument),
    ),
    security(("token" = []))
)]
pub(crate) async fn list_approvals(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Params(params): Params<ListParams>,
) -> Result<axum::Json<ApprovalPage>, Problem> {
    let statuses = parse_statuses(params.status.as_deref())?;
    let limit = page_limit(params.limit)?;
    if caller.is_agent() {
        let Some(run_id) = &params.run_id else {
            return Err(Problem::forbidden(format!(
                "{} is an agent; agents list the approvals of their own runs: give run_id",
                caller.name()
            )));
        };
        check_run_owner(&state, &caller, run_id).await?;
    }
    let rows = state
        .store
        .approvals(&ApprovalQuery {
            statuses,
            run_id: params.run_id,
            before: params.before,
            limit: limit + 1,
        })
        .await?;
    let (rows, next_before) = page_of(rows, limit, |row| &row.id);
    let approvals: Vec<Approval> = rows.iter().map(Approval::from).collect();
    Ok(axum::Json(ApprovalPage {
        approvals,
        next_before,
    }))
}

/// The size of a page a listing asked for: 50 unless it says, and from 1
/// to [`MAX_LIMIT`].
fn page_limit(asked: Option<usize>) -> Result<usize, Problem> {
    let limit = asked.unwrap_or(50);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Problem::bad_request(format!(
            "limit must be from 1 to {MAX_LIMIT}; page with `before` for more"
        )));
    }
    Ok(limit)
}

/// A page of at most `limit` of `rows` (read with one more than that, to
/// tell whether more follow), and the id to pass as `before` for the next
/// page when more follow.
pub(crate) fn page_of<T>(
    mut rows: Vec<T>,
    limit: usize,
    id: impl Fn(&T) -> &String,
) -> (Vec<T>, Option<String>) {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_before = more
        .then(|| rows.last().map(|row| id(row).clone()))
        .flatten();
    (rows, next_before)
}

/// The grants a listing's `state` asks for at `now`, `live` or `all`
/// (`default` when it names none), with the state's name.
pub(crate) fn grant_query(
    state: Option<&str>,
    default: &'static str,
    now: i64,
) -> Result<(&'static str, GrantQuery), Problem> {
    match state.filter(|state| !state.is_empty()) {
        None if default == "live" => Ok(("live", GrantQuery::live(now))),
        None => Ok(("all", GrantQuery::all())),
        Some("live") => Ok(("live", GrantQuery::live(now))),
        Some("all") => Ok(("all", GrantQuery::all())),
        Some(other) => Err(Problem::bad_request(format!(
            "unknown grant state `{other}`: use `live` or `all`"
        ))),
    }
}

pub(crate) fn parse_statuses(text: Option<&str>) -> Result<Vec<ApprovalStatus>, Problem> {
    let Some(text) = text.filter(|t| !t.trim().is_empty() && t.trim() != "all") else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(|word| {
            ApprovalStatus::parse(word.trim()).ok_or_else(|| {
                Problem::bad_request(format!(
                    "`{}` is not a status: use pending, approved, edited, rejected, expired, \
                     cancelled or all, comma-separated",
                    word.trim()
                ))
            })
        })
        .collect()
}

/// How long to wait for a decision.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitParams {
    /// Wait up to this long (`30s`, `2m`) while the approval is pending,
    /// answering as soon as it is decided (long-poll). At most 5 minutes.
    wait: Option<String>,
}

/// Read an approval, optionally waiting for its decision.
#[utoipa::path(
    get, path = "/v1/approvals/{id}", tag = "approvals",
    params(("id" = String, Path, description = "The approval's id"), WaitParams),
    responses(
        (status = 200, description = "The approval as it stands", body = ApprovalDetailBody),
        (status = 400, description = "A bad wait", body = crate::problem::ProblemDocument),
        (status = 401, description = "No token, or a bad one", body = crate::problem::ProblemDocument),
        (status = 403, description = "Another principal's approval", body = crate::problem::ProblemDocument),
        (status = 404, description = "No such approval", body = crate::problem::ProblemDocument),
    ),
    security(("token" = []))
)]
pub(crate) async fn get_approval(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Id(id): Id,
    Params(params): Params<WaitParams>,
) -> Result<axum::Json<ApprovalDetailBody>, Problem> {
    let wait = wait_of(&state, params.wait.as_deref())?;
    // The wait starts before the read, so that no change after it is
    // missed.
    let waiting = (!wait.is_zero()).then(|| state.wait_on(&id));
    let detail = approval_detail(state.store.as_ref(), &id).await?;
    check_visible(&caller, &detail)?;
    let detail = match waiting {
        None => expired_now(&state, detail).await?,
        Some(waiting) => wait_for_decision(&state, detail, wait, waiting).await?,
    };
    Ok(axum::Json(ApprovalDetailBody::from(&detail)))
}

/// How long a request's `?wait=` asks to wait: zero without one.
fn wait_of(state: &AppState, wait: Option<&str>) -> Result<Duration, Problem> {
    let Some(text) = wait else {
        return Ok(Duration::ZERO);
    };
    let wait = humantime::parse_duration(text).map_err(|error| {
        Problem::bad_request(format!(
            "wait=`{text}` is not a duration ({error}); write it like 30s or 2m"
        ))
    })?;
    if wait > state.config.max_wait {
        return Err(Problem::bad_request(format!(
            "wait={text} is longer than this server waits ({}); wait again after it answers",
            humantime::format_duration(state.config.max_wait)
        )));
    }
    Ok(wait)
}

/// The approval, expired first if it is pending past its time.
pub(crate) async fn expired_now(
    state: &AppState,
    detail: ApprovalDetail,
) -> Result<ApprovalDetail, Problem> {
    if detail.row.status == ApprovalStatus::Pending
        && detail.row.expires_at.is_some_and(|at| at <= state.now())
    {
        expire(state, &detail.row.id).await?;
        return Ok(approval_detail(state.store.as_ref(), &detail.row.id).await?);
    }
    Ok(detail)
}

async fn expire(state: &AppState, id: &str) -> Result<(), Problem> {
    match expire_approval(state.store.as_ref(), id, state.now()).await {
        Ok(_) => {
            state.approval_changed(id, None);
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// Waits until approval `detail` is decided, it expires, `wait` passes or
/// the server shuts down; the approval as it then stands. `waiting` wakes
/// it when this server changes the approval; changes made elsewhere wake
/// it through [`AppState::outside`], or it looks again after a while.
async fn wait_for_decision(
    state: &AppState,
    mut detail: ApprovalDetail,
    wait: Duration,
    mut waiting: Waiting<'_>,
) -> Result<ApprovalDetail, Problem> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut shutdown = state.shutdown.subscribe();
    let id = detail.row.id.clone();
    loop {
        detail = expired_now(state, detail).await?;
        let now = tokio::time::Instant::now();
        if detail.row.status != ApprovalStatus::Pending || now >= deadline || *shutdown.borrow() {
            return Ok(detail);
        }
        let mut nap = state.recheck().min(deadline - now);
        if let Some(at) = detail.row.expires_at {
            let left = u64::try_from(at.saturating_sub(state.now())).unwrap_or(0);
            nap = nap.min(Duration::from_millis(left));
        }
        tokio::select! {
            changed = waiting.signal.changed() => {
                // A decision through this server: the approval as it left
                // it, as the store has it now.
                let now = waiting.signal.borrow_and_update().clone();
                if let (Ok(()), Some(now)) = (changed, now) {
                    detail = ApprovalDetail::clone(&now);
                    continue;
                }
            }
            _ = waiting.outside.changed() => {}
            _ = shutdown.changed() => {}
            () = tokio::time::sleep(nap) => {}
        }
        let row = state.store.approval(&id).await?;
        if row.status != detail.row.status || row.decided_at != detail.row.decided_at {
            detail = approval_detail(state.store.as_ref(), &id).await?;
        }
    }
}

/// Agents see only the approvals of their own runs.
fn check_visible(caller: &Caller, detail: &ApprovalDetail) -> Result<(), Problem> {
    if caller.is_agent() && detail.run_principal.as_deref() != Some(caller.name()) {
        return Err(Problem::forbidden(format!(
            "approval {} belongs to another principal's run; {} is an agent and sees only its own",
            detail.row.id,
            caller.name()
        )));
    }
    Ok(())
}

/// Agents act only on their own runs.
async fn check_run_owner(state: &AppState, caller: &Caller, run_id: &str) -> Result<(), Problem> {
    let started = match caller.started(state.store.as_ref(), run_id).await {
        Ok(started) => started,
        Err(StoreError::NotFound { .. }) => {
            return Err(Problem::not_found(format!("there is no run `{run_id}`")));
        }
        Err(error) => return Err(error.into()),
    };
    if !started {
        return Err(Problem::forbidden(format!(
            "run {run_id} belongs to another principal; {} is an agent and sees only its own runs",
            caller.name()
        )));
    }
    Ok(())
}

/// Decide an approval.
///
/// `approve` runs the call as it is; `edit` runs it with `args` (checked
/// against the schema; it counts as the editor's approval); `reject`
/// refuses it, and `message` goes back to the agent. With `fingerprint`,
/// the decision is refused if the call is no longer the one shown.
#[utoipa::path(
    post, path = "/v1/approvals/{id}/decision", tag = "approvals",
    params(("id" = String, Path, description = "The approval's id")),
    request_body = DecisionBody,
    responses(
        (status = 200, description = "Recorded", body = DecisionAnswer),
        (status = 400, description = "Malformed decision or grant", body = crate::problem::ProblemDocument),
        (status = 401, description = "No token, or a bad one", body = crate::problem::ProblemDocument),
        (status = 403, description = "The caller may not decide it", body = crate::problem::ProblemDocument),
        (status = 404, description = "No such approval", body = crate::problem::ProblemDocument),
        (status = 409, description = "Decided already (the winning state is in `approval`), or another fingerprint", body = crate::problem::ProblemDocument),
        (status = 422, description = "Edited arguments fail the schema", body = crate::problem::ProblemDocument),
    ),
    security(("token" = []))
)]
pub(crate) async fn decide_approval(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Id(id): Id,
    Body(body): Body<DecisionBody>,
) -> Result<axum::Json<DecisionAnswer>, Problem> {
    caller.require_decider("decide approvals")?;
    record_decision(&state, &caller, &id, body)
        .await
        .map(axum::Json)
}

/// Records a decision for the API and the inbox alike.
pub(crate) async fn record_decision(
    state: &AppState,
    caller: &Caller,
    id: &str,
    body: DecisionBody,
) -> Result<DecisionAnswer, Problem> {
    let request = match (body.decision, body.args, body.message) {
        (DecisionKind::Approve, None, None) => DecisionRequest::Approve,
        (DecisionKind::Edit, Some(args), None) => DecisionRequest::Edit(args),
        (DecisionKind::Reject, None, message) => {
            DecisionRequest::Reject(message.filter(|m| !m.trim().is_empty()))
        }
        (DecisionKind::Edit, None, _) => {
            return Err(Problem::bad_request(
                "an edit needs `args`: the arguments the call should run with",
            ));
        }
        (_, Some(_), _) => {
            return Err(Problem::bad_request(
                "`args` go only with `\"decision\": \"edit\"`",
            ));
        }
        (_, _, Some(_)) => {
            return Err(Problem::bad_request(
                "`message` goes only with `\"decision\": \"reject\"`",
            ));
        }
    };
    let now = state.now();
    let granting = body.grant.is_some();
    let grant = match body.grant {
        None => None,
        Some(grant) => {
            let (scope, tool, when) = match grant {
                GrantBody::Scope(scope) => (scope, None, None),
                GrantBody::Full { scope, tool, when } => (scope, tool, when),
            };
            let spec: GrantSpec = scope
                .parse()
                .map_err(|why: String| Problem::bad_request(format!("grant: {why}")))?;
            Some(GrantRequest {
                tool,
                when,
                scope: spec.scope(now),
            })
        }
    };
    let fingerprint: Option<Fingerprint> = match body.fingerprint {
        Some(text) => {
            if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(Problem::bad_request(format!(
                    "fingerprint `{text}` is not one: a fingerprint is 64 lower-case hex digits, \
                     as the approval's `fingerprint` shows"
                )));
            }
            Some(
                serde_json::from_value(serde_json::Value::String(text))
                    .map_err(|error| Problem::bad_request(format!("fingerprint: {error}")))?,
            )
        }
        None => None,
    };
    match decide_detailed(
        state.store.as_ref(),
        caller.principal(),
        id,
        fingerprint.as_ref(),
        request,
        grant,
        now,
    )
    .await
    {
        Ok(detail) => {
            state.approval_changed(id, Some(&detail));
            if detail.row.status != ApprovalStatus::Pending {
                state.metrics.decided(detail.row.created_at, now);
            }
            // The grant this decision made: the last decision is this
            // caller's when it was recorded now.
            let grant = match detail.approval.decisions.last() {
                Some(last) if granting && last.principal == caller.name() => detail
                    .grants
                    .last()
                    .filter(|g| g.created_at == now)
                    .map(|g| GrantView::of(g, now)),
                _ => None,
            };
            Ok(DecisionAnswer {
                approval: ApprovalDetailBody::from(&detail),
                grant,
            })
        }
        Err(error @ DecideError::Decision(_)) => {
            // Whoever lost a race sees what won.
            let problem = Problem::from(error);
            match approval_detail(state.store.as_ref(), id).await {
                Ok(detail) => Err(problem.with("approval", ApprovalDetailBody::from(&detail))),
                Err(_) => Err(problem),
            }
        }
        Err(error) => Err(error.into()),
    }
}

/// Which grants to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantListParams {
    /// `live` for the grants that still cover calls (neither revoked, nor
    /// used up, nor ended), or `all` (the default), revoked and used-up
    /// ones included.
    state: Option<String>,
    /// Only grants older than this one: the previous page's
    /// `next_before`.
    before: Option<String>,
    /// At most this many (default 50, at most 500).
    limit: Option<usize>,
}

/// List grants, newest first: all of them, or the live ones.
#[utoipa::path(
    get, path = "/v1/grants", tag = "grants",
    params(GrantListParams),
    responses(
        (status = 200, description = "A page of grants", body = GrantList),
        (status = 400, description = "Malformed query", body = crate::problem::ProblemDocument),
        (status = 401, description = "No token, or a bad one", body = crate::problem::ProblemDocument),
        (status = 403, description = "Agents may not list grants", body = crate::problem::ProblemDocument),
        (status = 404, description = "`before` names no grant", body = crate::problem::ProblemDocument),
    ),
    security(("token" = []))
)]
pub(crate) async fn list_grants(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Params(params): Params<GrantListParams>,
) -> Result<axum::Json<GrantList>, Problem> {
    caller.require_decider("list grants")?;
    let now = state.now();
    let query = grant_query(params.state.as_deref().map(str::trim), "all", now)?.1;
    let limit = page_limit(params.limit)?;
    let grants = state
        .store
        .grants(&query.page(params.before, limit + 1))
        .await?;
    let (grants, next_before) = page_of(grants, limit, |grant| &grant.id);
    Ok(axum::Json(GrantList {
        grants: grants.iter().map(|g| GrantView::of(g, now)).collect(),
        next_before,
    }))
}

/// Revoke a grant: later calls it covered are asked about again.
#[utoipa::path(
    delete, path = "/v1/grants/{id}", tag = "grants",
    params(("id" = String, Path, description = "The grant's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No token, or a bad one", body = crate::problem::ProblemDocument),
        (status = 403, description = "Only admins and the grant's maker may revoke it", body = crate::problem::ProblemDocument),
        (status = 404, description = "No such grant", body = crate::problem::ProblemDocument),
        (status = 409, description = "Revoked already", body = crate::problem::ProblemDocument),
    ),
    security(("token" = []))
)]
pub(crate) async fn revoke_grant(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Id(id): Id,
) -> Result<StatusCode, Problem> {
    caller.require_decider("revoke grants")?;
    revoke(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes a grant for the API and the inbox alike.
pub(crate) async fn revoke(state: &AppState, caller: &Caller, id: &str) -> Result<(), Problem> {
    let grant = match state.store.grant(id).await {
        Ok(grant) => grant,
        Err(StoreError::NotFound { .. }) => {
            return Err(Problem::not_found(format!("there is no grant `{id}`")));
        }
        Err(error) => return Err(error.into()),
    };
    if !caller.may_revoke(&grant) {
        return Err(Problem::forbidden(format!(
            "grant {id} was made by {}; only they and admins may revoke it",
            grant.created_by
        )));
    }
    if !state
        .store
        .revoke_grant(id, caller.name(), state.now())
        .await?
    {
        return Err(Problem::conflict(
            "already-revoked",
            format!("grant {id} is revoked already"),
        ));
    }
    state.changed();
    Ok(())
}

/// Who the token belongs to.
#[utoipa::path(
    get, path = "/v1/me", tag = "tokens",
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "No token, or a bad one", body = crate::problem::ProblemDocument),
    ),
    security(("token" = []))
)]
pub(crate) async fn me(caller: Caller) -> axum::Json<Me> {
    axum::Json(Me::from(&caller.token))
}

/// Which webhook deliveries to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveryParams {
    /// Only this status: `pending`, `delivered` or `failed`; all by
    /// default.
    status: Option<String>,
    /// At most this many (default 50, at most 500).
    limit: Option<usize>,
}

/// List webhook deliveries, newest first, with every attempt: what was
/// sent where, what the receiver answered, and what happens next.
#[utoipa::path(
    get, path = "/v1/webhooks/deliveries", tag = "webhooks",
    params(DeliveryParams),
    responses(
        (status = 200, description = "The deliveries", body = DeliveryList),
        (status = 400, description = "Unknown status", body = crate::problem::ProblemDocument),
        (status = 401, description = "No token, or a bad one", body = crate::problem::ProblemDocument),
        (status = 403, description = "Only admins see deliveries", body = crate::problem::ProblemDocument),
    ),
    security(("token" = []))
)]
pub(crate) async fn list_deliveries(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Params(params): Params<DeliveryParams>,
) -> Result<axum::Json<DeliveryList>, Problem> {
    require_admin(
        &caller,
        "see webhook deliveries (their payloads hold every approval)",
    )?;
    let status = match params.status.as_deref().map(str::trim) {
        None | Some("" | "all") => None,
        Some(text) => Some(DeliveryStatus::parse(text).ok_or_else(|| {
            Problem::bad_request(format!(
                "unknown status `{text}`; use pending, delivered or failed"
            ))
        })?),
    };
    let query = DeliveryQuery {
        status,
        limit: params.limit.unwrap_or(50).clamp(1, MAX_LIMIT),
    };
    let deliveries = state.store.deliveries(&query).await?;
    Ok(axum::Json(DeliveryList {
        deliveries: deliveries.iter().map(DeliveryView::from).collect(),
    }))
}

/// Refuses a caller who is not an admin: only admins `what`.
pub(crate) fn require_admin(caller: &Caller, what: &str) -> Result<(), Problem> {
    if caller.is_admin() {
        return Ok(());
    }
    Err(Problem::forbidden(format!(
        "{} is not an admin; only admins {what}: use an admin's token",
        caller.name()
    )))
}

/// Send a failed webhook delivery again: it is pending once more, due now,
/// with its attempts kept, and a server sends it at its next look at the
/// outbox (retrying on failure while it has had fewer than the webhook's
/// `max_attempts`).
#[utoipa::path(
    post, path = "/v1/webhooks/deliveries/{id}/redeliver", tag = "webhooks",
    params(("id" = String, Path, description = "The delivery's id")),
    responses(
        (status = 202, description = "Pending again", body = Redelivery),
        (status = 401, description = "No token, or a bad one", body = crate::problem::ProblemDocument),
        (status = 403, description = "Only admins send deliveries again", body = crate::problem::ProblemDocument),
        (status = 404, description = "No such delivery", body = crate::problem::ProblemDocument),
        (status = 409, description = "The delivery did not fail: it is pending or delivered", body = crate::problem::ProblemDocument),
    ),
    security(("token" = []))
)]
pub(crate) async fn redeliver(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Id(id): Id,
) -> Result<(StatusCode, axum::Json<Redelivery>), Problem> {
    require_admin(
        &caller,
        "send webhook deliveries again (their payloads hold every approval)",
    )?;
    match state.store.redeliver(&id, state.now()).await {
        Ok(DeliveryStatus::Failed) => Ok((
            StatusCode::ACCEPTED,
            axum::Json(Redelivery {
                id,
                status: DeliveryStatus::Pending.as_str(),
            }),
        )),
        Ok(DeliveryStatus::Pending) => Err(Problem::conflict(
            "not-failed",
            format!("delivery {id} is pending already: the server is still trying it"),
        )),
        Ok(DeliveryStatus::Delivered) => Err(Problem::conflict(
            "not-failed",
            format!("delivery {id} was delivered; only failed deliveries are sent again"),
        )),
        Err(StoreError::NotFound { .. }) => Err(Problem::not_found(format!(
            "there is no webhook delivery `{id}`; GET /v1/webhooks/deliveries?status=failed \
             lists the failed ones"
        ))),
        Err(error) => Err(error.into()),
    }
}
