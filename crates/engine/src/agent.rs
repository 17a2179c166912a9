//! The agent: a model, tools, a policy and a store, and the loop that drives
//! runs over them.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use toolgate_core::grant::{Grant, GrantRequest};
use toolgate_core::policy::{Action, EvalInput, Policy, Verdict};
use toolgate_core::run::{Event, Gate, Next, Outcome, RunState};
use toolgate_core::store::{Append, ApprovalRow, GrantQuery, Lease, Store, StoreError};
use toolgate_core::time::{after, duration_millis};
use toolgate_core::{ChatModel, ChatRequest, Fingerprint, Messages, Principal, TextSink, Tools};

use crate::decide::{Decide, First, expire_due_in};
use crate::rows::{ApprovalMarks, approval_row, changed_approvals, run_row};
use crate::{Clock, EngineError, new_id, system_clock};
use crate::{DecideError, DecisionRequest};

/// What the engine does when a run must wait for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Return at once with [`RunOutcome::Waiting`]; the run stays
    /// suspended in the store until [`Agent::resume`].
    Suspend,
    /// Watch the store until people decide, for at most this long, then
    /// return [`RunOutcome::Waiting`].
    For(Duration),
}

/// Options of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunOptions {
    /// The conversation thread the run belongs to, for grants scoped to a
    /// thread.
    pub thread: Option<String>,
    /// Who starts the run; conditions see it as `principal`.
    pub principal: Option<String>,
}

impl RunOptions {
    /// Sets the thread.
    pub fn thread(mut self, thread: impl Into<String>) -> Self {
        self.thread = Some(thread.into());
        self
    }

    /// Sets who starts the run.
    pub fn principal(mut self, principal: impl Into<String>) -> Self {
        self.principal = Some(principal.into());
        self
    }
}

/// Where a run stands when the engine returns.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// The model gave its final answer.
    Completed {
        /// The run.
        run_id: String,
        /// The answer.
        answer: String,
    },
    /// The run waits for people: approvals to decide, or in-doubt calls to
    /// resolve. Resume it once they have.
    Waiting {
        /// The run.
        run_id: String,
        /// The approvals pending.
        approvals: Vec<ApprovalRow>,
        /// The ids of the calls in doubt.
        in_doubt: Vec<String>,
    },
    /// The run stopped with an error.
    Failed {
        /// The run.
        run_id: String,
        /// What went wrong.
        error: String,
    },
}

impl RunOutcome {
    /// The run.
    pub fn run_id(&self) -> &str {
        match self {
            RunOutcome::Completed { run_id, .. }
            | RunOutcome::Waiting { run_id, .. }
            | RunOutcome::Failed { run_id, .. } => run_id,
        }
    }
}

/// A model, its tools, a policy and a store: the production path.
///
/// `Agent::new(model, tools).policy(p).store(s).run(input)` runs the loop
/// model → gate → (wait) → execute → model … → final answer, committing
/// each step to the store before acting on it.
#[derive(Clone)]
pub struct Agent {
    model: Arc<dyn ChatModel>,
    tools: Tools,
    policy: Policy,
    store: Option<Arc<dyn Store>>,
    wait: Wait,
    clock: Clock,
    poll: Duration,
    on_text: Option<TextSink>,
    max_turns: u32,
    observer: Option<Observer>,
    lease: Option<LeaseSpec>,
    /// The folds of runs this agent left waiting, shared by its clones.
    kept: Arc<Kept>,
}

/// Who this agent drives runs as, and for how long a lease lasts between
/// renewals.
#[derive(Debug, Clone)]
struct LeaseSpec {
    owner: String,
    ttl: Duration,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("tools", &self.tools)
            .field("policy", &self.policy)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

/// How often a conditional append that lost a race is tried again.
const MAX_ATTEMPTS: u32 = 20;

impl Agent {
    /// An agent with no policy rules (each tool's hints decide: read-only
    /// tools run, the others wait for approval) that suspends on approvals.
    /// Give it a store before running.
    pub fn new(model: impl Into<Arc<dyn ChatModel>>, tools: Tools) -> Self {
        Agent {
            model: model.into(),
            tools,
            policy: Policy::default(),
            store: None,
            wait: Wait::Suspend,
            clock: system_clock(),
            poll: Duration::from_millis(100),
            on_text: None,
            max_turns: 25,
            observer: None,
            lease: None,
            kept: Arc::default(),
        }
    }

