//! `toolgate runs`: list runs, show one (its conversation, its calls and
//! what became of them), resolve calls in doubt, and resume.
//!
//! `list --json` prints an array of runs:
//!
//! ```json
//! {"id": "…", "status": "waiting", "thread": null, "prompt": "…",
//!  "created_at": "2026-11-22T20:30:00Z", "updated_at": "…", "events": 5}
//! ```
//!
//! `show --json` prints one such object with `principal`, `answer`,
//! `error`, `messages` (the conversation, each message tagged by `role` as
//! in scripted conversations), `calls` (the current turn's calls: `id`,
//! `tool`, `args`, `effective_args`, `gate` (tagged by `action`),
//! `approval_id`, `approval_status`, `attempts`, `running`, `in_doubt`,
//! `result`, `state`), `approvals` (as `approvals list --json` prints
//! them) and `in_doubt` (call ids) added.

use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Map, Value};
use toolgate::Message;
use toolgate::engine::resolve_in_doubt;
use toolgate::run::{ApprovalStatus, CallState, Gate, Resolution, RunState, RunStatus};
use toolgate::store::{ApprovalQuery, ApprovalRow, RunQuery, RunRow, Store, StoredEvent};

use crate::approvals::{ApprovalView, ResultView, approval_view, explain, store_error};
use crate::context::{StoreArgs, local_principal, now};
use crate::exit;
use crate::table::{
    Style, Table, clean, column, compact_json, indented, one_line, out, outln, print_json,
};

/// The `runs` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum RunsCommand {
    /// List runs, newest first.
    List(ListArgs),
    /// Show one run: its conversation, its current calls, its approvals.
    Show(ShowArgs),
    /// Say what happened to a call in doubt (started, never finished, and
    /// not safe to run twice): run it again, it did run, or it failed.
    Resolve(ResolveArgs),
    /// Continue a run from the store, after its approvals were decided or
    /// its calls in doubt resolved.
    Resume(crate::run::ResumeArgs),
}

/// Which runs `list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StatusFilter {
    Running,
    Waiting,
    Completed,
    Failed,
    /// Runs of outside agents (over the API) with nothing pending.
    Open,
    All,
}

impl StatusFilter {
    fn as_str(self) -> Option<&'static str> {
        Some(match self {
            StatusFilter::Running => "running",
            StatusFilter::Waiting => "waiting",
            StatusFilter::Completed => "completed",
            StatusFilter::Failed => "failed",
            StatusFilter::Open => "open",
            StatusFilter::All => return None,
        })
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Only runs with these statuses (comma-separated), or all.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "all",
        value_name = "STATUS"
    )]
    status: Vec<StatusFilter>,
    /// At most this many.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    limit: u32,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ShowArgs {
    /// The run's id.
    run: String,
    /// Print a JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("resolution").required(true).args(["retry", "done", "fail"])))]
pub(crate) struct ResolveArgs {
    /// The run's id.
    run: String,
    /// The call's id (`toolgate runs show RUN` lists the calls in doubt).
    call: String,
    /// It did not run (or running it twice is fine): run it again.
    #[arg(long)]
    retry: bool,
    /// It ran, and returned this output (JSON; a text is a JSON string,
    /// such as '"sent"'), which the model is given.
    #[arg(long, value_name = "OUTPUT_JSON")]
    done: Option<String>,
    /// Count it as failed; the model is told this message.
    #[arg(long, value_name = "MESSAGE")]
    fail: Option<String>,
}

pub(crate) async fn run(command: RunsCommand, store: &StoreArgs) -> anyhow::Result<ExitCode> {
    match command {
        RunsCommand::List(args) => list(args, store).await,
        RunsCommand::Show(args) => show(args, store).await,
        RunsCommand::Resolve(args) => resolve(args, store).await,
        RunsCommand::Resume(args) => crate::run::resume(args, store).await,
    }
}

// ---------------------------------------------------------------------------
// The JSON shapes.

