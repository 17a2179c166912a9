//! Runs: one agent conversation as a log of events, and its state as the
//! fold of that log.
//!
//! The engine never keeps a run's state anywhere but in its log. To act, it
//! folds the log into a [`RunState`], asks [`RunState::next`] what to do,
//! does it, and appends the event that records it. Whoever folds the same
//! log gets the same state, in any process, on any host: that is how a
//! suspended run resumes where it stopped.
//!
//! Architecture invariant: the fold is total. Every log the engine can
//! write folds without error; an event that does not fit the state (a
//! decision for an approval that is not pending, say) is ignored by the
//! fold, and the engine checks before it appends so that none is written.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::fingerprint::Fingerprint;
use crate::grant::Grant;
use crate::message::{AiMessage, Message, ToolMessage};
use crate::policy::{AskSpec, ConditionError, DecidedBy};
use crate::tool::ToolCall;

/// One step of a run, as appended to its log.
///
/// Serialised tagged by `type` in `snake_case` (`{"type": "tool_started",
/// …}`); this is the format of the store and of `toolgate audit export`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A run began with these messages.
    RunStarted {
        /// The conversation the run starts from.
        messages: Vec<Message>,
        /// The thread the run belongs to, for grants scoped to a thread.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread: Option<String>,
        /// Who started the run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        principal: Option<String>,
    },
    /// An outside agent asked, over toolgate's API, whether it may make a
    /// call (it runs the tool itself). A run whose log starts with this
    /// event is an *external* run: toolgate gates and records its calls,
    /// and never calls a model or a tool for it.
    CallRequested {
        /// The call the agent wants to make.
        call: ToolCall,
        /// Who asked.
        principal: String,
        /// The agent's conversation thread, for grants scoped to a thread.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread: Option<String>,
        /// What the agent tells the people deciding (any JSON).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context: Option<Value>,
    },
    /// The model answered.
    ModelTurn {
        /// Its answer, with the tool calls it wants.
        message: AiMessage,
    },
    /// The gate decided what happens to one call.
    GateVerdict {
        /// The call.
        call_id: String,
        /// What the gate decided, and why.
        verdict: Gate,
        /// `when` conditions that failed while deciding, and so failed
        /// closed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        condition_errors: Vec<ConditionError>,
    },
    /// A call waits for people.
    ApprovalRequested {
        /// The call.
        call_id: String,
        /// The approval's id.
        approval_id: String,
        /// The fingerprint a decision must name.
        fingerprint: Fingerprint,
        /// Who may decide, how many must agree, how long to wait.
        ask: AskSpec,
        /// When it was requested (Unix milliseconds).
        requested_at: i64,
        /// When the approval expires (Unix milliseconds), if it does.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<i64>,
        /// The tool's description, for the people deciding.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        description: String,
        /// The JSON Schema of the tool's arguments: edits are checked
        /// against it.
        schema: Value,
    },
    /// A person decided an approval.
    DecisionRecorded {
        /// The approval.
        approval_id: String,
        /// What they decided.
        decision: Decision,
        /// Who decided.
        principal: String,
        /// The fingerprint they decided on.
        fingerprint: Fingerprint,
        /// A standing approval the decision also made, for later calls.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant: Option<Grant>,
    },
    /// Nobody decided in time; the call is rejected.
    ApprovalExpired {
        /// The approval.
        approval_id: String,
    },
    /// The outside agent that asked gave up waiting (its client went, or
    /// cancelled): the approval is cancelled and the call will not be made.
    CallWithdrawn {
        /// The approval.
        approval_id: String,
        /// Why, as the agent said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A tool is about to run. Committed before the tool is called.
    ToolStarted {
        /// The call.
        call_id: String,
        /// The arguments it runs with (the edited ones, after an edit).
        args: Map<String, Value>,
    },
    /// A tool ran. Committed after the tool returned.
    ToolFinished {
        /// The call.
        call_id: String,
        /// What it returned, or how it failed.
        outcome: Outcome,
    },
    /// A tool started and never finished, and it is not idempotent: a
    /// person must say what happened.
    ToolInDoubt {
        /// The call.
        call_id: String,
    },
    /// A person resolved an in-doubt call.
    InDoubtResolved {
        /// The call.
        call_id: String,
        /// What they said.
        resolution: Resolution,
        /// Who said it.
        principal: String,
    },
    /// The model gave its final answer.
    RunCompleted {
        /// The answer.
        answer: String,
    },
    /// The run stopped with an error.
    RunFailed {
        /// What went wrong.
        error: String,
    },
}

impl Event {
    /// The event's `type`, as serialised.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::RunStarted { .. } => "run_started",
            Event::CallRequested { .. } => "call_requested",
            Event::ModelTurn { .. } => "model_turn",
            Event::GateVerdict { .. } => "gate_verdict",
            Event::ApprovalRequested { .. } => "approval_requested",
            Event::DecisionRecorded { .. } => "decision_recorded",
            Event::ApprovalExpired { .. } => "approval_expired",
            Event::CallWithdrawn { .. } => "call_withdrawn",
            Event::ToolStarted { .. } => "tool_started",
            Event::ToolFinished { .. } => "tool_finished",
            Event::ToolInDoubt { .. } => "tool_in_doubt",
            Event::InDoubtResolved { .. } => "in_doubt_resolved",
            Event::RunCompleted { .. } => "run_completed",
            Event::RunFailed { .. } => "run_failed",
        }
    }
}