    /// Drives each run under a lease held as `owner` in the store, renewed
    /// every third of `ttl`: while this agent drives a run, no other
    /// process does (one that tries gets [`EngineError::Busy`]), and a run
    /// this process stops driving, even by dying, is free again after
    /// `ttl` at the latest. Needed when several processes drive the runs of
    /// one store, and by [`Agent::work`]; give every such process its own
    /// owner name.
    pub fn lease(mut self, owner: impl Into<String>, ttl: Duration) -> Self {
        self.lease = Some(LeaseSpec {
            owner: owner.into(),
            ttl: ttl.max(Duration::from_millis(30)),
        });
        self
    }

    /// Calls `observer` at every step: before and after each commit, and
    /// while a tool runs.
    pub fn observe(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// How many answers a run may ask the model for, in all (default 25).
    /// A run at the limit stops with [`EngineError::TurnLimit`] and stays
    /// resumable by an agent with a higher limit.
    pub fn max_turns(mut self, turns: u32) -> Self {
        self.max_turns = turns;
        self
    }

    /// The store, when one was given.
    pub fn store_handle(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// Streams the model's text into `sink` as it arrives.
    pub fn on_text(mut self, sink: TextSink) -> Self {
        self.on_text = Some(sink);
        self
    }

    /// Sets the policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the store.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        // Folds kept from another store (of a clone) are not this one's.
        self.kept = Arc::default();
        self
    }

    /// Sets what happens when a run must wait for people.
    pub fn wait(mut self, wait: Wait) -> Self {
        self.wait = wait;
        self
    }

    /// Sets the clock (tests).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// How often to look at the store while waiting in-process (default
    /// 100 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll = interval;
        self
    }

    /// The tools.
    pub fn tools(&self) -> &Tools {
        &self.tools
    }

    fn store_ref(&self) -> Result<&Arc<dyn Store>, EngineError> {
        self.store.as_ref().ok_or(EngineError::NoStore)
    }

    /// Starts a run with `input` and drives it until it completes, fails or
    /// must wait.
    pub async fn run(&self, input: impl Into<Messages>) -> Result<RunOutcome, EngineError> {
        self.start(input, RunOptions::default()).await
    }

    /// [`Agent::run`] with options.
    pub async fn start(
        &self,
        input: impl Into<Messages>,
        options: RunOptions,
    ) -> Result<RunOutcome, EngineError> {
        let run = self.create_loaded(input, options).await?;
        // A new run is created under this agent's lease, if it has one.
        self.drive_holding(run).await
    }

    /// Records a new run without driving it; returns its id.
    pub async fn create(
        &self,
        input: impl Into<Messages>,
        options: RunOptions,
    ) -> Result<String, EngineError> {
        Ok(self.create_loaded(input, options).await?.run_id)
    }

    /// Records a new run; returns its fold, so that driving it needs no
    /// read of what was just written.
    async fn create_loaded(
        &self,
        input: impl Into<Messages>,
        options: RunOptions,
    ) -> Result<Loaded, EngineError> {
        let store = self.store_ref()?;
        let run_id = new_id();
        let now = (self.clock)();
        let event = Event::RunStarted {
            messages: input.into().0,
            thread: options.thread,
            principal: options.principal,
        };
        let state = RunState::fold([&event]);
        let events = vec![event];
        self.notify(&Step::Committing(&events));
        store
            .append(Append {
                run_id: run_id.clone(),
                expected_version: 0,
                events,
                run: run_row(&run_id, &state, now, now),
                approvals: Vec::new(),
                grants: Vec::new(),
                lease: self
                    .lease
                    .as_ref()
                    .map(|lease| (lease.owner.clone(), after(now, lease.ttl))),
            })
            .await?;
        self.notify(&Step::Committed(&["run_started"]));
        Ok(Loaded {
            run_id,
            state,
            created_at: now,
        })
    }

