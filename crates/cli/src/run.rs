//! `toolgate run` and `toolgate runs resume`: the durable engine driving a
//! model with the seed's tools, and a person deciding each call that asks
//! at the terminal.
//!
//! Every step is committed to the store before it is acted on, so a run
//! left waiting (with `--detach`, or because the terminal went away) is
//! picked up later by `toolgate runs resume` exactly where it stopped.

use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use serde_json::{Map, Value};
use toolgate::engine::{DecideError, DecisionRequest, Step};
use toolgate::grant::{GrantRequest, GrantScope};
use toolgate::policy::DecidedBy;
use toolgate::run::{ApprovalState, ApprovalStatus, Event, Gate, Outcome, RunState};
use toolgate::store::Store;
use toolgate::{
    Agent, Message, ModelError, Policy, Principal, RunOptions, RunOutcome, TextSink, ToolCall,
    pyjson, seed,
};

use crate::context::{StoreArgs, local_principal, now};
use crate::exit;

/// Ask a model to do something with the seed's tools (`count_emails`,
/// `send_email`), under toolgate's policy: calls that policy asks about wait
/// for your decision here, and everything is recorded in the store.
///
/// For each call that asks, answer `y` (approve), `n` (reject, with a reason
/// for the model), `e` (edit the arguments in $EDITOR) or `r` (approve, and
/// allow this tool for the rest of the run). With `--detach`, toolgate
/// exits instead of asking (code 4); decide with `toolgate approvals …` and
/// continue with `toolgate runs resume RUN`.
///
/// Exits 0 when the model answered and every call ran, 3 when a call was
/// rejected, denied or expired (the model still answers), 4 when the run
/// waits for people, 1 on an error.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The model, as PROVIDER:MODEL: openai:gpt-4o-mini,
    /// anthropic:claude-sonnet-4-5, ollama:llama3.2 or scripted:PATH.
    #[arg(long, value_name = "SPEC", env = "TOOLGATE_MODEL")]
    model: Option<String>,
    #[command(flatten)]
    drive: DriveArgs,
    /// The conversation thread the run belongs to (grants may be scoped to
    /// a thread).
    #[arg(long, value_name = "ID")]
    thread: Option<String>,
    /// What to ask the model.
    prompt: String,
}

/// `toolgate runs resume`: continue a run from the store.
#[derive(Debug, clap::Args)]
pub(crate) struct ResumeArgs {
    /// The run.
    run_id: String,
    /// The model, as PROVIDER:MODEL; needed when the run asks it again.
    #[arg(long, value_name = "SPEC", env = "TOOLGATE_MODEL")]
    model: Option<String>,
    #[command(flatten)]
    drive: DriveArgs,
}

/// How a run is driven from the terminal.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DriveArgs {
    /// Print the answer as the model writes it (the default when standard
    /// output is a terminal).
    #[arg(long, conflicts_with = "no_stream")]
    stream: bool,
    /// Print each answer only once it is complete.
    #[arg(long)]
    no_stream: bool,
    /// Exit as soon as the run waits for people, instead of asking here.
    #[arg(long)]
    detach: bool,
    /// How many answers to ask the model for, at most, before giving up.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    max_turns: u32,
}

pub(crate) async fn run(args: RunArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let spec = model_spec(args.model)?;
    let policy = store_args.policy()?;
    let agent = agent(
        &spec,
        policy,
        store_args.open_or_create_store().await?,
        &args.drive,
    )?;
    let mut options = RunOptions::default().principal(local_principal().name);
    if let Some(thread) = args.thread {
        options = options.thread(thread);
    }
    let run_id = agent.create(args.prompt, options).await?;
    drive(&agent, &spec, &run_id, &args.drive, 0).await
}

pub(crate) async fn resume(args: ResumeArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    // A run that no longer needs the model resumes without one.
    let spec = args
        .model
        .filter(|spec| !spec.trim().is_empty())
        .unwrap_or_else(|| "scripted:".to_owned());
    let policy = store_args.policy()?;
    let store = store_args.open_store().await?;
    let agent = if spec == "scripted:" {
        agent_with(Arc::new(NoModel), policy, Arc::clone(&store), &args.drive)
    } else {
        agent(&spec, policy, Arc::clone(&store), &args.drive)?
    };
    let events = store
        .load(&args.run_id)
        .await
        .with_context(|| format!("cannot resume run {}", args.run_id))?;
    let state = RunState::fold(events.iter().map(|e| &e.event));
    drive(
        &agent,
        &spec,
        &args.run_id,
        &args.drive,
        state.messages.len(),
    )
    .await
}

