//! `toolgate audit`: check that the log was not altered, export it, and
//! print the key its signatures verify with.
//!
//! The log is read a page at a time, so neither `verify` nor `export`
//! holds it all in memory.
//!
//! `export --json` prints JSON Lines, one entry per line: `{"seq": 1,
//! "at": 1795379400123, "run_id": "…", "kind": "run_started", "body":
//! "{…}", "hash": "…", "signature": "…"}`, with `run_id` and `signature`
//! left out where there is none; `at` is Unix milliseconds there, since
//! the hash covers it. `verify --json` prints `{"ok": true, "entries": N,
//! "signatures": M}`, or with `"ok": false`, `"broken": {"seq", "kind",
//! "run_id", "problem"}`. `public-key --json` prints `{"algorithm":
//! "ed25519", "public_key": "…"}`.

use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;
use toolgate::audit::{AuditEntry, Verifier, from_hex, hex};
use toolgate::run::{Decision, Event, Gate, Outcome, Resolution};
use toolgate::store::Store;

use crate::context::StoreArgs;
use crate::exit;
use crate::table::{Style, Table, column, compact_json, out, outln, print_json};

/// How many entries are read at a time.
const PAGE: usize = 1000;

/// The `audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCommand {
    /// Check every entry's hash chain and signature; exits 5 at the first
    /// entry that does not check out.
    Verify(VerifyArgs),
    /// Print the log: a table, or JSON Lines with --json.
    Export(ExportArgs),
    /// Print the public key that verifies the store's signatures (hex);
    /// keep it elsewhere and pass it to `audit verify --public-key`.
    PublicKey(PublicKeyArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// Verify the signatures with this key (64 hex digits, from `audit
    /// public-key`) instead of the one in the store, which whoever can
    /// write the store can replace.
    #[arg(long, value_name = "HEX")]
    public_key: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// Only the entries after this one (its sequence number).
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    after: u64,
    /// Print JSON Lines, one entry per line, exactly as stored.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PublicKeyArgs {
    /// Print a JSON object.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(command: AuditCommand, store: &StoreArgs) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify(args) => verify(args, store).await,
        AuditCommand::Export(args) => export(args, store).await,
        AuditCommand::PublicKey(args) => public_key(args, store).await,
    }
}

#[derive(Debug, Serialize)]
struct VerifyView {
    ok: bool,
    entries: u64,
    signatures: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    broken: Option<BrokenView>,
}

#[derive(Debug, Serialize)]
struct BrokenView {
    seq: u64,
    kind: Option<String>,
    run_id: Option<String>,
    problem: String,
}

async fn verify(args: VerifyArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let store = store_args.open_store().await?;
    let key = match &args.public_key {
        Some(text) => from_hex::<32>(text.trim()).with_context(|| {
            format!("--public-key `{text}` is not a public key: give the 64 hex digits `toolgate audit public-key` prints")
        })?,
        None => store
            .public_key()
            .await
            .context("cannot read the store's public key")?,
    };
    let mut verifier = Verifier::new(&key);
    let mut after = 0;
    let broken = 'pages: loop {
        let page = store
            .audit(after, PAGE)
            .await
            .with_context(|| format!("cannot read the audit log after entry {after}"))?;
        let Some(last) = page.last() else {
            break None;
        };
        after = last.seq;
        for entry in &page {
            if let Err(broken) = verifier.check(entry) {
                // A missing entry is named by the number it should have had.
                let named = (entry.seq == broken.seq).then_some(entry);
                break 'pages Some(BrokenView {
                    seq: broken.seq,
                    kind: named.map(|e| e.kind.clone()),
                    run_id: named.and_then(|e| e.run_id.clone()),
                    problem: broken.problem,
                });
            }
        }
    };
    let verified = verifier.verified();
    let code = if broken.is_some() {
        exit::AUDIT_BROKEN
    } else {
        exit::SUCCESS
    };
    if args.json {
        print_json(&VerifyView {
            ok: broken.is_none(),
            entries: verified.entries,
            signatures: verified.signatures,
            broken,
        })?;
        return Ok(exit::code(code));
    }
    match broken {
        None => outln(&format!(
            "The audit log verifies: {} {}, {} {}.",
            verified.entries,
            plural(verified.entries, "entry", "entries"),
            verified.signatures,
            plural(verified.signatures, "signature", "signatures"),
        ))?,
        Some(broken) => {
            let what = match (&broken.kind, &broken.run_id) {
                (Some(kind), Some(run)) => format!(" ({kind}, run {run})"),
                (Some(kind), None) => format!(" ({kind})"),
                _ => String::new(),
            };
            outln(&format!(
                "The audit log is broken at entry {}{what}: it {}.\n\
                 The {} {} before it verify; from entry {} on, the log cannot be trusted. Restore the store from a backup, or keep it as evidence.",
                broken.seq,
                broken.problem,
                verified.entries,
                plural(verified.entries, "entry", "entries"),
                broken.seq,
            ))?;
        }
    }
    Ok(exit::code(code))
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

async fn export(args: ExportArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let style = Style::detect();
    let store = store_args.open_store().await?;
    let mut after = args.after;
    let mut first = true;
    loop {
        let page = read_page(store.as_ref(), after).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.seq;
        if args.json {
            let mut lines = String::new();
            for entry in &page {
                lines.push_str(&serde_json::to_string(entry)?);
                lines.push('\n');
            }
            out(&lines)?;
        } else {
            out(&entries_table(&page).render_with(&style, first))?;
        }
        first = false;
    }
    if first && !args.json && style.terminal {
        outln(if args.after == 0 {
            "The audit log is empty."
        } else {
            "No audit entries after that one."
        })?;
    }
    Ok(exit::code(exit::SUCCESS))
}