/// One run, as `list --json` prints it.
#[derive(Debug, Serialize)]
struct RunView {
    id: String,
    status: String,
    thread: Option<String>,
    prompt: String,
    created_at: String,
    updated_at: String,
    events: u64,
}

fn run_view(row: &RunRow) -> RunView {
    RunView {
        id: row.id.clone(),
        status: row.status.clone(),
        thread: row.thread.clone(),
        prompt: row.prompt.clone(),
        created_at: toolgate::time::format_millis(row.created_at),
        updated_at: toolgate::time::format_millis(row.updated_at),
        events: row.version,
    }
}

/// One run in full, as `show --json` prints it.
#[derive(Debug, Serialize)]
struct RunDetail {
    #[serde(flatten)]
    run: RunView,
    principal: Option<String>,
    answer: Option<String>,
    error: Option<String>,
    messages: Vec<Message>,
    calls: Vec<CallView>,
    approvals: Vec<ApprovalView>,
    in_doubt: Vec<String>,
}

/// One call of the current turn.
#[derive(Debug, Serialize)]
struct CallView {
    id: String,
    tool: String,
    args: Map<String, Value>,
    effective_args: Map<String, Value>,
    gate: Option<Gate>,
    approval_id: Option<String>,
    approval_status: Option<ApprovalStatus>,
    attempts: u32,
    running: bool,
    in_doubt: bool,
    result: Option<ResultView>,
    /// Where the call stands, in words.
    state: String,
}

// ---------------------------------------------------------------------------
// list

async fn list(args: ListArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let style = Style::detect();
    let store = store_args.open_store().await?;
    let now = now();
    let statuses: Vec<String> = if args.status.contains(&StatusFilter::All) {
        Vec::new()
    } else {
        let mut statuses: Vec<String> = args
            .status
            .iter()
            .filter_map(|s| s.as_str())
            .map(str::to_owned)
            .collect();
        statuses.dedup();
        statuses
    };
    let limit = args.limit as usize;
    let mut rows = store
        .runs(&RunQuery {
            statuses: statuses.clone(),
            limit: limit + 1,
        })
        .await
        .context("cannot list the runs")?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    if args.json {
        let views: Vec<RunView> = rows.iter().map(run_view).collect();
        print_json(&views)?;
        return Ok(exit::code(exit::SUCCESS));
    }
    if rows.is_empty() {
        if style.terminal {
            let which = match statuses.len() {
                0 => String::new(),
                1 => format!("{} ", statuses[0]),
                n => format!("{} or {} ", statuses[..n - 1].join(", "), statuses[n - 1]),
            };
            outln(&format!("No {which}runs."))?;
        }
        return Ok(exit::code(exit::SUCCESS));
    }
    let mut table = Table::new([
        column("ID"),
        column("STATUS"),
        column("PROMPT").max(60).flex(),
        column("THREAD").max(20).optional(),
        column("STARTED"),
        column("UPDATED").optional(),
        column("EVENTS").right().optional(),
    ]);
    for row in &rows {
        table.row([
            row.id.clone(),
            row.status.clone(),
            row.prompt.clone(),
            row.thread.clone().unwrap_or_default(),
            style.time(row.created_at, now),
            style.time(row.updated_at, now),
            row.version.to_string(),
        ]);
    }
    out(&table.render(&style))?;
    if more && style.terminal {
        eprintln!("Showing the newest {limit}; pass --limit to see more.");
    }
    Ok(exit::code(exit::SUCCESS))
}

// ---------------------------------------------------------------------------
// show

/// A run, read and folded.
struct Loaded {
    row: RunRow,
    state: RunState,
}

async fn load(store: &dyn Store, run_id: &str) -> anyhow::Result<Loaded> {
    let events = store
        .load(run_id)
        .await
        .map_err(|error| store_error(error, None))?;
    Ok(fold(run_id, &events))
}