/// How long a run this process drives stays its own without a renewal:
/// a process that dies leaves its run to workers after this.
pub(crate) const LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// A name for this process as the driver of runs: `KIND:HOST:PID:START`,
/// START being when it started (in clock ticks since the host booted), so
/// that a later process given the same PID is not taken for it; where the
/// start is not known (not Linux), `KIND:HOST:PID`.
pub(crate) fn process_name(kind: &str) -> String {
    let pid = std::process::id();
    match process_stat(pid).as_deref().and_then(start_time) {
        Some(start) => format!("{kind}:{}:{pid}:{start}", host_name()),
        None => format!("{kind}:{}:{pid}", host_name()),
    }
}

/// The status line of process `pid` (`/proc/PID/stat`), if it runs and
/// this host has one.
fn process_stat(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

/// When a process started, from its status line: field 22. The command
/// name (field 2) is in parentheses and may hold spaces and parentheses
/// itself, so the fields are counted from the last `)`, after which field
/// 3 comes.
fn start_time(stat: &str) -> Option<u64> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty() && !host.contains(':'))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// True when `owner` (a [`process_name`]) is a process of this host that
/// no longer runs. Only Linux can tell; elsewhere a dead process's lease is
/// left to lapse.
fn dead_local_process(owner: &str) -> bool {
    let mut parts = owner.splitn(4, ':');
    let (Some(_kind), Some(host), Some(pid)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if !cfg!(target_os = "linux") || host != host_name() {
        return false;
    }
    let running = || std::path::Path::new(&format!("/proc/{pid}")).exists();
    match parts.next().map(str::parse::<u64>) {
        // A process with that PID runs, or ran until now: it is the owner
        // only if it started when the owner did. Should its start not be
        // readable, it is taken to be the owner.
        Some(Ok(start)) => match process_stat(pid) {
            Some(stat) => start_time(&stat).is_some_and(|now| now != start),
            None => !running(),
        },
        Some(Err(_)) => false,
        // A name without a start (written by an older toolgate).
        None => pid != std::process::id() && !running(),
    }
}

pub(crate) fn model_spec(model: Option<String>) -> anyhow::Result<String> {
    model.filter(|spec| !spec.trim().is_empty()).context(
        "no model given: pass --model PROVIDER:MODEL or set TOOLGATE_MODEL (e.g. openai:gpt-4o-mini, anthropic:claude-sonnet-4-5, ollama:llama3.2, scripted:PATH)",
    )
}

pub(crate) fn agent(
    spec: &str,
    policy: Policy,
    store: Arc<dyn Store>,
    drive: &DriveArgs,
) -> anyhow::Result<Agent> {
    let model = toolgate::models::from_spec(spec)
        .with_context(|| format!("cannot use the model `{spec}`"))?;
    Ok(agent_with(model, policy, store, drive))
}

fn agent_with(
    model: Arc<dyn toolgate::ChatModel>,
    policy: Policy,
    store: Arc<dyn Store>,
    drive: &DriveArgs,
) -> Agent {
    let mut agent = Agent::new(model, seed::tools())
        .policy(policy)
        .store(store)
        .max_turns(drive.max_turns)
        .lease(process_name("cli"), LEASE)
        .observe(Arc::new(report_refusals));
    if drive.stream || (!drive.no_stream && io::stdout().is_terminal()) {
        agent = agent.on_text(stdout_sink());
    }
    agent
}

/// Says on standard error, as it happens (in order with streamed text),
/// when a call will not run for a reason nobody at this terminal gave:
/// policy, bad arguments, a timeout, or the tool failing. Decisions made
/// here are reported by the question itself.
fn report_refusals(step: &Step<'_>) {
    let Step::Committing(events) = step else {
        return;
    };
    for event in *events {
        match event {
            Event::GateVerdict {
                call_id,
                verdict: Gate::Deny { by, reason },
                ..
            } => eprintln!(
                "toolgate: call {call_id} will not run: policy ({by}) denies it{}; the model is told",
                reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            Event::GateVerdict {
                call_id,
                verdict: Gate::Invalid { error },
                ..
            } => eprintln!("toolgate: call {call_id} cannot run: {error}; the model is told"),
            Event::ApprovalExpired { approval_id } => eprintln!(
                "toolgate: nobody decided approval {approval_id} in time, so its call is rejected; the model is told"
            ),
            Event::ToolFinished {
                call_id,
                outcome: Outcome::Error { error },
            } => eprintln!("toolgate: call {call_id} failed: {error}; the model is told"),
            _ => {}
        }
    }
}

/// Prints streamed text as it arrives, and remembers that it did.
static STREAMED: AtomicBool = AtomicBool::new(false);

fn stdout_sink() -> TextSink {
    Arc::new(|text: &str| {
        STREAMED.store(true, Ordering::Relaxed);
        let mut stdout = io::stdout().lock();
        // A closed stdout shows up when the final answer is printed.
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    })
}

/// Drives a run until it completes, fails, or waits with nobody here to
/// decide; asks at the terminal for each approval on the way.
async fn drive(
    agent: &Agent,
    spec: &str,
    run_id: &str,
    args: &DriveArgs,
    mut shown: usize,
) -> anyhow::Result<ExitCode> {
    let store = agent_store(agent)?;
    let principal = local_principal();
    let mut asker = Asker::stdin();
    loop {
        STREAMED.store(false, Ordering::Relaxed);
        let outcome = match agent.resume(run_id).await {
            Err(toolgate::engine::EngineError::Busy { owner, .. })
                if dead_local_process(&owner) =>
            {
                // The process that held the run died on this host (killed,
                // or the machine lost power): its lease would lapse by
                // itself; take the run over now.
                store
                    .release_run(run_id, &owner)
                    .await
                    .with_context(|| format!("cannot take run {run_id} over from {owner}"))?;
                agent.resume(run_id).await
            }
            other => other,
        };
        if STREAMED.load(Ordering::Relaxed) {
            println!();
        }
        let outcome = outcome.map_err(|error| match error {
            toolgate::engine::EngineError::Model(error) => model_failed(spec, run_id, error),
            toolgate::engine::EngineError::TurnLimit { turns, .. } => anyhow::anyhow!(
                "the model `{spec}` was still calling tools after {turns} answers; pass a larger --max-turns to let it go on (run {run_id} is kept: `toolgate runs resume {run_id} --max-turns N`)"
            ),
            other => anyhow::Error::new(other).context(format!("run {run_id} stopped")),
        })?;
        let state = load_state(store.as_ref(), run_id).await?;
        shown = show_new_text(&state, shown, STREAMED.load(Ordering::Relaxed));
        match outcome {
            RunOutcome::Completed { .. } => {
                io::stdout()
                    .flush()
                    .context("cannot write to standard output")?;
                return Ok(exit::code(if refused_any(&state) {
                    exit::NOT_APPROVED
                } else {
                    exit::SUCCESS
                }));
            }
            RunOutcome::Failed { error, .. } => anyhow::bail!("run {run_id} failed: {error}"),
            RunOutcome::Waiting {
                approvals,
                in_doubt,
                ..
            } => {
                if !in_doubt.is_empty() {
                    eprintln!(
                        "toolgate: run {run_id} has calls in doubt (they started and never finished): {}; say what happened with `toolgate runs resolve {run_id} CALL --retry|--done OUTPUT|--fail MESSAGE`, then `toolgate runs resume {run_id}`",
                        in_doubt.join(", ")
                    );
                    return Ok(exit::code(exit::WAITING));
                }
                if args.detach {
                    for approval in &approvals {
                        eprintln!(
                            "toolgate: {} waits for approval {} (rule {})",
                            approval.tool, approval.id, approval.rule
                        );
                    }
                    eprintln!(
                        "toolgate: run {run_id} waits; decide with `toolgate approvals approve|edit|reject ID`, then `toolgate runs resume {run_id}`"
                    );
                    return Ok(exit::code(exit::WAITING));
                }
                for approval in &approvals {
                    let state = load_state(store.as_ref(), run_id).await?;
                    let Some(pending) = state.approval(&approval.id).cloned() else {
                        continue;
                    };
                    if pending.status == ApprovalStatus::Pending {
                        asker.ask(agent, run_id, &principal, &pending).await?;
                    }
                }
            }
        }
    }
}

fn agent_store(agent: &Agent) -> anyhow::Result<Arc<dyn Store>> {
    agent
        .store_handle()
        .cloned()
        .context("the agent has no store")
}

async fn load_state(store: &dyn Store, run_id: &str) -> anyhow::Result<RunState> {
    let events = store
        .load(run_id)
        .await
        .with_context(|| format!("cannot read run {run_id}"))?;
    Ok(RunState::fold(events.iter().map(|e| &e.event)))
}

/// Prints the text of the model's answers that are not on the screen yet
/// (unless it was streamed); returns how many messages have been shown.
fn show_new_text(state: &RunState, shown: usize, streamed: bool) -> usize {
    if !streamed {
        for message in state.messages.iter().skip(shown) {
            if let Message::Ai(ai) = message
                && !ai.content.is_empty()
            {
                println!("{}", ai.content);
            }
        }
    }
    state.messages.len()
}

/// True when a call of the run did not run because people or policy said
/// no, or nobody decided in time.
fn refused_any(state: &RunState) -> bool {
    let refused_approval = state
        .approvals()
        .any(|a| matches!(a.status, ApprovalStatus::Rejected | ApprovalStatus::Expired));
    let denied = state.messages.iter().any(|m| match m {
        Message::Tool(result) => result.is_error && result.content.starts_with("toolgate's policy"),
        _ => false,
    }) || state
        .calls
        .iter()
        .any(|c| matches!(c.gate, Some(Gate::Deny { .. })));
    refused_approval || denied
}

/// Asks the person at the terminal about one approval at a time.
struct Asker {
    input: Box<dyn BufRead + Send>,
    echo: bool,
}

/// What the person answered.
#[derive(Debug, PartialEq)]
enum Answer {
    Approve,
    ApproveForRun,
    Edit,
    Reject,
}

fn parse_answer(answer: &str) -> Answer {
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Answer::Approve,
        "r" | "run" => Answer::ApproveForRun,
        "e" | "edit" => Answer::Edit,
        _ => Answer::Reject,
    }
}

/// The question for one approval.
fn prompt(approval: &ApprovalState) -> String {
    let call = ToolCall {
        args: approval.args.clone(),
        ..approval.call.clone()
    };
    let why = match &approval.rule {
        DecidedBy::Default => "it is not marked read-only, and no rule allows it".to_owned(),
        rule => format!("policy rule \"{rule}\" asks"),
    };
    format!(
        "Do you approve of the following tool invocation ({}: {why})\n\n{}\n\n\
         y: approve   n: reject   e: edit the arguments   r: approve `{}` for the rest of this run\n\
         Anything except 'Y'/'Yes', 'E' or 'R' (case-insensitive) will be treated as a no.\n >>>",
        approval.call.name,
        pyjson::to_string_indented(&call),
        approval.call.name,
    )
}

impl Asker {
    fn stdin() -> Asker {
        Asker {
            input: Box::new(io::BufReader::new(io::stdin())),
            echo: !io::stdin().is_terminal(),
        }
    }

    /// Reads one line; `None` at the end of input.
    fn line(&mut self, question: &str) -> anyhow::Result<Option<String>> {
        let mut stdout = io::stdout().lock();
        stdout
            .write_all(question.as_bytes())
            .and_then(|()| stdout.flush())
            .context("cannot show the question")?;
        let mut line = String::new();
        let read = self
            .input
            .read_line(&mut line)
            .context("cannot read the answer")?;
        let answer = (read > 0).then(|| line.trim_end_matches(['\n', '\r']).to_owned());
        if self.echo {
            // A pipe is not echoed by a terminal: show the answer so the
            // output reads as a conversation.
            let _ = writeln!(stdout, " {}", answer.as_deref().unwrap_or(""));
        }
        Ok(answer)
    }

    /// Asks about `approval` of run `run_id` until the answer is
    /// recorded; the decision starts from the run as `agent` left it.
    async fn ask(
        &mut self,
        agent: &Agent,
        run_id: &str,
        principal: &Principal,
        approval: &ApprovalState,
    ) -> anyhow::Result<()> {
        let mut question = prompt(approval);
        loop {
            let answer = self.line(&question)?;
            let (request, grant) = match answer.as_deref().map(parse_answer) {
                Some(Answer::Approve) => (DecisionRequest::Approve, None),
                Some(Answer::ApproveForRun) => (
                    DecisionRequest::Approve,
                    Some(GrantRequest {
                        tool: None,
                        when: None,
                        scope: GrantScope::Run {
                            run_id: String::new(),
                        },
                    }),
                ),
                Some(Answer::Edit) => match edit_in_editor(&approval.args) {
                    Ok(Some(args)) => (DecisionRequest::Edit(args), None),
                    Ok(None) => {
                        question = format!("The arguments were not changed.\n{}", prompt(approval));
                        continue;
                    }
                    Err(error) => {
                        question = format!("{error:#}\n{}", prompt(approval));
                        continue;
                    }
                },
                Some(Answer::Reject) => {
                    let reason = self
                        .line("Why? (the model is told; press Enter to give no reason)\n >>>")?
                        .filter(|reason| !reason.trim().is_empty());
                    (DecisionRequest::Reject(reason), None)
                }
                // The end of input is a no: nothing runs without a yes.
                None => (DecisionRequest::Reject(None), None),
            };
            let for_run = grant.is_some();
            match agent
                .decide(
                    principal,
                    run_id,
                    &approval.id,
                    &approval.fingerprint,
                    request,
                    grant,
                    now(),
                )
                .await
            {
                Ok(row) => {
                    let tool = &row.tool;
                    match row.status {
                        ApprovalStatus::Edited => eprintln!(
                            "toolgate: {tool} runs with your arguments: {}",
                            Value::Object(row.args.clone())
                        ),
                        ApprovalStatus::Rejected => {
                            eprintln!("toolgate: {tool} will not run; the model is told")
                        }
                        ApprovalStatus::Pending => eprintln!(
                            "toolgate: your approval is recorded; {tool} needs {} approvals in all",
                            row.quorum
                        ),
                        _ if for_run => eprintln!(
                            "toolgate: approved; {tool} runs without asking for the rest of run {}",
                            row.run_id
                        ),
                        _ => {}
                    }
                    return Ok(());
                }
                Err(DecideError::InvalidArguments(error)) => {
                    question = format!("{error}; edit again or answer n\n{}", prompt(approval));
                }
                Err(error) => {
                    // Someone else decided first, or the approval expired:
                    // the run goes on with their decision.
                    eprintln!("toolgate: {error}");
                    return Ok(());
                }
            }
        }
    }
}

/// Opens `$VISUAL` or `$EDITOR` (default `vi`) on the arguments; `None` when
/// they were left as they were.
fn edit_in_editor(args: &Map<String, Value>) -> anyhow::Result<Option<Map<String, Value>>> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .ok()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_owned());
    let original = serde_json::to_string_pretty(args).expect("JSON always serialises");
    let file = tempfile::Builder::new()
        .prefix("toolgate-args-")
        .suffix(".json")
        .tempfile()
        .context("cannot make a file to edit the arguments in")?;
    std::fs::write(file.path(), format!("{original}\n"))
        .context("cannot write the arguments to edit")?;
    // Through the shell, so that EDITOR="code --wait" works.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(file.path())
        .status()
        .with_context(|| format!("cannot start the editor `{editor}`"))?;
    anyhow::ensure!(
        status.success(),
        "the editor `{editor}` failed ({status}); the arguments were not changed"
    );
    let text = std::fs::read_to_string(file.path()).context("cannot read the edited arguments")?;
    if text.trim().is_empty() || text.trim() == original.trim() {
        return Ok(None);
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(other) => anyhow::bail!(
            "the edited arguments must be a JSON object, not {}",
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        ),
        Err(error) => anyhow::bail!("the edited arguments are not valid JSON: {error}"),
    }
}

