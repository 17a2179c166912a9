//! The inbox's pages, as HTML. maud escapes every value put into the
//! markup, so text from agents (arguments, context, descriptions,
//! messages) can only ever be text; [`crate::inbox::text`] makes what is
//! hidden in it visible.

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;
use toolgate_core::run::ApprovalStatus;
use toolgate_engine::ApprovalDetail;

use super::text::{
    age, compact_json, due, pretty_args, pretty_json, readable_time, summary, value_has_hidden,
    visible,
};
use crate::wire::{ApprovalDetailBody, CreatedToken, GrantView, TokenView};

pub(crate) const CSS_URL: &str = "/inbox/assets/inbox.css";
pub(crate) const JS_URL: &str = "/inbox/assets/inbox.js";

/// Who is signed in, as the page header shows them.
pub(crate) struct Who<'a> {
    pub(crate) name: &'a str,
    pub(crate) role: &'a str,
    pub(crate) csrf: &'a str,
}

/// Which part of the inbox a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Approvals,
    Grants,
    Tokens,
    None,
}

/// A message shown at the top of a page.
pub(crate) struct Notice {
    pub(crate) kind: NoticeKind,
    pub(crate) title: String,
    pub(crate) detail: Option<String>,
    /// Arguments that fail the schema: (argument path, what is wrong).
    pub(crate) problems: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoticeKind {
    Success,
    Error,
}

impl Notice {
    pub(crate) fn success(title: impl Into<String>) -> Notice {
        Notice {
            kind: NoticeKind::Success,
            title: title.into(),
            detail: None,
            problems: Vec::new(),
        }
    }