/// What the gate decided for one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Gate {
    /// The call runs: policy allowed it.
    Allow {
        /// The rule (or the tool's hints) that allowed it.
        by: DecidedBy,
    },
    /// The call runs: a standing grant covers it.
    Granted {
        /// The grant.
        grant_id: String,
    },
    /// The call waits for people.
    Ask {
        /// The rule (or the tool's hints) that asked.
        by: DecidedBy,
    },
    /// The call is refused.
    Deny {
        /// The rule that denied it.
        by: DecidedBy,
        /// Why, for the model.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The call cannot run: unknown tool, or arguments that fail the
    /// schema.
    Invalid {
        /// What is wrong, for the model.
        error: String,
    },
}

/// A person's decision on an approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum Decision {
    /// Run the call as it is.
    Approve,
    /// Run the call with other arguments (already checked against the
    /// tool's schema); counts as the editor's approval of them.
    Edit {
        /// The new arguments.
        args: Map<String, Value>,
        /// The fingerprint of the call with the new arguments.
        new_fingerprint: Fingerprint,
    },
    /// Do not run the call; the message goes back to the model.
    Reject {
        /// Why, for the model.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

impl Decision {
    /// `approve`, `edit` or `reject`.
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Edit { .. } => "edit",
            Decision::Reject { .. } => "reject",
        }
    }
}

/// How a tool call ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The tool returned this.
    Output {
        /// The tool's output.
        output: Value,
    },
    /// The tool failed.
    Error {
        /// How.
        error: String,
    },
}

/// What a person says about an in-doubt call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "resolution", rename_all = "snake_case")]
pub enum Resolution {
    /// Run it again.
    Retry,
    /// It did run; this is what it returned.
    Done {
        /// The output to give the model.
        output: Value,
    },
    /// Count it as failed.
    Fail {
        /// Why, for the model.
        message: String,
    },
}

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    /// Waiting for people.
    Pending,
    /// Approved as asked.
    Approved,
    /// Approved with edited arguments.
    Edited,
    /// Rejected by a person.
    Rejected,
    /// Nobody decided in time.
    Expired,
    /// Withdrawn: the run ended without it.
    Cancelled,
}

impl ApprovalStatus {
    /// The status as a lower-case word.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Edited => "edited",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a lower-case status word.
    pub fn parse(text: &str) -> Option<ApprovalStatus> {
        Some(match text {
            "pending" => ApprovalStatus::Pending,
            "approved" => ApprovalStatus::Approved,
            "edited" => ApprovalStatus::Edited,
            "rejected" => ApprovalStatus::Rejected,
            "expired" => ApprovalStatus::Expired,
            "cancelled" => ApprovalStatus::Cancelled,
            _ => return None,
        })
    }
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decision as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Who decided.
    pub principal: String,
    /// What.
    pub decision: Decision,
}

/// An approval, as the fold of its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalState {
    /// The approval's id.
    pub id: String,
    /// The call as the model proposed it.
    pub call: ToolCall,
    /// The arguments the call will run with: the model's, or the last
    /// edit's.
    pub args: Map<String, Value>,
    /// The fingerprint a decision must name now.
    pub fingerprint: Fingerprint,
    /// Who may decide, how many, how long.
    pub ask: AskSpec,
    /// The rule that asked (or the tool's hints: `default`).
    pub rule: DecidedBy,
    /// When it was requested (Unix milliseconds).
    pub requested_at: i64,
    /// When it expires (Unix milliseconds).
    pub expires_at: Option<i64>,
    /// The tool's description.
    pub description: String,
    /// The JSON Schema of the tool's arguments.
    pub schema: Value,
    /// What the requesting agent told the people deciding (external runs).
    pub context: Option<Value>,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// For an external run's call that policy or a grant settled at once:
    /// `policy (RULE)` or `grant GRANT-ID`. Nobody decides such an
    /// approval; it records the verdict the agent was given.
    pub settled_by: Option<String>,
    /// The principals whose approval of the current fingerprint counts.
    pub approved_by: Vec<String>,
    /// Who edited the arguments last, if anyone.
    pub edited_by: Option<String>,
    /// Every decision, in order.
    pub decisions: Vec<DecisionRecord>,
}

/// Why a decision cannot be recorded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecisionError {
    /// The approval was decided already (possibly by a concurrent decider).
    #[error("approval {id} is already {status}{}", by.as_ref().map(|by| format!(" by {by}")).unwrap_or_default())]
    AlreadyDecided {
        /// The approval.
        id: String,
        /// Its status now.
        status: ApprovalStatus,
        /// Who decided it last.
        by: Option<String>,
    },
    /// The decision names other arguments than the ones pending.
    #[error(
        "the decision is for fingerprint {given}, but approval {id} is for {expected}: the call's arguments are not the ones you saw; look at it again"
    )]
    FingerprintMismatch {
        /// The approval.
        id: String,
        /// The fingerprint pending.
        expected: Fingerprint,
        /// The fingerprint the decision named.
        given: Fingerprint,
    },
    /// This principal approved already; approvals by one person count once.
    #[error(
        "{principal} has already approved approval {id}; it needs approvals from {needed} more distinct approver(s)"
    )]
    AlreadyApproved {
        /// The approval.
        id: String,
        /// Who.
        principal: String,
        /// How many more are needed.
        needed: usize,
    },
}