/// A model for resuming runs that need no more answers; asking it is an
/// error that says how to name a model.
struct NoModel;

#[async_trait::async_trait]
impl toolgate::ChatModel for NoModel {
    async fn generate(
        &self,
        _request: toolgate::ChatRequest,
    ) -> Result<toolgate::AiMessage, ModelError> {
        Err(ModelError::Config {
            message:
                "the run needs the model again: pass --model PROVIDER:MODEL or set TOOLGATE_MODEL"
                    .to_owned(),
        })
    }
}

/// The model's error, with what to check when the fix is likely on this
/// side.
fn model_failed(spec: &str, run_id: &str, error: ModelError) -> anyhow::Error {
    let provider = spec.split(':').next().unwrap_or_default();
    let (key, url) = match provider {
        "openai" => ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
        "anthropic" => ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
        "ollama" => ("", "OLLAMA_BASE_URL"),
        _ => ("", ""),
    };
    let hint = match &error {
        ModelError::Api {
            status: 401 | 403, ..
        } if !key.is_empty() => format!(" (check the key in {key})"),
        ModelError::Api { status: 404, .. } if !url.is_empty() => {
            format!(" (check the model name, and {url} if it is set)")
        }
        ModelError::Transport { .. } if !url.is_empty() => {
            format!(" (check that the server is running, and {url} if it is set)")
        }
        _ => String::new(),
    };
    anyhow::anyhow!(
        "the model `{spec}` gave no answer{hint}: {}; run {run_id} is kept, continue it with `toolgate runs resume {run_id}`",
        with_causes(&error)
    )
}