    /// Continues a run from its log: after a restart, after people decided,
    /// in this process or any other with the same tools.
    ///
    /// Drive a run from one process at a time. Two at once stay safe (their
    /// appends are conditional, so each step happens once), but a process
    /// that resumes while another runs a tool finds the call started and
    /// not finished: it re-runs it only if the tool is idempotent, and
    /// otherwise marks it in doubt until the other's finish settles it.
    pub async fn resume(&self, run_id: &str) -> Result<RunOutcome, EngineError> {
        let store = self.store_ref()?;
        let run = match self.kept.take(run_id) {
            Some(run) => run.refresh(store.as_ref()).await?,
            None => Loaded::load(store.as_ref(), run_id).await?,
        };
        self.drive(run.engine_run()?).await
    }

    /// [`crate::decide`], for an approver in this agent's process (the
    /// command line's terminal approver, an application's own dialog):
    /// when this agent left run `run_id` waiting, the decision starts from
    /// the run as it kept it instead of reading and folding its whole log,
    /// and the fold is kept with the decision, so that [`Agent::resume`]
    /// goes on from there.
    ///
    /// The guarantees are those of [`crate::decide`]: the decision is
    /// appended at the version of the run it was checked against, so if
    /// anything was appended since (a decision made meanwhile elsewhere),
    /// the append conflicts and the decision is checked again against the
    /// run as stored. Runs this agent did not keep are decided from the
    /// store.
    #[allow(clippy::too_many_arguments)]
    pub async fn decide(
        &self,
        principal: &Principal,
        run_id: &str,
        approval_id: &str,
        fingerprint: &Fingerprint,
        request: DecisionRequest,
        grant: Option<GrantRequest>,
        now: i64,
    ) -> Result<ApprovalRow, DecideError> {
        let store = self.store_ref()?;
        let decision = Decide {
            principal,
            approval_id,
            fingerprint: Some(fingerprint),
            request,
            grant,
            now,
        };
        match self.kept.take(run_id) {
            Some(kept) if kept.state.approval(approval_id).is_some() => {
                let recorded = decision
                    .record(store.as_ref(), run_id, Some(First::Kept(kept)), false)
                    .await?;
                let row = recorded.row(approval_id, now);
                self.kept.keep(recorded.run);
                Ok(row)
            }
            other => {
                // Not this run's approval: the run stays kept as it was.
                if let Some(kept) = other {
                    self.kept.keep(kept);
                }
                let recorded = decision.record_in_store(store.as_ref(), false).await?;
                Ok(recorded.row(approval_id, now))
            }
        }
    }

    /// Takes runs that are ready for the engine (a decision came, or a
    /// process driving them died) and drives each, until `stop` completes;
    /// each outcome is reported to the observer as [`Step::Drove`]. Needs a
    /// [`Agent::lease`]: runs are claimed with it, so that several workers
    /// share the runs of one store, each run driven by one at a time.
    pub async fn work(
        &self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), EngineError> {
        let store = self.store_ref()?;
        let lease = self.lease.as_ref().ok_or(EngineError::NoLease)?;
        let ttl = duration_millis(lease.ttl);
        let mut stop = std::pin::pin!(stop);
        let mut head = store.audit_head().await?;
        loop {
            let now = (self.clock)();
            let claimed = store
                .claim_ready_runs(&lease.owner, now.saturating_add(ttl), now, 8)
                .await?;
            if claimed.is_empty() {
                // Woken at once by stores that notify (PostgreSQL), else
                // after the poll interval.
                let wait = async {
                    match store.wait_for_change(head, self.poll).await {
                        Ok(Some(seq)) => head = head.max(seq),
                        Ok(None) | Err(_) => tokio::time::sleep(self.poll).await,
                    }
                };
                tokio::select! {
                    () = &mut stop => return Ok(()),
                    () = wait => {}
                }
                continue;
            }
            for run_id in claimed {
                let outcome = self.drive_leased(store, &run_id).await;
                self.notify(&Step::Drove(&run_id, &outcome));
            }
        }
    }