    pub(crate) fn error(title: impl Into<String>, detail: impl Into<String>) -> Notice {
        Notice {
            kind: NoticeKind::Error,
            title: title.into(),
            detail: Some(detail.into()),
            problems: Vec::new(),
        }
    }
}

fn notice(notice: Option<&Notice>) -> Markup {
    let Some(notice) = notice else {
        return html! {};
    };
    match notice.kind {
        NoticeKind::Success => html! {
            div.notice.success role="status" {
                p.notice-title { (notice.title) }
                @if let Some(detail) = &notice.detail { p { (visible(detail)) } }
            }
        },
        NoticeKind::Error => html! {
            div.notice.error role="alert" id="notice" tabindex="-1" {
                p.notice-title { (notice.title) }
                @if let Some(detail) = &notice.detail { p.prose { (visible(detail)) } }
                @if !notice.problems.is_empty() {
                    ul.problems {
                        @for (argument, problem) in &notice.problems {
                            li {
                                @if argument.is_empty() { (visible(problem)) } @else {
                                    code { (visible(argument)) } ": " (visible(problem))
                                }
                            }
                        }
                    }
                }
            }
        },
    }
}

/// A whole page: header, navigation, and `main`.
pub(crate) fn page(title: &str, who: Option<&Who<'_>>, nav: Nav, now: i64, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · toolgate" }
                link rel="stylesheet" href=(CSS_URL);
                script src=(JS_URL) defer {}
            }
            body data-now=(now) {
                a.skip href="#main" { "Skip to the content" }
                header.top {
                    a.brand href="/inbox" { "toolgate" }
                    @if let Some(who) = who {
                        nav.main-nav aria-label="Main" {
                            a href="/inbox" aria-current=[(nav == Nav::Approvals).then_some("page")] { "Approvals" }
                            a href="/inbox/grants" aria-current=[(nav == Nav::Grants).then_some("page")] { "Grants" }
                            @if who.role == "admin" {
                                a href="/inbox/tokens" aria-current=[(nav == Nav::Tokens).then_some("page")] { "Tokens" }
                            }
                        }
                        div.who {
                            span.who-name { (who.name) " · " (who.role) }
                            form method="post" action="/inbox/logout" {
                                input type="hidden" name="csrf" value=(who.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" { (main) }
            }
        }
    }
}

/// The sign-in form.
pub(crate) fn login(now: i64, next: &str, error: Option<&str>, ended: bool) -> Markup {
    let main = html! {
        div.narrow {
            h1 { "Sign in" }
            p.prose {
                "Paste your toolgate API token. An admin makes one with "
                code { "toolgate tokens create --name YOU --role approver" }
                "."
            }
            @if ended && error.is_none() {
                div.notice role="status" { p { "Your session has ended. Sign in again to go on." } }
            }
            @if let Some(error) = error {
                div.notice.error role="alert" id="login-error" {
                    p.notice-title { (error) }
                }
            }
            form.login method="post" action="/inbox/login" {
                input type="hidden" name="next" value=(next);
                label for="token" { "API token" }
                input #token type="password" name="token" required autofocus
                    autocomplete="current-password" spellcheck="false" autocapitalize="none"
                    aria-invalid=[error.map(|_| "true")]
                    aria-describedby=[error.map(|_| "login-error")];
                button.primary type="submit" { "Sign in" }
            }
        }
    };
    page("Sign in", None, Nav::None, now, main)
}

/// A page that only says what went wrong.
pub(crate) fn error_page(who: Option<&Who<'_>>, now: i64, title: &str, detail: &str) -> Markup {
    let main = html! {
        div.narrow {
            h1 { (title) }
            p.prose { (visible(detail)) }
            p { a href="/inbox" { "Go to the approvals" } }
        }
    };
    page(title, who, Nav::None, now, main)
}

/// The page an agent's token gets: agents ask over the API.
pub(crate) fn agent_page(who: &Who<'_>, now: i64) -> Markup {
    let main = html! {
        div.narrow {
            h1 { "This inbox is for people who decide" }
            p.prose {
                (who.name) " is an agent's token. Agents ask over the HTTP API ("
                code { "POST /v1/approvals" } ") and wait for the answer; they cannot "
                "see or decide approvals here. Sign out and sign in with an approver's or an admin's token."
            }
        }
    };
    page("Not for agents", Some(who), Nav::None, now, main)
}

/// The status filters of the list, in order.
pub(crate) const FILTERS: [(&str, &str); 7] = [
    ("pending", "Pending"),
    ("approved", "Approved"),
    ("edited", "Edited"),
    ("rejected", "Rejected"),
    ("expired", "Expired"),
    ("cancelled", "Cancelled"),
    ("all", "All"),
];

/// One row of the list.
pub(crate) struct Item<'a> {
    pub(crate) detail: &'a ApprovalDetail,
}

/// The list page: filters, and the list that updates itself.
pub(crate) fn list_page(
    who: &Who<'_>,
    now: i64,
    filter: &str,
    before: Option<&str>,
    items: &[Item<'_>],
    next_before: Option<&str>,
) -> Markup {
    let mut source = format!("/inbox/list?status={}", super::text::query_escape(filter));
    if let Some(before) = before {
        source.push_str("&before=");
        source.push_str(&super::text::query_escape(before));
    }
    let main = html! {
        div.list-head {
            h1 { "Approvals" }
            p #live.live role="status" aria-live="polite" {}
        }
        nav.filters aria-label="Show approvals that are" {
            @for (value, label) in FILTERS {
                a href={ "/inbox?status=" (value) }
                    aria-current=[(value == filter).then_some("page")] { (label) }
            }
        }
        div #approvals data-src=(source) {
            (list_fragment(now, filter, before, items, next_before))
        }
    };
    page("Approvals", Some(who), Nav::Approvals, now, main)
}

/// The list itself: what `/inbox/list` sends for the page to swap in.
pub(crate) fn list_fragment(
    now: i64,
    filter: &str,
    before: Option<&str>,
    items: &[Item<'_>],
    next_before: Option<&str>,
) -> Markup {
    html! {
        @if items.is_empty() {
            p.empty {
                @if filter == "pending" {
                    "Nothing is waiting for a decision. New requests appear here as agents ask."
                } @else {
                    "No approvals here."
                }
            }
        } @else {
            ul.items {
                @for item in items { (list_item(now, item)) }
            }
        }
        @if before.is_some() || next_before.is_some() {
            nav.pager aria-label="Pages" {
                @if before.is_some() {
                    a href={ "/inbox?status=" (filter) } { "← Newest" }
                }
                @if let Some(next) = next_before {
                    a rel="next" href={ "/inbox?status=" (filter) "&before=" (super::text::query_escape(next)) } { "Older →" }
                }
            }
        }
    }
}

fn list_item(now: i64, item: &Item<'_>) -> Markup {
    let detail = item.detail;
    let row = &detail.row;
    let status = row.status.as_str();
    let approved = detail.approval.approved_by.len();
    html! {
        li.item data-id=(row.id) {
            div.item-top {
                a.tool href={ "/inbox/approvals/" (row.id) } { (row.tool) }
                span class={ "badge badge-" (status) } { (status) }
                @if row.status == ApprovalStatus::Pending {
                    span.quorum { (approved) " of " (row.quorum) " approval" @if row.quorum != 1 { "s" } }
                }
            }
            p.summary { code { (visible(&summary(&row.args))) } }
            p.meta {
                span { "asked by " b { bdi { (requester(detail)) } } }
                span { "rule " b { bdi { (row.rule) } } }
                span { (time_ago(now, row.created_at)) }
                @if row.status == ApprovalStatus::Pending {
                    @if let Some(at) = row.expires_at {
                        span { "expires " (due(now, at)) }
                    }
                } @else if let Some(by) = &row.decided_by {
                    span { (status) " by " b { bdi { (visible(by)) } } }
                }
            }
        }
    }
}

fn requester(detail: &ApprovalDetail) -> String {
    match &detail.run_principal {
        Some(name) => name.clone(),
        None => "an engine run".to_owned(),
    }
}

fn time_ago(now: i64, at: i64) -> Markup {
    let rfc3339 = toolgate_core::time::format_millis(at);
    html! {
        time datetime=(rfc3339) data-rel="" title=(readable_time(&rfc3339)) { (age(now, at)) }
    }
}

fn time_at(rfc3339: &str) -> Markup {
    html! { time datetime=(rfc3339) { (readable_time(rfc3339)) } }
}

/// What the decision forms hold when the page is shown again after a
/// refused decision.
#[derive(Default)]
pub(crate) struct Draft {
    /// The edited arguments as typed.
    pub(crate) args: Option<String>,
    /// The rejection message as typed.
    pub(crate) message: Option<String>,
    /// The grant choice.
    pub(crate) grant: Option<String>,
    pub(crate) grant_uses: Option<String>,
    pub(crate) grant_for: Option<String>,
    /// Open the edit box.
    pub(crate) editing: bool,
}

/// Whether and why the signed-in person may decide.
pub(crate) enum MayDecide {
    Yes,
    /// They approved already and more approvers are needed.
    ApprovedAlready,
    No(String),
}

/// An approval's page.
pub(crate) fn approval_page(
    who: &Who<'_>,
    now: i64,
    detail: &ApprovalDetail,
    may: &MayDecide,
    notice_shown: Option<&Notice>,
    draft: &Draft,
) -> Markup {
    let body = ApprovalDetailBody::from(detail);
    let approval = &body.approval;
    let row = &detail.row;
    let status = row.status.as_str();
    let pending = row.status == ApprovalStatus::Pending;
    let hidden = value_has_hidden(&Value::Object(approval.args.clone()))
        || body.context.as_ref().is_some_and(value_has_hidden);
    let main = html! {
        p.back { a href="/inbox" { "← All approvals" } }
        (notice(notice_shown))
        div #changed.notice.error role="alert" hidden {}
        div.approval-head data-approval-id=(row.id) data-run-id=(row.run_id)
            data-fingerprint=(approval.fingerprint) data-status=(status) {
            h1 { span.tool { (row.tool) } }
            span class={ "badge badge-" (status) } { (status) }
        }
        p.status-line { (status_line(detail, &body, now)) }
        @if let Some(message) = &body.message {
            div.message {
                p.label { "What the agent was told" }
                p.prose { (visible(message)) }
            }
        }
        @if hidden {
            div.notice.warn role="note" {
                p.notice-title { "Hidden characters" }
                p { "Some text below contains characters that are invisible or change the direction of text. "
                    "They are shown as " code { "\\u…" } " escapes or " span.hidden-char { "U+…" } " marks, so that what you read is what will run." }
            }
        }

        section aria-labelledby="call-h" {
            h2 #call-h { "The call" }
            @if !body.description.is_empty() {
                p.description.prose { (visible(&body.description)) }
            }
            h3 #args-h {
                "Arguments"
                @if let Some(editor) = &body.edited_by { span.aside { " (edited by " (editor) ")" } }
            }
            pre.json tabindex="0" aria-labelledby="args-h" { code { (pretty_args(&approval.args)) } }
            @if body.edited_by.is_some() && body.proposed_args != approval.args {
                details {
                    summary { "The arguments as the agent proposed them" }
                    pre.json tabindex="0" { code { (pretty_args(&body.proposed_args)) } }
                }
            }
        }

        section aria-labelledby="asked-h" {
            h2 #asked-h { "Who asked, and why" }
            dl.facts {
                dt { "Asked by" } dd { bdi { (requester(detail)) } " " span.aside { @if body.external { "(an outside agent, over the API)" } @else { "(a run of toolgate's engine)" } } }
                dt { "Asked" } dd { (time_at(&approval.requested_at)) " · " (time_ago(now, row.created_at)) }
                dt { "Run" } dd { code.id { (row.run_id) } }
            }
            h3 #context-h { "Context from the agent" }
            @match &body.context {
                Some(context) => pre.json tabindex="0" aria-labelledby="context-h" { code { (pretty_json(context)) } },
                None => p.aside { "The agent gave none." },
            }
        }

        section aria-labelledby="policy-h" {
            h2 #policy-h { "The rule that asked" }
            dl.facts {
                dt { "Rule" } dd { bdi { (row.rule) } }
                dt { "Who may decide" }
                dd {
                    @if approval.approvers.is_empty() { "any approver or admin" } @else {
                        @for (i, approver) in approval.approvers.iter().enumerate() {
                            @if i > 0 { ", " } code { (approver) }
                        } ", or an admin"
                    }
                }
                dt { "Quorum" }
                dd {
                    (row.quorum) " distinct approver" @if row.quorum != 1 { "s" }
                    @if pending {
                        "; " (body.approved_by.len()) " so far"
                        @if !body.approved_by.is_empty() { " (" (body.approved_by.join(", ")) ")" }
                    }
                }
                @if let Some(expires) = &approval.expires_at {
                    dt { @if row.status == ApprovalStatus::Expired { "Expired" } @else { "Expires" } }
                    dd {
                        (time_at(expires))
                        @if pending { @if let Some(at) = row.expires_at { " · " (due(now, at)) } }
                    }
                }
                dt { "Fingerprint" } dd { code.id { (approval.fingerprint) } }
            }
        }

        @if pending {
            (decide(who, detail, &body, may, draft))
        }

        section aria-labelledby="history-h" {
            h2 #history-h { "History" }
            ol.history {
                li { (time_at(&approval.requested_at)) " " span { "asked for by " b { bdi { (requester(detail)) } } } }
                @for record in &body.decisions {
                    li {
                        @if let Some(at) = &record.at { (time_at(at)) " " }
                        b { bdi { (visible(&record.principal)) } } " "
                        @match record.decision.as_str() {
                            "approve" => "approved",
                            "edit" => "edited the arguments (and approved them)",
                            "reject" => "rejected",
                            other => (other),
                        }
                        @if let Some(message) = &record.message {
                            ": " q.prose { (visible(message)) }
                        }
                        @if let Some(args) = &record.args {
                            details {
                                summary { "The arguments they set" }
                                pre.json tabindex="0" { code { (pretty_args(args)) } }
                            }
                        }
                    }
                }
                @if let Some(by) = detail.approval.settled_by.as_ref().filter(|_| body.decisions.is_empty() && !pending) {
                    li { "settled at once by " b { bdi { (by) } } }
                }
                @if let Some(at) = detail.expired_at {
                    li { (time_at(&toolgate_core::time::format_millis(at))) " expired: nobody decided in time" }
                }
            }
        }
    };
    page(&row.tool, Some(who), Nav::Approvals, now, main)
}

fn status_line(detail: &ApprovalDetail, body: &ApprovalDetailBody, now: i64) -> Markup {
    let row = &detail.row;
    let by = row.decided_by.as_deref().unwrap_or("someone");
    let when = row
        .decided_at
        .map(|at| html! { " " (time_ago(now, at)) })
        .unwrap_or_default();
    match row.status {
        ApprovalStatus::Pending => {
            let needed = body.still_needed;
            html! {
                "Waiting for " (needed) " more approval" @if needed != 1 { "s" }
                " (" (body.approved_by.len()) " of " (row.quorum) "). The agent waits until then."
            }
        }
        ApprovalStatus::Approved => {
            html! { "Approved by " b { bdi { (by) } } (when) ". The call may run as shown." }
        }
        ApprovalStatus::Edited => {
            html! { "Approved with edited arguments by " b { bdi { (by) } } (when) ". The call may run with the arguments shown." }
        }
        ApprovalStatus::Rejected => {
            html! { "Rejected by " b { bdi { (by) } } (when) ". The call must not run." }
        }
        ApprovalStatus::Expired => {
            html! { "Nobody decided in time, so it expired. The call must not run." }
        }
        ApprovalStatus::Cancelled => {
            html! { "Withdrawn: its run ended without it. The call must not run." }
        }
    }
}

fn decide(
    who: &Who<'_>,
    detail: &ApprovalDetail,
    body: &ApprovalDetailBody,
    may: &MayDecide,
    draft: &Draft,
) -> Markup {
    let row = &detail.row;
    let action = format!("/inbox/approvals/{}/decision", row.id);
    let schema = compact_json(&body.schema);
    let args_text = draft
        .args
        .clone()
        .unwrap_or_else(|| pretty_args(&body.approval.args));
    let lines = args_text.lines().count().clamp(4, 18);
    let grant = draft.grant.as_deref().unwrap_or("");
    if let MayDecide::No(why) = may {
        return html! {
            section aria-labelledby="decide-h" {
                h2 #decide-h { "Decide" }
                p.notice { (why) }
            }
        };
    }
    html! {
        section.decide aria-labelledby="decide-h" {
            h2 #decide-h { "Decide" }
            @if let MayDecide::ApprovedAlready = may {
                p.notice { "You approved this already; it needs other approvers now. You can still reject it." }
            }
            form #approve-form method="post" action=(action) {
                input type="hidden" name="csrf" value=(who.csrf);
                input type="hidden" name="fingerprint" value=(body.approval.fingerprint);
                fieldset.grant {
                    legend { "Also approve later calls of " code { (row.tool) } "?" }
                    label for="grant" { "Grant" }
                    select #grant name="grant" {
                        option value="" selected[grant.is_empty()] { "No, only this call" }
                        option value="run" selected[grant == "run"] { "Yes, for the rest of this run" }
                        option value="thread" selected[grant == "thread"] { "Yes, for this conversation thread" }
                        option value="uses" selected[grant == "uses"] { "Yes, for the next few calls" }
                        option value="for" selected[grant == "for"] { "Yes, for a while" }
                    }
                    div.grant-uses {
                        label for="grant-uses" { "How many calls" }
                        input #grant-uses type="number" name="grant_uses" min="1" max="1000000" inputmode="numeric"
                            value=(draft.grant_uses.as_deref().unwrap_or("5"));
                    }
                    div.grant-for {
                        label for="grant-for" { "For how long " span.aside { "(30m, 2h, 1d)" } }
                        input #grant-for type="text" name="grant_for" spellcheck="false" autocapitalize="none"
                            value=(draft.grant_for.as_deref().unwrap_or("1h"));
                    }
                }
                div.actions {
                    button.primary #approve type="submit" name="decision" value="approve" { "Approve" }
                }
                details #edit open[draft.editing] {
                    summary { "Edit the arguments, then approve" }
                    label for="args" { "Arguments, as JSON" }
                    p #args-hint.aside {
                        "They are checked against the tool's schema before they are sent, and again by the server. "
                        "Editing counts as your approval; other approvals of the old arguments no longer count."
                    }
                    textarea #args name="args" rows=(lines) spellcheck="false" autocapitalize="none"
                        autocomplete="off" data-schema=(schema) data-original=(pretty_args(&body.approval.args))
                        aria-describedby="args-hint args-errors" { (args_text) }
                    div #args-errors.field-errors aria-live="polite" {}
                    div.actions {
                        button #approve-edited type="submit" name="decision" value="edit" { "Approve with these arguments" }
                    }
                }
            }
            form #reject-form.reject method="post" action=(action) {
                input type="hidden" name="csrf" value=(who.csrf);
                input type="hidden" name="fingerprint" value=(body.approval.fingerprint);
                label for="message" { "Why not " span.aside { "(optional; the agent is told)" } }
                textarea #message name="message" rows="3" { (draft.message.as_deref().unwrap_or("")) }
                div.actions {
                    button.danger #reject type="submit" name="decision" value="reject" { "Reject" }
                }
            }
        }
    }
}

