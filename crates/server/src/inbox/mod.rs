//! The web inbox: pages where people sign in with their token, see what
//! waits for them, and decide, served by the same binary as the API.
//!
//! Pages are rendered on the server (maud escapes every value) and work
//! without scripts; `inbox.js` adds live updates (the `/v1/events` stream,
//! then a fresh copy of the list from `/inbox/list`), relative times and
//! a check of edited arguments against the schema before they are sent.
//! Decisions go through [`crate::api::record_decision`] and grants are
//! revoked through [`crate::api::revoke`], so the inbox and the API cannot
//! disagree.
//!
//! The session cookie holds the token's secret (`HttpOnly`, so scripts
//! cannot read it; `SameSite=Strict`, so other sites' requests do not
//! carry it). Every form that changes something also carries the
//! session's CSRF token, derived from the secret, and is refused without
//! it. Agents' tokens are refused: agents ask over the API.

mod text;
mod view;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::Deserialize;
use serde_json::{Map, Value};
use toolgate_core::Role;
use toolgate_core::run::ApprovalStatus;
use toolgate_core::store::{ApprovalQuery, StoreError};
use toolgate_engine::{ApprovalDetail, approval_detail};

use crate::api::{expired_now, grant_query, page_of, parse_statuses, record_decision, revoke};
use crate::auth::{Caller, Refusal, SESSION_COOKIE, check_secret, session_cookie};
use crate::problem::Problem;
use crate::state::AppState;
use crate::tokens::csrf_token;
use crate::wire::{
    CreateToken, CreatedToken, DecisionBody, DecisionKind, GrantBody, GrantView, TokenView,
};
use view::{Draft, Item, MayDecide, Notice, Who};

/// How many approvals one page of the list shows.
const PAGE: usize = 25;

/// The cookie that carries a one-time confirmation across the redirect
/// after a form is sent (post, redirect, get).
const FLASH_COOKIE: &str = "toolgate_flash";

/// Scripts and styles only from this server, no inline code, nothing
/// framed, no plugins: markup that slipped through could not run.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

const CSS: &str = include_str!("assets/inbox.css");
const JS: &str = include_str!("assets/inbox.js");

/// The inbox's routes, with their security headers.
pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(root))
        .route("/inbox", get(list_page))
        .route("/inbox/list", get(list_fragment))
        .route("/inbox/login", get(login_page).post(login))
        .route("/inbox/logout", post(logout))
        .route("/inbox/approvals/{id}", get(approval_page))
        .route("/inbox/approvals/{id}/decision", post(decide))
        .route("/inbox/grants", get(grants_page))
        .route("/inbox/grants/{id}/revoke", post(revoke_grant))
        .route("/inbox/tokens", get(tokens_page).post(make_token))
        .route("/inbox/tokens/{id}/revoke", post(revoke_token))
        .route(view::CSS_URL, get(css))
        .route(view::JS_URL, get(js))
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        // Pages show who may do what and what agents sent: never keep
        // them in a shared or back-button cache.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidated each time, so a new binary's assets are used
            // at once; they are small.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// A signed-in person (never an agent), from the session cookie.
pub(crate) struct Session {
    caller: Caller,
    csrf: String,
}

impl Session {
    fn who(&self) -> Who<'_> {
        Who {
            name: self.caller.name(),
            role: self.caller.principal().role.as_str(),
            csrf: &self.csrf,
        }
    }

    /// Whether a form's CSRF token is this session's.
    fn csrf_ok(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.csrf.as_bytes())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<Arc<AppState>> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Session, Response> {
        let Some(secret) = session_cookie(&parts.headers) else {
            return Err(to_login(parts, false, state));
        };
        match check_secret(state, &secret).await {
            Ok(token) => {
                let session = Session {
                    caller: Caller { token },
                    csrf: csrf_token(&secret),
                };
                if session.caller.is_agent() {
                    let markup = view::agent_page(&session.who(), state.now());
                    return Err(html(StatusCode::FORBIDDEN, markup));
                }
                Ok(session)
            }
            Err(Refusal::Store(problem)) => Err(problem_page(state, None, &problem)),
            // Revoked or expired since signing in: sign in again.
            Err(_) => Err(to_login(parts, true, state)),
        }
    }
}