    /// Drives a run whose lease this agent holds already, then gives the
    /// lease up.
    async fn drive_leased(
        &self,
        store: &Arc<dyn Store>,
        run_id: &str,
    ) -> Result<RunOutcome, EngineError> {
        match Loaded::load(store.as_ref(), run_id)
            .await
            .and_then(Loaded::engine_run)
        {
            Ok(run) => self.drive_holding(run).await,
            Err(error) => {
                self.release_lease(store.as_ref(), run_id, None).await;
                Err(error)
            }
        }
    }

    /// Drives a folded run until it completes, fails or must wait, under
    /// this agent's lease when it has one.
    async fn drive(&self, run: Loaded) -> Result<RunOutcome, EngineError> {
        let store = self.store_ref()?;
        let Some(lease) = &self.lease else {
            return self.drive_unleased(run, None).await;
        };
        let now = (self.clock)();
        match store
            .lease_run(&run.run_id, &lease.owner, after(now, lease.ttl), now)
            .await?
        {
            Lease::Held => {}
            Lease::Busy { owner, until } => {
                return Err(EngineError::Busy {
                    run_id: run.run_id,
                    owner,
                    until,
                });
            }
        }
        self.drive_holding(run).await
    }

    /// Drives a run whose lease this agent holds (when it leases at all):
    /// renews the lease meanwhile, and gives it up at the end.
    async fn drive_holding(&self, run: Loaded) -> Result<RunOutcome, EngineError> {
        let store = self.store_ref()?;
        let run_id = run.run_id.clone();
        let renewer = self.renew_lease(&run_id);
        let result = self.drive_unleased(run, renewer.as_ref()).await;
        self.release_lease(store.as_ref(), &run_id, renewer).await;
        result
    }