async fn read_page(store: &dyn Store, after: u64) -> anyhow::Result<Vec<AuditEntry>> {
    store
        .audit(after, PAGE)
        .await
        .with_context(|| format!("cannot read the audit log after entry {after}"))
}

/// One page of entries; the widths are fixed so that pages line up.
fn entries_table(entries: &[AuditEntry]) -> Table {
    let mut table = Table::new([
        column("SEQ").right().min(6),
        column("AT").min(20),
        column("RUN").min(36).optional(),
        column("KIND").min(18),
        column("SIGNED").min(6),
        column("HASH").min(16).optional(),
        column("SUMMARY").min(16).max(120).flex(),
    ]);
    for entry in entries {
        table.row([
            entry.seq.to_string(),
            toolgate::time::format_millis(entry.at),
            entry.run_id.clone().unwrap_or_else(|| "-".to_owned()),
            entry.kind.clone(),
            if entry.signature.is_some() {
                "yes"
            } else {
                "no"
            }
            .to_owned(),
            hex(&entry.hash[..8]),
            summary(entry),
        ]);
    }
    table
}

/// What an entry outside runs records (a grant or a token changed), in a
/// few words; `None` for other entries.
fn act_outside_runs(entry: &AuditEntry) -> Option<String> {
    let body: serde_json::Value = serde_json::from_str(&entry.body).unwrap_or_default();
    let field = |name: &str| body[name].as_str().unwrap_or("?").to_owned();
    let by = field("by");
    Some(match entry.kind.as_str() {
        "grant_revoked" => format!("{by} revoked grant {}", field("grant_id")),
        "token_revoked" => format!("{by} revoked token {}", field("token_id")),
        "token_created" => format!(
            "{by} made token {} for {} ({})",
            field("token_id"),
            field("name"),
            field("role")
        ),
        _ => return None,
    })
}

/// What an entry records, in a few words.
fn summary(entry: &AuditEntry) -> String {
    if let Some(act) = act_outside_runs(entry) {
        return act;
    }
    let Ok(event) = serde_json::from_str::<Event>(&entry.body) else {
        return format!("({} bytes)", entry.body.len());
    };
    match event {
        Event::RunStarted { messages, .. } => {
            let prompt = messages.iter().find_map(|m| match m {
                toolgate::Message::Human { content } => Some(content.clone()),
                _ => None,
            });
            format!("asked: {}", prompt.unwrap_or_default())
        }
        Event::ModelTurn { message } if message.tool_calls.is_empty() => {
            format!("answered: {}", message.content)
        }
        Event::ModelTurn { message } => format!(
            "calls {}",
            message
                .tool_calls
                .iter()
                .map(|c| format!("{} {}", c.name, compact_json(&c.args)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Event::GateVerdict {
            call_id, verdict, ..
        } => {
            let verdict = match verdict {
                Gate::Allow { by } => format!("allow ({by})"),
                Gate::Granted { grant_id } => format!("granted by {grant_id}"),
                Gate::Ask { by } => format!("ask ({by})"),
                Gate::Deny { by, .. } => format!("deny ({by})"),
                Gate::Invalid { error } => format!("invalid: {error}"),
            };
            format!("call {call_id}: {verdict}")
        }
        Event::ApprovalRequested {
            call_id,
            approval_id,
            ..
        } => format!("approval {approval_id} for call {call_id}"),
        Event::DecisionRecorded {
            approval_id,
            decision,
            principal,
            grant,
            ..
        } => {
            let what = match decision {
                Decision::Approve => "approved".to_owned(),
                Decision::Edit { args, .. } => format!("edited to {}", compact_json(&args)),
                Decision::Reject { .. } => "rejected".to_owned(),
            };
            let grant = grant
                .map(|g| format!(", granting {}", g.scope))
                .unwrap_or_default();
            format!("{principal} {what} {approval_id}{grant}")
        }
        Event::ApprovalExpired { approval_id } => format!("approval {approval_id} expired"),
        Event::CallWithdrawn { approval_id, .. } => {
            format!("the agent withdrew the call of approval {approval_id}")
        }
        Event::ToolStarted { call_id, .. } => format!("call {call_id} started"),
        Event::ToolFinished { call_id, outcome } => match outcome {
            Outcome::Output { output } => {
                format!("call {call_id} returned {}", compact_json(&output))
            }
            Outcome::Error { error } => format!("call {call_id} failed: {error}"),
        },
        Event::ToolInDoubt { call_id } => format!("call {call_id} is in doubt"),
        Event::InDoubtResolved {
            call_id,
            resolution,
            principal,
        } => {
            let what = match resolution {
                Resolution::Retry => "retry".to_owned(),
                Resolution::Done { .. } => "done".to_owned(),
                Resolution::Fail { .. } => "failed".to_owned(),
            };
            format!("{principal} resolved call {call_id}: {what}")
        }
        Event::RunCompleted { answer } => format!("answered: {answer}"),
        Event::RunFailed { error } => format!("failed: {error}"),
        other => other.kind().to_owned(),
    }
}

async fn public_key(args: PublicKeyArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let store = store_args.open_store().await?;
    let key = store
        .public_key()
        .await
        .context("cannot read the store's public key")?;
    if args.json {
        print_json(&serde_json::json!({"algorithm": "ed25519", "public_key": hex(&key)}))?;
    } else {
        outln(&hex(&key))?;
    }
    Ok(exit::code(exit::SUCCESS))
}