/// To the sign-in page, coming back here afterwards; clears a cookie that
/// no longer works.
fn to_login(parts: &Parts, ended: bool, state: &AppState) -> Response {
    let here = parts
        .uri
        .path_and_query()
        .map_or("/inbox", |p| p.as_str())
        .to_owned();
    let next = if parts.method == Method::GET && here != "/inbox/list" {
        safe_next(&here)
    } else {
        "/inbox"
    };
    let mut location = "/inbox/login".to_owned();
    let mut query = Vec::new();
    if next != "/inbox" {
        query.push(format!("next={}", text::query_escape(next)));
    }
    if ended {
        query.push("ended=1".to_owned());
    }
    if !query.is_empty() {
        location.push('?');
        location.push_str(&query.join("&"));
    }
    let mut response = redirect(&location);
    if ended {
        set_cookie(&mut response, &clear_session_cookie(state));
    }
    response
}

/// Only places in the inbox, so the sign-in form cannot send people
/// elsewhere.
fn safe_next(next: &str) -> &str {
    let inside = next == "/inbox" || next.starts_with("/inbox/") || next.starts_with("/inbox?");
    let lower = next.to_ascii_lowercase();
    let clean = !next.contains("//")
        && !next.contains('\\')
        && !next.contains("/..")
        && !lower.contains("%2e")
        && !lower.contains("%2f")
        && !lower.contains("%5c")
        && !next.starts_with("/inbox/login")
        && !next.starts_with("/inbox/list")
        && next.chars().all(|c| c.is_ascii_graphic());
    if inside && clean { next } else { "/inbox" }
}

fn html(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn secure(state: &AppState) -> &'static str {
    if state.config.secure_cookies {
        "; Secure"
    } else {
        ""
    }
}

fn session_cookie_for(state: &AppState, secret: &str) -> String {
    format!(
        "{SESSION_COOKIE}={secret}; HttpOnly; SameSite=Strict; Path=/{}",
        secure(state)
    )
}

fn clear_session_cookie(state: &AppState) -> String {
    format!(
        "{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
        secure(state)
    )
}

/// What was done, to say on the page the form's redirect lands on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flash {
    Approved,
    Edited,
    Rejected,
    Revoked,
    TokenRevoked,
}

impl Flash {
    fn code(self) -> &'static str {
        match self {
            Flash::Approved => "approved",
            Flash::Edited => "edited",
            Flash::Rejected => "rejected",
            Flash::Revoked => "revoked",
            Flash::TokenRevoked => "token-revoked",
        }
    }

    fn parse(code: &str) -> Option<Flash> {
        [
            Flash::Approved,
            Flash::Edited,
            Flash::Rejected,
            Flash::Revoked,
            Flash::TokenRevoked,
        ]
        .into_iter()
        .find(|flash| flash.code() == code)
    }
}

fn flash_cookie(state: &AppState, flash: Flash) -> String {
    format!(
        "{FLASH_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/inbox; Max-Age=60{}",
        flash.code(),
        secure(state)
    )
}

fn clear_flash_cookie(state: &AppState) -> String {
    format!(
        "{FLASH_COOKIE}=; HttpOnly; SameSite=Strict; Path=/inbox; Max-Age=0{}",
        secure(state)
    )
}

/// Clears the flash cookie on `response` when the request carried a
/// `flash`: a notice is shown once.
fn clear_shown_flash(state: &AppState, response: &mut Response, flash: Option<Flash>) {
    if flash.is_some() {
        set_cookie(response, &clear_flash_cookie(state));
    }
}

fn take_flash(headers: &HeaderMap) -> Option<Flash> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == FLASH_COOKIE)
                .then(|| Flash::parse(value))
                .flatten()
        })
}

