//! `toolgate worker`: drives, with the seed's tools, the runs that are
//! ready for the engine: decided in the inbox or by another process, or
//! left half-done by a process that died.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use toolgate::engine::Step;
use toolgate::{Agent, RunOutcome, seed};

use crate::context::StoreArgs;
use crate::exit;
use crate::run::{model_spec, process_name};

/// Drive the runs that are ready, until stopped.
///
/// A run is ready when the engine can take it further: people decided its
/// approvals (in the inbox, over the API, or with `toolgate approvals`),
/// or the process that drove it died. Each run is taken under a lease, so
/// any number of workers (on any hosts, on one PostgreSQL database) share
/// the work, each run driven by one at a time; a worker that dies leaves
/// its runs to the others once its leases lapse. Stops on Ctrl-C or
/// SIGTERM after the run it is driving.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    /// The model, as PROVIDER:MODEL (see `toolgate run --help`). Also:
    /// TOOLGATE_MODEL.
    #[arg(long, value_name = "SPEC", env = "TOOLGATE_MODEL")]
    model: Option<String>,
    /// How long a run stays this worker's without a renewal (it renews
    /// every third of it): another worker takes over a dead one's runs
    /// after this.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30s")]
    lease: Duration,
    /// How often to look for ready runs when the store cannot say
    /// (SQLite); PostgreSQL wakes workers at once.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "250ms")]
    poll: Duration,
}

pub(crate) async fn run(args: WorkerArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let spec = model_spec(args.model)?;
    let model = toolgate::models::from_spec(&spec)
        .with_context(|| format!("cannot use the model `{spec}`"))?;
    let policy = store_args.policy()?;
    let store = store_args.open_or_create_store().await?;
    let name = process_name("worker");
    let agent = Agent::new(model, seed::tools())
        .policy(policy)
        .store(store)
        .lease(name.clone(), args.lease)
        .poll_interval(args.poll)
        .observe(Arc::new(report));
    eprintln!("toolgate worker {name}: driving ready runs; Ctrl-C stops");
    agent
        .work(crate::serve::shutdown_signal())
        .await
        .context("the worker stopped")?;
    eprintln!("toolgate worker {name}: stopped");
    Ok(exit::code(exit::SUCCESS))
}

/// One line per run driven, on standard error.
fn report(step: &Step<'_>) {
    let Step::Drove(run_id, outcome) = step else {
        return;
    };
    match outcome {
        Ok(RunOutcome::Completed { answer, .. }) => {
            eprintln!("run {run_id} completed: {}", answer.replace('\n', " "));
        }
        Ok(RunOutcome::Waiting {
            approvals,
            in_doubt,
            ..
        }) => eprintln!(
            "run {run_id} waits: {} approval(s) pending, {} call(s) in doubt",
            approvals.len(),
            in_doubt.len()
        ),
        Ok(RunOutcome::Failed { error, .. }) => eprintln!("run {run_id} failed: {error}"),
        Err(error) => eprintln!("run {run_id}: {error}"),
    }
}