    /// Renews this agent's lease on `run_id` in the background, every third
    /// of its time, until dropped; says when the lease was lost.
    fn renew_lease(&self, run_id: &str) -> Option<Renewer> {
        let lease = self.lease.clone()?;
        let store = Arc::clone(self.store.as_ref()?);
        let clock = Arc::clone(&self.clock);
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&lost);
        let run_id = run_id.to_owned();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease.ttl / 3).await;
                let now = clock();
                let renewed = store
                    .lease_run(&run_id, &lease.owner, after(now, lease.ttl), now)
                    .await;
                if matches!(renewed, Ok(Lease::Busy { .. })) {
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
            }
        });
        Some(Renewer { task, lost })
    }

    /// Stops renewing, and gives the lease up.
    async fn release_lease(&self, store: &dyn Store, run_id: &str, renewer: Option<Renewer>) {
        if let Some(renewer) = renewer {
            renewer.task.abort();
        }
        if let Some(lease) = &self.lease {
            // A release that fails leaves a lease that lapses by itself.
            let _ = store.release_run(run_id, &lease.owner).await;
        }
    }

    /// Drives a folded run until it completes, fails or must wait.
    async fn drive_unleased(
        &self,
        mut run: Loaded,
        renewer: Option<&Renewer>,
    ) -> Result<RunOutcome, EngineError> {
        let store = self.store_ref()?;
        let run_id = run.run_id.clone();
        let run_id = run_id.as_str();
        let deadline = match self.wait {
            Wait::Suspend => None,
            Wait::For(limit) => Some(tokio::time::Instant::now() + limit),
        };
        let mut conflicts = 0;
        loop {
            if renewer.is_some_and(Renewer::is_lost) {
                return Err(EngineError::LeaseLost {
                    run_id: run_id.to_owned(),
                });
            }
            match self.step(store.as_ref(), &mut run).await {
                Ok(Progress::Advanced) => conflicts = 0,
                Ok(Progress::Stopped) => {
                    if run.state.status.is_finished() {
                        return Ok(outcome(run_id, &run.state));
                    }
                    // Approvals past their time are rejected now, and the
                    // run goes on with that.
                    if expire_due_in(store.as_ref(), &mut run, (self.clock)()).await? {
                        continue;
                    }
                    let now = tokio::time::Instant::now();
                    match deadline {
                        Some(limit) if now < limit => {
                            tokio::time::sleep(self.poll.min(limit - now)).await;
                            run = run.refresh(store.as_ref()).await?;
                        }
                        _ => {
                            let outcome = outcome(run_id, &run.state);
                            self.kept.keep(run);
                            return Ok(outcome);
                        }
                    }
                }
                Err(Failure::Conflict) => {
                    conflicts += 1;
                    if conflicts >= MAX_ATTEMPTS {
                        return Err(EngineError::Contended {
                            run_id: run_id.to_owned(),
                            attempts: conflicts,
                        });
                    }
                    run = Loaded::load(store.as_ref(), run_id).await?;
                }
                Err(Failure::Engine(error)) => return Err(error),
            }
        }
    }

    /// Does the next thing the run needs, committing it.
    async fn step(&self, store: &dyn Store, run: &mut Loaded) -> Result<Progress, Failure> {
        match run.state.next() {
            Next::Done | Next::Wait => Ok(Progress::Stopped),
            Next::CallModel => {
                let turns = run
                    .state
                    .messages
                    .iter()
                    .filter(|m| matches!(m, toolgate_core::Message::Ai(_)))
                    .count();
                if turns >= self.max_turns as usize {
                    return Err(Failure::Engine(EngineError::TurnLimit {
                        run_id: run.run_id.clone(),
                        turns: self.max_turns,
                    }));
                }
                let mut request = ChatRequest::new(run.state.messages.clone(), self.tools.specs());
                if let Some(sink) = &self.on_text {
                    request = request.on_text(Arc::clone(sink));
                }
                let answer = self
                    .model
                    .generate(request)
                    .await
                    .map_err(EngineError::from)?;
                let mut events = vec![Event::ModelTurn {
                    message: answer.clone(),
                }];
                if answer.tool_calls.is_empty() {
                    events.push(Event::RunCompleted {
                        answer: answer.content,
                    });
                } else {
                    // One commit for the turn and its verdicts: gating needs
                    // no person, so there is nothing to wait for between.
                    let mut turn = run.state.clone();
                    turn.apply(&events[0]);
                    events.extend(self.gate(store, &run.run_id, &turn).await?);
                }
                self.commit(store, run, events).await
            }
            Next::Gate(_) => {
                let events = self.gate(store, &run.run_id, &run.state).await?;
                self.commit(store, run, events).await
            }
            Next::Execute(index) => self.execute(store, run, index).await,
            Next::Recover(index) => {
                let call = &run.state.calls[index];
                let tool =
                    self.tools
                        .get(&call.call.name)
                        .ok_or_else(|| EngineError::MissingTool {
                            run_id: run.run_id.clone(),
                            tool: call.call.name.clone(),
                        })?;
                if tool.spec().hints.idempotent == Some(true) {
                    self.execute(store, run, index).await
                } else {
                    let call_id = call.call.id.clone();
                    self.commit(store, run, vec![Event::ToolInDoubt { call_id }])
                        .await
                }
            }
        }
    }

    /// Gates every call of the turn that is not gated yet.
    ///
    /// `state` is the run as it will be once the events before these are
    /// appended: the model's turn is gated in the same commit as the turn.
    async fn gate(
        &self,
        store: &dyn Store,
        run_id: &str,
        state: &RunState,
    ) -> Result<Vec<Event>, Failure> {
        let now = (self.clock)();
        let mut events = Vec::new();
        let mut grants = None;
        let principal = state.principal.clone().map(Value::String);
        for call in state.calls.iter().filter(|c| c.gate.is_none()) {
            let call = &call.call;
            let tool = match self.tools.check(call) {
                Ok(tool) => tool,
                Err(error) => {
                    events.push(Event::GateVerdict {
                        call_id: call.id.clone(),
                        verdict: Gate::Invalid {
                            error: error.to_string(),
                        },
                        condition_errors: Vec::new(),
                    });
                    continue;
                }
            };
            let spec = tool.spec();
            let mut input = EvalInput::call(call)
                .hints(spec.hints)
                .run(run_id, state.thread.as_deref());
            if let Some(principal) = &principal {
                input = input.principal(principal);
            }
            let (gate, verdict) = gate_call(store, &self.policy, &input, &mut grants, now).await?;
            let ask = matches!(gate, Gate::Ask { .. });
            events.push(Event::GateVerdict {
                call_id: call.id.clone(),
                verdict: gate,
                condition_errors: verdict.condition_errors.clone(),
            });
            if ask {
                let ask = verdict.ask.clone().unwrap_or_default();
                let expires_at = ask.timeout.map(|timeout| after(now, timeout));
                events.push(Event::ApprovalRequested {
                    call_id: call.id.clone(),
                    approval_id: new_id(),
                    fingerprint: call.fingerprint(&spec.parameters),
                    ask,
                    requested_at: now,
                    expires_at,
                    description: spec.description.clone(),
                    schema: spec.parameters.clone(),
                });
            }
        }
        Ok(events)
    }

    /// Runs one cleared call: `ToolStarted` is committed first, then the
    /// tool runs, then `ToolFinished` is committed.
    async fn execute(
        &self,
        store: &dyn Store,
        run: &mut Loaded,
        index: usize,
    ) -> Result<Progress, Failure> {
        // The call as it runs: with the edited arguments after an edit.
        let checked = {
            let call = &run.state.calls[index];
            toolgate_core::ToolCall {
                args: call.effective_args().clone(),
                ..call.call.clone()
            }
        };
        let tool =
            self.tools
                .get(&checked.name)
                .cloned()
                .ok_or_else(|| EngineError::MissingTool {
                    run_id: run.run_id.clone(),
                    tool: checked.name.clone(),
                })?;
        self.commit(
            store,
            run,
            vec![Event::ToolStarted {
                call_id: checked.id.clone(),
                args: checked.args.clone(),
            }],
        )
        .await?;
        // Checked again: edited arguments were checked when decided, but the
        // tool set of this process is what the call runs against.
        self.notify(&Step::ToolRunning(&checked));
        let outcome = match self.tools.check(&checked) {
            Ok(_) => match tool.call(checked.args.clone()).await {
                Ok(output) => Outcome::Output { output },
                Err(error) => Outcome::Error {
                    error: error.to_string(),
                },
            },
            Err(error) => Outcome::Error {
                error: error.to_string(),
            },
        };
        // The tool ran: this commit must not be lost to a conflict, so it is
        // retried on a fresh fold (nothing else may finish this call).
        let finished = Event::ToolFinished {
            call_id: checked.id,
            outcome,
        };
        for _ in 0..MAX_ATTEMPTS {
            match self.commit(store, run, vec![finished.clone()]).await {
                Err(Failure::Conflict) => {
                    *run = Loaded::load(store, &run.run_id).await?;
                }
                other => return other,
            }
        }
        Err(Failure::Engine(EngineError::Contended {
            run_id: run.run_id.clone(),
            attempts: MAX_ATTEMPTS,
        }))
    }

    async fn commit(
        &self,
        store: &dyn Store,
        run: &mut Loaded,
        events: Vec<Event>,
    ) -> Result<Progress, Failure> {
        self.notify(&Step::Committing(&events));
        let kinds: Vec<&'static str> = events.iter().map(Event::kind).collect();
        match append_events(store, run, events, Vec::new(), (self.clock)()).await {
            Ok(()) => {
                self.notify(&Step::Committed(&kinds));
                Ok(Progress::Advanced)
            }
            Err(StoreError::Conflict { .. }) => Err(Failure::Conflict),
            Err(error) => Err(Failure::Engine(error.into())),
        }
    }

    fn notify(&self, step: &Step<'_>) {
        if let Some(observer) = &self.observer {
            observer(step);
        }
    }
}