/// A problem as a page, for the person who hit it.
fn problem_page(state: &AppState, who: Option<&Who<'_>>, problem: &Problem) -> Response {
    let title = match problem.status() {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::BAD_REQUEST => "That did not work",
        StatusCode::SERVICE_UNAVAILABLE => "The server cannot reach its store",
        _ => "Something went wrong",
    };
    let markup = view::error_page(who, state.now(), title, problem.detail());
    html(problem.status(), markup)
}

/// Refuses forms sent from other sites, where the browser says so: a
/// second line behind the CSRF token, and the only one for signing in.
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|site| site == "cross-site")
}

/// The answer to a form of a signed-in page that must not be acted on:
/// sent from another site, or without the session's CSRF token.
fn refused_form(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
    csrf: &str,
) -> Option<Response> {
    if cross_site(headers) {
        return Some(cross_site_page(state));
    }
    if !session.csrf_ok(csrf) {
        return Some(csrf_page(state, session));
    }
    None
}

fn cross_site_page(state: &AppState) -> Response {
    let markup = view::error_page(
        None,
        state.now(),
        "Not allowed",
        "This form was sent from another site. Open the inbox itself and try again.",
    );
    html(StatusCode::FORBIDDEN, markup)
}

fn csrf_page(state: &AppState, session: &Session) -> Response {
    let markup = view::error_page(
        Some(&session.who()),
        state.now(),
        "Not allowed",
        "The form did not carry this session's security token, so nothing was done. It may be \
         from an old page or another site: reload the page and try again.",
    );
    html(StatusCode::FORBIDDEN, markup)
}

async fn root(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match session_cookie(&headers) {
        Some(secret) if check_secret(&state, &secret).await.is_ok() => redirect("/inbox"),
        _ => redirect("/inbox/login"),
    }
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
    ended: Option<String>,
}

async fn login_page(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<LoginQuery>, QueryRejection>,
) -> Response {
    let (next, ended) = match &query {
        Ok(Query(query)) => (
            safe_next(query.next.as_deref().unwrap_or("/inbox")).to_owned(),
            query.ended.is_some(),
        ),
        Err(_) => ("/inbox".to_owned(), false),
    };
    if let Some(secret) = session_cookie(&headers)
        && let Ok(token) = check_secret(&state, &secret).await
        && token.principal.role != Role::Agent
    {
        return redirect(&next);
    }
    html(StatusCode::OK, view::login(state.now(), &next, None, ended))
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    form: Result<axum::Form<LoginForm>, FormRejection>,
) -> Response {
    if cross_site(&headers) {
        return cross_site_page(&state);
    }
    let Ok(axum::Form(form)) = form else {
        let markup = view::login(
            state.now(),
            "/inbox",
            Some("Paste a token to sign in."),
            false,
        );
        return html(StatusCode::BAD_REQUEST, markup);
    };
    let next = safe_next(form.next.as_deref().unwrap_or("/inbox")).to_owned();
    let secret = form.token.trim();
    let refused = |status: StatusCode, message: &str| {
        html(
            status,
            view::login(state.now(), &next, Some(message), false),
        )
    };
    // Whether a token exists is not said beyond this: a guess that is not
    // a token and one that is unknown get the same answer.
    match check_secret(&state, secret).await {
        Ok(token) if token.principal.role == Role::Agent => refused(
            StatusCode::FORBIDDEN,
            "That is an agent's token. Agents ask over the API and cannot use the inbox: sign \
             in with an approver's or an admin's token.",
        ),
        Ok(_) => {
            let mut response = redirect(&next);
            set_cookie(&mut response, &session_cookie_for(&state, secret));
            response
        }
        Err(Refusal::Malformed | Refusal::Unknown) => refused(
            StatusCode::UNAUTHORIZED,
            "That token is not valid. Check that you pasted all of it (it starts with tg_).",
        ),
        Err(Refusal::Revoked(_)) => refused(
            StatusCode::UNAUTHORIZED,
            "That token has been revoked. Ask an admin for a new one.",
        ),
        Err(Refusal::Expired(_)) => refused(
            StatusCode::UNAUTHORIZED,
            "That token has expired. Ask an admin for a new one.",
        ),
        Err(Refusal::Store(problem)) => problem_page(&state, None, &problem),
    }
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    session: Result<Session, Response>,
    form: Result<axum::Form<CsrfForm>, FormRejection>,
) -> Response {
    if cross_site(&headers) {
        return cross_site_page(&state);
    }
    match session {
        Ok(session) => {
            let presented = form.map(|f| f.0.csrf).unwrap_or_default();
            if !session.csrf_ok(&presented) {
                return csrf_page(&state, &session);
            }
        }
        // An agent's cookie, set by hand: signing out is what it needs.
        Err(response) if response.status() == StatusCode::FORBIDDEN => {}
        Err(response) => return response,
    }
    let mut response = redirect("/inbox/login");
    set_cookie(&mut response, &clear_session_cookie(&state));
    response
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    before: Option<String>,
}

