//! `toolgate demo`: the seed system, offline.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use toolgate::{
    ChatModel, ChatModelExt, Error, Runnable, call_tools, human_approval, pyjson, seed,
};

use crate::exit;

/// Run the seed system offline: the how-to's two requests, each asking for
/// approval on standard input before any tool runs.
///
/// With the answers `yes` then `no`, the first prints the count of emails as
/// JSON and the second prints `Tool invocations not approved:` with the
/// email it did not send. Exits 0 when every invocation was approved, 3 when
/// one was not.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// The model to ask, as PROVIDER:MODEL (default: the how-to's recorded
    /// conversations, offline).
    #[arg(long, value_name = "SPEC")]
    model: Option<String>,
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let model: Arc<dyn ChatModel> = match &args.model {
        Some(spec) => toolgate::models::from_spec(spec)
            .with_context(|| format!("cannot use the model `{spec}`"))?,
        None => Arc::new(seed::model()),
    };
    let tools = seed::tools();
    // Piped answers are not echoed by a terminal; write them out so the
    // output reads like the how-to's session.
    let approval = human_approval().echo_answers(!std::io::stdin().is_terminal());
    let chain = model.bind_tools(&tools) | approval | call_tools(&tools);

    let mut all_approved = true;
    for prompt in seed::PROMPTS {
        match chain.invoke(prompt).await {
            Ok(outputs) => println!("{}", pyjson::to_string(&outputs)),
            Err(Error::NotApproved(not_approved)) => {
                all_approved = false;
                println!();
                println!("{not_approved}");
            }
            Err(error) => {
                return Err(error).with_context(|| format!("the request {prompt:?} failed"));
            }
        }
        std::io::stdout()
            .flush()
            .context("cannot write to standard output")?;
    }
    Ok(exit::code(if all_approved {
        exit::SUCCESS
    } else {
        exit::NOT_APPROVED
    }))
}