/// What policy, then standing grants, say about one valid call: grants
/// turn an `ask` into a run, never a `deny`. `grants` caches the grants
/// that reach the call's run across the calls of one turn.
pub(crate) async fn gate_call(
    store: &dyn Store,
    policy: &Policy,
    input: &EvalInput<'_>,
    grants: &mut Option<Vec<Grant>>,
    now: i64,
) -> Result<(Gate, Verdict), EngineError> {
    let verdict = policy.evaluate(input);
    let mut gate = match verdict.action {
        Action::Allow => Gate::Allow {
            by: verdict.decided_by.clone(),
        },
        Action::Deny => Gate::Deny {
            by: verdict.decided_by.clone(),
            reason: verdict.reason.as_deref().map(str::to_owned),
        },
        Action::Ask => Gate::Ask {
            by: verdict.decided_by.clone(),
        },
    };
    if matches!(gate, Gate::Ask { .. }) {
        let live = match grants {
            Some(grants) => grants,
            None => {
                let run = input.run.as_ref();
                let query = GrantQuery::live(now)
                    .reaching(run.map(|run| run.id), run.and_then(|run| run.thread));
                grants.insert(store.grants(&query).await?)
            }
        };
        for grant in live.iter().filter(|g| g.covers(input, now)) {
            if store.use_grant(&grant.id).await? {
                gate = Gate::Granted {
                    grant_id: grant.id.clone(),
                };
                break;
            }
        }
    }
    Ok((gate, verdict))
}

