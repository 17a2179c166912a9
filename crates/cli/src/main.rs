//! The `toolgate` command: thin glue over the `toolgate` library.

/// The allocator: mimalloc, whose small allocations (most of a gateway's
/// and a server's, JSON and messages) cost well under glibc's, which was
/// about a fifth of the gateway's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod approvals;
mod audit;
mod context;
mod demo;
mod exit;
mod grants;
mod mcp;
mod run;
mod runs;
mod serve;
mod table;
mod tokens;
mod webhooks;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Put a human between AI models and the tools they call.
#[derive(Debug, Parser)]
#[command(name = "toolgate", version, about, long_about = None, after_help = exit::HELP)]
struct Cli {
    #[command(flatten)]
    store: context::StoreArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Demo(demo::DemoArgs),
    Run(run::RunArgs),
    /// Approvals: list, show, approve, edit, reject.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Runs: list, show, resume, resolve (calls in doubt).
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Grants (standing approvals): list, revoke.
    #[command(subcommand)]
    Grants(grants::GrantsCommand),
    /// The audit log: verify, export, public-key.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    Serve(serve::ServeArgs),
    Worker(worker::WorkerArgs),
    Mcp(mcp::McpArgs),
    /// API tokens of the approval server: create, list, revoke.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// What the approval server sent to its webhooks.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return exit::code(exit::ERROR);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Run(args) => run::run(args, &cli.store).await,
            Command::Approvals(command) => approvals::run(command, &cli.store).await,
            Command::Runs(command) => runs::run(command, &cli.store).await,
            Command::Grants(command) => grants::run(command, &cli.store).await,
            Command::Audit(command) => audit::run(command, &cli.store).await,
            Command::Serve(args) => serve::run(args, &cli.store).await,
            Command::Worker(args) => worker::run(args, &cli.store).await,
            Command::Mcp(args) => mcp::run(args, &cli.store).await,
            Command::Tokens(command) => tokens::run(command, &cli.store).await,
            Command::Webhooks(command) => webhooks::run(command, &cli.store).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            exit::code(exit::ERROR)
        }
    }
}
