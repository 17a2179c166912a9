//! `toolgate webhooks deliveries`: what the approval server sent to its
//! webhooks, and how each delivery went; `toolgate webhooks redeliver`:
//! send failed deliveries again; `toolgate webhooks prune`: delete old
//! settled ones.
//!
//! `--json` prints an array of `{"id", "webhook", "type", "status",
//! "created_at", "next_attempt_at", "audit_seq", "payload", "attempts"}`,
//! each attempt `{"attempt", "at", "duration_ms", "status_code", "error"}`:
//! the shape of `GET /v1/webhooks/deliveries`.

use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;
use toolgate::store::{Delivery, DeliveryAttempt, DeliveryQuery, DeliveryStatus, StoreError};
use toolgate::time::duration_millis;

use crate::approvals::not_found;

use crate::context::{StoreArgs, now};
use crate::exit;
use crate::table::{Style, Table, column, one_line, out, outln, print_json};

/// The `webhooks` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum WebhooksCommand {
    /// List webhook deliveries, newest first, with their attempts.
    Deliveries(DeliveriesArgs),
    /// Send failed deliveries again: each is pending once more, due now,
    /// and `toolgate serve` sends it at its next look at the outbox (it is
    /// retried on failure while it has had fewer than the webhook's
    /// `max_attempts`).
    Redeliver(RedeliverArgs),
    /// Delete the settled deliveries (delivered or failed) older than a
    /// time, with their attempts; pending ones stay.
    Prune(PruneArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct PruneArgs {
    /// Only deliveries made longer ago than this (`30d`, `12h`, …).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    older_than: std::time::Duration,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RedeliverArgs {
    /// The ids of the deliveries (`toolgate webhooks deliveries --status
    /// failed` lists them).
    #[arg(required = true, value_name = "ID")]
    ids: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DeliveriesArgs {
    /// Only this status: pending, delivered or failed.
    #[arg(long, value_parser = parse_status)]
    status: Option<DeliveryStatus>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_status(text: &str) -> Result<DeliveryStatus, String> {
    DeliveryStatus::parse(text)
        .ok_or_else(|| format!("`{text}` is not a status; use pending, delivered or failed"))
}

pub(crate) async fn run(command: WebhooksCommand, store: &StoreArgs) -> anyhow::Result<ExitCode> {
    match command {
        WebhooksCommand::Deliveries(args) => deliveries(args, store).await,
        WebhooksCommand::Redeliver(args) => redeliver(args, store).await,
        WebhooksCommand::Prune(args) => prune(args, store).await,
    }
}

#[derive(Debug, Serialize)]
struct AttemptView<'a> {
    attempt: u32,
    at: String,
    duration_ms: u64,
    status_code: Option<u16>,
    error: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct DeliveryView<'a> {
    id: &'a str,
    webhook: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    status: &'static str,
    created_at: String,
    next_attempt_at: Option<String>,
    audit_seq: u64,
    payload: Value,
    attempts: Vec<AttemptView<'a>>,
}

fn view(delivery: &Delivery) -> DeliveryView<'_> {
    DeliveryView {
        id: &delivery.id,
        webhook: &delivery.webhook,
        event_type: &delivery.event_type,
        status: delivery.status.as_str(),
        created_at: toolgate::time::format_millis(delivery.created_at),
        next_attempt_at: (delivery.status == DeliveryStatus::Pending)
            .then(|| toolgate::time::format_millis(delivery.next_attempt_at)),
        audit_seq: delivery.audit_seq,
        payload: serde_json::from_str(&delivery.payload)
            .unwrap_or_else(|_| Value::String(delivery.payload.clone())),
        attempts: delivery
            .attempts
            .iter()
            .map(|a| AttemptView {
                attempt: a.attempt,
                at: toolgate::time::format_millis(a.at),
                duration_ms: a.duration_ms,
                status_code: a.status_code,
                error: a.error.as_deref(),
            })
            .collect(),
    }
}

/// The last attempt in a few words: `200`, `500 HTTP 500 …`, or the error.
fn last(attempt: Option<&DeliveryAttempt>) -> String {
    let Some(attempt) = attempt else {
        return String::new();
    };
    match (attempt.status_code, &attempt.error) {
        (Some(code), None) => code.to_string(),
        (Some(_), Some(error)) | (None, Some(error)) => one_line(error),
        (None, None) => String::new(),
    }
}

async fn deliveries(args: DeliveriesArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let style = Style::detect();
    let store = store_args.open_store().await?;
    let now = now();
    let deliveries = store
        .deliveries(&DeliveryQuery {
            status: args.status,
            limit: args.limit.max(1),
        })
        .await
        .context("cannot list the webhook deliveries")?;
    if args.json {
        print_json(&deliveries.iter().map(view).collect::<Vec<_>>())?;
        return Ok(exit::code(exit::SUCCESS));
    }
    if deliveries.is_empty() {
        if style.terminal {
            outln(
                "No webhook deliveries. (`toolgate serve` sends them to the [[webhooks]] of \
                 toolgate.toml.)",
            )?;
        }
        return Ok(exit::code(exit::SUCCESS));
    }
    let mut table = Table::new([
        column("ID"),
        column("TYPE"),
        column("WEBHOOK").max(40).flex(),
        column("STATUS"),
        column("ATTEMPTS").right(),
        column("LAST").max(40).flex().optional(),
        column("CREATED").optional(),
        column("NEXT").optional(),
    ]);
    for delivery in &deliveries {
        table.row([
            delivery.id.clone(),
            delivery.event_type.clone(),
            delivery.webhook.clone(),
            delivery.status.as_str().to_owned(),
            delivery.attempts.len().to_string(),
            last(delivery.attempts.last()),
            style.time(delivery.created_at, now),
            if delivery.status == DeliveryStatus::Pending {
                style.time(delivery.next_attempt_at, now)
            } else {
                String::new()
            },
        ]);
    }
    out(&table.render(&style))?;
    Ok(exit::code(exit::SUCCESS))
}

async fn redeliver(args: RedeliverArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let store = store_args.open_store().await?;
    let mut failed = false;
    for id in &args.ids {
        match store.redeliver(id, now()).await {
            Ok(DeliveryStatus::Failed) => outln(&format!(
                "Delivery {id} will be sent again: `toolgate serve` sends it at its next look \
                 at the outbox."
            ))?,
            Ok(DeliveryStatus::Pending) => outln(&format!(
                "Delivery {id} is pending already (`toolgate serve` is still trying it); \
                 nothing to do."
            ))?,
            Ok(DeliveryStatus::Delivered) => {
                outln(&format!("Delivery {id} was delivered; nothing to do."))?
            }
            Err(StoreError::NotFound { what, id }) => {
                eprintln!("error: {}", not_found(what, &id));
                failed = true;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot send delivery {id} again"));
            }
        }
    }
    Ok(exit::code(if failed { exit::ERROR } else { exit::SUCCESS }))
}

async fn prune(args: PruneArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let store = store_args.open_store().await?;
    let before = now().saturating_sub(duration_millis(args.older_than));
    let deleted = store
        .prune_deliveries(before)
        .await
        .context("cannot prune the webhook deliveries")?;
    let plural = if deleted == 1 { "y" } else { "ies" };
    outln(&format!(
        "Deleted {deleted} settled deliver{plural} made before {}, with their attempts; \
         pending ones stay.",
        toolgate::time::format_millis(before)
    ))?;
    Ok(exit::code(exit::SUCCESS))
}
