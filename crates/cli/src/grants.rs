//! `toolgate grants`: the standing approvals decisions made, listed and
//! revoked.
//!
//! `--json` prints an array of grants:
//!
//! ```json
//! {"id": "…", "tool": "send_email", "when": null, "scope": "uses",
//!  "run_id": null, "thread": null, "until": null, "uses": 2, "uses_left": 1,
//!  "created_by": "alice", "created_at": "2026-11-22T20:30:00Z",
//!  "approval_id": "…", "revoked_by": null, "revoked_at": null,
//!  "state": "live"}
//! ```
//!
//! `scope` is `run`, `thread`, `until` or `uses`, with the field of the
//! same name (`run_id` for `run`) set; `state` is `live`, `revoked`,
//! `used up` or `expired`.

use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;
use toolgate::grant::{Grant, GrantScope};
use toolgate::store::{GrantQuery, StoreError};

use crate::approvals::not_found;
use crate::context::{StoreArgs, local_principal, now};
use crate::exit;
use crate::table::{Style, Table, column, out, outln, print_json};

/// The `grants` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum GrantsCommand {
    /// List the grants that still cover calls, newest first.
    List(ListArgs),
    /// Revoke a grant: calls it would have covered ask again.
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Also list revoked, used-up and expired grants.
    #[arg(long)]
    all: bool,
    /// At most this many, newest first.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    limit: u32,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RevokeArgs {
    /// The grant's id.
    id: String,
}

pub(crate) async fn run(command: GrantsCommand, store: &StoreArgs) -> anyhow::Result<ExitCode> {
    match command {
        GrantsCommand::List(args) => list(args, store).await,
        GrantsCommand::Revoke(args) => revoke(args, store).await,
    }
}

/// One grant, as `--json` prints it.
#[derive(Debug, Serialize)]
pub(crate) struct GrantView {
    id: String,
    tool: String,
    when: Option<String>,
    scope: &'static str,
    run_id: Option<String>,
    thread: Option<String>,
    until: Option<String>,
    uses: Option<u32>,
    uses_left: Option<u32>,
    created_by: String,
    created_at: String,
    approval_id: Option<String>,
    revoked_by: Option<String>,
    revoked_at: Option<String>,
    state: &'static str,
}

pub(crate) fn grant_view(grant: &Grant, now: i64) -> GrantView {
    let (scope, run_id, thread, until, uses) = match &grant.scope {
        GrantScope::Run { run_id } => ("run", Some(run_id.clone()), None, None, None),
        GrantScope::Thread { thread } => ("thread", None, Some(thread.clone()), None, None),
        GrantScope::Until { until } => (
            "until",
            None,
            None,
            Some(toolgate::time::format_millis(*until)),
            None,
        ),
        GrantScope::Uses { uses } => ("uses", None, None, None, Some(*uses)),
    };
    GrantView {
        id: grant.id.clone(),
        tool: grant.tool.clone(),
        when: grant.when.clone(),
        scope,
        run_id,
        thread,
        until,
        uses,
        uses_left: grant.uses_left,
        created_by: grant.created_by.clone(),
        created_at: toolgate::time::format_millis(grant.created_at),
        approval_id: grant.approval_id.clone(),
        revoked_by: grant.revoked.as_ref().map(|r| r.by.clone()),
        revoked_at: grant
            .revoked
            .as_ref()
            .map(|r| toolgate::time::format_millis(r.at)),
        state: state(grant, now),
    }
}

/// `live`, `revoked`, `used up` or `expired`.
fn state(grant: &Grant, now: i64) -> &'static str {
    grant.state(now)
}

async fn list(args: ListArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let style = Style::detect();
    let store = store_args.open_store().await?;
    let now = now();
    let query = if args.all {
        GrantQuery::all()
    } else {
        GrantQuery::live(now)
    };
    let limit = args.limit as usize;
    let mut grants: Vec<Grant> = store
        .grants(&query.page(None, limit + 1))
        .await
        .context("cannot list the grants")?;
    let more = grants.len() > limit;
    grants.truncate(limit);
    if args.json {
        let views: Vec<GrantView> = grants.iter().map(|g| grant_view(g, now)).collect();
        print_json(&views)?;
        return Ok(exit::code(exit::SUCCESS));
    }
    if grants.is_empty() {
        if style.terminal {
            outln(if args.all {
                "No grants."
            } else {
                "No live grants. (`toolgate grants list --all` includes revoked and used-up ones.)"
            })?;
        }
        return Ok(exit::code(exit::SUCCESS));
    }
    out(&grants_table(&grants, &style, now).render(&style))?;
    if more && style.terminal {
        eprintln!("Showing the newest {limit}; pass --limit to see more.");
    }
    Ok(exit::code(exit::SUCCESS))
}