impl ApprovalState {
    /// Checks that `principal` may record a decision on `fingerprint` now.
    /// Who may decide at all (roles, approver lists) is the caller's check.
    pub fn check_decision(
        &self,
        principal: &str,
        decision: &Decision,
        fingerprint: &Fingerprint,
    ) -> Result<(), DecisionError> {
        if self.status != ApprovalStatus::Pending {
            return Err(DecisionError::AlreadyDecided {
                id: self.id.clone(),
                status: self.status,
                by: self.decisions.last().map(|d| d.principal.clone()),
            });
        }
        if fingerprint != &self.fingerprint {
            return Err(DecisionError::FingerprintMismatch {
                id: self.id.clone(),
                expected: self.fingerprint.clone(),
                given: fingerprint.clone(),
            });
        }
        if matches!(decision, Decision::Approve) && self.approved_by.iter().any(|p| p == principal)
        {
            return Err(DecisionError::AlreadyApproved {
                id: self.id.clone(),
                principal: principal.to_owned(),
                needed: self.still_needed(),
            });
        }
        Ok(())
    }

    /// How many more distinct approvals the approval needs.
    pub fn still_needed(&self) -> usize {
        (self.ask.quorum as usize).saturating_sub(self.approved_by.len())
    }

    fn record(&mut self, principal: &str, decision: &Decision) {
        self.decisions.push(DecisionRecord {
            principal: principal.to_owned(),
            decision: decision.clone(),
        });
        match decision {
            Decision::Approve => {
                if !self.approved_by.iter().any(|p| p == principal) {
                    self.approved_by.push(principal.to_owned());
                }
            }
            Decision::Edit {
                args,
                new_fingerprint,
            } => {
                // Approvals of the old arguments do not carry over.
                self.args = args.clone();
                self.fingerprint = new_fingerprint.clone();
                self.approved_by = vec![principal.to_owned()];
                self.edited_by = Some(principal.to_owned());
            }
            Decision::Reject { .. } => {
                self.status = ApprovalStatus::Rejected;
                return;
            }
        }
        if self.still_needed() == 0 {
            self.status = if self.edited_by.is_some() {
                ApprovalStatus::Edited
            } else {
                ApprovalStatus::Approved
            };
        }
    }
}

/// One call of the current model turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallState {
    /// The call as the model proposed it.
    pub call: ToolCall,
    /// What the gate decided, once it has.
    pub gate: Option<Gate>,
    /// The approval, when the gate asked.
    pub approval: Option<ApprovalState>,
    /// How many times the tool was started.
    pub attempts: u32,
    /// True while a start has no finish.
    pub running: bool,
    /// True when a start without a finish was found and the tool is not
    /// idempotent: waiting for a person.
    pub in_doubt: bool,
    /// The result for the model, once the call is over.
    pub result: Option<ToolMessage>,
    /// What the requesting agent told the people deciding (external runs).
    pub context: Option<Value>,
}

impl CallState {
    fn new(call: ToolCall, context: Option<Value>) -> CallState {
        CallState {
            call,
            gate: None,
            approval: None,
            attempts: 0,
            running: false,
            in_doubt: false,
            result: None,
            context,
        }
    }

    /// The arguments the call runs with: the edited ones after an edit.
    pub fn effective_args(&self) -> &Map<String, Value> {
        match &self.approval {
            Some(approval) => &approval.args,
            None => &self.call.args,
        }
    }

    /// True when the call may run now: allowed, granted or approved, and
    /// not run yet (or retried).
    pub fn is_cleared(&self) -> bool {
        match &self.gate {
            Some(Gate::Allow { .. } | Gate::Granted { .. }) => true,
            Some(Gate::Ask { .. }) => self.approval.as_ref().is_some_and(|a| {
                matches!(a.status, ApprovalStatus::Approved | ApprovalStatus::Edited)
            }),
            _ => false,
        }
    }
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RunStatus {
    /// The engine has work to do.
    Running,
    /// Waiting for people: approvals to decide or in-doubt calls to
    /// resolve.
    Waiting,
    /// The model answered without calling tools.
    Completed {
        /// The answer.
        answer: String,
    },
    /// The run stopped with an error.
    Failed {
        /// What went wrong.
        error: String,
    },
}

impl RunStatus {
    /// `running`, `waiting`, `completed` or `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed { .. } => "completed",
            RunStatus::Failed { .. } => "failed",
        }
    }

    /// True for completed and failed runs.
    pub fn is_finished(&self) -> bool {
        matches!(self, RunStatus::Completed { .. } | RunStatus::Failed { .. })
    }
}

/// What the engine should do next for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Ask the model, with [`RunState::messages`].
    CallModel,
    /// Gate the call at this index of [`RunState::calls`].
    Gate(usize),
    /// Run the call at this index (it is cleared, and earlier calls are
    /// over).
    Execute(usize),
    /// The call at this index started and never finished: re-run it if the
    /// tool is idempotent, else mark it in doubt.
    Recover(usize),
    /// Nothing can happen until people decide.
    Wait,
    /// The run is over.
    Done,
}

/// A run, as the fold of its log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The conversation so far, with the results of finished turns.
    pub messages: Vec<Message>,
    /// The thread the run belongs to.
    pub thread: Option<String>,
    /// Who started it.
    pub principal: Option<String>,
    /// The calls of the current model turn, in the model's order; empty
    /// between turns.
    pub calls: Vec<CallState>,
    /// The approvals of earlier turns, all decided, oldest first.
    pub past_approvals: Vec<ApprovalState>,
    /// Where it stands.
    pub status: RunStatus,
    /// How many events were folded: the version the next append expects.
    pub version: u64,
    /// True for a run an outside agent drives over the API (its log starts
    /// with [`Event::CallRequested`]): the agent runs its tools, so once a
    /// call is cleared it is over as far as toolgate is concerned.
    pub external: bool,
}