/// One page of the list, each approval folded with its run's log (loaded
/// once per run) for who asked and how many approved.
async fn list_items(
    state: &AppState,
    query: &ListQuery,
) -> Result<(String, Vec<ApprovalDetail>, Option<String>), Problem> {
    let filter = query
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("pending")
        .to_owned();
    let statuses = parse_statuses(Some(&filter))?;
    let rows = state
        .store
        .approvals(&ApprovalQuery {
            statuses,
            run_id: None,
            before: query.before.clone().filter(|b| !b.is_empty()),
            limit: PAGE + 1,
        })
        .await?;
    let (rows, next_before) = page_of(rows, PAGE, |row| &row.id);
    let mut logs = HashMap::new();
    let mut details = Vec::with_capacity(rows.len());
    for row in rows {
        if !logs.contains_key(&row.run_id) {
            let events = state.store.load(&row.run_id).await?;
            logs.insert(row.run_id.clone(), events);
        }
        let run_id = row.run_id.clone();
        let id = row.id.clone();
        let detail = ApprovalDetail::of(row, &logs[&run_id]).ok_or_else(|| {
            Problem::from(StoreError::Corrupt(format!(
                "approval {id} is not in the log of run {run_id}; `toolgate audit verify` \
                 checks the store"
            )))
        })?;
        details.push(detail);
    }
    Ok((filter, details, next_before))
}

async fn list_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let who = session.who();
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return problem_page(&state, Some(&who), &rejection.into()),
    };
    match list_items(&state, &query).await {
        Ok((filter, details, next_before)) => {
            let items: Vec<Item<'_>> = details.iter().map(|detail| Item { detail }).collect();
            let markup = view::list_page(
                &who,
                state.now(),
                &filter,
                query.before.as_deref().filter(|b| !b.is_empty()),
                &items,
                next_before.as_deref(),
            );
            html(StatusCode::OK, markup)
        }
        Err(problem) => problem_page(&state, Some(&who), &problem),
    }
}

/// The list alone, for the page's script to swap in when something
/// changed.
async fn list_fragment(
    State(state): State<Arc<AppState>>,
    _session: Session,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return Problem::from(rejection).into_response(),
    };
    match list_items(&state, &query).await {
        Ok((filter, details, next_before)) => {
            let items: Vec<Item<'_>> = details.iter().map(|detail| Item { detail }).collect();
            let markup = view::list_fragment(
                state.now(),
                &filter,
                query.before.as_deref().filter(|b| !b.is_empty()),
                &items,
                next_before.as_deref(),
            );
            html(StatusCode::OK, markup)
        }
        Err(problem) => problem.into_response(),
    }
}

