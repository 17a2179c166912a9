//! `toolgate tokens`: the API tokens of the approval server, made, listed
//! and revoked.
//!
//! A token is shown once, when it is made, as the last word printed on
//! standard output; the store keeps only its SHA-256. `--json` prints, for
//! `create`, `{"id", "token", "name", "role", "groups", "expires_at"}`,
//! and for `list`, an array of `{"id", "name", "role", "groups",
//! "created_by", "created_at", "expires_at", "revoked_at", "state"}`
//! (`state` is `live`, `revoked` or `expired`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use toolgate::store::StoreError;
use toolgate::{Principal, Role};
use toolgate_server::{CreatedToken, TokenState, TokenView, issue_token};

use crate::approvals::not_found;
use crate::context::{StoreArgs, local_principal, now};
use crate::exit;
use crate::table::{Style, Table, column, out, outln, print_json};

/// The `tokens` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokensCommand {
    /// Make a token for a principal; it is printed once, last.
    Create(CreateArgs),
    /// List the tokens (never their secrets), newest first.
    List(ListArgs),
    /// Revoke a token: requests with it are refused from then on.
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// The principal's name, which decisions are recorded under.
    #[arg(long)]
    name: String,
    /// What the principal may do: `agent` (asks, waits, never decides),
    /// `approver` (decides the approvals it is named for) or `admin`
    /// (decides any, revokes any grant).
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// A group the principal belongs to, for policy rules with
    /// `approvers = ["group:NAME"]`; repeat for several.
    #[arg(long = "group", value_name = "NAME")]
    groups: Vec<String>,
    /// The token stops working after this long (e.g. 90d, 12h). Default:
    /// it works until revoked.
    #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
    expires_in: Option<Duration>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RevokeArgs {
    /// The token's id (tok_…), as `toolgate tokens list` shows it.
    id: String,
}

/// A token's lifetime: a duration above zero (the server's API refuses a
/// zero one the same way).
fn parse_lifetime(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err(format!(
            "a token that expires after `{text}` would never work; give a duration such as 90d \
             or 12h, or leave --expires-in out for a token that works until it is revoked"
        )),
        Err(error) => Err(format!(
            "`{text}` is not a duration ({error}); give one such as 90d or 12h"
        )),
    }
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("`{text}` is not a role; use agent, approver or admin"))
}

pub(crate) async fn run(command: TokensCommand, store: &StoreArgs) -> anyhow::Result<ExitCode> {
    match command {
        TokensCommand::Create(args) => create(args, store).await,
        TokensCommand::List(args) => list(args, store).await,
        TokensCommand::Revoke(args) => revoke(args, store).await,
    }
}

async fn create(args: CreateArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let now = now();
    let expires_at = args.expires_in.map(|d| toolgate::time::after(now, d));
    let principal = Principal::new(args.name, args.role).groups(args.groups);
    let issued = issue_token(principal, &local_principal().name, expires_at, now)
        .map_err(anyhow::Error::msg)?;
    let store = store_args.open_or_create_store().await?;
    store
        .create_token(&issued.record)
        .await
        .context("cannot keep the new token in the store")?;
    let record = &issued.record;
    if args.json {
        print_json(&CreatedToken::from(&issued))?;
    } else {
        let groups = if record.principal.groups.is_empty() {
            String::new()
        } else {
            format!(" in {}", record.principal.groups.join(", "))
        };
        let expires = record
            .expires_at
            .map(|at| format!(", until {}", toolgate::time::format_millis(at)))
            .unwrap_or_default();
        eprintln!(
            "Token {} for {} ({}{groups}{expires}). It is shown only now; keep it secret:",
            record.id, record.principal.name, record.principal.role,
        );
        outln(&issued.secret)?;
    }
    Ok(exit::code(exit::SUCCESS))
}

async fn list(args: ListArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let style = Style::detect();
    let store = store_args.open_store().await?;
    let now = now();
    let tokens = store.tokens().await.context("cannot list the tokens")?;
    if args.json {
        let views: Vec<TokenView> = tokens.iter().map(|t| TokenView::of(t, now)).collect();
        print_json(&views)?;
        return Ok(exit::code(exit::SUCCESS));
    }
    if tokens.is_empty() {
        if style.terminal {
            outln("No tokens. (`toolgate tokens create --name NAME --role ROLE` makes one.)")?;
        }
        return Ok(exit::code(exit::SUCCESS));
    }
    let mut table = Table::new([
        column("ID"),
        column("NAME").max(24),
        column("ROLE"),
        column("GROUPS").max(30).flex().optional(),
        column("CREATED").optional(),
        column("EXPIRES").optional(),
        column("STATE"),
    ]);
    for token in &tokens {
        table.row([
            token.id.clone(),
            token.principal.name.clone(),
            token.principal.role.as_str().to_owned(),
            token.principal.groups.join(", "),
            style.time(token.created_at, now),
            token
                .expires_at
                .map(|at| style.time(at, now))
                .unwrap_or_default(),
            TokenState::of(token, now).as_str().to_owned(),
        ]);
    }
    out(&table.render(&style))?;
    Ok(exit::code(exit::SUCCESS))
}

async fn revoke(args: RevokeArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let store = store_args.open_store().await?;
    match store
        .revoke_token(&args.id, &local_principal().name, now())
        .await
    {
        Ok(true) => {
            outln(&format!(
                "Revoked token {}: requests with it are refused from now on (a server that \
                 checked it in the last 2 seconds may still take it until then).",
                args.id
            ))?;
            Ok(exit::code(exit::SUCCESS))
        }
        Ok(false) => {
            outln(&format!("Token {} was revoked already.", args.id))?;
            Ok(exit::code(exit::SUCCESS))
        }
        Err(StoreError::NotFound { what, id }) => Err(not_found(what, &id)),
        Err(error) => Err(anyhow::Error::new(error).context("cannot revoke the token")),
    }
}
