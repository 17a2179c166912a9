//! `toolgate approvals`: list, show, approve, edit and reject the tool
//! calls that wait for people.
//!
//! A decision is bound to a fingerprint: the one given with
//! `--fingerprint`, or the one of the approval as it is read just before
//! deciding, and the command prints the call it decided on, so that what a
//! person approves is exactly what they were shown.
//!
//! `--json` prints, for `list`, an array of approvals:
//!
//! ```json
//! {"id": "…", "run_id": "…", "call_id": "…", "tool": "send_email",
//!  "args": {…}, "fingerprint": "…", "status": "pending", "rule": "default",
//!  "quorum": 1, "approvers": [], "requested_at": "2026-11-22T20:30:00Z",
//!  "expires_at": null, "decided_by": null, "decided_at": null}
//! ```
//!
//! for `show`, one such object with `description`, `proposed_args`,
//! `edited_by`, `approved_by`, `still_needed`, `schema`, `context`, `decisions`
//! (`[{"principal", "decision", "at", "message", "args", "fingerprint"}]`),
//! `expired_at` and `result` (`{"content", "is_error"}` once the call is
//! over) added; and for `approve`, `edit` and `reject`, `{"approval": …,
//! "grant": … or null, "run_status": "waiting"}`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Map, Value};
use toolgate::engine::{
    ApprovalDetail, DecideError, DecisionRequest, approval_detail, decide, expire_due,
};
use toolgate::grant::{GrantRequest, GrantScope, GrantSpec};
use toolgate::run::{ApprovalState, ApprovalStatus, Decision, DecisionError, RunState, RunStatus};
use toolgate::store::{ApprovalQuery, ApprovalRow, Store, StoreError};
use toolgate::{Fingerprint, ToolError};

use crate::context::{StoreArgs, local_principal, now};
use crate::exit;
use crate::grants::{GrantView, grant_view};
use crate::table::{
    Style, Table, clean, column, compact_json, indented, one_line, out, outln, print_json,
};

/// The `approvals` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ApprovalsCommand {
    /// List approvals, newest first: the pending ones unless --status says
    /// otherwise. Approvals past their time are expired first.
    List(ListArgs),
    /// Show one approval: the call, who may decide, its history.
    Show(ShowArgs),
    /// Approve a call as it is.
    Approve(ApproveArgs),
    /// Approve a call with other arguments (checked against the tool's
    /// schema). Without --args, opens $VISUAL or $EDITOR on them.
    Edit(EditArgs),
    /// Reject a call; the message goes back to the model.
    Reject(RejectArgs),
}

/// Which approvals `list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StatusFilter {
    Pending,
    Approved,
    Edited,
    Rejected,
    Expired,
    Cancelled,
    All,
}

impl StatusFilter {
    fn status(self) -> Option<ApprovalStatus> {
        Some(match self {
            StatusFilter::Pending => ApprovalStatus::Pending,
            StatusFilter::Approved => ApprovalStatus::Approved,
            StatusFilter::Edited => ApprovalStatus::Edited,
            StatusFilter::Rejected => ApprovalStatus::Rejected,
            StatusFilter::Expired => ApprovalStatus::Expired,
            StatusFilter::Cancelled => ApprovalStatus::Cancelled,
            StatusFilter::All => return None,
        })
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Only approvals with these statuses (comma-separated), or all.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "pending",
        value_name = "STATUS"
    )]
    status: Vec<StatusFilter>,
    /// Only the approvals of this run.
    #[arg(long, value_name = "RUN")]
    run: Option<String>,
    /// At most this many.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    limit: u32,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ShowArgs {
    /// The approval's id.
    id: String,
    /// Print a JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// A standing approval to make with a decision.