/// What the grants page shows: which grants, from where.
#[derive(Clone, Copy)]
pub(crate) struct GrantsPage<'a> {
    /// `live` or `all`.
    pub(crate) filter: &'a str,
    /// The grant the page starts after, if it is not the first page.
    pub(crate) before: Option<&'a str>,
    /// The page's grants, each with whether the viewer may revoke it.
    pub(crate) grants: &'a [(GrantView, bool)],
    /// The last grant of the page, when there are older ones.
    pub(crate) next_before: Option<&'a str>,
}

/// The grant filters: the query value and its label.
const GRANT_FILTERS: [(&str, &str); 2] = [("live", "Live"), ("all", "All")];

/// The grants page.
pub(crate) fn grants_page(
    who: &Who<'_>,
    now: i64,
    grants_page: &GrantsPage<'_>,
    notice_shown: Option<&Notice>,
) -> Markup {
    let GrantsPage {
        filter,
        before,
        grants,
        next_before,
    } = *grants_page;
    let main = html! {
        h1 { "Grants" }
        p.prose.aside {
            "A grant approves later calls without asking anyone: it is made with a decision "
            "(\"also approve later calls\") and lasts for its scope. Revoking one makes those calls ask again."
        }
        (notice(notice_shown))
        nav.filters aria-label="Show grants that are" {
            @for (value, label) in GRANT_FILTERS {
                a href={ "/inbox/grants?state=" (value) }
                    aria-current=[(value == filter).then_some("page")] { (label) }
            }
        }
        @if grants.is_empty() {
            p.empty {
                @if filter == "live" {
                    "No grant covers calls now. Revoked, used-up and ended grants are under "
                    a href="/inbox/grants?state=all" { "All" } "."
                } @else {
                    "There are no grants."
                }
            }
        } @else {
            ul.items {
                @for (grant, may_revoke) in grants { (grant_item(who, grant, *may_revoke)) }
            }
        }
        @if before.is_some() || next_before.is_some() {
            nav.pager aria-label="Pages" {
                @if before.is_some() {
                    a href={ "/inbox/grants?state=" (filter) } { "← Newest" }
                }
                @if let Some(next) = next_before {
                    a rel="next" href={ "/inbox/grants?state=" (filter) "&before=" (super::text::query_escape(next)) } { "Older →" }
                }
            }
        }
    };
    page("Grants", Some(who), Nav::Grants, now, main)
}