/// The error and its causes, each once: `ModelError` already shows its
/// first cause, which an `anyhow` chain would print a second time.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let part = error.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = error.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_dead_process_of_this_host_is_taken_over() {
        let me = process_name("cli");
        assert!(!dead_local_process(&me), "this process runs");
        let (host, pid) = (host_name(), std::process::id());
        let linux = cfg!(target_os = "linux");
        assert_eq!(me.split(':').count(), if linux { 4 } else { 3 }, "{me}");
        // PIDs go up to 2^22 on Linux: this one is not running.
        let dead = format!("cli:{host}:4294967295");
        assert_eq!(dead_local_process(&dead), linux);
        assert_eq!(dead_local_process(&format!("{dead}:12345")), linux);
        // This process's PID, but another start: an earlier process that
        // had the same PID, which is gone.
        assert_eq!(dead_local_process(&format!("cli:{host}:{pid}:1")), linux);
        assert!(!dead_local_process(&format!("cli:{host}:{pid}")));
        assert!(!dead_local_process("cli:another-host:4294967295"));
        assert!(!dead_local_process("cli:another-host:4294967295:1"));
        assert!(!dead_local_process("worker-7"));
        assert!(!dead_local_process(&format!("cli:{host}:x")));
        assert!(!dead_local_process(&format!("cli:{host}:4294967295:soon")));
    }

    #[test]
    fn a_start_is_read_past_any_command_name() {
        let fields = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        assert_eq!(
            start_time(&format!("42 (toolgate) {fields}")),
            Some(987_654)
        );
        assert_eq!(start_time(&format!("42 (a) (b c) {fields}")), Some(987_654));
        assert_eq!(start_time("42 (toolgate) S 1 2"), None);
        assert_eq!(start_time("garbage"), None);
    }

    fn message(spec: &str, error: ModelError) -> String {
        format!("{:#}", model_failed(spec, "R", error))
    }

    fn api(provider: &str, status: u16) -> ModelError {
        ModelError::Api {
            provider: provider.to_owned(),
            status,
            message: "refused".to_owned(),
        }
    }

    #[test]
    fn model_errors_say_what_to_check() {
        assert_eq!(
            message("anthropic:claude-sonnet-4-5", api("anthropic", 403)),
            "the model `anthropic:claude-sonnet-4-5` gave no answer (check the key in ANTHROPIC_API_KEY): anthropic answered 403: refused; run R is kept, continue it with `toolgate runs resume R`"
        );
        assert_eq!(
            message("openai:gpt-9", api("openai", 404)),
            "the model `openai:gpt-9` gave no answer (check the model name, and OPENAI_BASE_URL if it is set): openai answered 404: refused; run R is kept, continue it with `toolgate runs resume R`"
        );
        let unreachable = ModelError::Transport {
            provider: "ollama".to_owned(),
            source: "connection refused".into(),
        };
        assert_eq!(
            message("ollama:llama3.2", unreachable),
            "the model `ollama:llama3.2` gave no answer (check that the server is running, and OLLAMA_BASE_URL if it is set): could not reach ollama: connection refused; run R is kept, continue it with `toolgate runs resume R`"
        );
        assert_eq!(
            message("openai:gpt-4o-mini", api("openai", 500)),
            "the model `openai:gpt-4o-mini` gave no answer: openai answered 500: refused; run R is kept, continue it with `toolgate runs resume R`"
        );
    }

    #[test]
    fn answers_are_read_case_insensitively_and_anything_else_is_a_no() {
        for (text, answer) in [
            ("y", Answer::Approve),
            (" YES ", Answer::Approve),
            ("r", Answer::ApproveForRun),
            ("E", Answer::Edit),
            ("edit", Answer::Edit),
            ("n", Answer::Reject),
            ("", Answer::Reject),
            ("sure", Answer::Reject),
        ] {
            assert_eq!(parse_answer(text), answer, "{text:?}");
        }
    }
}