fn grants_table(grants: &[Grant], style: &Style, now: i64) -> Table {
    let mut table = Table::new([
        column("ID"),
        column("TOOL").max(24),
        column("WHEN").max(40).flex(),
        column("SCOPE").max(46).flex(),
        column("USES LEFT").right(),
        column("BY").max(16).optional(),
        column("CREATED").optional(),
        column("STATE"),
    ]);
    for grant in grants {
        let scope = match &grant.scope {
            GrantScope::Until { until } if style.terminal => {
                format!("until {}", style.time(*until, now))
            }
            other => scope_text(other),
        };
        table.row([
            grant.id.clone(),
            grant.tool.clone(),
            grant.when.clone().unwrap_or_default(),
            scope,
            grant.uses_left.map(|n| n.to_string()).unwrap_or_default(),
            grant.created_by.clone(),
            style.time(grant.created_at, now),
            state(grant, now).to_owned(),
        ]);
    }
    table
}

/// A grant's scope in words: `run ID`, `thread ID`, `until TIME`, `2 uses`.
fn scope_text(scope: &GrantScope) -> String {
    match scope {
        GrantScope::Uses { uses: 1 } => "1 use".to_owned(),
        GrantScope::Uses { uses } => format!("{uses} uses"),
        other => other.to_string(),
    }
}

async fn revoke(args: RevokeArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let store = store_args.open_store().await?;
    let grant = match store.grant(&args.id).await {
        Ok(grant) => grant,
        Err(StoreError::NotFound { .. }) => return Err(not_found("grant", &args.id)),
        Err(error) => return Err(crate::approvals::store_error(error, None)),
    };
    if let Some(revoked) = &grant.revoked {
        outln(&format!(
            "Grant {} was already revoked by {} at {}; nothing to do.",
            grant.id,
            revoked.by,
            toolgate::time::format_millis(revoked.at)
        ))?;
        return Ok(exit::code(exit::SUCCESS));
    }
    let principal = local_principal();
    let now = now();
    let revoked = store
        .revoke_grant(&args.id, &principal.name, now)
        .await
        .map_err(|error| crate::approvals::store_error(error, None))
        .with_context(|| format!("cannot revoke grant {}", args.id))?;
    if revoked {
        outln(&format!(
            "Revoked grant {} ({}, {}) as {}; calls it covered will ask again.",
            grant.id,
            grant.tool,
            scope_text(&grant.scope),
            principal.name
        ))?;
    } else {
        // Someone else revoked it between the read and now.
        outln(&format!(
            "Grant {} was already revoked; nothing to do.",
            grant.id
        ))?;
    }
    Ok(exit::code(exit::SUCCESS))
}

#[cfg(test)]
mod tests {
    use toolgate::grant::Revocation;

    use super::*;

    fn grant(scope: GrantScope, uses_left: Option<u32>) -> Grant {
        Grant {
            id: "g1".into(),
            tool: "send_email".into(),
            when: None,
            scope,
            uses_left,
            created_by: "alice".into(),
            created_at: 0,
            approval_id: None,
            revoked: None,
        }
    }

    #[test]
    fn states_say_why_a_grant_no_longer_covers_calls() {
        assert_eq!(
            state(&grant(GrantScope::Uses { uses: 2 }, Some(1)), 0),
            "live"
        );
        assert_eq!(
            state(&grant(GrantScope::Uses { uses: 2 }, Some(0)), 0),
            "used up"
        );
        assert_eq!(
            state(&grant(GrantScope::Until { until: 10 }, None), 10),
            "expired"
        );
        let mut revoked = grant(GrantScope::Run { run_id: "r".into() }, None);
        revoked.revoked = Some(Revocation {
            by: "bob".into(),
            at: 5,
        });
        assert_eq!(state(&revoked, 0), "revoked");
        let view = serde_json::to_value(grant_view(&revoked, 0)).unwrap();
        assert_eq!(view["scope"], "run");
        assert_eq!(view["run_id"], "r");
        assert_eq!(view["revoked_by"], "bob");
        assert_eq!(view["revoked_at"], "1970-01-01T00:00:00Z");
    }
}