fn fold(run_id: &str, events: &[StoredEvent]) -> Loaded {
    let state = RunState::fold(events.iter().map(|e| &e.event));
    let prompt = state
        .messages
        .iter()
        .find_map(|m| match m {
            Message::Human { content } => Some(content.clone()),
            _ => None,
        })
        .unwrap_or_default();
    Loaded {
        row: RunRow {
            id: run_id.to_owned(),
            status: state.status.as_str().to_owned(),
            thread: state.thread.clone(),
            prompt,
            created_at: events.first().map_or(0, |e| e.at),
            updated_at: events.last().map_or(0, |e| e.at),
            version: state.version,
        },
        state,
    }
}

/// Every approval of a run, newest first.
async fn run_approvals(store: &dyn Store, run_id: &str) -> anyhow::Result<Vec<ApprovalRow>> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .approvals(&ApprovalQuery {
                statuses: Vec::new(),
                run_id: Some(run_id.to_owned()),
                before: before.clone(),
                limit: 500,
            })
            .await
            .with_context(|| format!("cannot list the approvals of run {run_id}"))?;
        let Some(last) = page.last() else {
            return Ok(all);
        };
        before = Some(last.id.clone());
        all.extend(page);
    }
}

async fn show(args: ShowArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let style = Style::detect();
    let store = store_args.open_store().await?;
    let now = now();
    let loaded = load(store.as_ref(), &args.run).await?;
    let approvals = run_approvals(store.as_ref(), &args.run).await?;
    if args.json {
        print_json(&detail(&loaded, &approvals))?;
    } else {
        out(&show_text(&loaded, &approvals, &style, now))?;
    }
    Ok(exit::code(exit::SUCCESS))
}

fn detail(loaded: &Loaded, approvals: &[ApprovalRow]) -> RunDetail {
    let state = &loaded.state;
    let (answer, error) = match &state.status {
        RunStatus::Completed { answer } => (Some(answer.clone()), None),
        RunStatus::Failed { error } => (None, Some(error.clone())),
        _ => (None, None),
    };
    RunDetail {
        run: run_view(&loaded.row),
        principal: state.principal.clone(),
        answer,
        error,
        messages: state.messages.clone(),
        calls: state
            .calls
            .iter()
            .map(|call| CallView {
                id: call.call.id.clone(),
                tool: call.call.name.clone(),
                args: call.call.args.clone(),
                effective_args: call.effective_args().clone(),
                gate: call.gate.clone(),
                approval_id: call.approval.as_ref().map(|a| a.id.clone()),
                approval_status: call.approval.as_ref().map(|a| a.status),
                attempts: call.attempts,
                running: call.running,
                in_doubt: call.in_doubt,
                result: call.result.as_ref().map(|r| ResultView {
                    content: r.content.clone(),
                    is_error: r.is_error,
                }),
                state: call_state(call),
            })
            .collect(),
        approvals: approvals.iter().map(approval_view).collect(),
        in_doubt: state.in_doubt().map(|c| c.call.id.clone()).collect(),
    }
}

/// Where a call of the current turn stands, in words.
fn call_state(call: &CallState) -> String {
    if let Some(result) = &call.result {
        return if result.is_error {
            format!("over, as an error: {}", result.content)
        } else {
            format!("done: {}", result.content)
        };
    }
    if call.in_doubt {
        return "in doubt: it started and never finished, and running it twice may not be safe"
            .to_owned();
    }
    if call.running {
        return "started and not finished: resuming the run recovers it".to_owned();
    }
    match (&call.gate, &call.approval) {
        (None, _) => "not gated yet".to_owned(),
        (_, Some(approval)) if approval.status == ApprovalStatus::Pending => {
            format!("waiting for approval {}", approval.id)
        }
        _ if call.is_cleared() => "cleared to run when the run resumes".to_owned(),
        _ => "waiting for the calls before it".to_owned(),
    }
}