impl RunState {
    /// Folds a run's log, oldest first.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> RunState {
        let mut state = RunState {
            messages: Vec::new(),
            thread: None,
            principal: None,
            calls: Vec::new(),
            past_approvals: Vec::new(),
            status: RunStatus::Running,
            version: 0,
            external: false,
        };
        for event in events {
            state.apply(event);
        }
        state
    }

    /// Folds one more event.
    pub fn apply(&mut self, event: &Event) {
        self.version += 1;
        if self.status.is_finished() {
            return;
        }
        match event {
            Event::RunStarted {
                messages,
                thread,
                principal,
            } => {
                self.messages = messages.clone();
                self.thread = thread.clone();
                self.principal = principal.clone();
            }
            Event::CallRequested {
                call,
                principal,
                thread,
                context,
            } => {
                if self.version == 1 {
                    self.external = true;
                    self.principal = Some(principal.clone());
                    self.thread = thread.clone();
                }
                // Only an external run takes calls from outside, one at a
                // time, beside those still waiting.
                if self.external && self.call(&call.id).is_none() {
                    self.calls
                        .push(CallState::new(call.clone(), context.clone()));
                }
            }
            Event::ModelTurn { message } => {
                // No model speaks in an external run.
                if !self.external {
                    self.messages.push(Message::Ai(message.clone()));
                    self.calls = message
                        .tool_calls
                        .iter()
                        .map(|call| CallState::new(call.clone(), None))
                        .collect();
                }
            }
            Event::GateVerdict {
                call_id, verdict, ..
            } => {
                if let Some(call) = self.call_mut(call_id) {
                    call.result = match verdict {
                        Gate::Deny { by, reason } => Some(ToolMessage::error(
                            &call.call.id,
                            match reason {
                                Some(reason) => {
                                    format!("toolgate's policy ({by}) refused this call: {reason}")
                                }
                                None => format!("toolgate's policy ({by}) refused this call."),
                            },
                        )),
                        Gate::Invalid { error } => {
                            Some(ToolMessage::error(&call.call.id, error.clone()))
                        }
                        _ => None,
                    };
                    call.gate = Some(verdict.clone());
                }
            }
            Event::ApprovalRequested {
                call_id,
                approval_id,
                fingerprint,
                ask,
                requested_at,
                expires_at,
                description,
                schema,
            } => {
                let external = self.external;
                if let Some(call) = self.call_mut(call_id) {
                    // The engine asks people only about calls the gate
                    // asked about. An external run's every call gets an
                    // approval, so that the agent can look each one up;
                    // one that policy or a grant settled is born settled.
                    let (status, rule, settled_by) = match &call.gate {
                        Some(Gate::Ask { by }) => (ApprovalStatus::Pending, by.clone(), None),
                        Some(Gate::Allow { by }) if external => (
                            ApprovalStatus::Approved,
                            by.clone(),
                            Some(format!("policy ({by})")),
                        ),
                        Some(Gate::Granted { grant_id }) if external => (
                            ApprovalStatus::Approved,
                            DecidedBy::Default,
                            Some(format!("grant {grant_id}")),
                        ),
                        Some(Gate::Deny { by, .. }) if external => (
                            ApprovalStatus::Rejected,
                            by.clone(),
                            Some(format!("policy ({by})")),
                        ),
                        _ => (ApprovalStatus::Pending, DecidedBy::Default, None),
                    };
                    call.approval = Some(ApprovalState {
                        id: approval_id.clone(),
                        call: call.call.clone(),
                        args: call.call.args.clone(),
                        fingerprint: fingerprint.clone(),
                        ask: ask.clone(),
                        rule,
                        requested_at: *requested_at,
                        expires_at: *expires_at,
                        description: description.clone(),
                        schema: schema.clone(),
                        context: call.context.clone(),
                        status,
                        settled_by,
                        approved_by: Vec::new(),
                        edited_by: None,
                        decisions: Vec::new(),
                    });
                }
            }
            Event::DecisionRecorded {
                approval_id,
                decision,
                principal,
                fingerprint,
                ..
            } => {
                if let Some(call) = self.call_by_approval_mut(approval_id) {
                    let approval = call.approval.as_mut().expect("found by its approval");
                    if approval
                        .check_decision(principal, decision, fingerprint)
                        .is_ok()
                    {
                        approval.record(principal, decision);
                        if approval.status == ApprovalStatus::Rejected {
                            let text = match decision {
                                Decision::Reject {
                                    message: Some(message),
                                } => format!("{principal} rejected this call: {message}"),
                                _ => format!("{principal} rejected this call."),
                            };
                            call.result = Some(ToolMessage::error(&call.call.id, text));
                        }
                    }
                }
            }
            Event::ApprovalExpired { approval_id } => {
                if let Some(call) = self.call_by_approval_mut(approval_id) {
                    let approval = call.approval.as_mut().expect("found by its approval");
                    if approval.status == ApprovalStatus::Pending {
                        approval.status = ApprovalStatus::Expired;
                        let waited = approval
                            .ask
                            .timeout
                            .map(|t| format!(" within {}", humantime::format_duration(t)))
                            .unwrap_or_default();
                        call.result = Some(ToolMessage::error(
                            &call.call.id,
                            format!("Nobody approved this call{waited}, so it was rejected."),
                        ));
                    }
                }
            }
            Event::CallWithdrawn {
                approval_id,
                reason,
            } => {
                if let Some(call) = self.call_by_approval_mut(approval_id) {
                    let approval = call.approval.as_mut().expect("found by its approval");
                    if approval.status == ApprovalStatus::Pending {
                        approval.status = ApprovalStatus::Cancelled;
                        let text = match reason {
                            Some(reason) => format!("The agent withdrew this call: {reason}"),
                            None => "The agent withdrew this call.".to_owned(),
                        };
                        call.result = Some(ToolMessage::error(&call.call.id, text));
                    }
                }
            }
            Event::ToolStarted { call_id, .. } => {
                if let Some(call) = self.call_mut(call_id) {
                    call.attempts += 1;
                    call.running = true;
                    call.in_doubt = false;
                }
            }
            Event::ToolFinished { call_id, outcome } => {
                if let Some(call) = self.call_mut(call_id) {
                    // A finish that comes after the call was marked in doubt
                    // (by a second process resuming the run while the first
                    // still ran the tool) settles the doubt.
                    call.running = false;
                    call.in_doubt = false;
                    call.result = Some(result_message(call, outcome));
                }
            }
            Event::ToolInDoubt { call_id } => {
                if let Some(call) = self.call_mut(call_id) {
                    call.running = false;
                    call.in_doubt = true;
                }
            }
            Event::InDoubtResolved {
                call_id,
                resolution,
                ..
            } => {
                if let Some(call) = self.call_mut(call_id)
                    && call.in_doubt
                {
                    call.in_doubt = false;
                    match resolution {
                        Resolution::Retry => {}
                        Resolution::Done { output } => {
                            let outcome = Outcome::Output {
                                output: output.clone(),
                            };
                            call.result = Some(result_message(call, &outcome));
                        }
                        Resolution::Fail { message } => {
                            call.result = Some(ToolMessage::error(&call.call.id, message.clone()));
                        }
                    }
                }
            }
            Event::RunCompleted { answer } => {
                self.cancel_pending();
                self.status = RunStatus::Completed {
                    answer: answer.clone(),
                };
            }
            Event::RunFailed { error } => {
                self.cancel_pending();
                self.status = RunStatus::Failed {
                    error: error.clone(),
                };
            }
        }
        if self.external {
            self.hand_over_cleared();
        }
        self.close_turn();
        if !self.status.is_finished() {
            self.status = if matches!(self.next(), Next::Wait) {
                RunStatus::Waiting
            } else {
                RunStatus::Running
            };
        }
    }

    /// What the engine should do next.
    pub fn next(&self) -> Next {
        if self.status.is_finished() {
            return Next::Done;
        }
        if self.external {
            // The agent calls its tools and asks again when it wants to:
            // the engine has only people to wait for.
            return if self.pending_approvals().next().is_some() {
                Next::Wait
            } else {
                Next::Done
            };
        }
        if self.calls.is_empty() {
            return Next::CallModel;
        }
        if let Some(index) = self.calls.iter().position(|c| c.gate.is_none()) {
            return Next::Gate(index);
        }
        // Calls run in the model's order: the first one not over decides.
        let Some(index) = self.calls.iter().position(|c| c.result.is_none()) else {
            return Next::CallModel;
        };
        let call = &self.calls[index];
        if call.running {
            Next::Recover(index)
        } else if call.in_doubt {
            Next::Wait
        } else if call.is_cleared() {
            Next::Execute(index)
        } else {
            Next::Wait
        }
    }

    /// The approvals of the current turn that wait for people.
    pub fn pending_approvals(&self) -> impl Iterator<Item = &ApprovalState> {
        self.calls
            .iter()
            .filter_map(|c| c.approval.as_ref())
            .filter(|a| a.status == ApprovalStatus::Pending)
    }

    /// The calls of the current turn that are in doubt.
    pub fn in_doubt(&self) -> impl Iterator<Item = &CallState> {
        self.calls.iter().filter(|c| c.in_doubt)
    }

    /// The call with this id, in the current turn.
    pub fn call(&self, call_id: &str) -> Option<&CallState> {
        self.calls.iter().find(|c| c.call.id == call_id)
    }

    /// The approval with this id, of any turn.
    pub fn approval(&self, approval_id: &str) -> Option<&ApprovalState> {
        self.approvals().find(|a| a.id == approval_id)
    }

    /// Every approval of the run, oldest first.
    pub fn approvals(&self) -> impl Iterator<Item = &ApprovalState> {
        self.past_approvals
            .iter()
            .chain(self.calls.iter().filter_map(|c| c.approval.as_ref()))
    }

    fn call_mut(&mut self, call_id: &str) -> Option<&mut CallState> {
        self.calls.iter_mut().find(|c| c.call.id == call_id)
    }

    fn call_by_approval_mut(&mut self, approval_id: &str) -> Option<&mut CallState> {
        self.calls
            .iter_mut()
            .find(|c| c.approval.as_ref().is_some_and(|a| a.id == approval_id))
    }

    /// In an external run, a cleared call is the agent's to run: toolgate's
    /// part in it is over.
    fn hand_over_cleared(&mut self) {
        for call in &mut self.calls {
            if call.result.is_none() && call.is_cleared() {
                let text = match &call.approval {
                    Some(approval) if approval.edited_by.is_some() => format!(
                        "approved with edited arguments: {}",
                        Value::Object(approval.args.clone())
                    ),
                    _ => "approved".to_owned(),
                };
                call.result = Some(ToolMessage::new(&call.call.id, text));
            }
        }
    }

    /// Once every call of the turn is over, their results join the
    /// conversation, in the model's order, and the turn closes.
    fn close_turn(&mut self) {
        // An external run's call is gated and given its approval in one
        // append: it is over only once it has both.
        let over = |c: &CallState| c.result.is_some() && (!self.external || c.approval.is_some());
        if self.calls.is_empty() || !self.calls.iter().all(over) {
            return;
        }
        for call in std::mem::take(&mut self.calls) {
            let result = call.result.expect("checked above");
            self.messages.push(Message::Tool(result));
            self.past_approvals.extend(call.approval);
        }
    }

    fn cancel_pending(&mut self) {
        for call in &mut self.calls {
            if let Some(approval) = &mut call.approval
                && approval.status == ApprovalStatus::Pending
            {
                approval.status = ApprovalStatus::Cancelled;
            }
        }
    }
}