/// The background renewal of a run's lease.
struct Renewer {
    task: tokio::task::JoinHandle<()>,
    lost: Arc<std::sync::atomic::AtomicBool>,
}

impl Renewer {
    fn is_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A step of the engine, as observers see it: for progress reports,
/// metrics, and tests that stop a process at an exact point.
#[derive(Debug)]
#[non_exhaustive]
pub enum Step<'a> {
    /// These events are about to be appended.
    Committing(&'a [Event]),
    /// Events of these kinds were appended (the store acknowledged them).
    Committed(&'a [&'static str]),
    /// A tool is running (its start is committed).
    ToolRunning(&'a toolgate_core::ToolCall),
    /// [`Agent::work`] drove this run, with this outcome.
    Drove(&'a str, &'a Result<RunOutcome, EngineError>),
}

/// Sees every [`Step`] of the engine, on the task that takes it.
pub type Observer = Arc<dyn Fn(&Step<'_>) + Send + Sync>;

/// Appends `events` (and `grants`) at the version the run was folded at,
/// with the rows they change, and folds them in.
///
/// The events are folded into `run` before the append, so that the state
/// is not copied for every commit: after an error (a conflict included)
/// `run` is not the fold of the log, and must be loaded again before use.
pub(crate) async fn append_events(
    store: &dyn Store,
    run: &mut Loaded,
    events: Vec<Event>,
    grants: Vec<Grant>,
    now: i64,
) -> Result<(), StoreError> {
    let append = fold_append(run, events, grants, now);
    store.append(append).await?;
    Ok(())
}

/// [`append_events`] with [`Store::append_deferred`].
pub(crate) async fn append_events_deferred(
    store: &dyn Store,
    run: &mut Loaded,
    events: Vec<Event>,
    now: i64,
) -> Result<(), StoreError> {
    let append = fold_append(run, events, Vec::new(), now);
    store.append_deferred(append).await?;
    Ok(())
}

/// Folds `events` into `run` and makes the append that stores them.
fn fold_append(run: &mut Loaded, events: Vec<Event>, grants: Vec<Grant>, now: i64) -> Append {
    let expected_version = run.state.version;
    let before = ApprovalMarks::of(&run.state);
    for event in &events {
        run.state.apply(event);
    }
    let approvals = changed_approvals(&run.run_id, &before, &run.state, now);
    Append {
        run_id: run.run_id.clone(),
        expected_version,
        events,
        run: run_row(&run.run_id, &run.state, run.created_at, now),
        approvals,
        grants,
        lease: None,
    }
}

/// A run's fold, with what its rows need.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) run_id: String,
    pub(crate) state: RunState,
    pub(crate) created_at: i64,
}

impl Loaded {
    pub(crate) async fn load(store: &dyn Store, run_id: &str) -> Result<Loaded, EngineError> {
        let events = store.load(run_id).await?;
        Ok(Loaded::of(run_id, &events))
    }