fn gate_text(gate: &Gate) -> String {
    match gate {
        Gate::Allow { by } => format!("allow ({by})"),
        Gate::Granted { grant_id } => format!("granted (grant {grant_id})"),
        Gate::Ask { by } => format!("ask ({by})"),
        Gate::Deny {
            by,
            reason: Some(reason),
        } => format!("deny ({by}): {reason}"),
        Gate::Deny { by, reason: None } => format!("deny ({by})"),
        Gate::Invalid { error } => format!("invalid: {error}"),
    }
}

fn show_text(loaded: &Loaded, approvals: &[ApprovalRow], style: &Style, now: i64) -> String {
    let state = &loaded.state;
    let row = &loaded.row;
    let mut text = format!(
        "{}\n\n",
        style.bold(&format!("Run {}: {}", row.id, state.status.as_str()))
    );
    let fields = [
        (
            "Thread",
            row.thread.clone().unwrap_or_else(|| "none".to_owned()),
        ),
        (
            "Started by",
            state
                .principal
                .clone()
                .unwrap_or_else(|| "unknown".to_owned()),
        ),
        ("Started", style.time_exact(row.created_at, now)),
        ("Updated", style.time_exact(row.updated_at, now)),
        ("Events", row.version.to_string()),
    ];
    let width = fields.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (label, value) in &fields {
        text.push_str(&format!("  {label:<width$}  {}\n", one_line(value)));
    }

    text.push('\n');
    text.push_str(&style.bold("Conversation"));
    text.push('\n');
    for message in &state.messages {
        let (role, body) = match message {
            Message::System { content } => ("system", content.clone()),
            Message::Human { content } => ("human", content.clone()),
            Message::Ai(ai) => {
                let mut body = ai.content.clone();
                for call in &ai.tool_calls {
                    if !body.is_empty() {
                        body.push('\n');
                    }
                    body.push_str(&format!(
                        "calls {} {} ({})",
                        call.name,
                        compact_json(&call.args),
                        call.id
                    ));
                }
                ("ai", body)
            }
            Message::Tool(tool) => (
                "tool",
                format!(
                    "{}{}: {}",
                    tool.tool_call_id,
                    if tool.is_error { " (error)" } else { "" },
                    tool.content
                ),
            ),
        };
        let body = indented(&clean(&body), "          ");
        text.push_str(&format!("  {role:<6}  {}\n", body.trim_start()));
    }

    if !state.calls.is_empty() {
        text.push('\n');
        text.push_str(&style.bold("Current calls"));
        text.push('\n');
        for call in &state.calls {
            text.push_str(&format!(
                "  {}  {} {}\n",
                one_line(&call.call.id),
                call.call.name,
                one_line(&compact_json(call.effective_args()))
            ));
            if let Some(gate) = &call.gate {
                text.push_str(&format!("    gate      {}\n", one_line(&gate_text(gate))));
            }
            if let Some(approval) = &call.approval {
                text.push_str(&format!(
                    "    approval  {} ({})\n",
                    approval.id, approval.status
                ));
            }
            if call.attempts > 0 {
                text.push_str(&format!("    started   {} time(s)\n", call.attempts));
            }
            text.push_str(&format!("    state     {}\n", one_line(&call_state(call))));
        }
    }

    if !approvals.is_empty() {
        text.push('\n');
        text.push_str(&style.bold("Approvals"));
        text.push('\n');
        let mut table = Table::new([
            column("ID"),
            column("TOOL").max(24),
            column("STATUS"),
            column("BY").max(16),
            column("REQUESTED"),
        ]);
        for approval in approvals.iter().rev() {
            table.row([
                approval.id.clone(),
                approval.tool.clone(),
                approval.status.to_string(),
                approval.decided_by.clone().unwrap_or_default(),
                style.time(approval.created_at, now),
            ]);
        }
        // Indented under its heading, with a plain header: one bold
        // heading per section is enough.
        let plain = Style {
            color: false,
            ..*style
        };
        text.push_str(&indented(&table.render(&plain), "  "));
        text.push('\n');
    }

    match &state.status {
        RunStatus::Completed { answer } => {
            text.push('\n');
            text.push_str(&style.bold("Answer"));
            text.push('\n');
            text.push_str(&indented(&clean(answer), "  "));
            text.push('\n');
        }
        RunStatus::Failed { error } => {
            text.push('\n');
            text.push_str(&style.bold("Error"));
            text.push('\n');
            text.push_str(&indented(&clean(error), "  "));
            text.push('\n');
        }
        RunStatus::Waiting | RunStatus::Running => {
            text.push('\n');
            text.push_str(&next_step(state, &row.id));
        }
    }
    text
}