fn grant_item(who: &Who<'_>, grant: &GrantView, may_revoke: bool) -> Markup {
    let state_class = grant.state.replace(' ', "-");
    html! {
        li.item data-id=(grant.id) {
            div.item-top {
                code.tool { (visible(&grant.tool)) }
                span class={ "badge badge-" (state_class) } { (grant.state) }
            }
            p.meta {
                span { (scope_text(grant)) }
                @if let Some(when) = &grant.when { span { "when " code { (visible(when)) } } }
            }
            p.meta {
                span { "made by " b { bdi { (grant.created_by) } } " " (time_at(&grant.created_at)) }
                @if let Some(approval) = &grant.approval_id {
                    span { "with " a href={ "/inbox/approvals/" (approval) } { "this decision" } }
                }
                @if let (Some(by), Some(at)) = (&grant.revoked_by, &grant.revoked_at) {
                    span { "revoked by " b { bdi { (by) } } " " (time_at(at)) }
                }
                span { code.id { (grant.id) } }
            }
            @if may_revoke && grant.state == "live" {
                form.revoke method="post" action={ "/inbox/grants/" (grant.id) "/revoke" } {
                    input type="hidden" name="csrf" value=(who.csrf);
                    button.danger type="submit" aria-label={ "Revoke grant " (grant.id) " for " (grant.tool) } { "Revoke" }
                }
            }
        }
    }
}