fn may_decide(session: &Session, detail: &ApprovalDetail) -> MayDecide {
    let principal = session.caller.principal();
    if !principal.may_decide(&detail.approval.ask.approvers) {
        let names: Vec<String> = detail
            .approval
            .ask
            .approvers
            .iter()
            .map(ToString::to_string)
            .collect();
        return MayDecide::No(format!(
            "You ({}) may not decide this one: the rule names {}, or an admin.",
            principal.name,
            names.join(", ")
        ));
    }
    if detail
        .approval
        .approved_by
        .iter()
        .any(|name| name == &principal.name)
    {
        return MayDecide::ApprovedAlready;
    }
    MayDecide::Yes
}

async fn load_detail(state: &AppState, id: &str) -> Result<ApprovalDetail, Problem> {
    let detail = approval_detail(state.store.as_ref(), id).await?;
    expired_now(state, detail).await
}

fn flash_notice(flash: Flash, detail: &ApprovalDetail) -> Notice {
    match flash {
        Flash::Approved if detail.row.status == ApprovalStatus::Pending => {
            let needed = detail.approval.still_needed();
            Notice::success(format!(
                "Your approval is recorded. It needs {needed} more approver{} before the call may run.",
                if needed == 1 { "" } else { "s" }
            ))
        }
        Flash::Approved => Notice::success("Approved. The agent is told, and the call may run."),
        Flash::Edited => Notice::success(
            "Approved with your arguments. The agent is told to run the call with them.",
        ),
        Flash::Rejected => Notice::success("Rejected. The agent is told the call must not run."),
        Flash::Revoked => Notice::success("The grant is revoked."),
        Flash::TokenRevoked => Notice::success(TOKEN_REVOKED),
    }
}

async fn approval_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let who = session.who();
    let detail = match load_detail(&state, &id).await {
        Ok(detail) => detail,
        Err(problem) => return problem_page(&state, Some(&who), &problem),
    };
    let flash = take_flash(&headers);
    let notice = flash.map(|flash| flash_notice(flash, &detail));
    let markup = view::approval_page(
        &who,
        state.now(),
        &detail,
        &may_decide(&session, &detail),
        notice.as_ref(),
        &Draft::default(),
    );
    let mut response = html(StatusCode::OK, markup);
    clear_shown_flash(&state, &mut response, flash);
    response
}

#[derive(Debug, Deserialize)]
struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    fingerprint: String,
    #[serde(default)]
    decision: String,
    args: Option<String>,
    message: Option<String>,
    grant: Option<String>,
    grant_uses: Option<String>,
    grant_for: Option<String>,
}

impl DecisionForm {
    fn draft(&self, editing: bool) -> Draft {
        Draft {
            args: self.args.clone().filter(|_| editing),
            message: self.message.clone(),
            grant: self.grant.clone(),
            grant_uses: self.grant_uses.clone(),
            grant_for: self.grant_for.clone(),
            editing,
        }
    }

    /// The grant asked for, as the API's scope text.
    fn grant(&self) -> Result<Option<GrantBody>, String> {
        let field = |value: &Option<String>| value.as_deref().unwrap_or("").trim().to_owned();
        let scope = match self.grant.as_deref().unwrap_or("") {
            "" => return Ok(None),
            "run" => "run".to_owned(),
            "thread" => "thread".to_owned(),
            "uses" => format!("uses:{}", field(&self.grant_uses)),
            "for" => format!("for:{}", field(&self.grant_for)),
            other => return Err(format!("`{other}` is not a kind of grant")),
        };
        Ok(Some(GrantBody::Scope(scope)))
    }
}

/// A decision that was not recorded: the page again, as the approval now
/// stands, with why and with what was typed.
fn refused(
    state: &AppState,
    session: &Session,
    detail: &ApprovalDetail,
    status: StatusCode,
    notice: &Notice,
    draft: &Draft,
) -> Response {
    let markup = view::approval_page(
        &session.who(),
        state.now(),
        detail,
        &may_decide(session, detail),
        Some(notice),
        draft,
    );
    html(status, markup)
}