/// The tool message for a call that ran, saying so when a person edited
/// its arguments, so that the model knows what was actually done.
fn result_message(call: &CallState, outcome: &Outcome) -> ToolMessage {
    let edited = call
        .approval
        .as_ref()
        .and_then(|a| a.edited_by.as_ref().map(|by| (by, &a.args)));
    let (text, is_error) = match outcome {
        Outcome::Output { output } => (output_text(output), false),
        Outcome::Error { error } => (error.clone(), true),
    };
    let text = match edited {
        Some((by, args)) => format!(
            "{by} edited the arguments of this call before it ran; it ran with {}. Result: {text}",
            Value::Object(args.clone())
        ),
        None => text,
    };
    if is_error {
        ToolMessage::error(&call.call.id, text)
    } else {
        ToolMessage::new(&call.call.id, text)
    }
}

/// A tool's output as a model reads it: strings as they are, anything else
/// as JSON.
pub fn output_text(output: &Value) -> String {
    match output {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn call(id: &str) -> ToolCall {
        ToolCall::new(id, "send", json!({"to": id}))
    }

    fn fingerprint(text: &str) -> Fingerprint {
        Fingerprint::of_call("send", &Map::new(), &json!(text))
    }

    /// A run whose model asked for two calls, each waiting for `quorum`
    /// approvals.
    fn asked(quorum: u32) -> Vec<Event> {
        let mut events = vec![
            Event::RunStarted {
                messages: vec![Message::human("send both")],
                thread: None,
                principal: None,
            },
            Event::ModelTurn {
                message: AiMessage::with_tool_calls([call("a"), call("b")]),
            },
        ];
        for id in ["a", "b"] {
            events.push(Event::GateVerdict {
                call_id: id.into(),
                verdict: Gate::Ask {
                    by: DecidedBy::Default,
                },
                condition_errors: vec![],
            });
            events.push(Event::ApprovalRequested {
                call_id: id.into(),
                approval_id: format!("approval-{id}"),
                fingerprint: fingerprint(id),
                ask: AskSpec {
                    quorum,
                    ..AskSpec::default()
                },
                requested_at: 0,
                expires_at: None,
                description: String::new(),
                schema: json!({}),
            });
        }
        events
    }

    #[test]
    fn an_approved_call_runs_and_its_result_joins_the_conversation() {
        let mut events = asked(1);
        events.push(Event::DecisionRecorded {
            approval_id: "approval-a".into(),
            decision: Decision::Approve,
            principal: "alice".into(),
            fingerprint: fingerprint("a"),
            grant: None,
        });
        let state = RunState::fold(&events);
        assert_eq!(state.next(), Next::Execute(0));
        assert_eq!(state.status, RunStatus::Running);
        events.push(Event::ToolStarted {
            call_id: "a".into(),
            args: Map::new(),
        });
        assert_eq!(RunState::fold(&events).next(), Next::Recover(0));
        events.push(Event::ToolFinished {
            call_id: "a".into(),
            outcome: Outcome::Output { output: json!(10) },
        });
        let state = RunState::fold(&events);
        // `b` still waits; the turn stays open.
        assert_eq!(state.next(), Next::Wait);
        assert_eq!(state.status, RunStatus::Waiting);
        events.push(Event::DecisionRecorded {
            approval_id: "approval-b".into(),
            decision: Decision::Reject { message: None },
            principal: "bob".into(),
            fingerprint: fingerprint("b"),
            grant: None,
        });
        let state = RunState::fold(&events);
        assert_eq!(state.next(), Next::CallModel);
        assert!(state.calls.is_empty());
        assert_eq!(state.past_approvals.len(), 2);
        assert_eq!(
            &state.messages[2..],
            &[
                Message::Tool(ToolMessage::new("a", "10")),
                Message::Tool(ToolMessage::error("b", "bob rejected this call.")),
            ]
        );
        assert_eq!(state.version, events.len() as u64);
    }

    #[test]
    fn a_finish_after_the_call_was_marked_in_doubt_settles_it() {
        let mut events = asked(1);
        for id in ["a", "b"] {
            events.push(Event::DecisionRecorded {
                approval_id: format!("approval-{id}"),
                decision: Decision::Approve,
                principal: "alice".into(),
                fingerprint: fingerprint(id),
                grant: None,
            });
        }
        events.push(Event::ToolStarted {
            call_id: "a".into(),
            args: Map::new(),
        });
        events.push(Event::ToolInDoubt {
            call_id: "a".into(),
        });
        assert_eq!(RunState::fold(&events).in_doubt().count(), 1);
        events.push(Event::ToolFinished {
            call_id: "a".into(),
            outcome: Outcome::Output { output: json!(1) },
        });
        let state = RunState::fold(&events);
        assert_eq!(state.in_doubt().count(), 0);
        assert_eq!(state.next(), Next::Execute(1));
    }

    #[test]
    fn decisions_that_do_not_fit_are_refused_with_a_reason() {
        let mut events = asked(2);
        events.push(Event::DecisionRecorded {
            approval_id: "approval-a".into(),
            decision: Decision::Approve,
            principal: "alice".into(),
            fingerprint: fingerprint("a"),
            grant: None,
        });
        let state = RunState::fold(&events);
        let approval = state.approval("approval-a").unwrap();
        assert_eq!(approval.status, ApprovalStatus::Pending);
        assert_eq!(approval.still_needed(), 1);
        assert_eq!(
            approval
                .check_decision("alice", &Decision::Approve, &fingerprint("a"))
                .unwrap_err()
                .to_string(),
            "alice has already approved approval approval-a; it needs approvals from 1 more distinct approver(s)"
        );
        let error = approval
            .check_decision("bob", &Decision::Approve, &fingerprint("b"))
            .unwrap_err();
        assert!(
            matches!(error, DecisionError::FingerprintMismatch { .. }),
            "{error}"
        );
        assert!(
            approval
                .check_decision("bob", &Decision::Approve, &fingerprint("a"))
                .is_ok()
        );
    }

    #[test]
    fn an_edit_voids_earlier_approvals_and_counts_as_the_editors() {
        let mut events = asked(2);
        events.push(Event::DecisionRecorded {
            approval_id: "approval-a".into(),
            decision: Decision::Approve,
            principal: "alice".into(),
            fingerprint: fingerprint("a"),
            grant: None,
        });
        let new_args = json!({"to": "elsewhere"}).as_object().unwrap().clone();
        events.push(Event::DecisionRecorded {
            approval_id: "approval-a".into(),
            decision: Decision::Edit {
                args: new_args.clone(),
                new_fingerprint: fingerprint("edited"),
            },
            principal: "bob".into(),
            fingerprint: fingerprint("a"),
            grant: None,
        });
        let state = RunState::fold(&events);
        let approval = state.approval("approval-a").unwrap();
        assert_eq!(approval.status, ApprovalStatus::Pending);
        assert_eq!(approval.approved_by, vec!["bob".to_owned()]);
        assert_eq!(approval.fingerprint, fingerprint("edited"));
        assert_eq!(state.calls[0].effective_args(), &new_args);
        events.push(Event::DecisionRecorded {
            approval_id: "approval-a".into(),
            decision: Decision::Approve,
            principal: "alice".into(),
            fingerprint: fingerprint("edited"),
            grant: None,
        });
        let state = RunState::fold(&events);
        assert_eq!(
            state.approval("approval-a").unwrap().status,
            ApprovalStatus::Edited
        );
        assert!(state.calls[0].is_cleared());
    }

    #[derive(Debug, Clone)]
    enum Step {
        Decide {
            approval: usize,
            kind: u8,
            principal: u8,
            right_fingerprint: bool,
        },
        Expire(usize),
        Start(usize),
        Finish(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..2usize, 0..3u8, 0..3u8, any::<bool>()).prop_map(|(approval, kind, principal, right_fingerprint)| Step::Decide { approval, kind, principal, right_fingerprint }),
            1 => (0..2usize).prop_map(Step::Expire),
            1 => (0..2usize).prop_map(Step::Start),
            1 => (0..2usize).prop_map(Step::Finish),
        ]
    }

    proptest! {
        /// Whatever people, timeouts and crashes do, in any order: a call is
        /// cleared to run only with enough distinct approvals of its current
        /// fingerprint, a decided approval never changes again, and the fold
        /// never panics.
        #[test]
        fn the_fold_never_clears_a_call_without_its_approvals(quorum in 1..4u32, steps in proptest::collection::vec(step(), 0..40)) {
            let mut events = asked(quorum);
            let ids = ["a", "b"];
            let mut state = RunState::fold(&events);
            for step in steps {
                let before = state.clone();
                let event = match step {
                    Step::Decide { approval, kind, principal, right_fingerprint } => {
                        let current = state.approval(&format!("approval-{}", ids[approval])).map(|a| a.fingerprint.clone());
                        let fingerprint = match (right_fingerprint, current) {
                            (true, Some(current)) => current,
                            _ => fingerprint("wrong"),
                        };
                        let decision = match kind {
                            0 => Decision::Approve,
                            1 => Decision::Reject { message: None },
                            _ => Decision::Edit { args: Map::new(), new_fingerprint: super::tests::fingerprint(&format!("edit-{principal}")) },
                        };
                        Event::DecisionRecorded {
                            approval_id: format!("approval-{}", ids[approval]),
                            decision,
                            principal: format!("p{principal}"),
                            fingerprint,
                            grant: None,
                        }
                    }
                    Step::Expire(i) => Event::ApprovalExpired { approval_id: format!("approval-{}", ids[i]) },
                    Step::Start(i) => Event::ToolStarted { call_id: ids[i].into(), args: Map::new() },
                    Step::Finish(i) => Event::ToolFinished { call_id: ids[i].into(), outcome: Outcome::Output { output: json!(1) } },
                };
                state.apply(&event);
                events.push(event);
                prop_assert_eq!(state.version, events.len() as u64);
                prop_assert_eq!(&RunState::fold(&events), &state);
                for approval in state.approvals() {
                    if let Some(old) = before.approval(&approval.id)
                        && old.status != ApprovalStatus::Pending
                    {
                        prop_assert_eq!(old.status, approval.status);
                        prop_assert_eq!(&old.fingerprint, &approval.fingerprint);
                    }
                    if matches!(approval.status, ApprovalStatus::Approved | ApprovalStatus::Edited) {
                        prop_assert!(approval.approved_by.len() >= quorum as usize);
                        let mut distinct = approval.approved_by.clone();
                        distinct.sort();
                        distinct.dedup();
                        prop_assert_eq!(distinct.len(), approval.approved_by.len());
                    }
                }
                for call in &state.calls {
                    if call.is_cleared() {
                        let approval = call.approval.as_ref().unwrap();
                        prop_assert!(matches!(approval.status, ApprovalStatus::Approved | ApprovalStatus::Edited));
                    }
                }
            }
        }
    }

    /// An external run's first call, gated with `verdict`, and its
    /// approval.
    fn external(call_id: &str, verdict: Gate) -> Vec<Event> {
        vec![
            Event::CallRequested {
                call: call(call_id),
                principal: "bot".into(),
                thread: Some("t-1".into()),
                context: Some(json!({"ticket": 7})),
            },
            Event::GateVerdict {
                call_id: call_id.into(),
                verdict,
                condition_errors: vec![],
            },
            Event::ApprovalRequested {
                call_id: call_id.into(),
                approval_id: format!("approval-{call_id}"),
                fingerprint: fingerprint(call_id),
                ask: AskSpec::default(),
                requested_at: 5,
                expires_at: None,
                description: "sends".into(),
                schema: json!({}),
            },
        ]
    }

    fn ask() -> Gate {
        Gate::Ask {
            by: DecidedBy::Default,
        }
    }

    #[test]
    fn an_external_call_waits_then_is_handed_to_the_agent() {
        let mut events = external("a", ask());
        let state = RunState::fold(&events);
        assert!(state.external);
        assert_eq!(state.principal.as_deref(), Some("bot"));
        assert_eq!(state.thread.as_deref(), Some("t-1"));
        assert_eq!(state.status, RunStatus::Waiting);
        assert_eq!(state.next(), Next::Wait);
        let pending: Vec<_> = state.pending_approvals().collect();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].context, Some(json!({"ticket": 7})));
        assert_eq!(pending[0].settled_by, None);

        events.push(Event::DecisionRecorded {
            approval_id: "approval-a".into(),
            decision: Decision::Approve,
            principal: "alice".into(),
            fingerprint: fingerprint("a"),
            grant: None,
        });
        let state = RunState::fold(&events);
        // Nothing is left for toolgate: the agent runs the tool.
        assert_eq!(state.next(), Next::Done);
        assert_eq!(state.status, RunStatus::Running);
        assert!(state.calls.is_empty());
        let approval = state.approval("approval-a").unwrap();
        assert_eq!(approval.status, ApprovalStatus::Approved);
        assert_eq!(approval.context, Some(json!({"ticket": 7})));
    }

    #[test]
    fn an_external_call_policy_settles_is_born_settled() {
        let rule = DecidedBy::Rule {
            number: 2,
            name: "mail".into(),
        };
        let allowed = RunState::fold(&external("a", Gate::Allow { by: rule.clone() }));
        let approval = allowed.approval("approval-a").unwrap();
        assert_eq!(approval.status, ApprovalStatus::Approved);
        assert_eq!(approval.settled_by.as_deref(), Some("policy (mail)"));
        assert_eq!(allowed.status, RunStatus::Running);
        assert!(allowed.calls.is_empty());

        let denied = RunState::fold(&external(
            "a",
            Gate::Deny {
                by: rule,
                reason: Some("never".into()),
            },
        ));
        let approval = denied.approval("approval-a").unwrap();
        assert_eq!(approval.status, ApprovalStatus::Rejected);
        assert_eq!(approval.settled_by.as_deref(), Some("policy (mail)"));
        assert!(matches!(
            denied.messages.last(),
            Some(Message::Tool(m)) if m.content.contains("never")
        ));

        let granted = RunState::fold(&external(
            "a",
            Gate::Granted {
                grant_id: "g-1".into(),
            },
        ));
        let approval = granted.approval("approval-a").unwrap();
        assert_eq!(approval.status, ApprovalStatus::Approved);
        assert_eq!(approval.settled_by.as_deref(), Some("grant g-1"));
    }

    #[test]
    fn an_external_run_takes_more_calls_while_one_waits() {
        let mut events = external("a", ask());
        let second = external("b", ask());
        let Event::CallRequested { call, context, .. } = &second[0] else {
            unreachable!()
        };
        events.push(Event::CallRequested {
            call: call.clone(),
            // Later calls do not change who owns the run.
            principal: "someone-else".into(),
            thread: None,
            context: context.clone(),
        });
        events.extend(second[1..].iter().cloned());
        events.push(Event::DecisionRecorded {
            approval_id: "approval-b".into(),
            decision: Decision::Reject {
                message: Some("no".into()),
            },
            principal: "alice".into(),
            fingerprint: fingerprint("b"),
            grant: None,
        });
        let state = RunState::fold(&events);
        assert_eq!(state.principal.as_deref(), Some("bot"));
        assert_eq!(state.status, RunStatus::Waiting);
        let pending: Vec<_> = state.pending_approvals().map(|a| a.id.as_str()).collect();
        assert_eq!(pending, ["approval-a"]);
        assert_eq!(
            state.approval("approval-b").unwrap().status,
            ApprovalStatus::Rejected
        );
    }

    #[test]
    fn model_turns_and_outside_calls_do_not_mix() {
        // A model turn in an external run changes nothing ...
        let mut events = external("a", ask());
        events.push(Event::ModelTurn {
            message: AiMessage::with_tool_calls([call("z")]),
        });
        let state = RunState::fold(&events);
        assert!(state.call("z").is_none());
        assert_eq!(state.pending_approvals().count(), 1);
        // ... and neither does an outside call in an engine run.
        let mut events = asked(1);
        events.push(external("c", ask()).remove(0));
        let state = RunState::fold(&events);
        assert!(!state.external);
        assert!(state.call("c").is_none());
        assert_eq!(state.calls.len(), 2);
    }
}