#[derive(Debug, clap::Args)]
struct GrantArgs {
    /// Also let later matching calls run without asking: `run` (this run),
    /// `thread` (this run's thread), `uses:N` (the next N calls),
    /// `for:DURATION` (e.g. for:30m, for:8h) or `until:TIME` (RFC 3339).
    #[arg(long, value_name = "SCOPE", value_parser = parse_grant)]
    grant: Option<GrantSpec>,
    /// The tools the grant covers (a glob); by default the decided call's
    /// tool.
    #[arg(long, value_name = "GLOB", requires = "grant")]
    grant_tool: Option<String>,
    /// A CEL condition later calls must meet to be covered, e.g.
    /// 'args.recipient.endsWith("@example.com")'.
    #[arg(long, value_name = "CEL", requires = "grant")]
    grant_when: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ApproveArgs {
    /// The approval's id.
    id: String,
    /// The fingerprint of the call you decided on (from `approvals show`);
    /// the decision is refused if the call is no longer that one. By
    /// default, the call as it is read just before deciding.
    #[arg(long, value_name = "FP")]
    fingerprint: Option<String>,
    #[command(flatten)]
    grant: GrantArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct EditArgs {
    /// The approval's id.
    id: String,
    /// The new arguments, a JSON object. Without it, $VISUAL or $EDITOR
    /// (default vi) opens on the current ones; saving them unchanged, or
    /// empty, decides nothing.
    #[arg(long, value_name = "JSON")]
    args: Option<String>,
    /// The fingerprint of the call you edited (from `approvals show`).
    #[arg(long, value_name = "FP")]
    fingerprint: Option<String>,
    #[command(flatten)]
    grant: GrantArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RejectArgs {
    /// The approval's id.
    id: String,
    /// Why, for the model: it reads this as the tool's result.
    #[arg(long, short, value_name = "TEXT")]
    message: Option<String>,
    /// The fingerprint of the call you decided on (from `approvals show`).
    #[arg(long, value_name = "FP")]
    fingerprint: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(command: ApprovalsCommand, store: &StoreArgs) -> anyhow::Result<ExitCode> {
    match command {
        ApprovalsCommand::List(args) => list(args, store).await,
        ApprovalsCommand::Show(args) => show(args, store).await,
        ApprovalsCommand::Approve(args) => {
            let request = Act {
                grant: grant_request(&args.grant, now()),
                id: args.id,
                fingerprint: args.fingerprint,
                decision: DecisionRequest::Approve,
                json: args.json,
                kept_edit: None,
            };
            act(request, store.open_store().await?.as_ref()).await
        }
        ApprovalsCommand::Reject(args) => {
            let message = args.message.filter(|m| !m.trim().is_empty());
            let request = Act {
                id: args.id,
                fingerprint: args.fingerprint,
                decision: DecisionRequest::Reject(message),
                grant: None,
                json: args.json,
                kept_edit: None,
            };
            act(request, store.open_store().await?.as_ref()).await
        }
        ApprovalsCommand::Edit(args) => edit(args, store).await,
    }
}

// ---------------------------------------------------------------------------
// The JSON shapes.

/// One approval, as listings and decisions print it.
#[derive(Debug, Serialize)]
pub(crate) struct ApprovalView {
    id: String,
    run_id: String,
    call_id: String,
    tool: String,
    args: Map<String, Value>,
    fingerprint: String,
    status: ApprovalStatus,
    rule: String,
    quorum: u32,
    approvers: Vec<String>,
    requested_at: String,
    expires_at: Option<String>,
    decided_by: Option<String>,
    decided_at: Option<String>,
}

pub(crate) fn approval_view(row: &ApprovalRow) -> ApprovalView {
    ApprovalView {
        id: row.id.clone(),
        run_id: row.run_id.clone(),
        call_id: row.call_id.clone(),
        tool: row.tool.clone(),
        args: row.args.clone(),
        fingerprint: row.fingerprint.to_string(),
        status: row.status,
        rule: row.rule.clone(),
        quorum: row.quorum,
        approvers: row.approvers.clone(),
        requested_at: rfc3339(row.created_at),
        expires_at: row.expires_at.map(rfc3339),
        decided_by: row.decided_by.clone(),
        decided_at: row.decided_at.map(rfc3339),
    }
}

/// One approval in full, as `show --json` prints it.
#[derive(Debug, Serialize)]
struct DetailView {
    #[serde(flatten)]
    approval: ApprovalView,
    description: String,
    proposed_args: Map<String, Value>,
    edited_by: Option<String>,
    approved_by: Vec<String>,
    still_needed: usize,
    schema: Value,
    /// What the requesting agent told the people deciding.
    context: Option<Value>,
    decisions: Vec<DecisionView>,
    expired_at: Option<String>,
    result: Option<ResultView>,
}

/// One decision of an approval's history.
#[derive(Debug, Serialize)]
struct DecisionView {
    principal: String,
    /// `approve`, `edit` or `reject`.
    decision: &'static str,
    at: Option<String>,
    /// A rejection's message.
    message: Option<String>,
    /// An edit's new arguments.
    args: Option<Map<String, Value>>,
    /// An edit's new fingerprint.
    fingerprint: Option<String>,
}

/// What the model was told about a call that is over.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ResultView {
    pub(crate) content: String,
    pub(crate) is_error: bool,
}

/// What a decision command prints with --json.
#[derive(Debug, Serialize)]
struct ActView {
    approval: ApprovalView,
    grant: Option<GrantView>,
    run_status: String,
}

fn rfc3339(ms: i64) -> String {
    toolgate::time::format_millis(ms)
}

// ---------------------------------------------------------------------------
// list

async fn list(args: ListArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let style = Style::detect();
    let store = store_args.open_store().await?;
    let now = now();
    expire_due(store.as_ref(), now)
        .await
        .context("cannot expire the approvals past their time")?;
    if let Some(run) = &args.run {
        store
            .load(run)
            .await
            .map_err(|error| store_error(error, None))?;
    }
    let statuses: Vec<ApprovalStatus> = if args.status.contains(&StatusFilter::All) {
        Vec::new()
    } else {
        let mut statuses: Vec<ApprovalStatus> =
            args.status.iter().filter_map(|s| s.status()).collect();
        statuses.dedup();
        statuses
    };
    let limit = args.limit as usize;
    let mut rows = store
        .approvals(&ApprovalQuery {
            statuses: statuses.clone(),
            run_id: args.run.clone(),
            before: None,
            limit: limit + 1,
        })
        .await
        .context("cannot list the approvals")?;
    let more = rows.len() > limit;
    rows.truncate(limit);

    if args.json {
        let views: Vec<ApprovalView> = rows.iter().map(approval_view).collect();
        print_json(&views)?;
        return Ok(exit::code(exit::SUCCESS));
    }
    if rows.is_empty() {
        if style.terminal {
            outln(&nothing_listed(&statuses, args.run.as_deref()))?;
        }
        return Ok(exit::code(exit::SUCCESS));
    }
    out(&approvals_table(&rows, &style, now).render(&style))?;
    if more && style.terminal {
        eprintln!("Showing the newest {limit}; pass --limit to see more.");
    }
    Ok(exit::code(exit::SUCCESS))
}

fn approvals_table(rows: &[ApprovalRow], style: &Style, now: i64) -> Table {
    let mut table = Table::new([
        column("ID"),
        column("TOOL").max(24),
        column("ARGUMENTS").max(60).flex(),
        column("STATUS"),
        column("RULE").max(20).optional(),
        column("REQUESTED"),
        column("BY").max(16).optional(),
        column("RUN").optional(),
    ]);
    for row in rows {
        table.row([
            row.id.clone(),
            row.tool.clone(),
            compact_json(&row.args),
            row.status.to_string(),
            row.rule.clone(),
            style.time(row.created_at, now),
            row.decided_by.clone().unwrap_or_default(),
            row.run_id.clone(),
        ]);
    }
    table
}

/// What an empty listing says on a terminal.
fn nothing_listed(statuses: &[ApprovalStatus], run: Option<&str>) -> String {
    let words: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    let which = match words.len() {
        0 => String::new(),
        1 => format!("{} ", words[0]),
        n => format!("{} or {} ", words[..n - 1].join(", "), words[n - 1]),
    };
    match run {
        Some(run) => format!("No {which}approvals in run {run}."),
        None => format!("No {which}approvals."),
    }
}

// ---------------------------------------------------------------------------
// show

/// An approval with everything its run's log says about it.
type Found = ApprovalDetail;

/// Reads approval `id` and folds its run, noting when each decision came.
async fn find(store: &dyn Store, id: &str) -> anyhow::Result<Found> {
    approval_detail(store, id)
        .await
        .map_err(|error| store_error(error, None))
}

async fn show(args: ShowArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let style = Style::detect();
    let store = store_args.open_store().await?;
    let now = now();
    expire_due(store.as_ref(), now)
        .await
        .context("cannot expire the approvals past their time")?;
    let found = find(store.as_ref(), &args.id).await?;
    if args.json {
        print_json(&detail(&found))?;
    } else {
        out(&show_text(&found, &style, now))?;
    }
    Ok(exit::code(exit::SUCCESS))
}

fn detail(found: &Found) -> DetailView {
    let approval = &found.approval;
    DetailView {
        approval: approval_view(&found.row),
        description: approval.description.clone(),
        proposed_args: approval.call.args.clone(),
        edited_by: approval.edited_by.clone(),
        approved_by: approval.approved_by.clone(),
        still_needed: if approval.status == ApprovalStatus::Pending {
            approval.still_needed()
        } else {
            0
        },
        schema: approval.schema.clone(),
        context: approval.context.clone(),
        decisions: approval
            .decisions
            .iter()
            .enumerate()
            .map(|(index, record)| {
                let (message, args, fingerprint) = match &record.decision {
                    Decision::Approve => (None, None, None),
                    Decision::Edit {
                        args,
                        new_fingerprint,
                    } => (None, Some(args.clone()), Some(new_fingerprint.to_string())),
                    Decision::Reject { message } => (message.clone(), None, None),
                };
                DecisionView {
                    principal: record.principal.clone(),
                    decision: record.decision.kind(),
                    at: found.decided_at.get(index).copied().map(rfc3339),
                    message,
                    args,
                    fingerprint,
                }
            })
            .collect(),
        expired_at: found.expired_at.map(rfc3339),
        result: found.result.as_ref().map(|result| ResultView {
            content: result.content.clone(),
            is_error: result.is_error,
        }),
    }
}

/// The requester's context: text of several lines (a diff, say) as it is,
/// the rest as JSON.
fn context_text(context: &Value, style: &Style) -> String {
    let mut text = String::new();
    let mut rest = context.clone();
    if let Value::Object(fields) = &mut rest {
        let long: Vec<String> = fields
            .iter()
            .filter(|(_, value)| value.as_str().is_some_and(|s| s.contains('\n')))
            .map(|(key, _)| key.clone())
            .collect();
        for key in long {
            if let Some(Value::String(block)) = fields.remove(&key) {
                text.push('\n');
                text.push_str(&style.bold(&format!("Context: {}", clean(&key))));
                text.push('\n');
                text.push_str(&indented(&clean(&block), "  "));
                text.push('\n');
            }
        }
        if fields.is_empty() {
            return text;
        }
    }
    text.push('\n');
    text.push_str(&style.bold("Context (from the agent)"));
    text.push('\n');
    text.push_str(&indented(&pretty(&rest), "  "));
    text.push('\n');
    text
}

fn show_text(found: &Found, style: &Style, now: i64) -> String {
    let approval = &found.approval;
    let row = &found.row;
    let mut text = format!(
        "{}\n\n",
        style.bold(&format!("Approval {}: {}", row.id, approval.status))
    );
    let tool = if approval.description.is_empty() {
        approval.call.name.clone()
    } else {
        format!(
            "{}: {}",
            approval.call.name,
            one_line(&approval.description)
        )
    };
    let approvers = if approval.ask.approvers.is_empty() {
        "anyone who may decide".to_owned()
    } else {
        approval
            .ask
            .approvers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let quorum = match approval.ask.quorum {
        1 => "1 approval needed".to_owned(),
        n => format!("{n} approvals from distinct approvers needed"),
    };
    let mut fields = vec![
        ("Tool", tool),
        (
            "Run",
            format!("{} (call {})", row.run_id, clean(&approval.call.id)),
        ),
        ("Rule", approval.rule.to_string()),
        ("Approvers", format!("{approvers}; {quorum}")),
        ("Requested", style.time_exact(approval.requested_at, now)),
        (
            "Expires",
            match approval.expires_at {
                Some(at) => style.time_exact(at, now),
                None => "never: it waits until someone decides".to_owned(),
            },
        ),
        ("Status", status_text(found)),
        ("Fingerprint", approval.fingerprint.to_string()),
    ];
    if let Some(timeout) = approval.ask.timeout {
        fields.insert(
            5,
            (
                "Timeout",
                format!(
                    "{}, then the call is rejected",
                    humantime::format_duration(timeout)
                ),
            ),
        );
    }
    text.push_str(&field_lines(&fields));

    let edited = approval.edited_by.is_some();
    text.push('\n');
    text.push_str(&style.bold(if edited {
        "Arguments (as edited; the call runs with these)"
    } else {
        "Arguments"
    }));
    text.push('\n');
    text.push_str(&indented(&pretty(&approval.args), "  "));
    text.push('\n');
    if edited {
        text.push('\n');
        text.push_str(&style.bold("Arguments the model proposed"));
        text.push('\n');
        text.push_str(&indented(&pretty(&approval.call.args), "  "));
        text.push('\n');
    }
    if let Some(context) = &approval.context {
        text.push_str(&context_text(context, style));
    }

    text.push('\n');
    text.push_str(&style.bold("Decisions"));
    text.push('\n');
    if approval.decisions.is_empty() && found.expired_at.is_none() {
        text.push_str(if approval.status == ApprovalStatus::Pending {
            "  none yet\n"
        } else {
            "  none\n"
        });
    }
    for (index, record) in approval.decisions.iter().enumerate() {
        let at = found
            .decided_at
            .get(index)
            .map(|at| format!("{}  ", style.time_exact(*at, now)))
            .unwrap_or_default();
        let who = clean(&record.principal);
        let what = match &record.decision {
            Decision::Approve => format!("{who} approved"),
            Decision::Edit { args, .. } => {
                format!(
                    "{who} edited the arguments to {}",
                    one_line(&compact_json(args))
                )
            }
            Decision::Reject {
                message: Some(message),
            } => format!("{who} rejected: {}", one_line(message)),
            Decision::Reject { message: None } => format!("{who} rejected"),
        };
        text.push_str(&format!("  {at}{what}\n"));
    }
    if let Some(at) = found.expired_at {
        text.push_str(&format!(
            "  {}  nobody decided in time: expired, so the call was rejected\n",
            style.time_exact(at, now)
        ));
    }
    if let Some(result) = &found.result {
        text.push('\n');
        text.push_str(&style.bold(if result.is_error {
            "Result (an error, as the model was told)"
        } else {
            "Result"
        }));
        text.push('\n');
        text.push_str(&indented(&clean(&result.content), "  "));
        text.push('\n');
    }
    if approval.status == ApprovalStatus::Pending {
        text.push_str(&format!(
            "\nDecide with `toolgate approvals approve {id}`, `toolgate approvals edit {id}` or `toolgate approvals reject {id} --message TEXT`.\n",
            id = row.id
        ));
    }
    text
}

fn status_text(found: &Found) -> String {
    let approval = &found.approval;
    match approval.status {
        ApprovalStatus::Pending => {
            let needed = approval.still_needed();
            let so_far = if approval.approved_by.is_empty() {
                String::new()
            } else {
                format!(" (approved so far by {})", approval.approved_by.join(", "))
            };
            format!(
                "pending: waiting for {needed} more approval{}{so_far}",
                if needed == 1 { "" } else { "s" }
            )
        }
        ApprovalStatus::Approved => format!("approved by {}", approval.approved_by.join(", ")),
        ApprovalStatus::Edited => format!(
            "edited by {} and approved by {}",
            approval.edited_by.as_deref().unwrap_or("?"),
            approval.approved_by.join(", ")
        ),
        ApprovalStatus::Rejected => format!(
            "rejected by {}",
            approval
                .decisions
                .last()
                .map_or("?", |d| d.principal.as_str())
        ),
        ApprovalStatus::Expired => "expired: nobody decided in time, so it was rejected".to_owned(),
        ApprovalStatus::Cancelled => "cancelled: the run ended without it".to_owned(),
    }
}

/// `label  value` lines, the values aligned.
fn field_lines(fields: &[(&str, String)]) -> String {
    let width = fields
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0);
    fields
        .iter()
        .map(|(label, value)| format!("  {label:<width$}  {}\n", one_line(value)))
        .collect()
}

/// Arguments (or any JSON), indented, safe on a terminal: JSON escapes the
/// ASCII control characters, [`clean`] the others (DEL, C1).
fn pretty(args: &impl Serialize) -> String {
    clean(
        &serde_json::to_string_pretty(args).unwrap_or_else(|error| format!("<not JSON: {error}>")),
    )
}

// ---------------------------------------------------------------------------
// approve, edit, reject

/// A decision to record.
struct Act {
    id: String,
    fingerprint: Option<String>,
    decision: DecisionRequest,
    grant: Option<GrantRequest>,
    json: bool,
    /// Where an edit made in an editor is kept if it is refused.
    kept_edit: Option<tempfile::TempPath>,
}

async fn act(request: Act, store: &dyn Store) -> anyhow::Result<ExitCode> {
    let grant = request.grant;
    let before = find(store, &request.id).await?;
    let fingerprint = match &request.fingerprint {
        Some(given) => parse_fingerprint(given)?,
        None => before.approval.fingerprint.clone(),
    };
    let principal = local_principal();
    let now = now();
    let decided = decide(
        store,
        &principal,
        &request.id,
        &fingerprint,
        request.decision.clone(),
        grant.clone(),
        now,
    )
    .await;
    let row = match decided {
        Ok(row) => row,
        Err(error) => {
            let error = explain(store, error, &principal.name, &request.id).await;
            return Err(match request.kept_edit {
                Some(path) => keep_edit(path, &request.id, error),
                None => error,
            });
        }
    };
    let after = store
        .load(&row.run_id)
        .await
        .map_err(|error| store_error(error, None))?;
    let state = RunState::fold(after.iter().map(|e| &e.event));
    let made = if grant.is_some() {
        ApprovalDetail::of(row.clone(), &after).and_then(|detail| detail.grants.last().cloned())
    } else {
        None
    };
    if request.json {
        print_json(&ActView {
            approval: approval_view(&row),
            grant: made.as_ref().map(|g| grant_view(g, now)),
            run_status: state.status.as_str().to_owned(),
        })?;
        return Ok(exit::code(exit::SUCCESS));
    }
    let still_needed = state
        .approval(&row.id)
        .map_or(0, ApprovalState::still_needed);
    let mut text = decided_text(
        &before,
        &row,
        &principal.name,
        &request.decision,
        still_needed,
    );
    if let Some(grant) = &made {
        text.push_str(&format!(
            "Granted {}: later {} calls{} run without asking, {}. `toolgate grants revoke {}` withdraws it.\n",
            grant.id,
            clean(&grant.tool),
            grant
                .when
                .as_deref()
                .map(|w| format!(" where {}", one_line(w)))
                .unwrap_or_default(),
            scope_phrase(&grant.scope),
            grant.id
        ));
    }
    text.push_str(&next_step(&state, &row));
    out(&text)?;
    Ok(exit::code(exit::SUCCESS))
}

/// What the person decided, on which call.
fn decided_text(
    before: &Found,
    row: &ApprovalRow,
    principal: &str,
    decision: &DecisionRequest,
    still_needed: usize,
) -> String {
    let tool = &row.tool;
    let id = &row.id;
    let who = clean(principal);
    let call = |args: &Map<String, Value>, fingerprint: &str| {
        format!(
            "{}\n  fingerprint {fingerprint}\n",
            indented(&pretty(args), "  ")
        )
    };
    match (decision, row.status) {
        (DecisionRequest::Approve, ApprovalStatus::Pending) => {
            format!(
                "Recorded {who}'s approval of {tool} (approval {id}); it needs {still_needed} more from other approvers{}:\n{}",
                if row.approvers.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", row.approvers.join(", "))
                },
                call(&row.args, row.fingerprint.as_str())
            )
        }
        (DecisionRequest::Approve, _) => format!(
            "Approved {tool} (approval {id}) as {who}:\n{}",
            call(&row.args, row.fingerprint.as_str())
        ),
        (DecisionRequest::Edit(_), ApprovalStatus::Pending) => format!(
            "Edited {tool} (approval {id}) as {who}; the new arguments still need more approvals from other approvers:\n{}instead of:\n{}",
            call(&row.args, row.fingerprint.as_str()),
            indented(&pretty(&before.approval.args), "  ") + "\n"
        ),
        (DecisionRequest::Edit(_), _) => format!(
            "Edited {tool} (approval {id}) as {who}; it will run with:\n{}instead of:\n{}",
            call(&row.args, row.fingerprint.as_str()),
            indented(&pretty(&before.approval.args), "  ") + "\n"
        ),
        (DecisionRequest::Reject(message), _) => {
            let told = match message {
                Some(message) => format!("{principal} rejected this call: {message}"),
                None => format!("{principal} rejected this call."),
            };
            format!(
                "Rejected {tool} (approval {id}) as {who}:\n{}The model will be told: {}\n",
                call(&row.args, row.fingerprint.as_str()),
                one_line(&told)
            )
        }
        _ => format!("Decided {tool} (approval {id}) as {who}: {}.\n", row.status),
    }
}

/// What the person can do next about the run.
fn next_step(state: &RunState, row: &ApprovalRow) -> String {
    let run = &row.run_id;
    let pending = state.pending_approvals().count();
    match &state.status {
        RunStatus::Completed { .. } | RunStatus::Failed { .. } => {
            format!("Run {run} is over ({}).\n", state.status.as_str())
        }
        _ if pending > 0 => format!(
            "Run {run} still waits for {pending} approval{}: `toolgate approvals list --run {run}`.\n",
            if pending == 1 { "" } else { "s" }
        ),
        _ => format!("Resume the run with `toolgate runs resume {run}`.\n"),
    }
}

fn scope_phrase(scope: &GrantScope) -> String {
    match scope {
        GrantScope::Run { run_id } => format!("in run {run_id}"),
        GrantScope::Thread { thread } => format!("in thread {}", clean(thread)),
        GrantScope::Until { until } => format!("until {}", rfc3339(*until)),
        GrantScope::Uses { uses: 1 } => "once".to_owned(),
        GrantScope::Uses { uses } => format!("for {uses} calls"),
    }
}

async fn edit(args: EditArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let grant = grant_request(&args.grant, now());
    let store = store_args.open_store().await?;
    let (new_args, kept_edit) = match &args.args {
        Some(text) => {
            let new_args = parse_args(text, "--args")?;
            let found = find(store.as_ref(), &args.id).await?;
            if found.approval.status == ApprovalStatus::Pending && new_args == found.approval.args {
                anyhow::bail!(
                    "the arguments given are the ones approval {id} already has; to run the call as it is, use `toolgate approvals approve {id}`",
                    id = args.id
                );
            }
            (new_args, None)
        }
        None => {
            let found = find(store.as_ref(), &args.id).await?;
            if let Some(error) = not_decidable(&found, now()) {
                return Err(error);
            }
            match edit_in_editor(&found)? {
                Edited::Args(new_args, path) => (new_args, Some(path)),
                Edited::Cancelled(why) => {
                    eprintln!("Nothing was decided: {why}.");
                    return Ok(exit::code(exit::ERROR));
                }
            }
        }
    };
    let request = Act {
        id: args.id,
        fingerprint: args.fingerprint,
        decision: DecisionRequest::Edit(new_args),
        grant,
        json: args.json,
        kept_edit,
    };
    act(request, store.as_ref()).await
}

/// Why an approval cannot be decided now, before an editor opens on it.
fn not_decidable(found: &Found, now: i64) -> Option<anyhow::Error> {
    let approval = &found.approval;
    if approval.status != ApprovalStatus::Pending {
        return Some(already_decided(&found.row, approval.status));
    }
    if let Some(at) = approval.expires_at.filter(|at| *at <= now) {
        return Some(anyhow::anyhow!(
            "approval {} expired at {}: nobody decided in time, so its call is rejected; nothing to edit",
            found.row.id,
            rfc3339(at)
        ));
    }
    None
}

enum Edited {
    Args(Map<String, Value>, tempfile::TempPath),
    Cancelled(&'static str),
}

/// Opens the person's editor on the approval's arguments.
fn edit_in_editor(found: &Found) -> anyhow::Result<Edited> {
    // The exact JSON, not the terminal-safe text: what is saved is parsed.
    let original = serde_json::to_string_pretty(&found.approval.args)? + "\n";
    let mut file = tempfile::Builder::new()
        .prefix("toolgate-edit-")
        .suffix(".json")
        .tempfile()
        .context("cannot make a file to edit the arguments in")?;
    std::io::Write::write_all(&mut file, original.as_bytes())
        .context("cannot write the arguments to edit")?;
    let path = file.into_temp_path();
    let editor = editor();
    let status = editor_command(&editor, &path)
        .status()
        .with_context(|| format!("cannot start the editor `{editor}` (set VISUAL or EDITOR)"))?;
    if !status.success() {
        anyhow::bail!("the editor `{editor}` failed ({status}); nothing was decided");
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the edited arguments from {}", path.display()))?;
    if text.trim().is_empty() {
        return Ok(Edited::Cancelled("the file was left empty"));
    }
    let new_args = match parse_args(&text, "the edited file") {
        Ok(args) => args,
        Err(error) => return Err(keep_edit(path, &found.row.id, error)),
    };
    if new_args == found.approval.args {
        return Ok(Edited::Cancelled("the arguments were left unchanged"));
    }
    Ok(Edited::Args(new_args, path))
}

/// `$VISUAL`, else `$EDITOR`, else `vi`.
fn editor() -> String {
    ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.trim().is_empty())
        .unwrap_or_else(|| "vi".to_owned())
}

/// The editor run on `path`; the editor may carry its own arguments
/// (`code --wait`), so a shell reads it, as git does.
fn editor_command(editor: &str, path: &Path) -> std::process::Command {
    if cfg!(windows) {
        let mut words = editor.split_whitespace();
        let mut command = std::process::Command::new(words.next().unwrap_or("notepad"));
        command.args(words).arg(path);
        command
    } else {
        let mut command = std::process::Command::new("sh");
        command
            .arg("-c")
            .arg(format!("{editor} \"$@\""))
            .arg(editor)
            .arg(path);
        command
    }
}

/// Keeps a refused edit's file, and says where it is.
fn keep_edit(path: tempfile::TempPath, id: &str, error: anyhow::Error) -> anyhow::Error {
    match path.keep() {
        Ok(kept) => {
            error.context(format!(
                "your edit is kept in {}; fix it and run `toolgate approvals edit {id} --args \"$(cat {})\"`",
                kept.display(),
                kept.display()
            ))
        }
        Err(_) => error,
    }
}

/// Arguments from JSON text: an object.
fn parse_args(text: &str, source: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(args)) => Ok(args),
        Ok(other) => anyhow::bail!(
            "{source} must be a JSON object of arguments, such as {{\"recipient\": \"sally@example.com\"}}, not {}",
            kind_of(&other)
        ),
        Err(error) => anyhow::bail!("{source} is not valid JSON: {error}"),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_fingerprint(text: &str) -> anyhow::Result<Fingerprint> {
    let text = text.trim().to_ascii_lowercase();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        anyhow::bail!(
            "--fingerprint `{text}` is not a fingerprint: give the 64 hex digits `toolgate approvals show` prints"
        );
    }
    Ok(serde_json::from_value(Value::String(text))?)
}

// ---------------------------------------------------------------------------
// Grants made with decisions.

fn parse_grant(text: &str) -> Result<GrantSpec, String> {
    text.parse()
}

fn grant_request(args: &GrantArgs, now: i64) -> Option<GrantRequest> {
    Some(GrantRequest {
        tool: args.grant_tool.clone(),
        when: args.grant_when.clone(),
        scope: args.grant.as_ref()?.scope(now),
    })
}

// ---------------------------------------------------------------------------
// Errors, as a person reads them.

/// A store error, with what to do about an unknown id.
pub(crate) fn store_error(error: StoreError, context: Option<&str>) -> anyhow::Error {
    let error = match error {
        StoreError::NotFound { what, id } => not_found(what, &id),
        other => anyhow::Error::new(other),
    };
    match context {
        Some(context) => error.context(context.to_owned()),
        None => error,
    }
}

/// "There is no …", with the listing that shows what there is.
pub(crate) fn not_found(what: &str, id: &str) -> anyhow::Error {
    let listing = match what {
        "approval" => "`toolgate approvals list --status all` lists them",
        "run" => "`toolgate runs list --status all` lists them",
        "grant" => "`toolgate grants list --all` lists them",
        "token" => "`toolgate tokens list` lists them",
        "webhook delivery" => {
            "`toolgate webhooks deliveries --status failed` lists the failed ones"
        }
        _ => "check the id",
    };
    anyhow::anyhow!("there is no {what} `{id}`; {listing}")
}

fn already_decided(row: &ApprovalRow, status: ApprovalStatus) -> anyhow::Error {
    let at = row
        .decided_at
        .map(|at| format!(" at {}", rfc3339(at)))
        .unwrap_or_default();
    let what = match status {
        ApprovalStatus::Expired => format!(
            "approval {} expired{at}: nobody decided in time, so its call was rejected",
            row.id
        ),
        ApprovalStatus::Cancelled => format!(
            "approval {} was cancelled{at}: its run ended without it",
            row.id
        ),
        status => format!(
            "approval {} was already {status}{}{at}",
            row.id,
            row.decided_by
                .as_deref()
                .map(|by| format!(" by {by}"))
                .unwrap_or_default()
        ),
    };
    anyhow::anyhow!(
        "{what}; a decided approval cannot be decided again (`toolgate approvals show {}` shows its history)",
        row.id
    )
}

/// A refused decision or resolution, in words that say what to do;
/// `subject` is the approval (or run) acted on.
pub(crate) async fn explain(
    store: &dyn Store,
    error: DecideError,
    principal: &str,
    subject: &str,
) -> anyhow::Error {
    match error {
        DecideError::NotFound { what, id } => not_found(what, &id),
        DecideError::Decision(DecisionError::AlreadyDecided { id, status, by }) => {
            match store.approval(&id).await {
                Ok(row) => already_decided(&row, status),
                Err(_) => anyhow::anyhow!(
                    "approval {id} was already {status}{}; a decided approval cannot be decided again",
                    by.map(|by| format!(" by {by}")).unwrap_or_default()
                ),
            }
        }
        DecideError::Decision(DecisionError::FingerprintMismatch {
            id,
            expected,
            given,
        }) => anyhow::anyhow!(
            "approval {id} is for the call with fingerprint {expected}, not {given}: its arguments are not the ones you decided on (they were edited since, or the fingerprint is mistyped); look at it again with `toolgate approvals show {id}`. Nothing was decided"
        ),
        DecideError::Decision(DecisionError::AlreadyApproved { id, needed, .. }) => {
            anyhow::anyhow!(
                "{principal} has already approved approval {id}; one person's approval counts once, and it needs {needed} more from other approvers"
            )
        }
        DecideError::Decision(other) => anyhow::Error::new(other),
        DecideError::InvalidArguments(ToolError::InvalidArguments { tool, problems }) => {
            let list: String = problems
                .iter()
                .map(|problem| format!("\n  - {problem}"))
                .collect();
            anyhow::anyhow!(
                "the new arguments do not fit the schema of `{tool}`, so nothing was decided:{list}\nThe tool's JSON Schema is in `toolgate approvals show {subject} --json`."
            )
        }
        DecideError::InvalidArguments(other) => anyhow::Error::new(other)
            .context("the new arguments cannot be checked; nothing was decided"),
        DecideError::InvalidGrant(why) => {
            anyhow::anyhow!("the grant cannot be made: {why}; nothing was decided")
        }
        DecideError::Forbidden {
            principal,
            approval_id,
            reason,
        } => anyhow::anyhow!(
            "{principal} may not decide approval {approval_id}: {reason} (TOOLGATE_USER names who you are)"
        ),
        other => anyhow::Error::new(other),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn grant_scopes_parse_and_bad_ones_say_what_to_write() {
        assert_eq!(parse_grant("run"), Ok(GrantSpec::Run));
        assert_eq!(parse_grant("thread"), Ok(GrantSpec::Thread));
        assert_eq!(parse_grant("uses:2"), Ok(GrantSpec::Uses(2)));
        assert_eq!(
            parse_grant("for:30m"),
            Ok(GrantSpec::For(Duration::from_secs(1800)))
        );
        assert_eq!(
            parse_grant("until:2026-11-22T20:30:00Z"),
            Ok(GrantSpec::Until(1_795_379_400_000))
        );
        assert_eq!(
            parse_grant("forever").unwrap_err(),
            "`forever` is not a grant scope; write run, thread, uses:N, for:DURATION (e.g. for:30m) or until:TIME (RFC 3339)"
        );
        assert_eq!(
            parse_grant("uses:0").unwrap_err(),
            "a grant for 0 uses would cover nothing; give at least uses:1"
        );
        assert!(
            parse_grant("uses:two")
                .unwrap_err()
                .starts_with("`two` is not a number of uses")
        );
        assert!(
            parse_grant("for:soon")
                .unwrap_err()
                .starts_with("`soon` is not a duration")
        );
        assert!(parse_grant("run:x").is_err());
    }

    #[test]
    fn arguments_must_be_a_json_object() {
        assert_eq!(
            parse_args(r#"{"a": 1}"#, "--args").unwrap(),
            serde_json::json!({"a": 1}).as_object().unwrap().clone()
        );
        assert_eq!(
            parse_args("[1]", "--args").unwrap_err().to_string(),
            "--args must be a JSON object of arguments, such as {\"recipient\": \"sally@example.com\"}, not an array"
        );
        assert!(
            parse_args("{", "--args")
                .unwrap_err()
                .to_string()
                .starts_with("--args is not valid JSON: EOF while parsing an object")
        );
    }

    #[test]
    fn fingerprints_are_64_hex_digits() {
        let hex = "AB".repeat(32);
        assert_eq!(parse_fingerprint(&hex).unwrap().as_str(), "ab".repeat(32));
        assert!(parse_fingerprint("abc").is_err());
    }

    #[test]
    fn empty_listings_say_which_statuses_were_asked_for() {
        assert_eq!(
            nothing_listed(&[ApprovalStatus::Pending], None),
            "No pending approvals."
        );
        assert_eq!(nothing_listed(&[], None), "No approvals.");
        assert_eq!(
            nothing_listed(
                &[
                    ApprovalStatus::Approved,
                    ApprovalStatus::Edited,
                    ApprovalStatus::Rejected
                ],
                Some("r1")
            ),
            "No approved, edited or rejected approvals in run r1."
        );
    }
}