    /// The run, unless an outside agent drives it (the engine has no model
    /// or tools for such a run).
    pub(crate) fn engine_run(self) -> Result<Loaded, EngineError> {
        if self.state.external {
            return Err(EngineError::External {
                run_id: self.run_id,
            });
        }
        Ok(self)
    }

    /// The fold of run `run_id`'s log, `events`.
    pub(crate) fn of(run_id: &str, events: &[toolgate_core::store::StoredEvent]) -> Loaded {
        Loaded {
            run_id: run_id.to_owned(),
            state: RunState::fold(events.iter().map(|e| &e.event)),
            created_at: events.first().map_or(0, |e| e.at),
        }
    }

    /// The fold brought up to date with what was appended since: by this
    /// process, others, or people deciding. Folding the new events onto
    /// the fold of the older ones is the fold of the whole log.
    async fn refresh(mut self, store: &dyn Store) -> Result<Loaded, EngineError> {
        let events = store.load_since(&self.run_id, self.state.version).await?;
        if events
            .first()
            .is_some_and(|first| first.seq != self.state.version + 1)
        {
            // Not the events after this fold (a store that ignores
            // `after`?): fold the whole log instead.
            return Loaded::load(store, &self.run_id).await;
        }
        for event in &events {
            self.state.apply(&event.event);
        }
        Ok(self)
    }
}

/// How many waiting runs' folds an agent keeps at most: a run is resumed
/// from its kept fold plus the events appended since (a decision, mostly)
/// instead of its whole log.
const MAX_KEPT: usize = 1024;

/// The folds of runs an agent left waiting, by run.
///
/// A kept fold is only a head start: it is brought up to date from the
/// store before use, and should it still be behind, the conditional append
/// conflicts and the run is loaded again. So it is safe with other
/// processes driving the same runs.
#[derive(Default)]
struct Kept(Mutex<HashMap<String, Loaded>>);

impl Kept {
    fn keep(&self, run: Loaded) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() >= MAX_KEPT {
            // Runs left waiting and never resumed here would otherwise
            // fill it; forgetting them all costs each a full load.
            kept.clear();
        }
        kept.insert(run.run_id.clone(), run);
    }

    fn take(&self, run_id: &str) -> Option<Loaded> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(run_id)
    }
}

enum Progress {
    Advanced,
    Stopped,
}

enum Failure {
    Conflict,
    Engine(EngineError),
}

impl From<EngineError> for Failure {
    fn from(error: EngineError) -> Self {
        Failure::Engine(error)
    }
}

/// The outcome for a run that can go no further now.
fn outcome(run_id: &str, state: &RunState) -> RunOutcome {
    use toolgate_core::run::RunStatus;
    match &state.status {
        RunStatus::Completed { answer } => RunOutcome::Completed {
            run_id: run_id.to_owned(),
            answer: answer.clone(),
        },
        RunStatus::Failed { error } => RunOutcome::Failed {
            run_id: run_id.to_owned(),
            error: error.clone(),
        },
        RunStatus::Running | RunStatus::Waiting => RunOutcome::Waiting {
            run_id: run_id.to_owned(),
            approvals: state
                .pending_approvals()
                .map(|a| approval_row(run_id, a, None))
                .collect(),
            in_doubt: state.in_doubt().map(|c| c.call.id.clone()).collect(),
        },
    }
}