async fn decide(
    State(state): State<Arc<AppState>>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<axum::Form<DecisionForm>, FormRejection>,
) -> Response {
    if cross_site(&headers) {
        return cross_site_page(&state);
    }
    let who = session.who();
    let form = match form {
        Ok(axum::Form(form)) => form,
        Err(rejection) => {
            let problem = Problem::bad_request(format!(
                "the form could not be read: {}",
                rejection.body_text()
            ));
            return problem_page(&state, Some(&who), &problem);
        }
    };
    if !session.csrf_ok(&form.csrf) {
        return csrf_page(&state, &session);
    }
    let detail = match load_detail(&state, &id).await {
        Ok(detail) => detail,
        Err(problem) => return problem_page(&state, Some(&who), &problem),
    };
    let editing = form.decision == "edit";
    let draft = form.draft(editing);
    let bad = |title: &str, detail_text: String| {
        refused(
            &state,
            &session,
            &detail,
            StatusCode::BAD_REQUEST,
            &Notice::error(title, detail_text),
            &draft,
        )
    };
    let grant = match form.grant() {
        Ok(grant) => grant,
        Err(why) => return bad("The grant is not one toolgate knows", why),
    };
    let (kind, args, message, grant, flash) = match form.decision.as_str() {
        "approve" => {
            // The edit box goes with every approval; changed text with the
            // plain Approve button would be silently dropped otherwise.
            if let Some(text) = form.args.as_deref()
                && serde_json::from_str::<Map<String, Value>>(text)
                    .ok()
                    .as_ref()
                    != Some(&detail.approval.args)
            {
                let draft = form.draft(true);
                return refused(
                    &state,
                    &session,
                    &detail,
                    StatusCode::BAD_REQUEST,
                    &Notice::error(
                        "Nothing was decided: you changed the arguments",
                        "You edited the arguments but pressed Approve, which approves them as \
                         they were. Press \"Approve with these arguments\" to run the call with \
                         your changes.",
                    ),
                    &draft,
                );
            }
            (DecisionKind::Approve, None, None, grant, Flash::Approved)
        }
        "edit" => {
            let text = form.args.as_deref().unwrap_or("");
            match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(args)) => {
                    (DecisionKind::Edit, Some(args), None, grant, Flash::Edited)
                }
                Ok(_) => {
                    return bad(
                        "The arguments are not a JSON object",
                        "A tool's arguments are one JSON object: { \"name\": value, … }."
                            .to_owned(),
                    );
                }
                Err(error) => {
                    return bad(
                        "The arguments are not valid JSON",
                        format!("{error}. Nothing was decided; fix them and try again."),
                    );
                }
            }
        }
        "reject" => (
            DecisionKind::Reject,
            None,
            form.message.clone().filter(|m| !m.trim().is_empty()),
            None,
            Flash::Rejected,
        ),
        other => {
            return bad(
                "That is not a decision",
                format!("`{other}` is not one of approve, edit or reject."),
            );
        }
    };
    let body = DecisionBody {
        decision: kind,
        args,
        message,
        fingerprint: Some(form.fingerprint.clone()),
        grant,
    };
    match record_decision(&state, &session.caller, &id, body).await {
        Ok(_) => {
            let mut response = redirect(&format!("/inbox/approvals/{id}"));
            set_cookie(&mut response, &flash_cookie(&state, flash));
            response
        }
        Err(problem) => {
            let status = problem.status();
            let fresh = load_detail(&state, &id).await.unwrap_or(detail);
            let mut notice = Notice::error("Your decision was not recorded", problem.detail());
            let mut draft = draft;
            match status {
                StatusCode::CONFLICT => {
                    notice.title = if fresh.row.status == ApprovalStatus::Pending {
                        "Your decision was not recorded: the call changed".to_owned()
                    } else {
                        "Your decision was not recorded: it was decided already".to_owned()
                    };
                    notice.detail = Some(format!(
                        "{} The page now shows the approval as it stands; look at it again \
                         before you decide.",
                        problem.detail()
                    ));
                    // What was typed was for the call as it was.
                    draft = Draft::default();
                }
                StatusCode::UNPROCESSABLE_ENTITY => {
                    notice.title = "The edited arguments do not fit the tool's schema".to_owned();
                    notice.detail =
                        Some("Nothing was decided. Fix these and try again:".to_owned());
                    notice.problems = problem
                        .member("errors")
                        .and_then(Value::as_array)
                        .map(|errors| {
                            errors
                                .iter()
                                .map(|e| {
                                    let field = |k: &str| {
                                        e.get(k).and_then(Value::as_str).unwrap_or("").to_owned()
                                    };
                                    (field("argument"), field("problem"))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                }
                _ => {}
            }
            refused(&state, &session, &fresh, status, &notice, &draft)
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct GrantsQuery {
    /// `live` (the default) or `all`.
    state: Option<String>,
    before: Option<String>,
}

async fn grants_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    headers: HeaderMap,
    query: Result<Query<GrantsQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => {
            return problem_page(&state, Some(&session.who()), &rejection.into());
        }
    };
    let flash = take_flash(&headers).filter(|f| *f == Flash::Revoked);
    let notice = flash.map(|_| Notice::success("The grant is revoked."));
    let mut response =
        render_grants(&state, &session, &query, StatusCode::OK, notice.as_ref()).await;
    clear_shown_flash(&state, &mut response, flash);
    response
}

/// One page of the grants page: the live grants or all, from `before`.
async fn render_grants(
    state: &AppState,
    session: &Session,
    query: &GrantsQuery,
    status: StatusCode,
    notice: Option<&Notice>,
) -> Response {
    let who = session.who();
    let now = state.now();
    let (filter, grants_query) = match grant_query(query.state.as_deref(), "live", now) {
        Ok(asked) => asked,
        Err(problem) => return problem_page(state, Some(&who), &problem),
    };
    let before = query.before.clone().filter(|b| !b.is_empty());
    let grants = match state
        .store
        .grants(&grants_query.page(before.clone(), PAGE + 1))
        .await
    {
        Ok(grants) => grants,
        Err(error) => return problem_page(state, Some(&who), &error.into()),
    };
    let (grants, next_before) = page_of(grants, PAGE, |grant| &grant.id);
    let views: Vec<(GrantView, bool)> = grants
        .iter()
        .map(|grant| (GrantView::of(grant, now), session.caller.may_revoke(grant)))
        .collect();
    let page = view::GrantsPage {
        filter,
        before: before.as_deref(),
        grants: &views,
        next_before: next_before.as_deref(),
    };
    html(status, view::grants_page(&who, now, &page, notice))
}

async fn revoke_grant(
    State(state): State<Arc<AppState>>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<axum::Form<CsrfForm>, FormRejection>,
) -> Response {
    let presented = form.map(|f| f.0.csrf).unwrap_or_default();
    if let Some(refused) = refused_form(&state, &session, &headers, &presented) {
        return refused;
    }
    match revoke(&state, &session.caller, &id).await {
        Ok(()) => {
            let mut response = redirect("/inbox/grants");
            set_cookie(&mut response, &flash_cookie(&state, Flash::Revoked));
            response
        }
        Err(problem) => {
            let notice = Notice::error("The grant was not revoked", problem.detail());
            let query = GrantsQuery::default();
            render_grants(&state, &session, &query, problem.status(), Some(&notice)).await
        }
    }
}

/// What the tokens page says after a revocation.
const TOKEN_REVOKED: &str = "The token is revoked: requests with it are refused from now on.";

async fn tokens_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    headers: HeaderMap,
) -> Response {
    let flash = take_flash(&headers).filter(|f| *f == Flash::TokenRevoked);
    let notice = flash.map(|_| Notice::success(TOKEN_REVOKED));
    let mut response = render_tokens(&state, &session, StatusCode::OK, None, notice.as_ref()).await;
    clear_shown_flash(&state, &mut response, flash);
    response
}

/// The tokens page for an admin (others are told it is for admins), with
/// the token just `made`, if any.
async fn render_tokens(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    made: Option<&CreatedToken>,
    notice: Option<&Notice>,
) -> Response {
    let who = session.who();
    if let Err(problem) = crate::api::require_admin(&session.caller, "manage tokens") {
        return problem_page(state, Some(&who), &problem);
    }
    let tokens = match state.store.tokens().await {
        Ok(tokens) => tokens,
        Err(error) => return problem_page(state, Some(&who), &error.into()),
    };
    let now = state.now();
    let views: Vec<TokenView> = tokens.iter().map(|t| TokenView::of(t, now)).collect();
    // Like every inbox page, it is sent with `Cache-Control: no-store`:
    // a secret shown on it stays in no cache.
    html(status, view::tokens_page(&who, now, &views, made, notice))
}

/// The form that makes a token. Groups are one field, separated by commas
/// (or spaces); an empty lifetime means until revoked.
#[derive(Deserialize, Default)]
struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    groups: String,
    #[serde(default)]
    expires_in: String,
}

async fn make_token(
    State(state): State<Arc<AppState>>,
    session: Session,
    headers: HeaderMap,
    form: Result<axum::Form<TokenForm>, FormRejection>,
) -> Response {
    let form = form.map(|f| f.0).unwrap_or_default();
    if let Some(refused) = refused_form(&state, &session, &headers, &form.csrf) {
        return refused;
    }
    let body = CreateToken {
        name: form.name.trim().to_owned(),
        role: form.role,
        groups: form
            .groups
            .split([',', ' '])
            .filter(|group| !group.is_empty())
            .map(str::to_owned)
            .collect(),
        expires_in: Some(form.expires_in.trim().to_owned()).filter(|text| !text.is_empty()),
    };
    match crate::tokens::make(&state, &session.caller, body).await {
        Ok(issued) => {
            let made = CreatedToken::from(&issued);
            let notice = Notice::success(format!(
                "Token {} made for {} ({}).",
                made.id, made.name, made.role
            ));
            render_tokens(&state, &session, StatusCode::OK, Some(&made), Some(&notice)).await
        }
        Err(problem) => {
            let notice = Notice::error("No token was made", problem.detail());
            render_tokens(&state, &session, problem.status(), None, Some(&notice)).await
        }
    }
}

async fn revoke_token(
    State(state): State<Arc<AppState>>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<axum::Form<CsrfForm>, FormRejection>,
) -> Response {
    let presented = form.map(|f| f.0.csrf).unwrap_or_default();
    if let Some(refused) = refused_form(&state, &session, &headers, &presented) {
        return refused;
    }
    match crate::tokens::revoke(&state, &session.caller, &id).await {
        Ok(()) => {
            let mut response = redirect("/inbox/tokens");
            set_cookie(&mut response, &flash_cookie(&state, Flash::TokenRevoked));
            response
        }
        Err(problem) => {
            let notice = Notice::error("The token was not revoked", problem.detail());
            render_tokens(&state, &session, problem.status(), None, Some(&notice)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_places_in_the_inbox_are_followed_after_signing_in() {
        assert_eq!(safe_next("/inbox/approvals/a1"), "/inbox/approvals/a1");
        assert_eq!(safe_next("/inbox?status=all"), "/inbox?status=all");
        assert_eq!(safe_next("/inbox"), "/inbox");
        for bad in [
            "https://evil.example/",
            "//evil.example/inbox",
            "/inbox//evil.example",
            "/inbox\\..\\x",
            "/inbox/../v1/me",
            "/inbox/%2E%2E/v1/me",
            "/inboxes",
            "/v1/approvals",
            "/inbox/login",
            "/inbox/a b",
            "",
        ] {
            assert_eq!(safe_next(bad), "/inbox", "{bad}");
        }
    }

    #[test]
    fn csrf_tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