fn scope_text(grant: &GrantView) -> Markup {
    match grant.scope.as_str() {
        "run" => html! { "for run " code.id { (grant.run_id.as_deref().unwrap_or("?")) } },
        "thread" => {
            html! { "for thread " code.id { (visible(grant.thread.as_deref().unwrap_or("?"))) } }
        }
        "until" => html! { "until " (time_at(grant.until.as_deref().unwrap_or(""))) },
        "uses" => html! {
            "for " (grant.uses.unwrap_or(0)) " call" @if grant.uses != Some(1) { "s" }
            @if let Some(left) = grant.uses_left { " (" (left) " left)" }
        },
        other => html! { (other) },
    }
}

/// The tokens page (admins only): the token just made, if one was, with
/// its secret (shown this once), a form to make one, and every token,
/// newest first, with a revoke button for those that work.
pub(crate) fn tokens_page(
    who: &Who<'_>,
    now: i64,
    tokens: &[TokenView],
    made: Option<&CreatedToken>,
    notice_shown: Option<&Notice>,
) -> Markup {
    let main = html! {
        h1 { "Tokens" }
        p.prose.aside {
            "An API token speaks for one principal: an agent asks, an approver decides what it is "
            "named for, an admin decides anything and manages tokens. toolgate keeps only a hash of "
            "each token, so a token's secret is shown once, when it is made."
        }
        (notice(notice_shown))
        @if let Some(made) = made {
            section.secret aria-labelledby="secret-title" {
                h2 #secret-title { "The new token for " bdi { (made.name) } }
                p { "Copy it now and give it to its owner: it cannot be shown again." }
                p { code #secret { (made.token) } }
            }
        }
        form.make-token method="post" action="/inbox/tokens" {
            input type="hidden" name="csrf" value=(who.csrf);
            label for="name" { "Name" }
            input #name type="text" name="name" required maxlength="64" autocomplete="off"
                aria-describedby="name-help";
            p.help #name-help { "Who the token speaks for, as decisions record it: letters, digits and . _ @ -" }
            label for="role" { "Role" }
            select #role name="role" {
                option value="approver" selected { "approver" }
                option value="agent" { "agent" }
                option value="admin" { "admin" }
            }
            label for="groups" { "Groups" }
            input #groups type="text" name="groups" placeholder="ops, sre" autocomplete="off"
                aria-describedby="groups-help";
            p.help #groups-help { "For policy rules that name approvers by group; separate them with commas." }
            label for="expires_in" { "Expires after" }
            input #expires_in type="text" name="expires_in" placeholder="90d" autocomplete="off"
                aria-describedby="expires-help";
            p.help #expires-help { "Such as 90d or 12h; leave it empty for a token that works until it is revoked." }
            p { button.primary type="submit" { "Make token" } }
        }
        h2 { "All tokens" }
        @if tokens.is_empty() {
            p.empty { "There are no tokens." }
        } @else {
            ul.items {
                @for token in tokens { (token_item(who, token)) }
            }
        }
    };
    page("Tokens", Some(who), Nav::Tokens, now, main)
}

fn token_item(who: &Who<'_>, token: &TokenView) -> Markup {
    let state = token.state.as_str();
    html! {
        li.item data-id=(token.id) {
            div.item-top {
                b { bdi { (token.name) } }
                span.role { (token.role) }
                span class={ "badge badge-" (state) } { (state) }
            }
            p.meta {
                @if !token.groups.is_empty() { span { "groups " (token.groups.join(", ")) } }
                span { "made by " b { bdi { (token.created_by) } } " " (time_at(&token.created_at)) }
                @if let Some(at) = &token.expires_at { span { "expires " (time_at(at)) } }
                @if let Some(at) = &token.revoked_at { span { "revoked " (time_at(at)) } }
                span { code.id { (token.id) } }
            }
            @if state == "live" {
                form.revoke method="post" action={ "/inbox/tokens/" (token.id) "/revoke" } {
                    input type="hidden" name="csrf" value=(who.csrf);
                    button.danger type="submit" aria-label={ "Revoke token " (token.id) " of " (token.name) } { "Revoke" }
                }
            }
        }
    }
}