/// What a person can do for a run that is not over.
fn next_step(state: &RunState, run: &str) -> String {
    let pending = state.pending_approvals().count();
    let in_doubt: Vec<&str> = state.in_doubt().map(|c| c.call.id.as_str()).collect();
    if let Some(call) = in_doubt.first() {
        return format!(
            "Next: say what happened to the call{} in doubt: `toolgate runs resolve {run} {} --retry` (or --done OUTPUT_JSON, or --fail MESSAGE), then `toolgate runs resume {run}`.\n",
            if in_doubt.len() == 1 { "" } else { "s" },
            one_line(call)
        );
    }
    if pending > 0 {
        return format!(
            "Next: decide its {pending} pending approval{} (`toolgate approvals list --run {run}`), then `toolgate runs resume {run}`.\n",
            if pending == 1 { "" } else { "s" }
        );
    }
    format!("Next: `toolgate runs resume {run}` continues it.\n")
}

// ---------------------------------------------------------------------------
// resolve

async fn resolve(args: ResolveArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let resolution = match (&args.done, &args.fail) {
        (Some(output), _) => Resolution::Done {
            output: serde_json::from_str(output).map_err(|error| {
                anyhow::anyhow!(
                    "--done takes the tool's output as JSON (a text is a JSON string, such as --done '\"sent\"'); `{output}` is not JSON: {error}"
                )
            })?,
        },
        (None, Some(message)) => Resolution::Fail {
            message: message.clone(),
        },
        (None, None) => Resolution::Retry,
    };
    let store = store_args.open_store().await?;
    let loaded = load(store.as_ref(), &args.run).await?;
    let tool = match loaded.state.call(&args.call) {
        Some(call) if call.in_doubt => call.call.name.clone(),
        Some(call) => anyhow::bail!(
            "call {} ({}) of run {} is not in doubt, so there is nothing to resolve: it is {}. Only a call that started, never finished, and is not safe to run twice needs resolving",
            args.call,
            call.call.name,
            args.run,
            call_state(call)
        ),
        None if loaded
            .state
            .messages
            .iter()
            .any(|m| matches!(m, Message::Tool(tool) if tool.tool_call_id == args.call)) =>
        {
            anyhow::bail!(
                "call {} of run {} is over already (it belongs to an earlier turn); nothing to resolve",
                args.call,
                args.run
            )
        }
        None => anyhow::bail!(
            "run {} has no call `{}` in its current turn; `toolgate runs show {}` lists its calls",
            args.run,
            args.call,
            args.run
        ),
    };
    let principal = local_principal();
    if let Err(error) = resolve_in_doubt(
        store.as_ref(),
        &principal,
        &args.run,
        &args.call,
        resolution.clone(),
        now(),
    )
    .await
    {
        return Err(explain(store.as_ref(), error, &principal.name, &args.run).await);
    }
    let what = match &resolution {
        Resolution::Retry => "will run again".to_owned(),
        Resolution::Done { output } => format!("did run, and returned {}", compact_json(output)),
        Resolution::Fail { message } => {
            format!("failed; the model will be told: {}", one_line(message))
        }
    };
    outln(&format!(
        "Resolved as {}: call {} ({tool}) of run {} {what}.\nResume the run with `toolgate runs resume {}`.",
        principal.name, args.call, args.run, args.run
    ))?;
    Ok(exit::code(exit::SUCCESS))
}
